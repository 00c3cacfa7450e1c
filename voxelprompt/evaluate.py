"""Evaluation of a trained model on held-out synthetic subjects (seeds never used in training): the
agent runs each prompt end to end, and its program and outputs are compared with the ground-truth
program run with ground truth standing in for the vision networks.

Per example: exact match of the program (every step, as text); Dice of each output mask; relative
error of each reported number; exact match of each chosen answer.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from voxelprompt.agent import Agent
from voxelprompt.model.joint import VoxelPromptModel
from voxelprompt.tasks.catalogue import catalogue
from voxelprompt.tasks.sampling import execute, sample_example

EVALUATION_SEED = 2_000_003  # training draws from [seed, rank, step], validation from 1_000_003


@dataclass
class Scores:
    examples: int = 0
    program_exact: int = 0
    finished: int = 0
    dice: list[float] = field(default_factory=list)
    relative_error: list[float] = field(default_factory=list)
    answer_exact: list[bool] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float | int | None]:
        def mean(values):
            return round(float(np.mean(values)), 4) if values else None

        return {"examples": self.examples, "program_exact_match": round(self.program_exact / max(self.examples, 1), 4),
                "finished": round(self.finished / max(self.examples, 1), 4), "mean_dice": mean(self.dice),
                "median_relative_error": round(float(statistics.median(self.relative_error)), 4) if self.relative_error else None,
                "answer_accuracy": mean(self.answer_exact), "median_seconds": round(statistics.median(self.seconds), 2) if self.seconds else None}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def evaluate(model: VoxelPromptModel, per_task: int = 2, seed: int = EVALUATION_SEED, spacing_mm: float = 2.0,
             tasks: list[str] | None = None) -> dict[str, Scores]:
    """Scores per task family (and "all") over `per_task` held-out examples of every task."""
    agent = Agent(model)
    scores: dict[str, Scores] = defaultdict(Scores)
    for number, name in enumerate(tasks or list(catalogue())):
        for repeat in range(per_task):
            example = sample_example(np.random.default_rng([seed, number, repeat]), name, spacing_mm)
            truth = execute(example.program, example.subject)
            started = time.perf_counter()
            result = agent.run(example.prompt, example.subject.scans)
            seconds = time.perf_counter() - started
            for key in (example.task.family, "all"):
                _score(scores[key], example, truth, result, seconds)
    return dict(scores)


def _score(scores: Scores, example, truth, result, seconds: float) -> None:
    scores.examples += 1
    scores.seconds.append(seconds)
    scores.program_exact += [s.strip() for s in result.steps] == [s.strip() for s in example.program]
    scores.finished += result.ok
    kind = example.task.answer["kind"]
    expected = truth.library
    if kind == "mask":  # images (masked, removed, cropped) follow from their masks: not scored twice
        for name, mask in expected.outputs.items():
            produced = result.outputs.get(name)
            scores.dice.append(dice(produced.array, mask.array) if produced is not None and produced.shape == mask.shape else 0.0)
    elif kind == "number":
        produced = {m.name: m.value for m in result.metrics}
        for metric in expected.metrics:
            if metric.name in produced and metric.value != 0:
                scores.relative_error.append(abs(produced[metric.name] - metric.value) / abs(metric.value))
            else:
                scores.relative_error.append(1.0)
    elif kind == "choice":
        scores.answer_exact.append(bool(result.responses) and result.responses[-1] == expected.responses[-1])
