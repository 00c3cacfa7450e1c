"""Scoring of the agent against the ground-truth program: exact programs, execution equivalence, Dice
of masks, relative error of reported numbers, exact answers, as tables and per family; held-out and
paraphrased examples; segmentation of the large structures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from voxelprompt.core.seeds import EVALUATION_SEED, Stream, generator
from voxelprompt.core.volume import Volume
from voxelprompt.evaluation.paraphrases import Paraphrase, load_paraphrases
from voxelprompt.evaluation.protocol import ProtocolSettings, baseline_vision
from voxelprompt.evaluation.scoring import (EXAMPLE_COLUMNS, METRIC_COLUMNS, QUANTITY_OF_TASK, bind_values, dice,
                                            held_out_examples, paraphrase_example, paraphrase_examples, relative_error,
                                            role_output, score_examples)
from voxelprompt.model.agent import Result
from voxelprompt.model.config import PRESETS, VisionConfig
from voxelprompt.runtime.library import Metric
from voxelprompt.tasks import values
from voxelprompt.tasks.catalogue import catalogue
from voxelprompt.tasks.sampling import execute, sample_example

PROTOCOL_MM = ProtocolSettings().spacing_mm
COARSE_MM = 4.0  # subjects at 4 mm build in a fraction of a second: enough to check the scoring


def mask(*indices) -> Volume:
    array = np.zeros((4, 4, 4), np.uint8)
    for index in indices:
        array[index] = 1
    return Volume(array, np.eye(4))


class Replaying:
    """An agent that writes given steps for each prompt and runs them in the sandbox, on the subject
    the prompt is about, with ground truth for vision: what a perfect vision model would give."""

    def __init__(self, programs):
        self.programs = programs  # prompt -> (steps, subject)

    def run(self, prompt, scans, cache=None):
        steps, subject = self.programs[prompt]
        run = execute(steps, subject)
        return Result(prompt, steps=list(steps), responses=list(run.library.responses),
                      metrics=list(run.library.metrics), outputs=dict(run.library.outputs), ok=run.ok)


class Answering:
    """An agent that returns the same fixed result for every prompt."""

    def __init__(self, **result):
        self.result = result

    def run(self, prompt, scans, cache=None):
        return Result(prompt, **self.result)


@pytest.fixture(scope="module")
def examples(anatomy_cache):
    """One coarse held-out example of each of a few tasks, by task name."""
    names = ["segment-anatomy", "volume", "asymmetry", "enhancement", "extract-region"]
    return {example.task.name: example for _, example in held_out_examples(1, spacing_mm=COARSE_MM, tasks=names)}


def test_dice_of_masks():
    assert dice(mask((0, 0, 0), (1, 1, 1)).array, mask((0, 0, 0)).array) == 2 / 3
    assert dice(mask().array, mask().array) == 1.0


def test_quantities_cover_exactly_the_number_tasks():
    number_tasks = {name for name, task in catalogue().items() if task.answer["kind"] == "number"}
    assert set(QUANTITY_OF_TASK) == number_tasks
    assert set(QUANTITY_OF_TASK.values()) == {"volume", "extent", "intensity", "ratio"}


def test_held_out_examples_are_the_seeded_draws_and_reproducible(anatomy_cache):
    tasks = ["volume", "segment-lesion"]
    first = held_out_examples(2, spacing_mm=COARSE_MM, tasks=tasks)
    again = held_out_examples(2, spacing_mm=COARSE_MM, tasks=tasks)
    assert [(n, e.task.name) for n, e in first] == [(0, "volume"), (1, "volume"), (0, "segment-lesion"), (1, "segment-lesion")]
    for (_, a), (_, b) in zip(first, again):
        assert (a.prompt, a.program) == (b.prompt, b.program)
        assert np.array_equal(a.subject.sessions[0].synthetic.label_map.array, b.subject.sessions[0].synthetic.label_map.array)
    # example `repeat` of the task at position `number` comes from its stream
    drawn = sample_example(generator(EVALUATION_SEED, Stream.HELD_OUT_EXAMPLE, 1, 1), "segment-lesion", COARSE_MM)
    assert (drawn.prompt, drawn.program) == (first[3][1].prompt, first[3][1].program)


def test_the_ground_truth_itself_is_exact_and_equivalent_and_scores_perfectly(examples):
    chosen = list(examples.values())
    agent = Replaying({e.prompt: (e.program, e.subject) for e in chosen})
    table, metrics = score_examples(None, list(enumerate(chosen)), "held-out", agent)
    assert list(table.columns) == list(EXAMPLE_COLUMNS) and list(metrics.columns) == list(METRIC_COLUMNS)
    assert table["program_exact"].all() and table["execution_equivalent"].all() and table["finished"].all()
    assert (table["source"] == "held-out").all() and list(table["example"]) == list(range(len(chosen)))
    assert list(table["prompt"]) == [e.prompt for e in chosen]
    rows = table.set_index("task")
    assert rows.loc["segment-anatomy", "mask_dice"] == 1.0
    # images follow from their masks and numbers are in the metrics table: no Dice for them
    assert math.isnan(rows.loc["extract-region", "mask_dice"]) and math.isnan(rows.loc["volume", "mask_dice"])
    assert (metrics["relative_error"] == 0.0).all() and set(metrics["task"]) == {"volume", "asymmetry"}


def test_a_program_written_otherwise_is_equivalent_but_not_exact(examples):
    example = examples["asymmetry"]
    # other variable names, and the two segmentations in the other order
    renamed = [step.replace("left_volume", "volume_on_the_left").replace("value", "index") for step in example.program]
    lines = renamed[1].splitlines()
    renamed[1] = "\n".join([lines[1], lines[0], *lines[2:]])
    assert renamed != example.program
    table, _ = score_examples(None, [(0, example)], "held-out", Replaying({example.prompt: (renamed, example.subject)}))
    assert table.loc[0, "execution_equivalent"] and not table.loc[0, "program_exact"]


def test_a_program_with_another_target_or_that_fails_is_not_equivalent(examples):
    example = examples["segment-anatomy"]
    target = example.bound.program["target"]
    other = "brainstem" if target != "brainstem" else "left thalamus"
    # the same output name, but another structure segmented into it
    wrong = [step.replace(f'segment(e, "{target}")', f'segment(e, "{other}")') for step in example.program]
    assert wrong != example.program
    broken = [*example.program[:-1], "segmentation = segment(e, 3)\nstop()"]
    for steps in (wrong, broken, example.program[:-1]):  # the last one never stops
        table, _ = score_examples(None, [(0, example)], "held-out", Replaying({example.prompt: (steps, example.subject)}))
        assert not table.loc[0, "execution_equivalent"] and not table.loc[0, "program_exact"], steps
    # a mask of another structure overlaps the expected one little, if at all
    table, _ = score_examples(None, [(0, example)], "held-out", Replaying({example.prompt: (wrong, example.subject)}))
    assert table.loc[0, "mask_dice"] < 0.5


def test_numbers_give_metric_rows_with_their_quantity_and_relative_error(examples):
    example = examples["volume"]
    expected = execute(example.program, example.subject).library.metrics
    (metric,) = expected
    off = Answering(metrics=[Metric(metric.name, metric.value * 1.1, metric.unit)], ok=True)
    table, metrics = score_examples(None, [(3, example)], "held-out", off)
    row = metrics.iloc[0]
    assert (row["task"], row["example"], row["metric"], row["quantity"], row["unit"]) == ("volume", 3, metric.name, "volume", "mm3")
    assert row["expected"] == metric.value and row["relative_error"] == pytest.approx(0.1)
    # right within 10 %, but from no program at all: neither exact nor equivalent
    assert table.loc[0, "finished"] and not table.loc[0, "execution_equivalent"]
    # a number reported under another name counts as missing: wholly wrong
    _, metrics = score_examples(None, [(3, example)], "held-out", Answering(metrics=[Metric("volume", 1.0, "mm3")]))
    assert math.isnan(metrics.loc[0, "produced"]) and metrics.loc[0, "relative_error"] == 1.0


def test_an_exact_zero_where_zero_is_expected_is_no_error():
    """A lesion that did not grow: 0 reported against 0 is right (it scored 1, wholly wrong, before)."""
    assert relative_error(0.0, 0.0) == 0.0
    assert relative_error(-0.0, 0.0) == 0.0
    assert relative_error(0.5, 0.0) == 1.0 and relative_error(math.nan, 0.0) == 1.0
    assert relative_error(math.nan, 2.0) == 1.0 and relative_error(3.0, 2.0) == 0.5


def test_a_right_mask_under_another_name_is_scored_and_an_image_is_never_taken_for_a_mask(examples):
    """The output that plays the expected output's role is scored, whatever the program named it; an
    image (a float volume) is not a mask, and two candidate masks are ambiguous."""
    example = examples["segment-anatomy"]
    target = example.bound.program["target"]
    renamed = [step.replace(f'output(segmentation, "{target}")', 'output(segmentation, "my structure")')
               for step in example.program]
    assert renamed != example.program
    table, _ = score_examples(None, [(0, example)], "held-out", Replaying({example.prompt: (renamed, example.subject)}))
    assert table.loc[0, "mask_dice"] == 1.0  # it scored 0 by name before
    expected = mask((0, 0, 0), (1, 1, 1))
    image = expected.with_array(np.ones((4, 4, 4), np.float32))
    assert role_output({"T1w within it": image}, "it", expected) is None
    assert role_output({"T1w within it": image, "other name": expected}, "it", expected) is expected
    assert role_output({"a": expected, "b": mask((2, 2, 2))}, "it", expected) is None
    assert role_output({"a": mask((3, 3, 3)), "it": expected}, "it", expected) is expected
    assert role_output({"it": Volume(np.zeros((2, 2, 2), np.uint8), np.eye(4))}, "it", expected) is None


def test_choices_give_the_expected_and_produced_answer(examples):
    example = examples["enhancement"]
    answer = execute(example.program, example.subject).library.responses[-1]
    other = "non-enhancing" if answer == "enhancing" else "enhancing"
    for agent, produced, correct in ((Answering(responses=[answer], ok=True), answer, True),
                                     (Answering(responses=[other], ok=True), other, False),
                                     (Answering(), None, False)):
        table, metrics = score_examples(None, [(0, example)], "held-out", agent)
        row = table.iloc[0]
        assert (row["answer_expected"], row["answer_produced"], row["answer_correct"]) == (answer, produced, correct)
        assert metrics.empty and math.isnan(row["mask_dice"])
    # other kinds of task have no answer
    table, _ = score_examples(None, [(0, examples["volume"])], "held-out", Answering())
    assert table.loc[0, ["answer_expected", "answer_produced", "answer_correct"]].isna().all()


# --- binding fixed values and paraphrases -------------------------------------------------------

def test_binding_fixed_values_derives_what_sampling_derives(anatomy_cache):
    """Fixing an example's own values reproduces its binding: {name}_text, {signal_words},
    {reference}, prompt forms and the lesion a description picks out."""
    for number, name in enumerate(["signal-intensity", "mean-intensity", "volume", "lesion-growth", "enhancement"]):
        example = sample_example(np.random.default_rng([5, number]), name, COARSE_MM)
        given = {value: example.bound.program[value] for value in example.task.values}
        bound = bind_values(example.task, given, example.subject)
        assert (bound.program, bound.prompt) == (example.bound.program, example.bound.prompt), name
        assert {k: id(v) for k, v in bound.lesions.items()} == {k: id(v) for k, v in example.bound.lesions.items()}
    # a value the subject does not allow: an image it does not have
    absent = next(c for c in ("PDw", "FLAIR", "T2w", "CT") if c not in example.subject.contrasts)
    with pytest.raises(values.NoValue, match=absent):
        bind_values(catalogue()["extract-region"], {"contrast": absent, "target": "brain"}, example.subject)


def _check_pair(paraphrase, pair):
    asked, twin = pair
    chosen = catalogue()[paraphrase.task]
    assert asked.prompt == paraphrase.prompt and twin.prompt != paraphrase.prompt and "<" not in twin.prompt
    assert asked.task is twin.task is chosen and asked.subject is twin.subject and asked.bound is twin.bound
    assert {name: asked.bound.program[name] for name in chosen.values} == paraphrase.values
    assert asked.program == twin.program == chosen.program_for(asked.bound.program)
    run = execute(asked.program, asked.subject)
    assert run.ok, (paraphrase.prompt, [f.error for f in run.feedback if not f.ok])


def test_paraphrases_pair_with_a_template_prompt_of_the_same_values(anatomy_cache):
    by_family = {}  # the first shipped entry of each family
    for paraphrase in load_paraphrases():
        by_family.setdefault(paraphrase.family, paraphrase)
    chosen = list(by_family.values())
    pairs = paraphrase_examples(chosen, spacing_mm=COARSE_MM)
    assert len(pairs) == len(chosen)
    for paraphrase, pair in zip(chosen, pairs):
        _check_pair(paraphrase, pair)
    again = paraphrase_examples(chosen[:1], spacing_mm=COARSE_MM)[0]
    assert (again[0].prompt, again[1].prompt) == (pairs[0][0].prompt, pairs[0][1].prompt)


def test_a_paraphrase_no_subject_allows_is_named(monkeypatch, anatomy_cache):
    from voxelprompt.evaluation import scoring

    monkeypatch.setattr(scoring, "MAX_ATTEMPTS", 2)
    # one infarct at most per subject: never "the largest" of several
    impossible = Paraphrase("Outline the bigger stroke.", "segment-lesion", {"lesion": "the largest infarct"})
    with pytest.raises(RuntimeError, match="Outline the bigger stroke"):
        paraphrase_examples([impossible], spacing_mm=COARSE_MM)


@pytest.mark.slow
def test_every_shipped_paraphrase_yields_an_example_whose_ground_truth_runs(anatomy_cache):
    """On the evaluation protocol's grid (about a minute and a half; CI runs it with the slow tests): every entry's values are allowed by some
    held-out subject, and the ground-truth program of the values runs to the end. Ten entries once
    asked for what no subject has ("the left infarct": a class drawn once per subject is never told
    apart by side)."""
    problems = []
    for index, paraphrase in enumerate(load_paraphrases()):
        try:
            _check_pair(paraphrase, paraphrase_example(paraphrase, index, spacing_mm=PROTOCOL_MM))
        except (RuntimeError, AssertionError) as problem:
            problems.append(f"{paraphrase.prompt!r}: {problem}")
    assert not problems, f"{len(problems)} paraphrases:\n" + "\n".join(problems)


# --- segmentation of the large structures ----------------------------------------------------------

def test_held_out_subjects_hold_every_large_structure_and_are_reproducible(anatomy_cache):
    from voxelprompt.evaluation.scoring import held_out_subjects
    from voxelprompt.synth.labels import LARGE_STRUCTURES
    from voxelprompt.tasks.truth import target_mask

    first, again = held_out_subjects(1)[0], held_out_subjects(1)[0]
    assert np.array_equal(first.sessions[0].synthetic.label_map.array, again.sessions[0].synthetic.label_map.array)
    assert "T1w" in first.contrasts
    for target in LARGE_STRUCTURES:
        assert target_mask(first.sessions[0], target).sum() > 20, target


def test_the_real_scan_is_fsaverage_with_its_own_labels(anatomy_cache):
    import importlib.util

    from voxelprompt.evaluation.scoring import real_scan
    from voxelprompt.synth.labels import LARGE_STRUCTURES
    from voxelprompt.synth import anatomy
    from voxelprompt.tasks.truth import target_mask

    if importlib.util.find_spec(anatomy.FREESURFER_PACKAGE) is None:
        pytest.skip("optional FreeSurfer anatomy not installed (requirements/freesurfer-data.txt)")
    subject = real_scan()
    (scan,) = subject.scans
    label_map = subject.sessions[0].synthetic.label_map
    assert scan.modality == "T1w" and scan.volume.grid.is_same(label_map.grid)
    white = target_mask(subject.sessions[0], "left and right cerebral white matter")
    cortex = target_mask(subject.sessions[0], "left and right cerebral cortex")
    # a real T1w: white matter is brighter than cortex
    assert np.median(scan.volume.array[white]) > np.median(scan.volume.array[cortex]) + 10
    assert all(target_mask(subject.sessions[0], t).sum() > 1000 for t in LARGE_STRUCTURES)


def test_the_baselines_train_the_papers_design_whatever_the_models_head():
    """The quoted baselines were trained with the configuration of the checkpoint then shipped (the
    paper's head, no reader): a model with the dynamic head and the atlas prior must not change them."""
    quoted = VisionConfig(first_channels=8, working_spacing_mm=2.0)
    for preset in ("cpu", "cpu-no-prior", "cpu-modulated"):
        assert baseline_vision(PRESETS[preset].vision) == quoted
