"""The study's QC page (voxelprompt/study/qc.py): built from real study tables over small synthetic
images, then read back as HTML, as PNG pixels, and as a page rendered by headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from voxelprompt.core.errors import InputError
from voxelprompt.core.io import save_volume
from voxelprompt.core.volume import Volume
from voxelprompt.model.agent import Result
from voxelprompt.runtime.library import Metric
from voxelprompt.study import qc
from voxelprompt.study.qc import write_qc_report
from voxelprompt.study.report import MaskFile, PromptRun, failed_subject_tables, gather, subject_tables, write_part

MODEL = "cpu-500"
SCRIPT_PROMPT = '<script>alert("x")</script> how large is the lesion?'
MEASURE_ERROR = "MeasureError: the region is empty"
NO_DWI = "no DWI image for this subject"
BAD_SCAN = "sub-03_T1w.nii.gz: file does not exist"
VOID_TAGS = {"meta", "img", "br", "hr", "link", "input"}  # no end tag


def scan_and_lesion(shape=(24, 28, 12), spacing_mm=(1.0, 1.0, 2.0)) -> tuple[Volume, Volume]:
    """A noisy head-like ellipsoid with a bright lesion, stored left-posterior-inferior (LPS) with
    thick slices, so the page has to reorient and keep the aspect ratio."""
    affine = np.diag([-spacing_mm[0], -spacing_mm[1], spacing_mm[2], 1.0])
    grid = np.indices(shape).transpose(1, 2, 3, 0) * spacing_mm
    centre_mm = (np.asarray(shape) - 1) * spacing_mm / 2
    head = (((grid - centre_mm) / (centre_mm * 0.9)) ** 2).sum(axis=-1) < 1
    lesion = (((grid - centre_mm - (4.0, 3.0, 2.0)) / 4.0) ** 2).sum(axis=-1) < 1
    image = np.random.default_rng(0).normal(0.1, 0.02, shape) + 0.5 * head + 0.4 * lesion
    return Volume(image.astype(np.float32), affine), Volume(lesion.astype(np.uint8), affine)


def finished(prompt: str, volume_mm3: float) -> Result:
    return Result(prompt, steps=["m = segment('lesion')", f"report('volume of the lesion', {volume_mm3}, 'mm3')",
                                 "stop()"],
                  responses=[f"volume of the lesion: {volume_mm3:g} mm3"],
                  metrics=[Metric("volume of the lesion", volume_mm3, "mm3", 1)], ok=True, seconds=3.0)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict[str, Path]:
    """Three subjects: sub-01 answered (a lesion mask, a failed program, an empty mask for a prompt
    with markup in it), sub-02 with a deleted mask and a mask whose image is gone, sub-03 whose
    scan could not be loaded."""
    root = tmp_path_factory.mktemp("study")
    scan, lesion = scan_and_lesion()
    t1 = save_volume(scan, root / "sub-01_T1w.nii.gz")
    lesion_mask = save_volume(lesion, root / "sub-01_desc-lesion_mask.nii.gz", np.uint8)
    empty_mask = save_volume(lesion.with_array(np.zeros_like(lesion.array)), root / "sub-01_desc-empty_mask.nii.gz",
                             np.uint8)
    volume_mm3 = float(lesion.array.sum() * lesion.voxel_volume_mm3)
    failed = Result("how large is the tumour?", steps=["m = segment('tumour')"], ok=False, error=MEASURE_ERROR,
                    seconds=1.0)
    runs_01 = [PromptRun("p1", "how large is the lesion?", finished("how large is the lesion?", volume_mm3),
                         masks=[MaskFile.of("lesion", lesion_mask, t1, lesion)]),
               PromptRun("p2", "how large is the tumour?", failed),
               PromptRun("p3", SCRIPT_PROMPT, finished(SCRIPT_PROMPT, 0.0),
                         masks=[MaskFile.of("nothing <b>here</b>", empty_mask, t1, lesion.with_array(
                             np.zeros_like(lesion.array)))])]
    runs_02 = [PromptRun("p1", "how large is the lesion?", finished("how large is the lesion?", volume_mm3),
                         masks=[MaskFile.of("lesion", root / "sub-02_deleted_mask.nii.gz", t1, lesion),
                                MaskFile.of("lesion again", lesion_mask, root / "sub-02_gone_T1w.nii.gz", lesion)]),
               PromptRun("p2", "how large is the tumour?", error=NO_DWI)]
    parts = [write_part(subject_tables("01", "", runs_01, MODEL), root / "parts" / "sub-01"),
             write_part(subject_tables("02", "01", runs_02, MODEL), root / "parts" / "sub-02"),
             write_part(failed_subject_tables("03", "", {"p1": "how large is the lesion?"}, BAD_SCAN, MODEL),
                        root / "parts" / "sub-03")]
    results = root / "results"
    gather(parts, results, {})
    page = write_qc_report(results, root / "qc" / "report.html", title="Lesions <study>")
    return {"root": root, "results": results, "page": page}


class Page(HTMLParser):
    """What the tests look at: images, error paragraphs, notes, section ids, summary rows, tags."""

    def __init__(self, text: str):
        super().__init__()
        self.images, self.errors, self.notes, self.sections, self.summary, self.tags = [], [], [], [], [], set()
        self._open: list[tuple[str, list[str] | None]] = []  # (tag, text collector)
        self._in_summary = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        classes = (attrs.get("class") or "").split()
        if tag == "img":
            self.images.append(attrs["src"])
        if tag in VOID_TAGS:
            return
        if tag == "section":
            self.sections.append(attrs["id"])
        if tag == "table":
            self._in_summary = "summary" in classes
        collector = None
        if "error" in classes and tag == "p":
            collector = self.errors
        elif "note" in classes:
            collector = self.notes
        elif tag == "tr" and self._in_summary:
            collector = self.summary
        if collector is not None:
            collector.append("")
        self._open.append((tag, collector))

    def handle_endtag(self, tag):
        while self._open and self._open.pop()[0] != tag:
            pass

    def handle_data(self, data):
        for _, collector in self._open:
            if collector is not None:
                collector[-1] += data + ("|" if collector is self.summary else "")


def read_page(study) -> tuple[str, Page]:
    text = study["page"].read_text()
    return text, Page(text)


def contour_pixels(png: Path) -> int:
    """Pixels whose colour is (near) the outline's: grey image pixels have R = G = B."""
    rgb = imread(png)[..., :3]
    return int((np.abs(rgb - to_rgb(qc.CONTOUR_COLOUR)).max(axis=-1) < 0.12).sum())


def test_every_picture_exists_and_shows_the_outline(study):
    text, page = read_page(study)
    assert len(page.images) == 2  # the lesion and the empty mask; sub-02's two masks cannot be drawn
    for src in page.images:
        assert not urlparse(src).scheme and not src.startswith("/")  # relative: the folder can move
        png = study["page"].parent / unquote(src)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.parent.name == "report_files"
    lesion_png, empty_png = (study["page"].parent / unquote(src) for src in page.images)
    assert contour_pixels(lesion_png) > 50
    assert contour_pixels(empty_png) == 0
    assert imread(empty_png)[..., :3].std() > 0.05  # the image is still shown: centre slices
    assert any("empty mask" in note for note in page.notes)


def test_errors_and_missing_files_are_shown(study):
    _, page = read_page(study)
    assert page.errors == [MEASURE_ERROR, NO_DWI, BAD_SCAN]
    notes = " ".join(page.notes)
    assert "sub-02_deleted_mask.nii.gz: file does not exist" in notes
    assert "sub-02_gone_T1w.nii.gz: file does not exist" in notes
    assert page.sections == ["sub-01", "sub-02", "sub-03"]


def test_summary_table(study):
    _, page = read_page(study)
    rows = [row.strip("|").split("|") for row in page.summary]
    assert rows[0] == ["prompt", "text", "subjects", "ok", "error", "median s"]
    # p1: answered for sub-01 and sub-02 (3 s each), never ran for sub-03 (not in the median)
    assert rows[1] == ["p1", "how large is the lesion?", "3", "2", "1", "3.0"]
    assert rows[2] == ["p2", "how large is the tumour?", "2", "0", "2", "1.0"]
    assert rows[3][0] == "p3" and rows[3][2:] == ["1", "1", "0", "3.0"]
    assert rows[4] == ["all prompts", "3", "3", "3", "3.0"]  # the empty text cell has no data


def test_text_is_escaped_and_the_page_is_self_contained(study):
    text, page = read_page(study)
    assert "script" not in page.tags and "link" not in page.tags
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    assert "nothing &lt;b&gt;here&lt;/b&gt;" in text and "<title>Lesions &lt;study&gt;</title>" in text
    assert "http://" not in text and "https://" not in text


def test_the_page_and_its_pictures_move_together(study, tmp_path):
    shutil.copytree(study["page"].parent, tmp_path / "moved")
    moved = tmp_path / "moved" / "report.html"
    for src in Page(moved.read_text()).images:
        assert (moved.parent / unquote(src)).is_file()


def test_rewriting_replaces_the_pictures_whole(study, tmp_path):
    page = tmp_path / "qc.html"
    write_qc_report(study["results"], page)
    stale = tmp_path / "qc_files" / "stale.png"
    stale.write_bytes(b"old")
    write_qc_report(study["results"], page)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qc.html", "qc_files"]  # no temporary left
    assert not stale.exists() and len(list((tmp_path / "qc_files").iterdir())) == 2


def test_missing_tables_are_named(tmp_path):
    with pytest.raises(InputError, match="metrics.parquet"):
        write_qc_report(tmp_path, tmp_path / "qc.html")
    assert not (tmp_path / "qc.html").exists()


def test_headless_chromium_renders_the_page(study, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed: apt-get install chromium (or bash scripts/install-chromium.sh)")
    # Its own profile, so that a browser of another test run or of the user is never in the way.
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}"]
    url = study["page"].resolve().as_uri()
    screenshot = tmp_path / "page.png"
    shot = subprocess.run([*command, f"--screenshot={screenshot}", "--window-size=1200,2000", url],
                          capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0, shot.stderr[-2000:]
    pixels = imread(screenshot)[..., :3]
    assert pixels.shape[:2] == (2000, 1200) and pixels.std() > 0.05
    assert contour_pixels(screenshot) > 20  # the first picture loaded through its relative link
    dom = subprocess.run([*command, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for subject in ("sub-01", "sub-02", "sub-03"):
        assert f'<section id="{subject}">' in dom.stdout
