"""The command line the rules call: clear errors on bad input, and nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxelprompt import __version__
from voxelprompt.cli.evaluation import CPU_KERNELS


def voxelprompt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxelprompt", *args], capture_output=True, text=True, timeout=300)


def _write(path, array, affine=None):
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return path


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: _write(p, np.full((20, 20, 20), np.nan, np.float32)), "voxels are NaN or Inf"),
        (lambda p: _write(p, np.ones((20, 20, 20, 3), np.float32)), "3 volumes"),
        (lambda p: _write(p, np.ones((20, 20), np.float32)), "is 2D"),
        (lambda p: p.write_bytes(b"\x1f\x8b\x08\x00garbage"), "cannot be read"),
        (lambda p: _write(p, np.ones((20, 20, 20), np.float32)), "constant"),
        (lambda p: _write(p, np.random.rand(20, 20, 20).astype(np.float32), np.diag([1e-3, 1e-3, 1e-3, 1])), "voxel size"),
    ],
    ids=["nan", "4d", "2d", "corrupt-gzip", "constant", "absurd-voxels"],
)
def test_preprocess_refuses_bad_input_with_the_file_named_and_writes_nothing(tmp_path, make, problem):
    image = tmp_path / "scan.nii.gz"
    make(image)
    out = tmp_path / "out"
    result = voxelprompt(
        "preprocess", "--image", str(image), "--modality", "T1w",
        "--out-image", str(out / "image.nii.gz"), "--out-mask", str(out / "mask.nii.gz"),
        "--out-record", str(out / "record.json"),
    )
    assert result.returncode == 1
    assert f"voxelprompt: error: {image}: " in result.stderr and problem in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_a_reference_images_preprocessing_writes_its_subject_space_derivatives(tmp_path, mni_t1_2mm):
    """A subject's reference image defines subject space: its preprocessing job writes what a
    co-registration to itself would, so no job aligns an image with itself."""
    from voxelprompt.core.io import read_json, save_volume
    from voxelprompt.imaging.register import read_transform, transform_to_ras_matrix

    image = save_volume(mni_t1_2mm, tmp_path / "sub-01_T1w.nii.gz")
    out = tmp_path / "results/sub-01/anat"
    result = voxelprompt(
        "preprocess", "--image", str(image), "--modality", "T1w", "--out-image", str(out / "image.nii.gz"),
        "--out-mask", str(out / "mask.nii.gz"), "--out-record", str(out / "record.json"),
        "--out-subject-image", str(out / "subject.nii.gz"), "--out-subject-image-sidecar", str(out / "subject.json"),
        "--out-transform", str(out / "xfm.txt"), "--out-registration-record", str(out / "xfm.json"))
    assert result.returncode == 0, result.stderr
    preprocessed, subject = nib.load(out / "image.nii.gz"), nib.load(out / "subject.nii.gz")
    np.testing.assert_array_equal(np.asarray(subject.dataobj), np.asarray(preprocessed.dataobj))
    np.testing.assert_array_equal(subject.affine, preprocessed.affine)
    np.testing.assert_allclose(transform_to_ras_matrix(read_transform(out / "xfm.txt")), np.eye(4), atol=1e-12)
    record = read_json(out / "xfm.json")
    assert record["stop_condition"] == "reference image (identity)" and record["transform"] == str(out / "xfm.txt")
    assert read_json(out / "subject.json")["SpatialReference"] == "bids::sub-01/anat/image.nii.gz"


def test_subject_space_outputs_come_all_together(tmp_path):
    out = tmp_path / "out"
    result = voxelprompt("preprocess", "--image", str(tmp_path / "scan.nii.gz"), "--modality", "T1w",
                         "--out-image", str(out / "image.nii.gz"), "--out-mask", str(out / "mask.nii.gz"),
                         "--out-record", str(out / "record.json"), "--out-subject-image", str(out / "subject.nii.gz"))
    assert result.returncode == 1
    assert "--out-transform" in result.stderr and "--out-registration-record" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_samples_lists_the_images_of_a_bids_dataset(tmp_path):
    dataset = tmp_path / "bids"
    (dataset / "sub-01/anat").mkdir(parents=True)
    (dataset / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.10.0"}')
    _write(dataset / "sub-01/anat/sub-01_T1w.nii.gz", np.random.rand(4, 4, 4).astype(np.float32))
    _write(dataset / "sub-01/anat/sub-01_acq-x_T2w.nii.gz", np.random.rand(4, 4, 4).astype(np.float32))
    result = voxelprompt("samples", "--bids", str(dataset))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split("\t")[:4] == ["subject", "session", "modality", "path"]
    assert [line.split("\t")[2] for line in lines[1:]] == ["T1w", "T2w"]


def test_samples_reports_a_missing_table_without_a_traceback(tmp_path):
    result = voxelprompt("samples", "--table", str(tmp_path / "missing.tsv"))
    assert result.returncode == 1
    assert "missing.tsv: samples table does not exist" in result.stderr and "Traceback" not in result.stderr


def test_version():
    assert voxelprompt("--version").stdout.strip() == f"voxelprompt {__version__}"


def test_evaluate_model_takes_every_setting_of_the_protocol_as_an_option():
    from dataclasses import fields

    from voxelprompt.evaluation.protocol import ProtocolSettings

    result = voxelprompt("evaluate-model", "--help")
    assert result.returncode == 0
    for setting in fields(ProtocolSettings):
        assert "--" + setting.name.replace("_", "-") in result.stdout
    assert "--no-real-scan" in result.stdout and "--out-dir" in result.stdout


def test_export_model_refuses_an_evaluation_folder_without_a_summary(tmp_path):
    from voxelprompt.model import SHIPPED_MODEL

    result = voxelprompt("export-model", "--model", str(SHIPPED_MODEL), "--out", str(tmp_path / "out"),
                         "--evaluation", str(tmp_path))
    assert result.returncode != 0 and "summary.md" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


HEAVY_MODULES = ("torch", "transformers", "matplotlib")
_IMPORTED_BY = """import json, sys
from voxelprompt.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "heavy": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY_MODULES,)


def _heavy_modules_after(*args: str) -> list[str]:
    """The heavy libraries a command imported, with the command's exit status 0 required."""
    import json

    result = subprocess.run([sys.executable, "-c", _IMPORTED_BY, *args], capture_output=True, text=True, timeout=300)
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["code"] in (0, None), result.stderr[-2000:]
    return report["heavy"]


def test_image_jobs_and_help_never_import_the_model_or_plotting(tmp_path):
    """Preprocess, co-register and check jobs run once per image of a study: they must not pay for
    torch, transformers or matplotlib."""
    from conftest import MNI_T1_2MM

    from voxelprompt.core.packaged_data import package_file

    image = package_file(*MNI_T1_2MM)
    assert _heavy_modules_after("--help") == []
    assert _heavy_modules_after("check-images", "--out-status", str(tmp_path / "status.json"), str(image)) == []
    out = {name: str(tmp_path / name) for name in ("image.nii.gz", "mask.nii.gz", "record.json")}
    assert _heavy_modules_after("preprocess", "--image", str(image), "--modality", "T1w", "--out-image",
                                out["image.nii.gz"], "--out-mask", out["mask.nii.gz"], "--out-record",
                                out["record.json"]) == []
    image_mask_record = (out["image.nii.gz"], out["mask.nii.gz"], out["record.json"])
    assert _heavy_modules_after(
        "coregister", *_options("--reference", image_mask_record), *_options("--moving", image_mask_record),
        "--out-image", str(tmp_path / "coregistered.nii.gz"), "--out-transform", str(tmp_path / "xfm.txt"),
        "--out-record", str(tmp_path / "coregistration.json")) == []


def _has_avx2() -> bool:
    try:
        return " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not _has_avx2(), reason="the evaluation's kernels are pinned on x86 CPUs with AVX2 only")
def test_the_evaluation_runs_the_same_cpu_kernels_on_every_x86_cpu():
    """On an AVX-512 CPU torch's own kernels would otherwise be its AVX-512 ones, and the numbers
    quoted in docs/evaluation.md came out different in their third decimal."""
    script = ("from voxelprompt.cli import main\n"
              "try:\n    main(['evaluate-model', '--help'])\nexcept SystemExit:\n    pass\n"
              "import torch\nprint(torch.backends.cpu.get_cpu_capability())")
    environment = {k: v for k, v in os.environ.items() if k not in CPU_KERNELS}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env=environment)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "AVX2"


def _options(role: str, image_mask_record: tuple[str, str, str]) -> list[str]:
    image, mask, record = image_mask_record
    return [role, image, f"{role}-mask", mask, f"{role}-record", record]


def test_run_uses_the_shipped_model_when_none_is_named():
    import argparse

    from voxelprompt.cli import agent
    from voxelprompt.model import SHIPPED_MODEL

    result = voxelprompt("run", "--help")
    assert result.returncode == 0 and "--model MODEL" in result.stdout
    parser = argparse.ArgumentParser()
    agent.configure("run", parser)
    assert parser.parse_args(["--prompt", "p", "--out", "o", "scan.nii.gz"]).model == SHIPPED_MODEL


def test_a_subject_that_failed_its_check_is_answered_without_loading_the_model(tmp_path):
    """Its answer job writes the error rows without importing torch: a study's broken subjects cost
    it seconds, not a model load each."""
    import pandas as pd

    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"\x1f\x8b\x08\x00garbage")
    table = tmp_path / "samples.tsv"
    table.write_text(f"subject\tsession\tmodality\tpath\nbad\t1\tT1w\t{scan}\n")
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt_id,prompt,inputs,subjects\nvolume,Segment the brain,@first,\n")
    results = tmp_path / "results"
    check = voxelprompt("check-images", "--out-status", str(results / "work/checks/sub-bad.json"), str(scan))
    assert check.returncode == 0, check.stderr
    assert _heavy_modules_after("answer", "--subject", "bad", "--input-kind", "samples", "--input-path", str(table),
                                "--output-dir", str(results), "--prompts", str(prompts)) == []
    responses = pd.read_parquet(results / "work/parts/sub-bad/responses.parquet")
    assert list(responses["status"]) == ["error"] and "scan.nii.gz: cannot be read" in responses["error"][0]


def test_run_refuses_a_prompt_over_the_limit_before_loading_anything(tmp_path):
    prompt = "volume of the left hippocampus " * 3_800  # 114 KB, about the most one argument can hold
    result = subprocess.run([sys.executable, "-c", _IMPORTED_BY, "run", "--prompt", prompt, "--out", str(tmp_path / "x"),
                             str(tmp_path / "absent.nii.gz")], capture_output=True, text=True, timeout=300)
    assert "the limit is 1,000" in result.stderr and len(result.stderr) < 1_000
    assert '"heavy": []' in result.stdout and '"code": 1' in result.stdout
