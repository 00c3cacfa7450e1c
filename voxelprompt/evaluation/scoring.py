"""Evaluation of a trained model on held-out synthetic subjects (seeds never used in training): the
agent runs each prompt end to end, and its program and outputs are compared with the ground-truth
program run with ground truth standing in for the vision networks.

`score_examples` gives two tidy tables. One row per example: whether the program matches exactly
(every step, as text); whether it is execution equivalent (run the same way as the ground truth, it
gives the same outputs, metrics and responses, however it is written); whether the agent finished;
the mean Dice of its masks; its chosen answer. One row per number the ground truth reports: the
number the agent reported under the same name, its relative error, and the quantity it measures.
`voxelprompt.evaluation.protocol` runs them with the rest of the paper's protocol; `evaluation/statistics.py` sums them up.

Robustness to phrasing (`paraphrase_examples`): each hand-written paraphrase (voxelprompt.evaluation.paraphrases)
is asked about a held-out subject that allows its values, and so is a template prompt of the same
task with the same values on the same subject, so that the two scores differ only by the phrasing.

The real scan (`real_scan`) is FreeSurfer's fsaverage T1w (an MRI averaged over 40 subjects) with its
own aseg/aparc labels. Training never sees it: synthetic subjects are built from the
OASIS/Desikan-Killiany anatomy ("oasis-dk"), and fsaverage is a different brain in a different space.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from voxelprompt.core.io import load_volume
from voxelprompt.core.packaged_data import package_file
from voxelprompt.core.scan import Scan
from voxelprompt.core.seeds import EVALUATION_SEED, Stream, generator
from voxelprompt.core.volume import Volume
from voxelprompt.evaluation.paraphrases import Paraphrase
from voxelprompt.model.agent import Agent, Result
from voxelprompt.model.joint import VoxelPromptModel
from voxelprompt.runtime.answers import SIGNAL_WORDS
from voxelprompt.study.labelled import subject_of
from voxelprompt.synth import anatomy
from voxelprompt.synth.lesions import lesion_classes
from voxelprompt.tasks import values
from voxelprompt.tasks.catalogue import Task, catalogue, task
from voxelprompt.tasks.grammar import grammar
from voxelprompt.tasks.sampling import Example, Execution, execute, sample_example
from voxelprompt.tasks.subjects import Requirements, TaskSubject, synthesize
from voxelprompt.tasks.truth import GroundTruthVision

# Subjects drawn for a paraphrase before giving up. Some values are rare: "the largest white matter
# hyperintensity" needs several of them, and on a coarse grid small lesions vanish (at 4 mm about one
# draw in seven allows it).
MAX_ATTEMPTS = 60
RELATIVE_TOLERANCE = 1e-6  # metrics closer than this (relative) are the same number in equivalence

# What the number of each number-answer task measures, so that errors can be compared between
# quantities whose relative errors behave alike (a volume off by a voxel layer is off by far more, in
# relative terms, than a mean intensity over the same region).
QUANTITY_OF_TASK = {
    "volume": "volume", "lesion-growth": "volume", "ventricular-growth": "volume",
    "bounding-box": "extent", "extent": "extent",
    "mean-intensity": "intensity", "signal-to-noise": "intensity", "mean-hu": "intensity", "mean-adc": "intensity",
    "signal-change": "intensity",
    "asymmetry": "ratio", "volume-ratio": "ratio", "icv-normalised-volume": "ratio", "tumour-composition": "ratio",
}

EXAMPLE_COLUMNS = ("source", "family", "task", "example", "prompt", "program_exact", "execution_equivalent",
                   "targets_correct", "finished", "mask_dice", "answer_expected", "answer_produced", "answer_correct", "seconds")
METRIC_COLUMNS = ("source", "family", "task", "example", "metric", "quantity", "unit", "expected", "produced",
                  "relative_error")


class Runner(Protocol):
    """What answers prompts: the agent, or a stand-in for it in tests."""

    def run(self, prompt: str, scans: Sequence[Scan], cache: dict | None = None, vision=None) -> Result: ...


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


HELD_OUT = "held-out"  # the `source` of the rows of `held_out_examples`
CHARACTERISATION = "characterisation"  # and of the runs on the characterisation examples of the protocol


# --- held-out examples -------------------------------------------------------------------------------

def iter_held_out_examples(per_task: int, seed: int = EVALUATION_SEED, spacing_mm: float = 2.0,
                           tasks: list[str] | None = None) -> Iterator[tuple[int, Example]]:
    """`held_out_examples` one at a time, so that only the subject being scored is held in memory
    (tens of MB each at 2 mm)."""
    for number, name in enumerate(tasks or list(catalogue())):
        for repeat in range(per_task):
            yield repeat, sample_example(generator(seed, Stream.HELD_OUT_EXAMPLE, number, repeat), name, spacing_mm)


def held_out_examples(per_task: int, seed: int = EVALUATION_SEED, spacing_mm: float = 2.0,
                      tasks: list[str] | None = None) -> list[tuple[int, Example]]:
    """`per_task` examples of every task (or of the given ones), numbered 0, 1, ... within their task;
    the example numbered `repeat` of the task at position `number` is drawn from stream HELD_OUT_EXAMPLE."""
    return list(iter_held_out_examples(per_task, seed, spacing_mm, tasks))


# --- scoring -----------------------------------------------------------------------------------------

def score_examples(model: VoxelPromptModel | None, examples: Iterable[tuple[int, Example]], source: str,
                   agent: Runner | None = None, truth_vision: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The agent (`Agent(model)` unless one is given) answers each example's prompt about its subject.
    Returns a table with one row per example (columns EXAMPLE_COLUMNS) and one with a row per number
    the ground truth of a number-answer example reports (METRIC_COLUMNS); `source` labels the rows
    (e.g. "held-out", "paraphrase"). With `truth_vision`, ground truth stands in for the vision
    networks, so that only the program writer is scored. Raises if a ground-truth program fails: the
    example is broken, and scoring the agent against it would mean nothing."""
    agent = agent if agent is not None else Agent(model)
    example_rows, metric_rows = [], []
    for number, example in examples:
        row, metrics = _score_example(agent, number, example, source, truth_vision)
        example_rows.append(row)
        metric_rows += metrics
    return _tables(example_rows, metric_rows)


def _score_example(agent: Runner, number: int, example: Example, source: str,
                   truth_vision: bool = False) -> tuple[dict, list[dict]]:
    """The example's row and its metric rows."""
    truth = execute(example.program, example.subject)
    if not truth.ok:
        errors = [f.error for f in truth.feedback if not f.ok]
        why = errors[0] if errors else "it never stops"
        raise RuntimeError(f"the ground-truth program of task {example.task.name} (example {number}, "
                           f"{example.prompt!r}) does not run to the end: {why}")
    started = time.perf_counter()
    if truth_vision:
        result = agent.run(example.prompt, example.subject.scans, vision=GroundTruthVision(example.subject))
    else:
        result = agent.run(example.prompt, example.subject.scans)
    seconds = time.perf_counter() - started
    keys = {"source": source, "family": example.task.family, "task": example.task.name, "example": number}
    metrics = _metric_scores(example, truth, result) if example.task.answer["kind"] == "number" else []
    return keys | _example_scores(example, truth, result) | {"seconds": seconds}, [keys | row for row in metrics]


def _tables(example_rows: list[dict], metric_rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (pd.DataFrame(example_rows, columns=list(EXAMPLE_COLUMNS)),
            pd.DataFrame(metric_rows, columns=list(METRIC_COLUMNS)))


def _example_scores(example: Example, truth: Execution, result: Result) -> dict:
    kind = example.task.answer["kind"]
    expected = truth.library
    exact = _same_steps(result.steps, example.program)
    # The same code on the same subject runs the same way: only other code needs running. It runs as
    # `execute` runs programs, up to its first failing step, so a run the agent recovered from an error
    # in is not equivalent (its first attempt is part of what it wrote).
    equivalent = exact or (bool(result.steps) and same_execution(execute(result.steps, example.subject), truth))
    scores = {"prompt": example.prompt, "program_exact": exact, "execution_equivalent": equivalent,
              "targets_correct": segmented(result.steps) == segmented(example.program),
              "finished": bool(result.ok), "mask_dice": math.nan,
              "answer_expected": None, "answer_produced": None, "answer_correct": None}
    # Images (masked, removed, cropped) follow from their masks: they are not scored twice.
    if kind == "mask" and expected.outputs:
        scores["mask_dice"] = float(np.mean([_output_dice(role_output(result.outputs, name, mask), mask)
                                             for name, mask in expected.outputs.items()]))
    elif kind == "choice":
        answer = expected.responses[-1] if expected.responses else None
        produced = result.responses[-1] if result.responses else None
        scores |= {"answer_expected": answer, "answer_produced": produced,
                   "answer_correct": produced is not None and produced == answer}
    return scores


def _metric_scores(example: Example, truth: Execution, result: Result) -> list[dict]:
    """One row per number the ground truth reports; a number the agent does not report under the same
    name counts as wholly wrong (relative error 1), as does any other number where 0 is expected."""
    produced = {m.name: m.value for m in result.metrics}
    rows = []
    for metric in truth.library.metrics:
        value = produced.get(metric.name, math.nan)
        rows.append({"metric": metric.name, "quantity": QUANTITY_OF_TASK[example.task.name], "unit": metric.unit,
                     "expected": float(metric.value), "produced": float(value),
                     "relative_error": relative_error(value, metric.value)})
    return rows


def relative_error(produced: float, expected: float) -> float:
    """|produced - expected| / |expected|; against an expected 0, 0 for a 0 and 1 (wholly wrong) for any
    other number. A number not produced (NaN) is wholly wrong."""
    if math.isnan(produced):
        return 1.0
    if expected == 0:
        return 0.0 if produced == 0 else 1.0
    return float(abs(produced - expected) / abs(expected))


def role_output(outputs: Mapping[str, Volume], name: str, like: Volume | np.ndarray) -> Volume | None:
    """The output that plays the role of the expected one, `like` under `name`: the output of that name;
    else the only output of its kind (a mask, or an image) on its grid. A program names its outputs as it
    likes ("left hippocampus", "hippocampus (left)"): a right mask under another name is still the mask
    asked for, and an image is never taken for a mask. None when no output, or more than one, could be it."""
    shape, mask = like.shape, _is_mask(like.array if isinstance(like, Volume) else like)
    if name in outputs and outputs[name].shape == shape and _is_mask(outputs[name].array) == mask:
        return outputs[name]
    candidates = [v for v in outputs.values() if v.shape == shape and _is_mask(v.array) == mask]
    return candidates[0] if len(candidates) == 1 else None


def _is_mask(array: np.ndarray) -> bool:
    return array.dtype == bool or np.issubdtype(array.dtype, np.integer)


SEGMENT_CALL = re.compile(r'segment\(\s*\w+\s*,\s*"([^"]*)"\s*\)')


def segmented(steps: Sequence[str]) -> list[str]:
    """The targets a program segments, in the order it names them (target-name accuracy compares
    these: the writer's most consequential choice)."""
    return [target for step in steps for target in SEGMENT_CALL.findall(step)]


def _same_steps(steps: Sequence[str], program: Sequence[str]) -> bool:
    return [s.strip() for s in steps] == [s.strip() for s in program]


def _output_dice(produced, expected) -> float:
    """Dice of an output mask; a missing output, or one on another grid, scores 0."""
    return dice(produced.array, expected.array) if produced is not None and produced.shape == expected.shape else 0.0


def same_execution(produced: Execution, expected: Execution) -> bool:
    """Whether a program's run gives what the ground truth's gives: the same outputs (same names, same
    grids, equal arrays), the same metrics (same names, values equal within RELATIVE_TOLERANCE) and the
    same responses. However the program is written (other variable names, steps split or merged), this
    is what the user receives. A program that fails, or never stops, gives nothing: it is not equivalent."""
    if not produced.ok:
        return False
    got, want = produced.library, expected.library
    if got.outputs.keys() != want.outputs.keys() or got.responses != want.responses:
        return False
    for name, volume in want.outputs.items():
        other = got.outputs[name]
        if not (other.grid.is_same(volume.grid) and np.array_equal(other.array, volume.array)):
            return False
    # Order does not matter (an equivalent program may measure in another order), names and values do.
    got_metrics = sorted((m.name, m.value) for m in got.metrics)
    want_metrics = sorted((m.name, m.value) for m in want.metrics)
    return len(got_metrics) == len(want_metrics) and all(
        a_name == b_name and (math.isclose(a, b, rel_tol=RELATIVE_TOLERANCE) or (math.isnan(a) and math.isnan(b)))
        for (a_name, a), (b_name, b) in zip(got_metrics, want_metrics))


# --- robustness to phrasing --------------------------------------------------------------------------

PARAPHRASE = "paraphrase"  # the `source` of the rows of paraphrased prompts
TEMPLATE = "template (same values)"  # and of their template twins


def bind_values(chosen: Task, given: Mapping[str, str], subject: TaskSubject) -> values.Bound:
    """The task's values fixed to the given ones (canonical names, as values.domain gives them), with
    what `values.bind` derives from each: the prompt forms, {name}_text, {signal_words}, {reference} and
    the lesion a description picks out. Raises NoValue if the subject does not allow one of them.

    `values.bind` draws its values at random; this is its derivation for values chosen beforehand, and
    must stay in step with it (tests bind sampled examples' own values again and compare)."""
    bound = values.Bound()
    for name, kind in chosen.values.items():
        value = given[name]
        if value not in values.allowed(kind, subject):
            raise values.NoValue(f"the subject does not allow {value!r} as {name!r} ({kind})")
        bound.program[name] = value
        bound.prompt[name] = values.forms(kind, value)
        if kind == "region":
            names_itself = value.startswith("the ") or value == values.ALL_LESIONS
            bound.program[f"{name}_text"] = value if names_itself else f"the {value}"
        if kind == "signal_contrast":
            words = SIGNAL_WORDS["CT" if value == "CT" else "MRI"]
            bound.program["signal_words"] = "[" + ", ".join(f'"{w}"' for w in words) + "]"
        if kind in values.LESION_KINDS or (kind == "region" and value.startswith("the ")):
            # Allowed, so exactly one lesion of the first session carries the description.
            lesion = next(l for l in subject.sessions[0].synthetic.lesions if value in l.attributes["descriptors"])
            bound.lesions[name] = lesion
            relative_to = lesion_classes().get(lesion.lesion_class, {}).get("relative_to")
            bound.program.setdefault("reference", relative_to or "brain")
    return bound


def paraphrase_example(paraphrase: Paraphrase, index: int, seed: int = EVALUATION_SEED,
                       spacing_mm: float = 2.0) -> tuple[Example, Example]:
    """The pair of `paraphrase_examples` for the paraphrase at position `index` of the set: its
    subjects are drawn from stream PARAPHRASE_SUBJECT (index, attempt) until one allows its values."""
    chosen = task(paraphrase.task)
    requirements = _requirements_for(chosen, paraphrase.values)
    reason = None
    for attempt in range(MAX_ATTEMPTS):
        rng = generator(seed, Stream.PARAPHRASE_SUBJECT, index, attempt)
        subject = synthesize(requirements, rng, spacing_mm)
        try:
            bound = bind_values(chosen, paraphrase.values, subject)
        except values.NoValue as refusal:
            reason = refusal
            continue
        # The template twin: drawn as `example_for` draws a prompt, from the same values.
        template = chosen.prompts[int(rng.integers(len(chosen.prompts)))]
        prompt = grammar().expand(template, rng, values.lesion_noun_bindings() | bound.prompt)
        program = chosen.program_for(bound.program)
        return (Example(chosen, paraphrase.prompt, program, subject, bound),
                Example(chosen, prompt, list(program), subject, bound))
    raise RuntimeError(f"no subject in {MAX_ATTEMPTS} draws allowed the values of paraphrase {index} "
                       f"({paraphrase.prompt!r}, task {paraphrase.task}, {paraphrase.values}); "
                       f"the last one: {reason}")


def iter_paraphrase_examples(paraphrases: Sequence[Paraphrase], seed: int = EVALUATION_SEED,
                             spacing_mm: float = 2.0) -> Iterator[tuple[Example, Example]]:
    """`paraphrase_examples` one pair at a time (see `iter_held_out_examples`)."""
    for index, paraphrase in enumerate(paraphrases):
        yield paraphrase_example(paraphrase, index, seed, spacing_mm)


def paraphrase_examples(paraphrases: Sequence[Paraphrase], seed: int = EVALUATION_SEED,
                        spacing_mm: float = 2.0) -> list[tuple[Example, Example]]:
    """Per paraphrase, an example asking its prompt, with the task's ground-truth program for exactly
    the values it means, about a held-out subject that allows them; and an example of the same task,
    values, program and subject asking a prompt of the task's templates instead. The two differ by
    their phrasing alone, so their scores side by side measure robustness to it."""
    return list(iter_paraphrase_examples(paraphrases, seed, spacing_mm))


def _requirements_for(chosen: Task, given: Mapping[str, str]) -> Requirements:
    """The task's requirements narrowed to what the values name: the images they name, and the lesion
    classes they name. A subject drawn for a task that takes any lesion rarely holds, say, a
    haemorrhage in the frontal lobe; one drawn with a haemorrhage often does."""
    contrasts = list(chosen.requirements.contrasts)
    classes, needs_lesion = [], False
    for name, kind in chosen.values.items():
        value = given[name]
        if kind in values.CONTRAST_KINDS:
            contrasts += ["DWI", value] if value == "ADC" else [value]  # the ADC map is rendered with its DWI
        elif (kind in (*values.LESION_KINDS, "lesion_class", "tumour_part")
              or (kind == "region" and value.startswith("the "))):  # a region that is a lesion
            needs_lesion = True
            classes.append("tumour" if kind == "tumour_part" else _class_named(value))
    classes = [c for c in dict.fromkeys(classes) if c]
    # A value that needs a lesion of no class in particular ("the most anterior lesion") needs some lesion.
    any_lesion = tuple(sorted(lesion_classes())) if needs_lesion else ()
    lesions = tuple(classes) or chosen.requirements.lesions or any_lesion
    return dataclasses.replace(chosen.requirements, contrasts=tuple(dict.fromkeys(contrasts)), lesions=lesions)


def _class_named(value: str) -> str:
    """The lesion class a lesion description ("the left infarct") or a lesion_class value ("all
    infarcts") names; "" for one that names none ("the largest lesion", "all lesions")."""
    for name in sorted(lesion_classes(), key=len, reverse=True):  # longest first, should one name hold another
        if name in value or value == f"all {values.vocabulary()['lesions'][name]['plural'][0]}":
            return name
    return ""


def real_scan() -> TaskSubject:
    """fsaverage's T1w (1 mm, whole head) with its labels in base labels (`anatomy.load("fsaverage")`,
    which needs the optional FreeSurfer data package)."""
    label_map = anatomy.load("fsaverage")
    t1 = load_volume(package_file(anatomy.FREESURFER_PACKAGE, "freesurfer/subjects/fsaverage/mri/T1.mgz"))
    return subject_of(label_map, {"T1w": t1.reoriented("RAS").resampled_to(label_map.grid)})


def held_out_subjects(count: int, seed: int = EVALUATION_SEED, spacing_mm: float = 2.0) -> list[TaskSubject]:
    """Synthetic subjects (a T1w and up to one more contrast, lesions at random) from held-out seeds."""
    return [synthesize(Requirements(contrasts=("T1w",)), generator(seed, Stream.HELD_OUT_SUBJECT, n), spacing_mm,
                       max_contrasts=2) for n in range(count)]
