"""Seconds and peak memory of preprocessing and co-registration per 1 mm image.

Runs the CLI commands the workflow runs, each in a fresh process, several times, on the demo
study's 1 mm images, and reports the median, min and max wall time and the peak resident memory.

    python benchmarks/preprocess_coregister.py [--repeats 5] [--work /tmp/vp-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from voxelprompt.study import demo


def run_measured(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of one process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {process.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports KiB


def summarise(samples: list[tuple[float, float]]) -> dict[str, float]:
    seconds = [s for s, _ in samples]
    return {
        "median_s": round(statistics.median(seconds), 2),
        "min_s": round(min(seconds), 2),
        "max_s": round(max(seconds), 2),
        "peak_rss_mib": round(max(m for _, m in samples), 0),
        "runs": len(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path(tempfile.mkdtemp(prefix="vp-bench-")))
    args = parser.parse_args()
    cli = [sys.executable, "-m", "voxelprompt"]

    study = args.work / "demo"
    demo.make_demo_study(study)
    # sub-01: T1w ses-01 (1 mm, LPS on disk) is the reference; ses-02 T1w (1.2 mm) and the FLAIR move.
    images = {
        "T1w": study / "sub-01/ses-01/anat/sub-01_ses-01_T1w.nii.gz",
        "T1w-ses02": study / "sub-01/ses-02/anat/sub-01_ses-02_T1w.nii.gz",
        "FLAIR": study / "sub-01/ses-01/anat/sub-01_ses-01_FLAIR.nii.gz",
    }
    modality = {"T1w": "T1w", "T1w-ses02": "T1w", "FLAIR": "FLAIR"}

    def preprocess_command(name: str) -> list[str]:
        out = args.work / "pre" / name
        return cli + ["preprocess", "--image", str(images[name]), "--modality", modality[name],
                      "--out-image", f"{out}.nii.gz", "--out-mask", f"{out}_mask.nii.gz", "--out-record", f"{out}.json"]

    results: dict[str, dict[str, float]] = {}
    for name in images:
        samples = [run_measured(preprocess_command(name)) for _ in range(args.repeats)]
        results[f"preprocess {name}"] = summarise(samples)

    pre = args.work / "pre"
    for name in ("T1w-ses02", "FLAIR"):
        command = cli + ["coregister",
                         "--reference", f"{pre}/T1w.nii.gz", "--reference-mask", f"{pre}/T1w_mask.nii.gz",
                         "--reference-record", f"{pre}/T1w.json",
                         "--moving", f"{pre}/{name}.nii.gz", "--moving-mask", f"{pre}/{name}_mask.nii.gz",
                         "--moving-record", f"{pre}/{name}.json",
                         "--out-image", f"{args.work}/coreg_{name}.nii.gz",
                         "--out-transform", f"{args.work}/coreg_{name}.txt", "--out-record", f"{args.work}/coreg_{name}.json"]
        samples = [run_measured(command) for _ in range(args.repeats)]
        results[f"coregister {name} -> T1w"] = summarise(samples)

    print(f"{'step':32} {'median s':>9} {'min s':>7} {'max s':>7} {'peak MiB':>9}")
    for step, row in results.items():
        print(f"{step:32} {row['median_s']:9.2f} {row['min_s']:7.2f} {row['max_s']:7.2f} {row['peak_rss_mib']:9.0f}")
    (args.work / "results.json").write_text(json.dumps(results, indent=2))
    print(f"written: {args.work / 'results.json'}")


if __name__ == "__main__":
    main()
