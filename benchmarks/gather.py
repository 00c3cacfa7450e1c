"""Seconds to gather a study's per-subject Parquet parts into its three tables.

    python benchmarks/gather.py [--subjects 10000] [--prompts 3] [--repeats 3]

Each subject's part is written first, outside the timing, the way a subject's job writes it
(`subject_tables` + `write_part`): per prompt two metrics and one mask, and every tenth subject
failed to load, so its part holds error rows only. Then `gather` reads every part, sorts and writes
`metrics.parquet`, `responses.parquet` and `masks.parquet`; the median of the repeats is printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from voxelprompt.model.agent import Result
from voxelprompt.runtime.library import Metric
from voxelprompt.study.report import (MaskFile, PromptRun, failed_subject_tables, gather, provenance, subject_tables,
                                      write_part)

STEPS = ['e = encode(scans())\nread(e)',
         'm = segment(e, "left hippocampus")\noutput(m, "left hippocampus")\n'
         'report("volume of the left hippocampus", volume_mm3(m), "mm3")\n'
         'report("width of the left hippocampus", width_mm(m), "mm")\nstop()']


def write_parts(folder: Path, subjects: int, prompts: dict[str, str]) -> list[Path]:
    parts = []
    for number in range(subjects):
        subject = f"{number:05d}"
        if number % 10 == 9:
            tables = failed_subject_tables(subject, "01", prompts, "T1w: file does not exist", "cpu-500")
        else:
            runs = []
            for prompt_id, prompt in prompts.items():
                result = Result(prompt, steps=STEPS, responses=["volume: 3512 mm3", "width: 31.2 mm"],
                                metrics=[Metric("volume of the left hippocampus", 3512.0 + number, "mm3", 1),
                                         Metric("width of the left hippocampus", 31.2, "mm", 1)],
                                ok=True, seconds=1.5)
                mask = MaskFile("left hippocampus", f"results/sub-{subject}/anat/sub-{subject}_{prompt_id}_mask.nii.gz",
                                f"study/sub-{subject}/anat/sub-{subject}_T1w.nii.gz", 3512 + number, 3512.0 + number)
                runs.append(PromptRun(prompt_id, prompt, result, masks=[mask]))
            tables = subject_tables(subject, "01", runs, "cpu-500")
        parts.append(write_part(tables, folder / "parts" / f"sub-{subject}"))
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--prompts", type=int, default=3, help="prompts per subject")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    prompts = {f"p{n:02d}": f"volume of the left hippocampus ({n})" for n in range(1, args.prompts + 1)}

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        parts = write_parts(folder, args.subjects, prompts)
        print(f"wrote {len(parts)} parts in {time.perf_counter() - started:.1f} s (not timed below)")
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            written = gather(parts, folder / "results", provenance(None, None))
            seconds.append(time.perf_counter() - started)
        rows = {name: pq.read_metadata(path).num_rows for name, path in written.items()}

    print(f"{'what':34} {'median s':>9} {'min s':>7} {'max s':>7} {'runs':>5}")
    print(f"{f'gather {args.subjects} parts':34} {statistics.median(seconds):9.2f} {min(seconds):7.2f} "
          f"{max(seconds):7.2f} {len(seconds):5d}")
    print("rows: " + ", ".join(f"{name} {count}" for name, count in rows.items()))


if __name__ == "__main__":
    main()
