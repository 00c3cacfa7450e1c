"""The vision ablation: each design of the vision networks trained by the vision stage for the same
wall-clock budget on this machine, its held-out Dice read at fixed times.

    python benchmarks/vision_ablation.py [--presets cpu,cpu-no-prior,cpu-modulated] [--minutes 45] [--read-at 15,30,45]
                                         [--out runs/vision-ablation] [--threads 2]

Every variant is a preset (`voxelprompt/model/config.py`): `cpu` (the all-targets dynamic head with
the atlas prior), `cpu-no-prior` (the same head without it) and `cpu-modulated` (the paper's head, phi
in every level of m_gen). Each starts from the shipped model
(its agent and whatever vision weights fit the design), runs `voxelprompt train --stage vision` with
the same options and seed as its own process, alone, and is stopped when its budget is spent. The
run's `log.csv` gives, at each reading time, the last validation before it: the mean Dice of the
evaluation's targets on whole held-out synthetic subjects (one per lesion class) and on fsaverage's
real T1w (when its package is installed), and the targets supervised per second of training so far.
Printed as a Markdown table (docs/model.md keeps the measured one).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

# The options of the vision stage in config/config.yaml, so that the ablation measures what training runs.
STAGE_OPTIONS = ["--stage", "vision", "--learning-rate", "0.001", "--crop-voxels", "56,64,56",
                 "--targets-per-step", "32", "--episodes-per-subject", "4", "--validate-every", "100",
                 "--checkpoint-every", "100", "--seed", "11"]


def train_for(preset: str, out: Path, minutes: float, threads: int) -> None:
    command = [sys.executable, "-m", "voxelprompt", "train", "--preset", preset, "--out", str(out),
               "--steps", "1000000", "--threads", str(threads), *STAGE_OPTIONS]
    with (out.parent / f"{preset}.log").open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            process.wait(timeout=minutes * 60)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait()


def readings(log_csv: Path, read_at_minutes: list[float], targets_per_step: int) -> list[dict]:
    with log_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    validated = [row for row in rows if row["validation_dice"] != ""]
    found = []
    for minutes in read_at_minutes:
        before = [row for row in validated if float(row["seconds"]) <= minutes * 60]
        if not before:
            found.append({"minutes": minutes, "step": "", "synthetic": "", "real": "", "targets_per_s": ""})
            continue
        row = before[-1]
        found.append({"minutes": minutes, "step": row["step"], "synthetic": row["validation_dice"],
                      "real": row["validation_real_dice"],
                      "targets_per_s": f"{int(row['step']) * targets_per_step / float(row['seconds']):.1f}"})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="cpu,cpu-no-prior,cpu-modulated")
    parser.add_argument("--minutes", type=float, default=45.0, help="wall-clock budget of each variant")
    parser.add_argument("--read-at", default="15,30,45", help="minutes of training at which Dice is read")
    parser.add_argument("--out", type=Path, default=Path("runs/vision-ablation"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    read_at = [float(m) for m in args.read_at.split(",")]
    targets_per_step = int(STAGE_OPTIONS[STAGE_OPTIONS.index("--targets-per-step") + 1])
    print("| design | minutes | step | synthetic Dice | fsaverage Dice | targets / s |")
    print("|---|---|---|---|---|---|")
    for preset in args.presets.split(","):
        out = args.out / preset
        out.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        train_for(preset, out, args.minutes, args.threads)
        print(f"<!-- {preset}: {time.perf_counter() - started:.0f} s wall -->", file=sys.stderr)
        for reading in readings(out / "log.csv", read_at, targets_per_step):
            print(f"| {preset} | {reading['minutes']:g} | {reading['step']} | {reading['synthetic']} | "
                  f"{reading['real']} | {reading['targets_per_s']} |", flush=True)


if __name__ == "__main__":
    main()
