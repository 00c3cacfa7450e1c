"""The function library, driven through the sandbox as the agent will drive it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxelprompt.runtime import Environment
from voxelprompt.runtime.library import Library
from voxelprompt.runtime.measures import Scan
from voxelprompt.volume import Volume

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def scan(modality, session, date, value=100.0) -> Scan:
    return Scan(Volume(np.full((20, 20, 10), value, np.float32), AFFINE), modality, session, date)


def tumour(scans, target):
    """Ground truth standing in for the generator: a box that grows between sessions."""
    size = 4 if scans[0].session == "01" else 6
    array = np.zeros((20, 20, 10), np.uint8)
    array[5:5 + size, 5:5 + size, 2:4] = 1
    return Volume(array, AFFINE)


@pytest.fixture
def library():
    return Library([scan("T1w", "01", "2024-01-10"), scan("FLAIR", "01", "2024-01-10", 80.0),
                    scan("T1w", "02", "2024-07-01"), scan("CT", "02", "2024-07-01", 40.0)], segmenter=tumour)


def test_a_longitudinal_program_runs_in_the_sandbox(library):
    environment = Environment(library.functions())
    steps = [
        "before = select(modality='T1w', session='01')\nafter = select(modality='T1w', session='02')",
        "v1 = volume_mm3(segment(before, 'tumour'))\nv2 = volume_mm3(segment(after, 'tumour'))\nv1\nv2",
        "growth = percent_change(v1, v2)\nrespond(growth)\nstop()",
    ]
    outputs = [environment.run(step) for step in steps]
    assert all(feedback.ok for feedback in outputs), [f.error for f in outputs]
    assert outputs[1].output.splitlines() == ["64", "144"]  # 4*4*2 and 6*6*2 voxels of 2 mm^3
    assert library.responses == ["125"] and library.stopped


def test_selection_and_answers_explain_mistakes(library):
    environment = Environment(library.functions())
    assert "2 scans match" in environment.run("t1 = select(modality='T1w')").error
    assert "no scan with modality='PDw'" in environment.run("x = select(modality='PDw')").error
    assert environment.run("sessions()").output == "['01', '02']"
    assert "is not one of" in environment.run("choose('bright', ['hyperintense', 'hypointense'])").error
    assert environment.run("choose('hyperintense', ['hyperintense', 'hypointense'])").ok
    ct = "ct = select(modality='CT')\nm = segment(ct, 'tumour')\n"
    assert environment.run(ct + "mean_hu(ct, m)").output == "40"
    assert "needs an ADC map" in environment.run(ct + "mean_adc(ct, m)").error


def test_regions_masks_and_crops(library):
    t1 = library.select(modality="T1w", session="01")
    region = tumour([t1], "tumour")
    masked, removed = library.mask(t1, region), library.remove(t1, region)
    assert masked.volume.array.sum() == pytest.approx(100.0 * region.array.sum())
    assert removed.volume.array.sum() == pytest.approx(100.0 * (region.array.size - region.array.sum()))
    cropped = library.crop(t1, region, margin_mm=2.0)
    assert cropped.volume.shape == (4 + 4, 4 + 4, 2 + 2)  # 2 mm margin: 2 voxels in-plane, 1 slice
    ring = library.subtract(tumour([library.select(modality="T1w", session="02")], "t"), region)
    assert ring.array.sum() == 6 * 6 * 2 - 4 * 4 * 2


def test_without_a_model_segment_says_so():
    library = Library([scan("T1w", "", "")])
    assert "no segmentation model" in Environment(library.functions()).run("segment(select(), 'brain')").error


def test_the_manual_lists_every_function(library):
    manual = library.reference_markdown()
    for name in library.functions():
        assert f"## `{name}(" in manual


def test_the_committed_library_page_is_current():
    """docs/library.md is generated (`voxelprompt library-reference docs/library.md`)."""
    committed = (Path(__file__).resolve().parents[1] / "docs" / "library.md").read_text()
    assert committed == Library(scans=[]).reference_markdown()
