"""Seconds to draw a training example on the fly, and how often the characterisation programs agree
with the truth on realistically acquired images.

    python benchmarks/task_sampling.py [--examples 40] [--characterisation 30]

Measured in this process (the anatomy is loaded first, outside the timing), at 2 mm:
- a whole example: task (uniform), subject with what the task needs, values, prompt and program;
- its parts: the subject synthesis, and the prompt and program given the subject;
- executing the program with ground truth standing in for the vision networks.
Then, per characterisation task, the share of examples whose program answer equals the answer the
lesion was built with, on images with random acquisitions (thick slices, noise, bias fields): the
ceiling a perfect segmenter could reach with these programs. The test suite checks the same programs
on clean acquisitions, where they agree every time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from voxelprompt.synth import anatomy
from voxelprompt.tasks.catalogue import catalogue, task
from voxelprompt.tasks.sampling import example_for, execute, sample_example
from voxelprompt.tasks.subjects import synthesize
from voxelprompt.tasks.values import NoValue

CHARACTERISATION = ("signal-intensity", "cerebral-location", "vascular-territory", "diffusion-restriction", "enhancement")


def expected_answer(example) -> str:
    lesion = example.bound.lesions["lesion"]
    name = example.task.name
    if name == "signal-intensity":
        contrast = example.bound.program["contrast"]
        signal = lesion.components[0].signals[contrast]
        words = {"hyper": "hyper", "high": "hyper", "hypo": "hypo", "low": "hypo", "iso": "iso"}[signal]
        return words + ("dense" if contrast == "CT" else "intense")
    if name == "cerebral-location":
        return lesion.attributes["lobe"]
    if name == "vascular-territory":
        return lesion.attributes["territory"]
    if name == "diffusion-restriction":
        return "restricted" if lesion.restricts_diffusion else "not restricted"
    return "enhancing" if lesion.enhances else "non-enhancing"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=40)
    parser.add_argument("--characterisation", type=int, default=30, help="examples per characterisation task")
    args = parser.parse_args()
    anatomy.load()
    names = list(catalogue())

    whole, subject_s, prompt_s, execute_s = [], [], [], []
    for seed in range(args.examples):
        rng = np.random.default_rng(seed)
        started = time.perf_counter()
        example = sample_example(rng)
        whole.append(time.perf_counter() - started)
        # The same again, in parts, for a task drawn the same way.
        rng = np.random.default_rng([seed, 1])
        chosen = task(names[int(rng.integers(len(names)))])
        started = time.perf_counter()
        subject = synthesize(chosen.requirements, rng)
        subject_s.append(time.perf_counter() - started)
        try:
            started = time.perf_counter()
            example = example_for(chosen, subject, rng)
            prompt_s.append(time.perf_counter() - started)
        except NoValue:
            continue
        started = time.perf_counter()
        execute(example.program, example.subject)
        execute_s.append(time.perf_counter() - started)

    print(f"{'what (2 mm)':44} {'median s':>9} {'min s':>7} {'max s':>7} {'runs':>5}")
    for label, seconds in (("whole training example (task+subject+prompt)", whole), ("subject synthesis", subject_s),
                           ("values, prompt and program", prompt_s), ("program run with ground truth", execute_s)):
        if seconds:  # --examples 0 measures the characterisation only
            print(f"{label:44} {statistics.median(seconds):9.4f} {min(seconds):7.4f} {max(seconds):7.4f} {len(seconds):5d}")

    print("\ncharacterisation programs vs the truth, random acquisitions:")
    for name in CHARACTERISATION:
        agree = total = 0
        for seed in range(args.characterisation):
            example = sample_example(np.random.default_rng([seed, 7]), name)
            run = execute(example.program, example.subject)
            total += 1
            agree += run.ok and run.library.responses[-1] == expected_answer(example)
        print(f"{name:24} {agree}/{total} = {agree / total:.0%}")


if __name__ == "__main__":
    main()
