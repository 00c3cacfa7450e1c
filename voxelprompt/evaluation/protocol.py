"""The evaluation protocol of the paper (§5.2, §5.3), run end to end on held-out data: every
comparison as a tidy table, for `evaluation/statistics.py`, `figures.py` and `summary.py` to test, plot and summarise.

1. Segmentation: Dice per held-out subject and target of four methods: VoxelPrompt (the agent asked
   "Segment the X"), the instructable network and the single-task networks trained here on the same
   data with the same budget (`baselines.specialised`), and the atlas registration (anatomy only,
   `baselines.registration`); on held-out synthetic subjects and on the real scan.
2. Characterisation: the five tasks' answers of VoxelPrompt and of the single-task classifiers on the
   same held-out examples.
3. Programs and metrics: every task end to end (`evaluate.score_examples`), and the hand-written
   paraphrases against template prompts with the same values on the same subjects.

Everything runs on one isotropic grid (`spacing_mm`, 3 mm by default: the baselines train in minutes
on two cores), with fixed seeds: the same settings give the same tables on the same machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from voxelprompt.core.seeds import BASELINE_TRAINING_SEED, EVALUATION_SEED
from voxelprompt.evaluation import data
from voxelprompt.evaluation.baselines import specialised
from voxelprompt.evaluation.baselines.registration import registration_dice
from voxelprompt.evaluation.paraphrases import Paraphrase, load_paraphrases
from voxelprompt.evaluation.scoring import (CHARACTERISATION, HELD_OUT, PARAPHRASE, TEMPLATE, dice,
                                            iter_held_out_examples, paraphrase_example, role_output, score_examples)
from voxelprompt.model.agent import Agent
from voxelprompt.model.config import VisionConfig
from voxelprompt.model.joint import VoxelPromptModel
from voxelprompt.tasks.catalogue import catalogue
from voxelprompt.tasks.subjects import TaskSubject
from voxelprompt.tasks.truth import target_mask

SYNTHETIC = "held-out synthetic"
REAL = "real scan (fsaverage T1w)"


def _setting(default, help_text: str):
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class ProtocolSettings:
    """The sizes of the protocol (the defaults are the full setting; each is a CLI option)."""

    per_task: int = _setting(2, "end-to-end held-out examples of every task (0: none)")
    paraphrases_per_family: int = _setting(100, "hand-written paraphrases asked per task family, the first ones of "
                                                "the file (at most 17 per family: 100 asks them all)")
    segmentation_subjects: int = _setting(2, "held-out subjects per segmented lesion class, each also scored on "
                                             "the anatomy (0: no segmentation)")
    characterisation_examples: int = _setting(8, "held-out examples per characterisation task (0: none)")
    training_subjects: int = _setting(6, "training subjects of the segmentation baselines per lesion class")
    classifier_examples: int = _setting(24, "training examples of each characterisation classifier")
    steps: int = _setting(100, "training steps of the baselines per segmentation target and per classifier")
    spacing_mm: float = _setting(3.0, "isotropic grid of every subject")
    real_scan: bool = _setting(True, "also score the anatomy on fsaverage's T1w (needs the FreeSurfer data)")
    threads: int = _setting(2, "CPU threads (results depend on them through the order of sums)")

    def to_dict(self) -> dict:
        return asdict(self)


def run(model: VoxelPromptModel, settings: ProtocolSettings,
        log: Callable[[str], None] = print) -> dict[str, pd.DataFrame]:
    """Every table of the protocol; `log` hears what is being done and how long each part took."""
    torch.set_num_threads(settings.threads)  # results depend on the reduction order, hence on threads
    agent = Agent(model)
    tables: dict[str, pd.DataFrame] = {}
    clock = time.perf_counter()

    held_out = data.held_out_segmentation_subjects(settings.segmentation_subjects, settings.spacing_mm)
    real = [("fsaverage", data.real_scan_on(settings.spacing_mm))] if settings.real_scan else []
    tables["cohort"] = data.cohort_table(held_out, SYNTHETIC)
    if held_out or real:
        tables["segmentation"] = segmentation_table(agent, held_out, real, settings, log)
        log(f"segmentation: {time.perf_counter() - clock:.0f} s")

    clock = time.perf_counter()
    characterisation, examples = characterisation_tables(agent, settings, log)
    tables["characterisation"] = characterisation
    log(f"characterisation: {time.perf_counter() - clock:.0f} s")

    clock = time.perf_counter()
    parts = [examples]
    metrics = []
    if settings.per_task:
        drawn = iter_held_out_examples(settings.per_task, spacing_mm=settings.spacing_mm)
        scored, numbers = score_examples(None, drawn, HELD_OUT, agent)
        parts.append(scored)
        metrics.append(numbers)
    chosen = chosen_paraphrases(load_paraphrases(), settings.paraphrases_per_family)
    if chosen:
        # Seeded by their place in the whole set, so that a subset asks them about the same subjects.
        pairs = [(index, paraphrase_example(paraphrase, index, spacing_mm=settings.spacing_mm))
                 for index, paraphrase in chosen]
        for source, twin in ((PARAPHRASE, 0), (TEMPLATE, 1)):
            scored, numbers = score_examples(None, [(index, pair[twin]) for index, pair in pairs], source, agent)
            parts.append(scored)
            metrics.append(numbers)
    found = [part for part in parts if len(part)]
    tables["examples"] = pd.concat(found, ignore_index=True) if found else pd.DataFrame()
    tables["metrics"] = pd.concat(metrics, ignore_index=True) if metrics else pd.DataFrame()
    log(f"programs and paraphrases: {time.perf_counter() - clock:.0f} s")
    return tables


# --- segmentation ------------------------------------------------------------------------------------

def segmentation_prompt(target: str) -> str:
    return f"Segment {target}" if target in specialised.LESION_TARGETS else f"Segment the {target}"


def baseline_vision(config: VisionConfig) -> VisionConfig:
    """The networks the baselines train from scratch: the model's sizes with the paper's design (phi in
    every level, no reader, no atlas prior), whatever head the model itself has, so that the paper's
    comparison of one instructable network with single-task ones is made as in §5 and the baselines'
    scores do not move when the model's head does."""
    return replace(config, head="modulated", reader=False, atlas_prior=False)


def segmentation_table(agent: Agent, held_out: list[tuple[str, TaskSubject]], real: list[tuple[str, TaskSubject]],
                       settings: ProtocolSettings, log: Callable[[str], None]) -> pd.DataFrame:
    budget = specialised.Budget(settings.steps, seed=BASELINE_TRAINING_SEED)
    training = data.baseline_training_subjects(settings.training_subjects, settings.spacing_mm)
    config = baseline_vision(agent.model.config.vision)
    started = time.perf_counter()
    instructable, _ = specialised.train_instructable(training, config, budget)
    log(f"  instructable network, {settings.steps} steps x {len(specialised.TARGETS)} targets: "
        f"{time.perf_counter() - started:.0f} s")
    single = {}
    for number, target in enumerate(specialised.TARGETS):
        single[target], _ = specialised.train_single_task(training, config, budget, target, number)
    log(f"  single-task networks: {time.perf_counter() - started:.0f} s")

    rows = []
    for set_name, subjects in ((SYNTHETIC, held_out), (REAL, real)):
        for name, subject in subjects:
            targets = [t for t in specialised.TARGETS if specialised.holds(subject, t)]
            truth = {t: target_mask(subject.sessions[0], t) for t in targets}
            masks = {"instructable network": specialised.segment_instructable(instructable, subject, targets),
                     "single-task network": {t: specialised.segment_single_task(single[t], subject) for t in targets},
                     "VoxelPrompt": voxelprompt_masks(agent, subject, targets)}
            for method, produced in masks.items():
                rows += [_row(set_name, name, t, method, dice(produced[t], truth[t])) for t in targets]
            anatomy = tuple(t for t in targets if t in specialised.ANATOMY_TARGETS)
            # One thread: SimpleITK's multi-threaded metric sums in an order that varies from run to run.
            rows += [_row(set_name, name, t, "registration", d)
                     for t, d in registration_dice(subject, anatomy, threads=1).items()]
            log(f"  {set_name} {name}: {len(targets)} targets")
    return pd.DataFrame(rows)


def voxelprompt_masks(agent: Agent, subject: TaskSubject, targets: list[str]) -> dict[str, np.ndarray]:
    """The agent's mask for each target: the output that is its mask (`role_output`), or an empty mask
    when none is."""
    scans = [s for s in subject.scans if s.session == subject.sessions[0].label]
    cache: dict = {}  # one encoding of the subject for all its prompts
    masks = {}
    empty = np.zeros(subject.sessions[0].synthetic.label_map.shape, bool)
    for target in targets:
        produced = role_output(agent.run(segmentation_prompt(target), scans, cache).outputs, target, empty)
        masks[target] = empty if produced is None else produced.array > 0
    return masks


def _row(set_name: str, subject: str, target: str, method: str, value: float) -> dict:
    return {"set": set_name, "subject": subject, "target": target, "target_kind": specialised.target_kind(target),
            "method": method, "dice": float(value)}


# --- characterisation --------------------------------------------------------------------------------

def characterisation_tables(agent: Agent, settings: ProtocolSettings, log: Callable[[str], None]
                            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of VoxelPrompt and of the classifiers per held-out example, and VoxelPrompt's runs as rows
    of the examples table (source "characterisation")."""
    if not settings.characterisation_examples:
        return pd.DataFrame(), pd.DataFrame()
    names = list(catalogue())
    budget = specialised.Budget(settings.steps, seed=BASELINE_TRAINING_SEED)
    rows, runs = [], []
    for task_name in specialised.CHARACTERISATION_TASKS:
        number = names.index(task_name)
        held_out = data.single_lesion_examples(task_name, number, settings.characterisation_examples, EVALUATION_SEED,
                                               settings.spacing_mm)
        started = time.perf_counter()
        training = data.single_lesion_examples(task_name, number, settings.classifier_examples,
                                               BASELINE_TRAINING_SEED, settings.spacing_mm)
        classifier, _ = specialised.train_classifier(training, baseline_vision(agent.model.config.vision), budget)
        log(f"  classifier {task_name}: {time.perf_counter() - started:.0f} s")
        scored, _ = score_examples(None, list(enumerate(held_out)), CHARACTERISATION, agent)
        runs.append(scored)
        for n, example in enumerate(held_out):
            expected = specialised.expected_answer(example)
            produced = scored.iloc[n]["answer_produced"]
            predicted = specialised.classify(classifier, example)
            rows.append(_answer(task_name, n, "VoxelPrompt", expected, produced))
            rows.append(_answer(task_name, n, "single-task classifier", expected, predicted))
    return pd.DataFrame(rows), pd.concat(runs, ignore_index=True)


def _answer(task_name: str, example: int, method: str, expected: str, predicted) -> dict:
    predicted = None if predicted is None or (isinstance(predicted, float) and np.isnan(predicted)) else str(predicted)
    return {"task": task_name, "example": example, "method": method, "expected": expected, "predicted": predicted,
            "correct": predicted == expected}


# --- paraphrases -------------------------------------------------------------------------------------

def chosen_paraphrases(paraphrases: list[Paraphrase], per_family: int) -> list[tuple[int, Paraphrase]]:
    """The first `per_family` paraphrases of each family, in file order, with their place in the file."""
    counts: dict[str, int] = {}
    chosen = []
    for index, paraphrase in enumerate(paraphrases):
        if counts.get(paraphrase.family, 0) < per_family:
            chosen.append((index, paraphrase))
            counts[paraphrase.family] = counts.get(paraphrase.family, 0) + 1
    return chosen
