"""Seconds to synthesise subjects, and on-the-fly samples per second at training resolution.

    python benchmarks/synthesis.py [--repeats 3] [--training-samples 10]

Measured in this process (the anatomy is built or loaded from the cache first, outside the timing):
- one subject with three 1 mm contrasts (T1w, T2w, FLAIR) and a tumour;
- a longitudinal pair: the same plus a follow-up session;
- training samples at 2 mm: one contrast and one lesion per sample, nothing written.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from voxelprompt.synth import anatomy
from voxelprompt.synth.longitudinal import follow_up
from voxelprompt.synth.subject import synthesize_subject


def timed(function, repeats: int) -> list[float]:
    seconds = []
    for seed in range(repeats):
        started = time.perf_counter()
        function(np.random.default_rng(seed))
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--training-samples", type=int, default=10)
    args = parser.parse_args()
    anatomy.load()

    def subject(rng):
        return synthesize_subject(rng, ("T1w", "T2w", "FLAIR"), ("tumour",))

    def pair(rng):
        return follow_up(subject(rng), rng)

    def training_sample(rng):
        contrast = ("T1w", "T2w", "FLAIR", "PDw", "CT")[rng.integers(5)]
        lesion = ("tumour", "infarct", "white matter hyperintensity", "cyst", "haemorrhage", "meningioma")[rng.integers(6)]
        return synthesize_subject(rng, (contrast,), (lesion,), spacing_mm=2.0)

    rows = {
        "subject, 3 contrasts at 1 mm": timed(subject, args.repeats),
        "longitudinal pair at 1 mm": timed(pair, args.repeats),
        "training sample at 2 mm": timed(training_sample, args.training_samples),
    }
    print(f"{'what':32} {'median s':>9} {'min s':>7} {'max s':>7} {'runs':>5}")
    for name, seconds in rows.items():
        print(f"{name:32} {statistics.median(seconds):9.2f} {min(seconds):7.2f} {max(seconds):7.2f} {len(seconds):5d}")
    per_second = 1 / statistics.median(rows["training sample at 2 mm"])
    print(f"training samples per second at 2 mm (one process): {per_second:.2f}")


if __name__ == "__main__":
    main()
