"""The Snakemake workflow itself: lint, dry runs, the demo end to end, and bad inputs in a cohort.

Each test runs Snakemake in a fresh copy of the workflow files, as a user's clone would.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import MNI_BRAIN, MNI_T1_2MM, brain_points_mm

from voxelprompt import demo
from voxelprompt.packaged_data import package_file
from voxelprompt.io import load_volume, save_volume
from voxelprompt.register import mean_displacement_mm
from voxelprompt.volume import Volume

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "rules", "config", "workflow", "profiles")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    for name in WORKFLOW_FILES:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    return tmp_path


def snakemake(workdir: Path, *args: str, timeout_s: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_lint_reports_nothing_but_the_software_environment_note(workdir):
    """Rules run the package's CLI with the interpreter that runs Snakemake (README, "Software
    environment"), so the one recommendation left is to name a conda env or container per rule."""
    result = snakemake(workdir, "--lint")
    assert "Lints for rule" in result.stdout + result.stderr, result.stderr  # lint ran (exit 1 = has notes)
    lints = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip().startswith("* ")]
    assert lints, "expected the conda/container recommendation, got no lint output at all"
    assert all("conda environment or container" in lint for lint in lints), lints


def test_dry_run_of_the_demo_plans_every_image(workdir):
    result = snakemake(workdir, "-n", "--cores", "2")
    assert result.returncode == 0, result.stderr
    counts = _job_counts(result.stdout + result.stderr)
    assert counts == {"make_demo": 1, "preprocess": 7, "coregister": 7, "all": 1, "total": 16}


def test_dry_run_of_a_samples_table(workdir):
    result = snakemake(workdir, "-n", "--cores", "2", "--config", "input={kind: samples, path: config/samples.tsv}")
    assert result.returncode == 0, result.stderr
    counts = _job_counts(result.stdout + result.stderr)
    assert counts["preprocess"] == 5 and counts["coregister"] == 5 and "make_demo" not in counts


def test_an_invalid_config_is_refused_naming_the_key(workdir):
    result = snakemake(workdir, "-n", "--config", "input={kind: dicom, path: x}")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "dicom" in output and "kind" in output


def test_demo_runs_end_to_end(workdir):
    """The README's first command, in a fresh folder: every demo image preprocessed and co-registered."""
    result = snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]

    results = workdir / "results"
    for row in demo.samples().to_dict("records"):
        subject, session = row["subject"], row["session"]
        acq = f"_acq-{row['acq']}" if row["acq"] else ""
        stem = results / f"sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}{acq}"
        reference = results / f"sub-{subject}/ses-01/anat/sub-{subject}_ses-01_desc-preproc_T1w.nii.gz"
        preprocessed = nib.load(f"{stem}_desc-preproc_{row['modality']}.nii.gz")
        coregistered = nib.load(f"{stem}_space-subject_desc-preproc_{row['modality']}.nii.gz")
        assert nib.aff2axcodes(preprocessed.affine) == ("R", "A", "S")
        assert coregistered.shape == nib.load(reference).shape
        np.testing.assert_allclose(coregistered.affine, nib.load(reference).affine, atol=1e-4)
        transform = Path(f"{stem}_from-{row['modality']}_to-subject_mode-image_xfm.txt")
        assert transform.read_text().startswith("#Insight Transform File")
        assert json.loads(transform.with_suffix(".json").read_text())["iterations"] >= 0
    assert not list(workdir.rglob("*.tmp*")), "temporary files left behind"
    assert (workdir / "logs/benchmarks/preprocess").is_dir()

    # sub-01's second session is the first one moved by known motions: check the answer.
    error = _demo_error_mm(workdir, subject="01", session="02", modality="T1w")
    assert error < 0.5


def test_bad_images_fail_alone_and_the_rest_of_the_study_completes(workdir, tmp_path):
    """A corrupt file, a missing file and an unsafe label in one table: the good subject finishes."""
    good = load_volume(package_file(*MNI_T1_2MM))
    save_volume(good, tmp_path / "good_t1.nii.gz")
    save_volume(Volume(good.array, demo.random_rigid_ras(7, 10, 10) @ good.affine), tmp_path / "good_t1_ses2.nii.gz")
    (tmp_path / "corrupt.nii.gz").write_bytes(gzip.compress(b"not an image at all")[:20])
    rows = [
        ("good", "1", "T1w", tmp_path / "good_t1.nii.gz"),
        ("good", "2", "T1w", tmp_path / "good_t1_ses2.nii.gz"),
        ("broken", "1", "T1w", tmp_path / "corrupt.nii.gz"),
        ("absent", "1", "T1w", tmp_path / "no_such_scan.nii.gz"),
        ("../escape", "1", "T1w", tmp_path / "good_t1.nii.gz"),
    ]
    table = workdir / "study.tsv"
    table.write_text("subject\tsession\tmodality\tpath\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))

    result = snakemake(workdir, "--cores", "2", "--config", f"input={{kind: samples, path: {table}}}")
    output = result.stdout + result.stderr

    assert result.returncode != 0  # the study reports its failures...
    results = workdir / "results"
    assert (results / "sub-good/ses-2/anat/sub-good_ses-2_space-subject_desc-preproc_T1w.nii.gz").is_file()  # ...but ran
    assert not (results / "sub-broken").exists() and not (results / "sub-absent").exists()
    broken_log = (workdir / "logs/preprocess/sub-broken/ses-1/anat/sub-broken_ses-1_T1w.log").read_text()
    assert "corrupt.nii.gz" in broken_log and "cannot be read" in broken_log
    absent_log = (workdir / "logs/preprocess/sub-absent/ses-1/anat/sub-absent_ses-1_T1w.log").read_text()
    assert "no_such_scan.nii.gz: file does not exist" in absent_log
    assert "skipped" in output and "../escape" in output
    assert not list(workdir.rglob("*.tmp*"))


def _job_counts(text: str) -> dict[str, int]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats:"))
    counts = {}
    for line in lines[start + 3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def _demo_error_mm(workdir: Path, subject: str, session: str, modality: str) -> float:
    """Registration error against the demo's known motions, over the MNI brain."""
    entries = {(e["subject"], e["session"], e["modality"], e.get("acq", "")): e for e in demo.manifest()["images"]}

    def motion(entry):
        return demo.image_motion_ras(entry, load_volume(package_file(entry["package"], entry["file"])))

    reference_motion = motion(entries[(subject, "01", "T1w", "")])
    true = motion(entries[(subject, session, modality, "")]) @ np.linalg.inv(reference_motion)
    record = workdir / f"results/sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_from-{modality}_to-subject_mode-image_xfm.json"
    estimated = np.asarray(json.loads(record.read_text())["ras_matrix"])
    brain = load_volume(package_file(*MNI_BRAIN))
    points = brain_points_mm(brain) @ reference_motion[:3, :3].T + reference_motion[:3, 3]
    return mean_displacement_mm(points, estimated, true)
