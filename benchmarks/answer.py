"""Wall time, CPU time and peak memory of one subject's agent job (`voxelprompt answer`), the
workflow's most expensive step: the model loaded once, every prompt of the study answered.

    python benchmarks/answer.py [--results results] [--prompts config/prompts.csv] [--repeats 3] [--threads 2]

Needs a finished run of the workflow on the demo (`snakemake --cores 2`): its co-registered images
are the job's inputs. Each repeat runs the job as its own process on a copy of those outputs (the
study's own parts are left alone), and the operating system's accounting of that process gives its
CPU time and peak resident memory. Printed per subject: its images (shape and voxel size), the
median wall and CPU seconds, the largest peak memory, and the median seconds of the first prompt
(which pays for encoding the scans) and of the others (the `seconds` column of the responses table).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import pandas as pd

from voxelprompt.study import inputs
from voxelprompt.study.paths import DerivativePaths

WORKFLOW = Path(__file__).resolve().parents[1]
DEMO = WORKFLOW / "resources/demo"

# Time a first run: no atlas fit is read from the cache a previous run (or repeat) filled.
os.environ["VOXELPROMPT_ATLAS_FITS"] = "off"


def run_once(subject: str, results: Path, prompts: Path, threads: int) -> dict:
    command = [sys.executable, "-m", "voxelprompt", "answer", "--subject", subject, "--input-kind", "demo",
               "--input-path", str(DEMO), "--output-dir", str(results), "--prompts", str(prompts),
               "--device", "cpu", "--threads", str(threads)]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # wait4 gives this one process's resource use (getrusage would mix every child so far).
    _, status, usage = os.wait4(process.pid, 0)
    wall_s = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"sub-{subject}: the answer job failed:\n{process.stderr.read()[-3000:]}")
    responses = pd.read_parquet(Path(DerivativePaths(results).part("responses", subject)))
    return {"wall_s": wall_s, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_gb": usage.ru_maxrss / 1024**2,
            "first_prompt_s": float(responses["seconds"].iloc[0]),
            "other_prompts_s": float(responses["seconds"].iloc[1:].median()),
            "prompts": len(responses), "errors": int((responses["status"] == "error").sum())}


def describe_images(subject: str) -> str:
    rows = inputs.load("demo", str(DEMO)).subject_rows(subject)
    shapes = []
    for row in rows:
        header = nib.load(row["path"]).header
        spacing = "×".join(f"{v:g}" for v in header.get_zooms()[:3])
        shapes.append(f"{row['modality']} {'×'.join(map(str, header.get_data_shape()[:3]))} at {spacing} mm")
    return "; ".join(shapes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=WORKFLOW / "results", help="a finished demo run's outputs")
    parser.add_argument("--prompts", type=Path, default=WORKFLOW / "config/prompts.csv")
    parser.add_argument("--subjects", nargs="*", help="demo subjects (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not (args.results / "dataset_description.json").is_file():
        raise SystemExit(f"{args.results}: no finished workflow run here; run `snakemake --cores 2` first")
    subjects = args.subjects or inputs.load("demo", str(DEMO)).subjects()
    with tempfile.TemporaryDirectory() as folder:
        results = Path(folder) / "results"
        shutil.copytree(args.results, results, ignore=shutil.ignore_patterns("qc", "*.parquet"))
        print("subject\twall_s\tcpu_s\tpeak_GB\tfirst_prompt_s\tother_prompts_s\tprompts\terrors\timages")
        for subject in subjects:
            runs = [run_once(subject, results, args.prompts, args.threads) for _ in range(args.repeats)]
            median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            print(f"{subject}\t{median['wall_s']:.1f}\t{median['cpu_s']:.1f}\t{max(r['peak_gb'] for r in runs):.2f}\t"
                  f"{median['first_prompt_s']:.1f}\t{median['other_prompts_s']:.1f}\t{runs[0]['prompts']}\t"
                  f"{runs[0]['errors']}\t{describe_images(subject)}", flush=True)


if __name__ == "__main__":
    main()
