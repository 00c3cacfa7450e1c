"""Scoring of the agent against the ground-truth program: exact programs, Dice of masks, relative
error of reported numbers, exact answers, per family and overall."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from voxelprompt.agent import Result
from voxelprompt.evaluate import Scores, _score, dice
from voxelprompt.runtime.library import Metric
from voxelprompt.volume import Volume


def mask(*indices) -> Volume:
    array = np.zeros((4, 4, 4), np.uint8)
    for index in indices:
        array[index] = 1
    return Volume(array, np.eye(4))


def example(kind: str, program: list[str]):
    return SimpleNamespace(task=SimpleNamespace(answer={"kind": kind}), program=program)


def truth(**library):
    return SimpleNamespace(library=SimpleNamespace(**({"outputs": {}, "metrics": [], "responses": []} | library)))


def test_dice_of_masks():
    assert dice(mask((0, 0, 0), (1, 1, 1)).array, mask((0, 0, 0)).array) == 2 / 3
    assert dice(mask().array, mask().array) == 1.0


def test_a_program_scores_exact_only_when_every_step_matches():
    scores = Scores()
    program = ["e = encode(scans())\nread(e)", "stop()"]
    _score(scores, example("choice", program), truth(responses=["MCA"]),
           Result("p", steps=[program[0] + "\n", "stop()"], responses=["MCA"], ok=True), 1.0)
    _score(scores, example("choice", program), truth(responses=["MCA"]),
           Result("p", steps=[program[0], "choose(answer, ['x'])"], responses=["ACA"]), 3.0)
    summary = scores.summary()
    assert (summary["examples"], summary["program_exact_match"], summary["finished"]) == (2, 0.5, 0.5)
    assert summary["answer_accuracy"] == 0.5 and summary["median_seconds"] == 2.0


def test_masks_score_dice_and_a_missing_mask_scores_zero():
    scores = Scores()
    expected = truth(outputs={"left hippocampus": mask((0, 0, 0), (1, 1, 1))})
    _score(scores, example("mask", []), expected, Result("p", outputs={"left hippocampus": mask((0, 0, 0))}), 1.0)
    _score(scores, example("mask", []), expected, Result("p", outputs={"something else": mask((0, 0, 0))}), 1.0)
    assert scores.dice == [2 / 3, 0.0]


def test_numbers_score_relative_error_and_a_missing_metric_counts_as_wholly_wrong():
    scores = Scores()
    expected = truth(metrics=[Metric("volume of the brain", 1000.0, "mm3"), Metric("width of the brain", 100.0, "mm")])
    _score(scores, example("number", []), expected, Result("p", metrics=[Metric("volume of the brain", 1100.0, "mm3")]), 1.0)
    assert scores.relative_error == [0.1, 1.0]
    assert scores.summary()["median_relative_error"] == 0.55


# --- segmentation of the large structures ----------------------------------------------------------

def _perfect_agent(monkeypatch):
    """An agent whose every "Segment the X" outputs exactly the label map's X."""
    from voxelprompt import evaluate as evaluation
    from voxelprompt.tasks.truth import target_mask

    class Perfect:
        def __init__(self, model):
            self.subject = None

        def run(self, prompt, scans, cache=None):
            target = prompt.removeprefix("Segment the ")
            truth = target_mask(Perfect.subject.sessions[0], target)
            return Result(prompt, outputs={target: scans[0].volume.with_array(truth.astype(np.uint8))}, ok=True)

    monkeypatch.setattr(evaluation, "Agent", Perfect)
    return Perfect


def test_held_out_subjects_hold_every_large_structure_and_are_reproducible(anatomy_cache):
    from voxelprompt.evaluate import LARGE_STRUCTURES, held_out_subjects
    from voxelprompt.tasks.truth import target_mask

    first, again = held_out_subjects(1)[0], held_out_subjects(1)[0]
    assert np.array_equal(first.sessions[0].synthetic.label_map.array, again.sessions[0].synthetic.label_map.array)
    assert "T1w" in first.contrasts
    for target in LARGE_STRUCTURES:
        assert target_mask(first.sessions[0], target).sum() > 20, target


def test_segmentation_dice_scores_each_structure(monkeypatch, anatomy_cache):
    from voxelprompt.evaluate import LARGE_STRUCTURES, evaluation_markdown, held_out_subjects, segmentation_dice

    perfect = _perfect_agent(monkeypatch)
    subject = held_out_subjects(1)[0]
    perfect.subject = subject
    assert segmentation_dice(None, subject) == {t: 1.0 for t in LARGE_STRUCTURES}
    # an agent that outputs nothing scores zero
    monkeypatch.setattr(perfect, "run", lambda self, prompt, scans, cache=None: Result(prompt))
    assert set(segmentation_dice(None, subject).values()) == {0.0}
    table = evaluation_markdown({"families": {"all": {"examples": 2, "mean_dice": None}},
                                 "segmentation": {"held-out synthetic": {t: 0.5 for t in LARGE_STRUCTURES}}})
    assert "| all | 2 | - |" in table and "| brainstem | 0.500 |" in table and "| **mean** | 0.500 |" in table


def test_the_real_scan_is_fsaverage_with_its_own_labels(anatomy_cache):
    import importlib.util

    import pytest

    from voxelprompt.evaluate import LARGE_STRUCTURES, real_scan
    from voxelprompt.synth import anatomy
    from voxelprompt.tasks.truth import target_mask

    if importlib.util.find_spec(anatomy.FREESURFER_PACKAGE) is None:
        pytest.skip("optional FreeSurfer anatomy not installed (requirements/freesurfer-data.txt)")
    subject = real_scan()
    (scan,) = subject.scans
    label_map = subject.sessions[0].synthetic.label_map
    assert scan.modality == "T1w" and scan.volume.grid.is_same(label_map.grid)
    white = target_mask(subject.sessions[0], "left and right cerebral white matter")
    cortex = target_mask(subject.sessions[0], "left and right cerebral cortex")
    # a real T1w: white matter is brighter than cortex
    assert np.median(scan.volume.array[white]) > np.median(scan.volume.array[cortex]) + 10
    assert all(target_mask(subject.sessions[0], t).sum() > 1000 for t in LARGE_STRUCTURES)
