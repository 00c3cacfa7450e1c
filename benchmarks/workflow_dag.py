"""Seconds for Snakemake to plan the study workflow (a dry run, `snakemake -n`) for a large study.

    python benchmarks/workflow_dag.py [--subjects 1000] [--prompts 20] [--repeats 3]

Target: under 30 s at the default size. Set up first, outside the timing, in a temporary folder: a
copy of the workflow files (as a user's clone would have them), one small NIfTI per image (a T1w
and a FLAIR per subject, one session), a samples table, a prompts CSV and a config pointing at
them. Then each dry run is its own `snakemake -n --quiet` process, timed from start to exit (so
Snakemake's start-up, and the imports of the workflow's Python code, are part of every time):

  fresh    no subject checked yet: the plan stops at the `check_subject` checkpoints;
  checked  every subject's check written, and passed, by the package's own `check_images` (what
           the `check-images` CLI runs), so preprocess, coregister and answer are planned for
           every image and subject, then gather and qc_report.

The median of the repeats and the jobs planned per rule are printed; the run fails if a plan is not
the expected one: a check per subject (fresh), or no check, a preprocess and a coregister per image
and an answer per subject (checked).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml

from voxelprompt.study.image_check import check_images
from voxelprompt.study.paths import DerivativePaths

WORKFLOW = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "rules", "config", "workflow", "profiles")
MODALITIES = ("T1w", "FLAIR")
STRUCTURES = ("left hippocampus", "right hippocampus", "amygdala", "thalamus", "lateral ventricles",
              "third ventricle", "caudate nucleus", "putamen", "cerebellum", "brainstem")
QUESTIONS = (("How voluminous is the {}?", ""), ("Identify the {} in this patient", "T1w@first"),
             ("How big is the {} relative to ICV?", "T1w@first"), ("How bright is the {} on the FLAIR?", "FLAIR"))
VOXEL_SIZE_MM = 2.0


def write_study(folder: Path, subjects: int, prompts: int) -> list[str]:
    """The images, samples table, prompts and config of a study; returns its subject labels."""
    # One image per modality is written with nibabel and copied to every subject's path: the
    # files are real, distinct files (as Snakemake sees them) without thousands of encodes.
    rng = np.random.default_rng(0)
    templates = {}
    for modality in MODALITIES:
        data = rng.normal(100.0, 10.0, (8, 8, 8)).astype(np.float32)
        templates[modality] = folder / f"template_{modality}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.diag([VOXEL_SIZE_MM] * 3 + [1.0])), templates[modality])
    labels = [f"{number:04d}" for number in range(1, subjects + 1)]
    rows = ["subject\tsession\tmodality\tpath\tacquisition_date"]
    for label in labels:
        for modality in MODALITIES:
            path = folder / f"study/sub-{label}/ses-01/anat/sub-{label}_ses-01_{modality}.nii.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(templates[modality], path)
            rows.append(f"{label}\t01\t{modality}\t{path.relative_to(folder)}\t2024-01-15")
    (folder / "samples.tsv").write_text("\n".join(rows) + "\n")

    lines = ["prompt_id,prompt,inputs,subjects"]
    for number in range(prompts):
        question, inputs = QUESTIONS[number % len(QUESTIONS)]
        structure = STRUCTURES[number % len(STRUCTURES)]
        lines.append(f"p{number + 1:02d}-{structure.replace(' ', '-')},{question.format(structure)},{inputs},")
    (folder / "prompts.csv").write_text("\n".join(lines) + "\n")

    for name in WORKFLOW_FILES:
        copy = shutil.copytree if (WORKFLOW / name).is_dir() else shutil.copyfile
        copy(WORKFLOW / name, folder / name)
    config_path = folder / "config" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config |= {"input": {"kind": "samples", "path": "samples.tsv"}, "prompts": "prompts.csv",
               "output_dir": "results", "log_dir": "logs"}
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return labels


def pass_checks(folder: Path, labels: list[str]) -> None:
    """Each subject's status file, written by the code the `check_subject` job runs. The images are
    dated an hour back first, so that no status file is older than its inputs and Snakemake keeps it."""
    an_hour_ago = time.time() - 3600
    for image in (folder / "study").rglob("*.nii.gz"):
        os.utime(image, (an_hour_ago, an_hour_ago))
    paths = DerivativePaths(folder / "results")
    for label in labels:
        images = sorted((folder / f"study/sub-{label}/ses-01/anat").glob("*.nii.gz"))
        errors = check_images(images, paths.subject_check(label))
        if errors:
            sys.exit(f"check of sub-{label} failed: {errors}")


def dry_run(folder: Path) -> tuple[float, dict[str, int]]:
    """Seconds of one `snakemake -n` process, and the jobs it planned per rule (its job stats)."""
    # Quiet about each job, the host and the reasons, but not about the job stats read below.
    command = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "host", "reason", "--directory", folder]
    started = time.perf_counter()
    run = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    output = run.stdout + run.stderr
    # The job stats table: "rule   count" lines between its header and the "total" line.
    stats = re.search(r"^job\s+count\n-+\s+-+\n(.*?)^total\s", output, re.S | re.M)
    if run.returncode != 0 or stats is None:
        sys.exit(f"dry run failed (exit status {run.returncode}) or printed no job stats:\n{output[-5000:]}")
    jobs = {rule: int(count) for rule, count in re.findall(r"^(\S+)\s+(\d+)$", stats.group(1), re.M)}
    return seconds, jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=1_000)
    parser.add_argument("--prompts", type=int, default=20, help="prompts per subject")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        labels = write_study(folder, args.subjects, args.prompts)
        print(f"wrote a study of {len(labels)} subjects x {len(MODALITIES)} images and {args.prompts} prompts"
              f" in {time.perf_counter() - started:.1f} s (not timed below)")
        results = {}
        for case in ("fresh", "checked"):
            if case == "checked":
                started = time.perf_counter()
                pass_checks(folder, labels)
                print(f"passed {len(labels)} checks in {time.perf_counter() - started:.1f} s (not timed below)")
            runs = [dry_run(folder) for _ in range(args.repeats)]
            results[case] = [seconds for seconds, _ in runs], runs[-1][1]

    images = len(labels) * len(MODALITIES)
    expected = {"fresh": {"check_subject": len(labels)},
                "checked": {"check_subject": 0, "preprocess": images, "coregister": images, "answer": len(labels)}}
    print(f"{'what':34} {'median s':>9} {'min s':>7} {'max s':>7} {'runs':>5} {'jobs':>6}")
    for case, (seconds, jobs) in results.items():
        print(f"{f'dry run, {case}, {len(labels)} subjects':34} {statistics.median(seconds):9.2f} "
              f"{min(seconds):7.2f} {max(seconds):7.2f} {len(seconds):5d} {sum(jobs.values()):6d}")
    for case, (_, jobs) in results.items():
        print(f"jobs, {case}: " + ", ".join(f"{rule} {count}" for rule, count in sorted(jobs.items())))
    for case, (_, jobs) in results.items():
        if any(jobs.get(rule, 0) != count for rule, count in expected[case].items()):
            sys.exit(f"the {case} plan is not the expected one: expected {expected[case]}, planned {jobs}")


if __name__ == "__main__":
    main()
