"""The Snakemake workflow itself: lint, dry runs, the demo end to end, and bad inputs in a cohort.

Each test runs Snakemake in a fresh copy of the workflow files, as a user's clone would.
"""

from __future__ import annotations

import difflib
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import duckdb
import nibabel as nib
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import MNI_BRAIN, MNI_T1_2MM, brain_points_mm

from voxelprompt.study import demo
from voxelprompt.evaluation.summary import EVALUATION_PAGE, page_quote, quoted_in_page
from voxelprompt.core.packaged_data import package_file
from voxelprompt.core.io import load_volume, save_volume
from voxelprompt.model import SHIPPED_MODEL
from voxelprompt.model.joint import VoxelPromptModel
from voxelprompt.study.report import read_provenance
from voxelprompt.imaging.register import mean_displacement_mm
from voxelprompt.core.volume import Volume

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "rules", "config", "workflow", "profiles")


def _fresh_copy(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, folder / name)
    return folder


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return _fresh_copy(tmp_path)


def bids_errors(dataset: Path) -> list[str]:
    """The official validator's errors on a dataset, one line each (code, field, file)."""
    validator = shutil.which("bids-validator-deno", path=os.path.dirname(sys.executable))
    result = subprocess.run([validator, "--json", str(dataset)], capture_output=True, text=True, timeout=600)
    issues = json.loads(result.stdout)["issues"]["issues"]
    errors = [f"{i['code']} {i.get('subCode') or ''} {i.get('location') or ''}" for i in issues if i["severity"] == "error"]
    assert errors or result.returncode == 0, result.stderr[-2000:]
    return errors


def snakemake(workdir: Path, *args: str, timeout_s: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_lint_reports_nothing_but_the_software_environment_note(workdir):
    """Rules run the package's CLI with the interpreter that runs Snakemake (docs/development.md,
    "Software environment"), so the one recommendation left is to name a conda env or container per rule."""
    result = snakemake(workdir, "--lint")
    assert "Lints for rule" in result.stdout + result.stderr, result.stderr  # lint ran (exit 1 = has notes)
    lints = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip().startswith("* ")]
    assert lints, "expected the conda/container recommendation, got no lint output at all"
    assert all("conda environment or container" in lint for lint in lints), lints


def test_dry_run_of_the_demo_plans_every_subject(workdir):
    """Image processing is planned once each subject's images have passed their check (a checkpoint),
    so a dry run shows the checks, one agent job per subject and the study's outputs."""
    result = snakemake(workdir, "-n", "--cores", "2")
    assert result.returncode == 0, result.stderr
    counts = _job_counts(result.stdout + result.stderr)
    assert counts == {"make_demo": 1, "check_subject": 3, "answer": 3, "gather": 1, "qc_report": 1,
                      "describe_derivatives": 1, "all": 1, "total": 11}


@pytest.mark.parametrize("rule, image", [
    ("coregister", "subject_path=sub-01/ses-01,datatype=anat,entities=sub-01_ses-01,suffix=FLAIR"),
    ("preprocess_reference", "subject_path=sub-01/ses-01,datatype=anat,entities=sub-01_ses-01,suffix=T1w"),
])
def test_a_cluster_job_finds_exactly_its_own_rule(workdir, rule, image):
    """A SLURM job runs Snakemake again on the node for its one job (`--mode remote`), which resolves
    its outputs without the DAG that chose the rule: only one rule may match them. A rule that
    declined other images by an input no rule makes still matched their files there
    (AmbiguousRuleException for every co-registration of the demo under SLURM)."""
    result = snakemake(workdir, "-n", "--target-jobs", f"{rule}:{image}", "--allowed-rules", rule, "--force",
                       "--cores", "1", "--mode", "remote", "--nolock", "--ignore-incomplete")
    assert result.returncode == 0 and "Ambiguous" not in result.stdout + result.stderr, result.stderr[-2000:]
    assert _job_counts(result.stdout + result.stderr)[rule] == 1


def test_dry_run_of_a_samples_table(workdir):
    result = snakemake(workdir, "-n", "--cores", "2", "--config", "input={kind: samples, path: config/samples.tsv}")
    assert result.returncode == 0, result.stderr
    counts = _job_counts(result.stdout + result.stderr)
    subjects = pd.read_csv(workdir / "config/samples.tsv", sep="\t", dtype=str)["subject"].nunique()
    assert counts["check_subject"] == subjects and counts["answer"] == subjects and "make_demo" not in counts


def test_an_invalid_config_is_refused_naming_the_key(workdir):
    result = snakemake(workdir, "-n", "--config", "input={kind: dicom, path: x}")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "dicom" in output and "kind" in output


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:  # about eight minutes on 2 cores: its tests are marked slow
    """The README's first command, once, in a fresh folder; or, when VOXELPROMPT_DEMO_RUN names the
    folder of a finished run of it (CI runs the README's command itself), that run."""
    if os.environ.get("VOXELPROMPT_DEMO_RUN"):
        finished = Path(os.environ["VOXELPROMPT_DEMO_RUN"])
        assert (finished / "results/responses.parquet").is_file(), f"{finished}: no finished demo run"
        return finished
    workdir = _fresh_copy(tmp_path_factory.mktemp("demo"))
    result = snakemake(workdir, "--cores", "2", timeout_s=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.mark.slow
def test_demo_preprocesses_and_coregisters_every_image(demo_run):
    workdir = demo_run
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
    assert not [p for folder in ("results", "logs") for p in (workdir / folder).rglob("*.tmp*")], "temporary files left"
    assert (workdir / "logs/benchmarks/preprocess").is_dir()
    assert bids_errors(results) == []  # two T1w of one session (acq-lowres) included

    # sub-01's second session is the first one moved by known motions: check the answer.
    error = _demo_error_mm(workdir, subject="01", session="02", modality="T1w")
    assert error < 0.5


@pytest.mark.slow
def test_demo_tables_hold_a_row_per_subject_and_prompt(demo_run):
    results = demo_run / "results"
    prompts = pd.read_csv(demo_run / "config/prompts.csv", dtype=str, keep_default_na=False)
    responses = pd.read_parquet(results / "responses.parquet")
    expected = {(s, p.prompt_id) for p in prompts.itertuples() for s in demo.samples()["subject"].unique()
                if not p.subjects or s in p.subjects.split(";")}
    assert set(zip(responses["subject"], responses["prompt_id"])) == expected and len(responses) == len(expected)
    assert set(responses["status"]) <= {"ok", "error"}
    assert (responses.loc[responses["status"] == "error", "error"] != "").all()
    assert (responses["model_id"].str.startswith("voxelprompt-cpu@")).all()
    # duckdb reads the same tables, and they join on their keys
    joined = duckdb.sql(f"SELECT count(*) FROM read_parquet('{results / 'metrics.parquet'}') m JOIN "
                        f"read_parquet('{results / 'responses.parquet'}') r USING (subject, session, prompt_id)").fetchall()
    assert joined[0][0] == len(pd.read_parquet(results / "metrics.parquet"))
    provenance = read_provenance(results / "responses.parquet")
    assert provenance["model_sha256"] == hashlib.sha256((SHIPPED_MODEL / "model.safetensors").read_bytes()).hexdigest()
    assert len(provenance["config_sha256"]) == 64


def test_masks_go_back_onto_every_input_image_and_match_the_table(small_run, monkeypatch, tmp_path):
    """The subject job with an agent that outputs a known box on the subject grid: the box lands on
    each input image's own grid (here two sessions, rigidly moved), with its volume kept, its row in
    the masks table and a sidecar naming the image."""
    from voxelprompt.study import answer, inputs
    from voxelprompt.model.agent import Result
    from voxelprompt.study.paths import DerivativePaths
    from voxelprompt.study.prompts import load_prompts

    class BoxAgent:
        box_mm3 = 0.0

        def __init__(self, model):
            pass

        def run(self, prompt, scans, cache=None):
            box = np.zeros(scans[0].volume.shape, np.uint8)
            centre = np.asarray(box.shape) // 2
            box[tuple(slice(c - 8, c + 8) for c in centre)] = 1
            BoxAgent.box_mm3 = int(box.sum()) * scans[0].volume.voxel_volume_mm3
            return Result(prompt, steps=["stop()"], outputs={"a box": scans[0].volume.with_array(box)}, ok=True)

    monkeypatch.setattr(answer, "load_agent", lambda model_dir, device, threads: BoxAgent(None))
    # In a copy of the study's outputs: the small run stays as the workflow left it, for the others.
    shutil.copytree(small_run / "results", tmp_path / "results")
    shutil.copytree(small_run / "config", tmp_path / "config")
    monkeypatch.chdir(tmp_path)
    table = next(arg for arg in small_run.arguments if arg.startswith("input=")).split("path: ")[1].rstrip("}")
    prompts = [p for p in load_prompts("config/prompts.csv") if p.prompt_id == "ventricles"]
    prompts[0] = type(prompts[0])(prompts[0].prompt_id, prompts[0].prompt, (), ())  # both sessions' images
    part = answer.answer_subject("small", inputs.load("samples", table), prompts, SHIPPED_MODEL,
                                 DerivativePaths("results"), tmp_path / "part")
    masks = pd.read_parquet(part / "masks.parquet")
    assert len(masks) == 2 and set(masks["output"]) == {"a box"}
    for row in masks.itertuples():
        mask, image = nib.load(row.path), nib.load(row.image)
        assert mask.shape == image.shape[:3]
        np.testing.assert_allclose(mask.affine, image.affine, atol=1e-4)
        voxels = int(np.count_nonzero(np.asarray(mask.dataobj)))
        assert voxels == row.voxels and row.volume_mm3 == pytest.approx(BoxAgent.box_mm3, rel=0.05)
        sidecar = json.loads(Path(row.path.replace(".nii.gz", ".json")).read_text())
        assert sidecar["SpatialReference"] == Path(row.image).resolve().as_uri() and sidecar["Type"] == "ROI"
        assert "_label-ABox_desc-Ventricles_mask.nii.gz" in row.path
    assert bids_errors(tmp_path / "results") == []


@pytest.mark.slow
def test_demo_qc_report_shows_every_subject(demo_run):
    page = (demo_run / "results/qc/report.html").read_text()
    for subject in demo.samples()["subject"].unique():
        assert f'id="sub-{subject}"' in page
    pictures = [demo_run / "results/qc" / src for src in re.findall(r'<img src="([^"]+)"', page)]
    assert pictures and all(p.is_file() for p in pictures)


def test_a_second_run_has_nothing_to_do(small_run):
    result = snakemake(small_run, "-n", "--cores", "2", *small_run.arguments)
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


# --- a small study, with bad images, whole and interrupted ---------------------------------------------

SMALL_PROMPTS = ("prompt_id,prompt,inputs,subjects\n"
                 "brain-volume,How voluminous is the left and right hippocampus?,@first,\n"
                 "ventricles,Segment the left and right lateral ventricle,T1w@first,\n")


def _small_study(workdir: Path, folder: Path) -> list[str]:
    """The cheapest whole study: one good subject with two sessions of a 2 mm T1w, one with a corrupt
    file, one with a missing file, a row with an unsafe label, and two prompts. Returns the --config
    arguments that select it."""
    good = load_volume(package_file(*MNI_T1_2MM))
    save_volume(good, folder / "t1_ses1.nii.gz")
    save_volume(Volume(good.array, demo.random_rigid_ras(3, 8, 8) @ good.affine), folder / "t1_ses2.nii.gz")
    (folder / "corrupt.nii.gz").write_bytes(gzip.compress(b"not an image at all")[:20])
    rows = [("small", "1", folder / "t1_ses1.nii.gz"), ("small", "2", folder / "t1_ses2.nii.gz"),
            ("broken", "1", folder / "corrupt.nii.gz"), ("absent", "1", folder / "no_such_scan.nii.gz"),
            ("../escape", "1", folder / "t1_ses1.nii.gz")]
    table = folder / "study.tsv"
    table.write_text("subject\tsession\tmodality\tpath\n" + "".join(f"{s}\t{n}\tT1w\t{p}\n" for s, n, p in rows))
    (workdir / "config/prompts.csv").write_text(SMALL_PROMPTS)
    return ["--config", f"input={{kind: samples, path: {table}}}"]


class _Run(type(Path())):
    arguments: list[str] = []
    output = ""


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """The whole workflow on the small study, once: its outputs are checked and compared with."""
    workdir = _Run(_fresh_copy(tmp_path_factory.mktemp("small")))
    workdir.arguments = _small_study(workdir, tmp_path_factory.mktemp("small_data"))
    result = snakemake(workdir, "--cores", "2", *workdir.arguments)
    assert result.returncode == 0, result.stderr[-3000:]  # bad images never stop the study
    workdir.output = result.stdout + result.stderr
    return workdir


def test_bad_images_are_error_rows_and_the_rest_of_the_study_completes(small_run):
    results = small_run / "results"
    assert (results / "sub-small/ses-2/anat/sub-small_ses-2_space-subject_desc-preproc_T1w.nii.gz").is_file()
    assert not (results / "sub-broken").exists() and not (results / "sub-absent").exists()
    responses = pd.read_parquet(results / "responses.parquet").set_index("subject")
    assert set(responses.index) == {"small", "broken", "absent"}
    assert (responses.loc[["broken", "absent"], "status"] == "error").all()
    assert responses.loc["broken", "error"].str.contains("corrupt.nii.gz: cannot be read").all()
    assert responses.loc["absent", "error"].str.contains("no_such_scan.nii.gz: file does not exist").all()
    assert "skipped" in small_run.output and "../escape" in small_run.output
    assert not list(small_run.rglob("*.tmp*"))


def test_small_study_tables_read_back_with_pandas_and_duckdb(small_run):
    results = small_run / "results"
    responses = pd.read_parquet(results / "responses.parquet").query("subject == 'small'")
    assert list(responses["prompt_id"]) == ["brain-volume", "ventricles"]
    assert (responses["session"] == "1").all() and (responses["steps"] > 0).all()
    assert set(responses["status"]) <= {"ok", "error"} and (responses.loc[responses["status"] == "error", "error"] != "").all()
    assert (responses["model_id"].str.startswith("voxelprompt-cpu@")).all()
    metrics = pd.read_parquet(results / "metrics.parquet")
    joined = duckdb.sql(f"SELECT count(*) FROM read_parquet('{results / 'metrics.parquet'}') m JOIN "
                        f"read_parquet('{results / 'responses.parquet'}') r USING (subject, session, prompt_id)").fetchall()
    assert joined[0][0] == len(metrics)
    provenance = read_provenance(results / "responses.parquet")
    assert provenance["model_sha256"] == hashlib.sha256((SHIPPED_MODEL / "model.safetensors").read_bytes()).hexdigest()
    assert len(provenance["config_sha256"]) == 64
    page = (results / "qc/report.html").read_text()
    assert 'id="sub-small"' in page
    pictures = [results / "qc" / src for src in re.findall(r'<img src="([^"]+)"', page)]
    assert all(p.is_file() for p in pictures)
    description = json.loads((results / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and "/work" in (results / ".bidsignore").read_text()


def test_small_study_outputs_are_a_valid_bids_derivative_dataset(small_run):
    results = small_run / "results"
    assert bids_errors(results) == []
    anat = results / "sub-small/ses-2/anat"
    coregistered = json.loads((anat / "sub-small_ses-2_space-subject_desc-preproc_T1w.json").read_text())
    assert coregistered["SpatialReference"] == "bids::sub-small/ses-1/anat/sub-small_ses-1_desc-preproc_T1w.nii.gz"
    assert json.loads((anat / "sub-small_ses-2_desc-preproc_T1w.json").read_text())["SkullStripped"] is False


def test_snakemake_report_packs_the_run_report_with_the_qc_page(small_run, tmp_path):
    archive = tmp_path / "report.zip"
    result = snakemake(small_run, "--report", str(archive), *small_run.arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    with zipfile.ZipFile(archive) as packed:
        names = packed.namelist()
        assert "report/report.html" in names
        qc_page = next(name for name in names if name.startswith("report/data/") and name.endswith("/report.html"))
        assert 'id="sub-small"' in packed.read(qc_page).decode()


def _kill_when(process: subprocess.Popen, ready, timeout_s: float = 900) -> None:
    started = time.monotonic()
    while not ready():
        assert process.poll() is None, "the workflow ended before it could be interrupted"
        assert time.monotonic() - started < timeout_s, "the workflow never reached the point to interrupt"
        time.sleep(0.2)


def _answer_job_pids() -> list[int]:
    found = subprocess.run(["pgrep", "-f", "voxelprompt answer --subject small"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def _same_study_outputs(run: Path, reference: Path) -> None:
    """Tables equal but for run times; every derivative file present in both and equal in content."""
    for name in ("metrics", "responses", "masks"):
        ours, theirs = (pd.read_parquet(folder / f"results/{name}.parquet") for folder in (run, reference))
        pd.testing.assert_frame_equal(ours.drop(columns=["seconds"], errors="ignore"),
                                      theirs.drop(columns=["seconds"], errors="ignore"))
    files = {p.relative_to(run) for p in (run / "results").rglob("*.nii.gz")}
    assert files == {p.relative_to(reference) for p in (reference / "results").rglob("*.nii.gz")}
    for name in files:
        np.testing.assert_array_equal(np.asarray(nib.load(run / name).dataobj), np.asarray(nib.load(reference / name).dataobj))
    assert not list(run.rglob("*.tmp*")), "a temporary file survived"


def _same_study_as(run: Path, folder: Path) -> tuple[Path, list[str]]:
    """A fresh copy of the workflow set up for the study `run` ran (same images, prompts and config)."""
    workdir = _fresh_copy(folder)
    shutil.copy(run / "config/prompts.csv", workdir / "config/prompts.csv")
    return workdir, run.arguments


@pytest.mark.slow
def test_a_workflow_killed_mid_run_resumes_to_the_same_outputs(small_run, tmp_path):
    workdir, arguments = _same_study_as(small_run, tmp_path / "run")
    process = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", *arguments], cwd=workdir,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _kill_when(process, lambda: bool(_answer_job_pids()))
    os.killpg(process.pid, signal.SIGKILL)  # Snakemake and every job it started, mid-answer
    process.wait()
    assert snakemake(workdir, "--unlock").returncode == 0  # a killed run leaves its lock behind
    result = snakemake(workdir, "--cores", "2", *arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    _same_study_outputs(workdir, small_run)


@pytest.mark.slow
def test_a_killed_job_fails_alone_and_a_rerun_completes(small_run, tmp_path):
    workdir, arguments = _same_study_as(small_run, tmp_path / "run")
    process = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", *arguments], cwd=workdir,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    _kill_when(process, lambda: bool(_answer_job_pids()))
    for pid in _answer_job_pids():
        os.kill(pid, signal.SIGKILL)
    output, _ = process.communicate(timeout=900)
    assert process.returncode != 0 and "answer" in output
    assert not (workdir / "results/responses.parquet").exists(), "tables were gathered without the subject"
    result = snakemake(workdir, "--cores", "2", *arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    _same_study_outputs(workdir, small_run)


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


# --- the train and evaluate targets ----------------------------------------------------------------

TINY_TRAINING = ("preset: test, tokenizer_episodes: 100, vocab_size: 512, validate_every: 2, validation_text: 4,"
                 " validation_imaged: 1, crop_voxels: '24,24,24', spacing_mm: 4, episodes_per_subject: 2, text_batch: 2")


def _training(steps: int) -> str:
    return (f"training={{run: runs/tiny, model: models/tiny, settings: {{{TINY_TRAINING}}}, stages: "
            f"{{agent: {{steps: 2, text_batch: 2, validate_every: 2, validation_programs: 1}}, "
            f"vision: {{steps: 2, targets_per_step: 2, validate_every: 2, validation_real_scans: 0}}, "
            f"joint: {{steps: {steps}}}}}}}")


def test_train_and_evaluate_are_separate_targets(workdir):
    study = snakemake(workdir, "-n")
    assert "train" not in _job_counts(study.stdout) and "evaluate" not in _job_counts(study.stdout)
    training = snakemake(workdir, "-n", "-p", "train")
    assert _job_counts(training.stdout) == {"train_stage": 3, "train": 1, "total": 4}
    # the agent stage first, from the shipped model; each later stage from what the one before exported
    agent, vision, joint = (next(line for line in training.stdout.splitlines() if f"train --stage {stage}" in line)
                            for stage in ("agent", "vision", "joint"))
    assert "--out runs/voxelprompt/agent --preset cpu" in agent and "--init" not in agent
    assert "--export runs/voxelprompt/exported/agent" in agent
    assert "--init runs/voxelprompt/exported/agent" in vision and "--targets-per-step 32" in vision
    assert "--init runs/voxelprompt/exported/vision" in joint and "--export runs/voxelprompt/exported/joint" in joint
    assert "export-model --model runs/voxelprompt/exported/joint --out models/voxelprompt" in training.stdout
    evaluation = snakemake(workdir, "-n", "-p", "evaluate", "--config",
                           "evaluation={settings: {per_task: 1, real_scan: false}}")
    assert _job_counts(evaluation.stdout) == {"evaluate": 1, "total": 1}
    command = next(line for line in evaluation.stdout.splitlines() if "evaluate-model" in line)
    assert f"--model {SHIPPED_MODEL} " in command
    assert all(option in command for option in ("--per-task 1 ", "--steps 15 ", "--no-real-scan ", "--out-dir results/evaluation"))
    # evaluating the trained model plans its training first
    chained = snakemake(workdir, "-n", "evaluate", "--config", "evaluation={model: models/voxelprompt}")
    assert _job_counts(chained.stdout) == {"evaluate": 1, "train_stage": 3, "train": 1, "total": 5}


def test_an_unknown_training_option_is_refused_by_the_schema(workdir):
    result = snakemake(workdir, "-n", "train", "--config", "training={settings: {out: elsewhere}}")
    assert result.returncode != 0 and "'out'" in result.stdout + result.stderr
    result = snakemake(workdir, "-n", "train", "--config", "training={stages: {segment: {}}}")
    assert result.returncode != 0 and "'segment'" in result.stdout + result.stderr


@pytest.mark.slow  # two trainings through Snakemake; resuming itself is test_training.py::test_train_resumes
def test_train_exports_a_model_and_running_it_again_resumes_the_run(workdir):
    first = snakemake(workdir, "train", "--cores", "2", "--config", _training(2))
    assert first.returncode == 0, first.stderr[-3000:]
    exported = VoxelPromptModel.from_pretrained(workdir / "models/tiny")
    assert exported.config.preset == "test"
    assert list(pd.read_csv(workdir / "runs/tiny/agent/log.csv")["step"]) == [1, 2]
    assert list(pd.read_csv(workdir / "runs/tiny/vision/log.csv")["step"]) == [1, 2]
    # More steps: Snakemake reruns the joint stage (its options changed), which continues from step 2.
    second = snakemake(workdir, "train", "--cores", "2", "--config", _training(3))
    assert second.returncode == 0, second.stderr[-3000:]
    log = pd.read_csv(workdir / "runs/tiny/joint/log.csv")
    assert list(log["step"]) == [1, 2, 3]
    assert (workdir / "models/tiny/model.safetensors").is_file()


@pytest.fixture(scope="module")
def evaluation_run(tmp_path_factory) -> Path:
    """`snakemake evaluate` in its reduced setting (config/config.yaml; about 20 minutes on 2 cores),
    once in a fresh folder; or, when VOXELPROMPT_EVALUATION_RUN names the folder of a finished run of
    it (CI runs it itself, as the README says), that run."""
    if os.environ.get("VOXELPROMPT_EVALUATION_RUN"):
        finished = Path(os.environ["VOXELPROMPT_EVALUATION_RUN"])
        assert (finished / "results/evaluation/summary.md").is_file(), f"{finished}: no finished evaluation"
        return finished
    workdir = _fresh_copy(tmp_path_factory.mktemp("evaluation"))
    result = snakemake(workdir, "evaluate", "--cores", "2", timeout_s=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.mark.slow
def test_snakemake_evaluate_reproduces_every_number_of_the_evaluation_page(evaluation_run):
    summary = (evaluation_run / "results/evaluation/summary.md").read_text()
    quoted = quoted_in_page((REPO / EVALUATION_PAGE).read_text())
    assert quoted, f"{EVALUATION_PAGE} has no quote of the evaluation summary"
    difference = "\n".join(difflib.unified_diff(quoted.splitlines(), page_quote(summary).splitlines(), EVALUATION_PAGE,
                                                 "results/evaluation/summary.md", lineterm=""))
    assert not difference, (f"the evaluation numbers of {EVALUATION_PAGE} are not what `snakemake evaluate` gives "
                            "(scripts/quote-evaluation.py updates them):\n" + difference)


@pytest.mark.slow
def test_snakemake_evaluate_writes_the_tables_and_figures_of_the_protocol(evaluation_run):
    folder = evaluation_run / "results/evaluation"
    for name in ("cohort", "segmentation", "segmentation_tests", "characterisation", "characterisation_tests",
                 "examples", "metrics"):
        table = pq.read_table(folder / f"{name}.parquet")
        assert table.num_rows > 0, name
        document = json.loads(table.schema.metadata[b"voxelprompt"])
        assert document["provenance"]["model_sha256"] and document["settings"]["steps"] == 15
    segmentation = pd.read_parquet(folder / "segmentation.parquet")
    assert set(segmentation["method"]) == {"VoxelPrompt", "instructable network", "single-task network", "registration"}
    assert set(segmentation["set"]) == {"held-out synthetic", "real scan (fsaverage T1w)"}
    assert len(set(segmentation["target"])) >= 10
    for figure in ("segmentation.png", "characterisation.png"):
        assert (folder / figure).read_bytes().startswith(b"\x89PNG")


# --- a hostile study ---------------------------------------------------------------------------------

def _nifti_bytes(array: np.ndarray, affine: np.ndarray | None = np.eye(4)) -> bytes:
    image = nib.Nifti1Image(array, affine)
    return image.header.binaryblock + b"\0" * 4 + np.asarray(array, image.get_data_dtype()).tobytes(order="F")


def _hostile_images(folder: Path) -> dict[str, Path]:
    """One image of every kind of bad input the check refuses, by subject label."""
    ones = np.random.default_rng(0).random((12, 12, 12)).astype(np.float32) + 1
    made: dict[str, Path] = {}

    def nifti(name: str, array, affine=np.eye(4), header=None) -> None:
        made[name] = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(array, affine, header=header), made[name])

    nifti("flat", ones[:, :, 0])
    nifti("series", np.stack([ones, ones], axis=-1))
    nifti("nan", np.where(ones > 1.5, np.nan, ones).astype(np.float32))
    nifti("constant", np.full((12, 12, 12), 7.0, np.float32))
    singular = nib.Nifti1Header()  # the sform written directly: nibabel cannot make a qform of it
    singular.set_data_shape(ones.shape)
    singular.set_data_dtype(np.float32)
    singular["srow_x"], singular["srow_y"], singular["srow_z"] = [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]
    singular["sform_code"] = 1
    nifti("singular", ones, None, singular)
    nifti("absurd", ones, np.diag([1000.0, 1000.0, 1000.0, 1.0]))
    unknown = nib.Nifti1Header()
    unknown.set_data_shape(ones.shape)
    unknown.set_data_dtype(np.float32)
    nifti("unknown", ones, None, unknown)
    mirrored = nib.Nifti1Image(ones, np.eye(4))
    mirrored.set_qform(np.diag([-1.0, 1.0, 1.0, 1.0]), code=1)
    made["mirrored"] = folder / "mirrored.nii.gz"
    nib.save(mirrored, made["mirrored"])
    whole = gzip.compress(_nifti_bytes(ones))
    made["truncated"] = folder / "truncated.nii.gz"
    made["truncated"].write_bytes(whole[: len(whole) // 2])
    made["notgzip"] = folder / "notgzip.nii.gz"
    made["notgzip"].write_bytes(_nifti_bytes(ones))
    short = bytearray(_nifti_bytes(ones))  # the header declares 24^3 voxels, the data hold 12^3
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(bytes(short[:352])))
    header.set_data_shape((24, 24, 24))
    made["shortdata"] = folder / "shortdata.nii.gz"
    made["shortdata"].write_bytes(gzip.compress(header.binaryblock + bytes(short[348:])))
    made["loop"] = folder / "loop.nii.gz"
    (folder / "loop2.nii.gz").symlink_to(made["loop"])
    made["loop"].symlink_to(folder / "loop2.nii.gz")
    # A gzip bomb: 2048 x 2048 x 768 float32 declared (12 GiB), a stream of zeros under 1 MB on disk.
    bomb = nib.Nifti1Header()
    bomb.set_data_shape((2048, 2048, 768))
    bomb.set_data_dtype(np.float32)
    bomb.set_sform(np.eye(4), code=1)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    made["bomb"] = folder / "bomb.nii.gz"
    with made["bomb"].open("wb") as handle:
        handle.write(compressor.compress(bomb.binaryblock + b"\0" * 4))
        for _ in range(64):
            handle.write(compressor.compress(bytes(2**20)))
        handle.write(compressor.flush())
    return made


# How the README names each kind of bad image the hostile study tests.
README_KINDS = {
    "flat": "a 2D image", "series": "a 4D series", "nan": "NaN or Inf voxels",
    "constant": "a constant image", "singular": "a singular affine",
    "absurd": "voxel sizes outside 0.05–20 mm", "unknown": "qform and sform codes both 0",
    "mirrored": "mirror images", "truncated": "a truncated gzip",
    "notgzip": "that is not gzip", "shortdata": "more voxels than\n  the file holds",
    "loop": "a symlink loop", "bomb": "a gzip bomb",
}


def test_the_readme_lists_every_kind_of_bad_image_the_hostile_study_tests(tmp_path):
    readme = (REPO / "README.md").read_text()
    paragraph = readme[readme.index("### Bad input never stops a study"):]
    paragraph = paragraph[: paragraph.index("\n## ")]
    assert set(README_KINDS) == set(_hostile_images(tmp_path))
    assert [kind for kind, words in README_KINDS.items() if words not in paragraph] == []


@pytest.mark.slow
def test_a_hostile_study_gives_an_error_row_per_bad_subject_and_every_table(tmp_path_factory):
    """Two good subjects next to thirteen subjects each with one kind of bad image (2D, 4D, NaN,
    constant, singular affine, absurd voxel size, unknown orientation, mirrored qform and sform,
    truncated gzip, not gzip, a header declaring more voxels than the data hold, a symlink loop and
    a gzip bomb): the good ones complete; every bad one has error rows naming its file; the tables and
    the QC page are written; nothing half-written is left; no job's peak memory passes its mem_mb."""
    workdir = _fresh_copy(tmp_path_factory.mktemp("hostile"))
    folder = tmp_path_factory.mktemp("hostile_data")
    bad = _hostile_images(folder)
    good = load_volume(package_file(*MNI_T1_2MM))
    rows = []
    for name in ("good1", "good2"):
        save_volume(good, folder / f"{name}.nii.gz")
        rows.append((name, folder / f"{name}.nii.gz"))
    rows += list(bad.items())
    table = folder / "study.tsv"
    table.write_text("subject\tsession\tmodality\tpath\n" + "".join(f"{s}\t1\tT1w\t{p}\n" for s, p in rows))
    (workdir / "config/prompts.csv").write_text(SMALL_PROMPTS)
    result = snakemake(workdir, "--cores", "2", "--config", f"input={{kind: samples, path: {table}}}", timeout_s=1200)
    assert result.returncode == 0, result.stderr[-3000:]

    results = workdir / "results"
    for name in ("good1", "good2"):
        assert (results / f"sub-{name}/ses-1/anat/sub-{name}_ses-1_space-subject_desc-preproc_T1w.nii.gz").is_file()
    responses = pd.read_parquet(results / "responses.parquet")
    assert set(responses["subject"]) == {"good1", "good2", *bad}
    for name, path in bad.items():
        errors = responses.loc[responses["subject"] == name]
        assert len(errors) and (errors["status"] == "error").all(), name
        assert errors["error"].str.contains(path.name, regex=False).all(), (name, errors["error"].iloc[0])
    counted = duckdb.sql(f"select count(distinct subject) from '{results / 'responses.parquet'}'").fetchall()[0][0]
    assert counted == 2 + len(bad)
    for table_name in ("metrics", "masks"):  # written, and readable, whatever the model answered
        assert "subject" in pq.read_schema(results / f"{table_name}.parquet").names
    assert (results / "qc/report.html").is_file()
    assert not list(workdir.rglob("*.tmp*"))

    limits = {stage: values["mem_mb"] for stage, values in
              yaml.safe_load((workdir / "config/config.yaml").read_text())["resources"].items()}
    peaks = []
    root = workdir / "logs/benchmarks"
    for benchmark in root.rglob("*.tsv"):
        stage = benchmark.relative_to(root).parts[0].removesuffix(".tsv")
        row = pd.read_csv(benchmark, sep="\t").iloc[0]
        peak = pd.to_numeric(row["max_rss"], errors="coerce")
        assert not (peak >= limits[stage]), (benchmark, peak, limits[stage])
        peaks.append((stage, peak))
    assert {"check_subject", "preprocess", "answer", "gather", "qc_report"} <= {stage for stage, _ in peaks}
    assert sum(1 for _, peak in peaks if peak == peak) >= len(peaks) // 2  # most jobs report a peak


@pytest.mark.slow
def test_a_lab_that_accepts_unknown_orientation_gets_answers_with_a_warning(tmp_path_factory):
    """`input.accept_unknown_orientation`: an image whose qform and sform codes are both 0 (refused
    by default, as the hostile study shows) is processed, and every responses row of its subject
    carries a warning naming the file."""
    workdir = _fresh_copy(tmp_path_factory.mktemp("orientation"))
    folder = tmp_path_factory.mktemp("orientation_data")
    good = load_volume(package_file(*MNI_T1_2MM))
    header = nib.Nifti1Header()
    header.set_data_shape(good.shape)
    header.set_data_dtype(np.float32)
    header.set_zooms((2.0, 2.0, 2.0))
    path = folder / "unknown.nii.gz"
    nib.save(nib.Nifti1Image(good.array, None, header=header), path)
    assert nib.load(path).header["qform_code"] == 0 and nib.load(path).header["sform_code"] == 0
    table = folder / "study.tsv"
    table.write_text(f"subject\tsession\tmodality\tpath\nlab\t1\tT1w\t{path}\n")
    (workdir / "config/prompts.csv").write_text(SMALL_PROMPTS)
    study = folder / "study.yaml"  # a file: --config would pass `true` as a string
    study.write_text(yaml.safe_dump({"input": {"kind": "samples", "path": str(table),
                                               "accept_unknown_orientation": True}}))
    result = snakemake(workdir, "--cores", "2", "--configfile", "config/config.yaml", str(study), timeout_s=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    results = workdir / "results"
    assert (results / "sub-lab/ses-1/anat/sub-lab_ses-1_space-subject_desc-preproc_T1w.nii.gz").is_file()
    responses = pd.read_parquet(results / "responses.parquet")
    assert len(responses) == 2 and not responses["error"].str.contains("orientation").any()
    assert responses["warning"].str.contains(f"{path}: orientation unknown", regex=False).all()
