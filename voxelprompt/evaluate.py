"""Evaluation of a trained model on held-out synthetic subjects (seeds never used in training): the
agent runs each prompt end to end, and its program and outputs are compared with the ground-truth
program run with ground truth standing in for the vision networks.

Per example: exact match of the program (every step, as text); Dice of each output mask; relative
error of each reported number; exact match of each chosen answer.

Segmentation of ten large structures (§5.2: "segment the X", bilateral structures as one "left and
right X" target) is scored separately, by Dice, on held-out synthetic subjects and on a real scan:
FreeSurfer's fsaverage T1w (an MRI averaged over 40 subjects) with its own aseg/aparc labels. Training
never sees it: synthetic subjects are built from the OASIS/Desikan-Killiany anatomy ("oasis-dk"), and
fsaverage is a different brain in a different space.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from voxelprompt.agent import Agent
from voxelprompt.io import load_volume
from voxelprompt.labelled import subject_of
from voxelprompt.model.joint import VoxelPromptModel
from voxelprompt.packaged_data import package_file
from voxelprompt.synth import anatomy
from voxelprompt.tasks.catalogue import catalogue
from voxelprompt.tasks.sampling import execute, sample_example
from voxelprompt.tasks.subjects import Requirements, TaskSubject, synthesize
from voxelprompt.tasks.truth import target_mask

EVALUATION_SEED = 2_000_003  # training draws from [seed, rank, step], validation from 1_000_003
LARGE_STRUCTURES = ("left and right cerebral white matter", "left and right cerebral cortex",
                    "left and right cerebellum", "left and right lateral ventricle", "brainstem",
                    "left and right thalamus", "left and right putamen", "left and right caudate",
                    "left and right hippocampus", "left and right pallidum")


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


def real_scan() -> TaskSubject:
    """fsaverage's T1w (1 mm, whole head) with its labels in base labels (`anatomy.load("fsaverage")`,
    which needs the optional FreeSurfer data package)."""
    label_map = anatomy.load("fsaverage")
    t1 = load_volume(package_file(anatomy.FREESURFER_PACKAGE, "freesurfer/subjects/fsaverage/mri/T1.mgz"))
    return subject_of(label_map, {"T1w": t1.reoriented("RAS").resampled_to(label_map.grid)})


def held_out_subjects(count: int, seed: int = EVALUATION_SEED, spacing_mm: float = 2.0) -> list[TaskSubject]:
    """Synthetic subjects (a T1w and up to one more contrast, lesions at random) from held-out seeds."""
    return [synthesize(Requirements(contrasts=("T1w",)), np.random.default_rng([seed, 99, n]), spacing_mm,
                       max_contrasts=2) for n in range(count)]


def segmentation_dice(model: VoxelPromptModel, subject: TaskSubject,
                      targets: tuple[str, ...] = LARGE_STRUCTURES) -> dict[str, float]:
    """Dice of the mask the agent outputs for "Segment the X" against the subject's label map, per
    target (0 when the agent outputs no mask)."""
    agent, cache, scores = Agent(model), {}, {}
    for target in targets:
        result = agent.run(f"Segment the {target}", subject.scans, cache)
        truth = target_mask(subject.sessions[0], target)
        produced = next(iter(result.outputs.values()), None)
        scores[target] = round(dice(produced.array, truth), 4) if produced is not None and produced.shape == truth.shape else 0.0
    return scores


REAL_SCAN = "real scan (fsaverage T1w)"


def full_evaluation(model: VoxelPromptModel, per_task: int = 2, spacing_mm: float = 2.0, segmentation_subjects: int = 2,
                    with_real_scan: bool = True) -> dict:
    """Scores per task family, and Dice of the large structures on held-out synthetic subjects (mean
    over subjects) and on the real scan."""
    families = ({family: scores.summary() for family, scores in evaluate(model, per_task, spacing_mm=spacing_mm).items()}
                if per_task else {})
    segmentation: dict[str, dict[str, float]] = {}
    if segmentation_subjects:
        per_subject = [segmentation_dice(model, s) for s in held_out_subjects(segmentation_subjects, spacing_mm=spacing_mm)]
        segmentation["held-out synthetic"] = {t: round(float(np.mean([d[t] for d in per_subject])), 4) for t in LARGE_STRUCTURES}
    if with_real_scan:
        segmentation[REAL_SCAN] = segmentation_dice(model, real_scan())
    return {"families": families, "segmentation": segmentation}


def evaluation_markdown(evaluation: dict) -> str:
    """The scores of `full_evaluation` as markdown tables (for the model card)."""
    families = evaluation["families"]
    lines = []
    if families:
        columns = list(next(iter(families.values())))
        lines += ["| family | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
        for family, row in sorted(families.items()):
            lines.append(f"| {family} | " + " | ".join("-" if row[c] is None else str(row[c]) for c in columns) + " |")
    sets = evaluation.get("segmentation", {})
    if sets:
        lines += [*([""] if lines else []), "Dice of the large structures (\"Segment the X\"):", "",
                  "| structure | " + " | ".join(sets) + " |", "|" + "---|" * (len(sets) + 1)]
        for target in LARGE_STRUCTURES:
            lines.append(f"| {target} | " + " | ".join(f"{scores[target]:.3f}" for scores in sets.values()) + " |")
        lines.append("| **mean** | " + " | ".join(f"{np.mean(list(scores.values())):.3f}" for scores in sets.values()) + " |")
    return "\n".join(lines) + "\n"
