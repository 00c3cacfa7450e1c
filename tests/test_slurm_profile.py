"""The SLURM profile (profiles/slurm) and the folder comparison CI uses to check a SLURM run.

Fast: no SLURM needed. The real run on a one-node SLURM is scripts/ci-slurm.sh.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from slurm_compare import compare_folders

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles/slurm/config.yaml"
WORKFLOW_FILES = ("Snakefile", "rules", "config", "workflow", "profiles")
# Resource names snakemake-executor-plugin-slurm turns into sbatch options.
PLUGIN_RESOURCES = {"mem_mb", "mem_mb_per_cpu", "runtime", "gpu", "gpu_model", "gres", "constraint", "qos",
                    "slurm_partition", "slurm_account", "slurm_extra", "cpus_per_task", "tasks", "nodes"}


@pytest.fixture(scope="module")
def profile() -> dict:
    return yaml.safe_load(PROFILE.read_text())


def test_the_profile_submits_through_the_slurm_executor(profile):
    assert profile["executor"] == "slurm"
    assert profile["jobs"] >= 1


def test_partition_and_account_are_left_to_the_user_and_documented(profile):
    defaults = profile["default-resources"]
    assert "slurm_partition" not in defaults and "slurm_account" not in defaults
    text = PROFILE.read_text()
    assert "# slurm_partition: <partition>" in text and "# slurm_account: <account>" in text


def test_default_resources_use_the_names_the_plugin_reads(profile):
    """`time` and `gpus` are silently ignored by the plugin; `gpu: 0` keeps a GPU optional."""
    defaults = profile["default-resources"]
    assert set(defaults) <= PLUGIN_RESOURCES, set(defaults) - PLUGIN_RESOURCES
    assert defaults["gpu"] == 0
    assert isinstance(defaults["mem_mb"], int) and isinstance(defaults["runtime"], int)


def test_every_rule_resource_in_the_config_is_one_the_plugin_reads():
    """Per-rule resources come from config/config.yaml; `threads` becomes --cpus-per-task."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    for rule, resources in config["resources"].items():
        assert set(resources) <= PLUGIN_RESOURCES | {"threads"}, (rule, set(resources))


def test_the_profile_holds_no_workarounds_of_the_ci_cluster(profile):
    """CI's cluster has no accounting database; scripts/ci-slurm.sh passes its workarounds on the
    command line, so users keep the plugin's defaults (sacct status checks, their own account)."""
    assert "slurm-status-command" not in profile and "slurm-no-account" not in profile


def test_dry_run_through_the_profile_plans_the_demo(tmp_path):
    """Needs the plugin (`pip install -e .[slurm]`), not a running SLURM."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    for name in WORKFLOW_FILES:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "-n"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Using profiles profiles/slurm" in output
    assert "make_demo" in output and "preprocess" in output and "coregister" in output
    assert "gpu=1" not in output  # nothing asks for a GPU by default


# --- tests/slurm_compare.py: the check that a SLURM run's results equal a local run's -----------


def _write_run(root: Path, *, seconds: float, voxel: float = 1.0, volume: float = 12.5) -> Path:
    results = root / "results"
    (results / "sub-01").mkdir(parents=True)
    data = np.zeros((4, 4, 4), np.float32)
    data[1, 2, 3] = voxel
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), results / "sub-01/image.nii.gz")
    record = {"seconds": seconds, "source": f"{root}/resources/x.nii.gz", "iterations": 3, "matrix": [[1.0, 0.0]]}
    (results / "sub-01/record.json").write_text(json.dumps(record))
    table = pd.DataFrame({"subject": ["01"], "volume_mm3": [volume], "seconds": [seconds]})
    table.to_parquet(results / "metrics.parquet")
    (results / "transform.txt").write_text("#Insight Transform File V1.0\nParameters: 0 0 0\n")
    return results


def test_two_runs_that_differ_only_in_timing_and_folder_match(tmp_path):
    a = _write_run(tmp_path / "a", seconds=1.5)
    b = _write_run(tmp_path / "b", seconds=9.25)
    assert compare_folders(a, b) == []


def test_a_run_copied_elsewhere_matches_when_told_where_it_was_made(tmp_path):
    # CI compares the SLURM run with a copy of the demo's results/, whose provenance names the
    # folder the demo ran in, not the copy's.
    a = _write_run(tmp_path / "a", seconds=1.0)
    made = _write_run(tmp_path / "made", seconds=2.0)
    copy = tmp_path / "copy" / "results"
    shutil.copytree(made, copy)
    assert any("record.json" in p for p in compare_folders(a, copy))
    assert compare_folders(a, copy, roots=(a.parent, made.parent)) == []


def test_folders_named_relative_to_the_working_directory_match(tmp_path, monkeypatch):
    _write_run(tmp_path / "a", seconds=1.0)
    _write_run(tmp_path / "b", seconds=1.0)
    monkeypatch.chdir(tmp_path / "a")  # a's root is "."
    assert compare_folders(Path("results"), tmp_path / "b" / "results") == []


@pytest.mark.parametrize(
    "change, file",
    [
        ({"voxel": 2.0}, "image.nii.gz"),
        ({"volume": 12.6}, "metrics.parquet"),
    ],
)
def test_a_changed_value_is_reported_with_its_file(tmp_path, change, file):
    a = _write_run(tmp_path / "a", seconds=1.0)
    b = _write_run(tmp_path / "b", seconds=1.0, **change)
    problems = compare_folders(a, b)
    assert len(problems) == 1 and file in problems[0], problems


def test_changed_json_text_and_missing_files_are_reported(tmp_path):
    a = _write_run(tmp_path / "a", seconds=1.0)
    b = _write_run(tmp_path / "b", seconds=1.0)
    record = json.loads((b / "sub-01/record.json").read_text())
    record["iterations"] = 4
    (b / "sub-01/record.json").write_text(json.dumps(record))
    (b / "transform.txt").write_text("#Insight Transform File V1.0\nParameters: 0 0 1\n")
    (a / "extra.tsv").write_text("a\tb\n1\t2\n")
    problems = "\n".join(compare_folders(a, b))
    assert "record.json: .iterations: 3 != 4" in problems
    assert "transform.txt: line 2" in problems
    assert "extra.tsv: only in" in problems


def test_an_affine_change_is_a_difference(tmp_path):
    a = _write_run(tmp_path / "a", seconds=1.0)
    b = _write_run(tmp_path / "b", seconds=1.0)
    image = nib.load(b / "sub-01/image.nii.gz")
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), np.diag([2.0, 2.0, 2.5, 1.0])), b / "sub-01/image.nii.gz")
    assert any("affines differ" in p for p in compare_folders(a, b))


def test_empty_folders_do_not_count_as_a_match(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert compare_folders(tmp_path / "a", tmp_path / "b")


def test_html_reports_match_except_in_timing_columns(tmp_path):
    page = ("<html><body><p>3 subjects</p><table><tr><th>prompt</th><th>ok</th><th>median s</th></tr>"
            "<tr><td>volume</td><td class='number'>{ok}</td><td class='number'>{seconds}</td></tr></table></body></html>")
    for run, ok, seconds in (("a", 3, 7.8), ("b", 3, 18.6), ("c", 2, 7.8)):
        (tmp_path / run).mkdir()
        (tmp_path / run / "report.html").write_text(page.format(ok=ok, seconds=seconds))
    assert compare_folders(tmp_path / "a", tmp_path / "b") == []
    problems = compare_folders(tmp_path / "a", tmp_path / "c")
    assert len(problems) == 1 and "report.html" in problems[0] and "'3'" in problems[0], problems
