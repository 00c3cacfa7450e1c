"""The evaluation's results as statistics, Parquet tables, figures and a markdown summary (paper §5.2
and §5.3, Figures 4 and 5).

The evaluation gives four long-form tables (any of them may be empty, when its part was turned off):

- `segmentation`: one Dice per set, subject, target and method (VoxelPrompt and its baselines);
- `characterisation`: one right-or-wrong answer per pathology task, example and method;
- `examples`: one end-to-end agent run per prompt: program match, Dice of its mask, its answer;
- `metrics`: one row per number a run reported, with its relative error.

From them come the paired tests (a paired t-test on Dice per target, as in Figure 4; an exact
McNemar test on right-or-wrong answers per task), summaries per task family and per quantity, the
robustness to paraphrased prompts, two figures in the style of Figures 4 and 5, and `summary.md`.
`write_evaluation` writes them all into one folder, or, when anything fails, none of them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import stats

from voxelprompt.evaluation.scoring import CHARACTERISATION, HELD_OUT, PARAPHRASE
from voxelprompt.evaluation.scoring import TEMPLATE as SAME_VALUES
from voxelprompt.core.io import atomic_output, write_text
from voxelprompt.model.vision import THICK_RATIO  # what the networks treat as thick slices
from voxelprompt.study.report import METADATA_KEY

VOXELPROMPT = "VoxelPrompt"
INSTRUCTABLE_NETWORK = "instructable network"
SINGLE_TASK_NETWORK = "single-task network"
SINGLE_TASK_CLASSIFIER = "single-task classifier"
REGISTRATION = "registration"
METHOD_ORDER = (VOXELPROMPT, INSTRUCTABLE_NETWORK, SINGLE_TASK_NETWORK, SINGLE_TASK_CLASSIFIER, REGISTRATION)
# The paper's colours: VoxelPrompt black, single-task benchmarks purple, the other baseline blue.
METHOD_COLOURS = {VOXELPROMPT: "#000000", INSTRUCTABLE_NETWORK: "#8c8c8c", SINGLE_TASK_NETWORK: "#7b3294",
                  SINGLE_TASK_CLASSIFIER: "#7b3294", REGISTRATION: "#2c7bb6"}
# Methods the paper does not name get these, none of them close to the colours above.
OTHER_COLOURS = ("#d95f02", "#1b9e77", "#e7298a", "#66a61e", "#e6ab02", "#a6761d")
TARGET_KINDS = ("anatomy", "lesion")  # Figure 4 groups the targets in this order
CHARACTERISATION_TASKS = ("signal-intensity", "cerebral-location", "vascular-territory", "diffusion-restriction",
                          "enhancement")
QUANTITIES = ("volume", "extent", "intensity", "ratio")
SOURCES = (HELD_OUT, PARAPHRASE, SAME_VALUES, CHARACTERISATION)
ALL_FAMILIES, ALL_QUANTITIES, AVERAGE_OVER_TASKS = "all families", "all quantities", "average over tasks"
MAJORITY = "majority answer"

SIGNIFICANCE_LEVEL = 0.05
# Dice differences closer than this are equal: a t statistic needs spread in the differences.
EQUAL_DIFFERENCE_TOLERANCE = 1e-12
FIGURE_DPI = 150
JITTER_SEED = 0  # the same tables always give the same picture
TARGET_GROUP_GAP = 0.6  # x units between the anatomy and the lesion targets of a segmentation panel
DECIMALS = 3

INPUT_COLUMNS = {
    "cohort": ("set", "subject", "session", "modality", "acquisition_spacing_mm", "grid_spacing_mm", "lesion_classes",
               "lesions"),
    "segmentation": ("set", "subject", "target", "target_kind", "method", "dice"),
    "characterisation": ("task", "example", "method", "expected", "predicted", "correct"),
    "examples": ("source", "family", "task", "example", "prompt", "program_exact", "execution_equivalent",
                 "targets_correct", "finished", "mask_dice", "answer_expected", "answer_produced", "answer_correct", "seconds"),
    "metrics": ("source", "family", "task", "example", "metric", "quantity", "unit", "expected", "produced",
                "relative_error"),
}
SEGMENTATION_TEST_COLUMNS = ("set", "target", "target_kind", "method", "baseline", "n", "method_mean",
                             "baseline_mean", "mean_difference", "t", "p", "significant")
CHARACTERISATION_TEST_COLUMNS = ("task", "method", "baseline", "n", "method_accuracy", "baseline_accuracy",
                                 "accuracy_difference", "method_only_correct", "baseline_only_correct", "test", "p",
                                 "significant")
# The summary's segmentation table: what the agent adds to single-task networks, and what the
# instructable network alone does; the tests of VoxelPrompt against the other methods are in the Parquet.
SUMMARY_COMPARISONS = ((VOXELPROMPT, SINGLE_TASK_NETWORK), (INSTRUCTABLE_NETWORK, SINGLE_TASK_NETWORK))
MCNEMAR, PAIRED_T_OVER_TASKS = "exact McNemar", "paired t-test over tasks"
SEGMENTATION_FIGURE, CHARACTERISATION_FIGURE, SUMMARY = "segmentation.png", "characterisation.png", "summary.md"
SEGMENTATION_TESTS, CHARACTERISATION_TESTS = "segmentation_tests", "characterisation_tests"
OUTPUT_FILES = (*(f"{name}.parquet" for name in (*INPUT_COLUMNS, SEGMENTATION_TESTS, CHARACTERISATION_TESTS)),
                SEGMENTATION_FIGURE, CHARACTERISATION_FIGURE, SUMMARY)


# --- input tables --------------------------------------------------------------------------------

def _table(frame: pd.DataFrame | None, name: str) -> pd.DataFrame:
    """`frame` checked for the columns of the `name` table; None or zero rows give an empty table."""
    columns = list(INPUT_COLUMNS[name])
    if frame is None or len(frame) == 0:
        return pd.DataFrame({column: pd.Series(dtype=object) for column in columns})
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"the {name} table lacks the columns {', '.join(missing)}")
    return frame.reset_index(drop=True)


def _refuse_duplicates(frame: pd.DataFrame, keys: list[str], name: str) -> None:
    """Pairing needs one value per key: a repeated row would be a second, unpaired observation."""
    repeated = frame[frame.duplicated(keys, keep=False)]
    if len(repeated):
        first = ", ".join(f"{key}={repeated.iloc[0][key]!r}" for key in keys)
        raise ValueError(f"the {name} table has {len(repeated)} rows that repeat a key, e.g. {first}")


def _ordered(values: Iterable[Any], preferred: Sequence[Any] = ()) -> list[Any]:
    """The distinct `values`: those in `preferred` first in its order, then the others as they come."""
    present = list(dict.fromkeys(values))
    return [value for value in preferred if value in present] + [value for value in present if value not in preferred]


def _as_bool(values: pd.Series) -> pd.Series:
    """Right-or-wrong flags with a missing answer counted as wrong."""
    return values.astype("boolean").fillna(False).astype(bool)


def _rate(values: pd.Series) -> float:
    """Mean of the flags that are set (True or False); NaN when none is, e.g. a family with no choice."""
    known = values.dropna()
    return float(known.astype(bool).mean()) if len(known) else float("nan")


def _mean(values: pd.Series) -> float:
    finite = pd.to_numeric(values, errors="coerce").dropna()
    return float(finite.mean()) if len(finite) else float("nan")


# --- paired tests --------------------------------------------------------------------------------

def _paired_t(first: np.ndarray, second: np.ndarray) -> tuple[float, float]:
    """t and two-sided p of the paired t-test; NaN for fewer than two pairs or identical differences."""
    differences = first - second
    if len(differences) < 2 or np.ptp(differences) <= EQUAL_DIFFERENCE_TOLERANCE:
        return float("nan"), float("nan")
    result = stats.ttest_rel(first, second)
    return float(result.statistic), float(result.pvalue)


def _mcnemar(first: np.ndarray, second: np.ndarray) -> tuple[int, int, float]:
    """Exact McNemar test of two methods' right-or-wrong answers on the same examples: the counts of
    examples only the first and only the second got right, and the two-sided p.

    A t-test would treat each 0/1 outcome as normally distributed, which a handful of binary answers
    is not. McNemar conditions on the examples where the methods disagree: under the null each of
    those is equally likely to favour either method, so their split is Binomial(discordant, 1/2),
    tested exactly. Examples both got right or both got wrong say nothing about which is better.
    """
    first_only = int(np.sum(first & ~second))
    second_only = int(np.sum(~first & second))
    discordant = first_only + second_only
    # No disagreement is the most likely outcome under the null: p is 1 (binomtest refuses n = 0).
    p = 1.0 if discordant == 0 else float(stats.binomtest(first_only, discordant, 0.5).pvalue)
    return first_only, second_only, p


def _significant(p: float) -> bool:
    return bool(np.isfinite(p) and p < SIGNIFICANCE_LEVEL)


def _target_order(segmentation: pd.DataFrame) -> list[tuple[str, str]]:
    """(target, kind) of one set's targets: anatomy, then lesions, each in the order they come."""
    kinds = segmentation.groupby("target", sort=False)["target_kind"].first()
    order = _ordered(kinds.values, TARGET_KINDS)
    return [(target, kind) for group in order for target, kind in kinds.items() if kind == group]


def segmentation_tests(segmentation: pd.DataFrame, method: str = VOXELPROMPT,
                       baseline: str = SINGLE_TASK_NETWORK) -> pd.DataFrame:
    """Paired t-test of `method` against `baseline` on Dice, per set and target where both have
    subjects (Figure 4): the subjects both segmented, both mean Dice, the mean difference (method
    minus baseline), t and p (NaN for fewer than two subjects or identical differences), and whether
    p < 0.05. Subjects where either Dice is missing are left out of the pair."""
    segmentation = _table(segmentation, "segmentation")
    _refuse_duplicates(segmentation, ["set", "target", "subject", "method"], "segmentation")
    rows = []
    for set_name in _ordered(segmentation["set"]):
        in_set = segmentation[segmentation["set"] == set_name]
        for target, kind in _target_order(in_set):
            rows_of = in_set[in_set["target"] == target]
            pairs = pd.merge(rows_of.loc[rows_of["method"] == method, ["subject", "dice"]],
                             rows_of.loc[rows_of["method"] == baseline, ["subject", "dice"]],
                             on="subject", suffixes=("_method", "_baseline")).dropna()
            if pairs.empty:
                continue
            first, second = (pairs[f"dice_{side}"].to_numpy(float) for side in ("method", "baseline"))
            t, p = _paired_t(first, second)
            rows.append((set_name, target, kind, method, baseline, len(pairs), first.mean(), second.mean(),
                         float(np.mean(first - second)), t, p, _significant(p)))
    return pd.DataFrame(rows, columns=list(SEGMENTATION_TEST_COLUMNS))


def segmentation_comparisons(segmentation: pd.DataFrame) -> list[tuple[str, str]]:
    """The (method, baseline) pairs tested: VoxelPrompt against every other method, and the
    instructable network alone against the single-task networks (what the agent adds to it)."""
    methods = _ordered(_table(segmentation, "segmentation")["method"], METHOD_ORDER)
    pairs = [(VOXELPROMPT, other) for other in methods if VOXELPROMPT in methods and other != VOXELPROMPT]
    if INSTRUCTABLE_NETWORK in methods and SINGLE_TASK_NETWORK in methods:
        pairs.append((INSTRUCTABLE_NETWORK, SINGLE_TASK_NETWORK))
    return pairs


def all_segmentation_tests(segmentation: pd.DataFrame) -> pd.DataFrame:
    """`segmentation_tests` of every pair in `segmentation_comparisons`, in one table."""
    tests = [segmentation_tests(segmentation, method, baseline)
             for method, baseline in segmentation_comparisons(segmentation)]
    tests = [table for table in tests if len(table)]
    return pd.concat(tests, ignore_index=True) if tests else pd.DataFrame(columns=list(SEGMENTATION_TEST_COLUMNS))


def characterisation_tests(characterisation: pd.DataFrame, method: str = VOXELPROMPT,
                           baseline: str = SINGLE_TASK_CLASSIFIER) -> pd.DataFrame:
    """`method` against `baseline` per pathology task, paired by example (Figure 5): both accuracies,
    their difference, the examples only one of them got right and the exact McNemar p. A last row,
    "average over tasks", holds the mean of the per-task accuracies and the paper's paired t-test over
    the tasks (NaN for fewer than two tasks). An example without an answer counts as wrong."""
    characterisation = _table(characterisation, "characterisation")
    _refuse_duplicates(characterisation, ["task", "example", "method"], "characterisation")
    characterisation = characterisation.assign(correct=_as_bool(characterisation["correct"]))
    rows = []
    for task in _ordered(characterisation["task"], CHARACTERISATION_TASKS):
        of_task = characterisation[characterisation["task"] == task]
        pairs = pd.merge(of_task.loc[of_task["method"] == method, ["example", "correct"]],
                         of_task.loc[of_task["method"] == baseline, ["example", "correct"]],
                         on="example", suffixes=("_method", "_baseline"))
        if pairs.empty:
            continue
        first, second = (pairs[f"correct_{side}"].to_numpy(bool) for side in ("method", "baseline"))
        first_only, second_only, p = _mcnemar(first, second)
        rows.append((task, method, baseline, len(pairs), first.mean(), second.mean(), first.mean() - second.mean(),
                     first_only, second_only, MCNEMAR, p, _significant(p)))
    if rows:
        per_task = pd.DataFrame(rows, columns=list(CHARACTERISATION_TEST_COLUMNS))
        first, second = (per_task[f"{side}_accuracy"].to_numpy(float) for side in ("method", "baseline"))
        _, p = _paired_t(first, second)
        rows.append((AVERAGE_OVER_TASKS, method, baseline, len(per_task), first.mean(), second.mean(),
                     first.mean() - second.mean(), int(per_task["method_only_correct"].sum()),
                     int(per_task["baseline_only_correct"].sum()), PAIRED_T_OVER_TASKS, p, _significant(p)))
    return pd.DataFrame(rows, columns=list(CHARACTERISATION_TEST_COLUMNS))


def all_characterisation_tests(characterisation: pd.DataFrame) -> pd.DataFrame:
    """`characterisation_tests` of VoxelPrompt against every other method, in one table."""
    methods = _ordered(_table(characterisation, "characterisation")["method"], METHOD_ORDER)
    tests = [characterisation_tests(characterisation, VOXELPROMPT, other)
             for other in methods if VOXELPROMPT in methods and other != VOXELPROMPT]
    tests = [table for table in tests if len(table)]
    return pd.concat(tests, ignore_index=True) if tests else pd.DataFrame(columns=list(CHARACTERISATION_TEST_COLUMNS))


def characterisation_accuracy(characterisation: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per task (rows, in the paper's order) and method (columns), with "average over tasks"
    (the mean of the accuracies of the tasks the method answered, as in Figure 5) as the first row,
    and the accuracy of always giving the task's most frequent expected answer ("majority answer")
    as the last column: what a model that ignores the images can reach."""
    characterisation = _table(characterisation, "characterisation")
    if characterisation.empty:
        return pd.DataFrame()
    characterisation = characterisation.assign(correct=_as_bool(characterisation["correct"]).astype(float))
    tasks = _ordered(characterisation["task"], CHARACTERISATION_TASKS)
    methods = _ordered(characterisation["method"], METHOD_ORDER)
    accuracy = characterisation.pivot_table(index="task", columns="method", values="correct", aggfunc="mean")
    accuracy = accuracy.reindex(index=tasks, columns=methods)
    asked = characterisation.drop_duplicates(["task", "example"])
    most_frequent = asked.groupby("task")["expected"].agg(lambda answers: answers.value_counts().iloc[0] / len(answers))
    accuracy[MAJORITY] = most_frequent.reindex(tasks)
    average = accuracy.mean(axis=0).to_frame(AVERAGE_OVER_TASKS).T
    return pd.concat([average, accuracy]).rename_axis(index="task", columns=None)


# --- summaries of the agent's runs ---------------------------------------------------------------

def program_summary(examples: pd.DataFrame) -> pd.DataFrame:
    """Per source and task family (and "all families"): how many runs, the share whose program is
    the expected one exactly, that is equivalent when executed, that segments the expected targets,
    that finished; the accuracy of the
    chosen answers and the mean Dice of the masks, each over the runs that have one."""
    examples = _table(examples, "examples")
    rows = []
    for source in _ordered(examples["source"], SOURCES):
        of_source = examples[examples["source"] == source]
        families = [(family, of_source[of_source["family"] == family])
                    for family in sorted(of_source["family"].unique())]
        for family, runs in [*families, (ALL_FAMILIES, of_source)]:
            rows.append({"source": source, "family": family, "examples": len(runs),
                         "program_exact": _rate(runs["program_exact"]),
                         "execution_equivalent": _rate(runs["execution_equivalent"]),
                         "targets_correct": _rate(runs["targets_correct"]),
                         "finished": _rate(runs["finished"]),
                         "answers": int(runs["answer_correct"].notna().sum()),
                         "answer_accuracy": _rate(runs["answer_correct"]),
                         "masks": int(pd.to_numeric(runs["mask_dice"], errors="coerce").notna().sum()),
                         "mean_mask_dice": _mean(runs["mask_dice"]),
                         "median_seconds": float(pd.to_numeric(runs["seconds"], errors="coerce").median())})
    return pd.DataFrame(rows, columns=["source", "family", "examples", "program_exact", "execution_equivalent",
                                       "targets_correct", "finished", "answers", "answer_accuracy", "masks", "mean_mask_dice",
                                       "median_seconds"])


def relative_error_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per source and quantity (and "all quantities"): how many numbers were expected, how many the
    agent did not report, and the median and mean relative error over the `n` it did."""
    metrics = _table(metrics, "metrics")
    rows = []
    for source in _ordered(metrics["source"], SOURCES):
        of_source = metrics[metrics["source"] == source]
        quantities = [(quantity, of_source[of_source["quantity"] == quantity])
                      for quantity in _ordered(of_source["quantity"], QUANTITIES)]
        for quantity, numbers in [*quantities, (ALL_QUANTITIES, of_source)]:
            reported = numbers[pd.to_numeric(numbers["produced"], errors="coerce").notna()]
            errors = pd.to_numeric(reported["relative_error"], errors="coerce")
            errors = errors[np.isfinite(errors)]
            rows.append({"source": source, "quantity": quantity, "numbers": len(numbers),
                         "missing": int(pd.to_numeric(numbers["produced"], errors="coerce").isna().sum()),
                         "n": len(errors),
                         "median_relative_error": float(errors.median()) if len(errors) else float("nan"),
                         "mean_relative_error": float(errors.mean()) if len(errors) else float("nan")})
    return pd.DataFrame(rows, columns=["source", "quantity", "numbers", "missing", "n", "median_relative_error",
                                       "mean_relative_error"])


def paraphrase_robustness(examples: pd.DataFrame) -> pd.DataFrame:
    """Per task family (and "all families"), the same examples prompted by a paraphrase and by the
    template with the same values (the `template_` columns), paired by task and example: the rates of
    exact and of execution-equivalent programs, the exact McNemar p of the equivalence rates, answer
    accuracy and mean mask Dice. A difference here is due to the wording alone."""
    examples = _table(examples, "examples")
    keys = ["family", "task", "example"]
    paired = examples[examples["source"].isin([PARAPHRASE, SAME_VALUES])]
    _refuse_duplicates(paired, ["source", *keys], "examples")
    pairs = pd.merge(paired[paired["source"] == SAME_VALUES], paired[paired["source"] == PARAPHRASE], on=keys,
                     suffixes=("_template", "_paraphrase"))
    columns = ["family", "pairs", "template_program_exact", "paraphrase_program_exact",
               "template_execution_equivalent", "paraphrase_execution_equivalent", "execution_equivalent_p",
               "template_answer_accuracy", "paraphrase_answer_accuracy", "template_mask_dice", "paraphrase_mask_dice"]
    if pairs.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    families = [(family, pairs[pairs["family"] == family]) for family in sorted(pairs["family"].unique())]
    for family, runs in [*families, (ALL_FAMILIES, pairs)]:
        row = {"family": family, "pairs": len(runs)}
        for side in ("template", "paraphrase"):
            row[f"{side}_program_exact"] = _rate(runs[f"program_exact_{side}"])
            row[f"{side}_execution_equivalent"] = _rate(runs[f"execution_equivalent_{side}"])
        _, _, row["execution_equivalent_p"] = _mcnemar(_as_bool(runs["execution_equivalent_template"]).to_numpy(),
                                                       _as_bool(runs["execution_equivalent_paraphrase"]).to_numpy())
        for side in ("template", "paraphrase"):
            row[f"{side}_answer_accuracy"] = _rate(runs[f"answer_correct_{side}"])
            row[f"{side}_mask_dice"] = _mean(runs[f"mask_dice_{side}"])
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


# --- figures -------------------------------------------------------------------------------------

def method_colours(methods: Iterable[str]) -> dict[str, str]:
    """The paper's colour of each method; others get distinct colours in the order given."""
    methods = list(methods)
    others = iter(OTHER_COLOURS * (1 + len(methods) // len(OTHER_COLOURS)))
    return {method: METHOD_COLOURS.get(method) or next(others) for method in methods}


def _label(text: str, characters: int) -> str:
    """`text` on lines of about `characters`, breaking at spaces and hyphens only: a word cut in two
    ("hyperintensitie-s") is harder to read than a long line."""
    return textwrap.fill(text, characters, break_long_words=False)


def _save_figure(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_output(path) as tmp:
        # "tight" grows the picture to hold a legend or note wider than the panels, instead of cutting them
        figure.savefig(tmp, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    return path


def figure_segmentation(segmentation: pd.DataFrame, tests: pd.DataFrame, path: str | Path) -> Path:
    """Figure 4's layout as a PNG at `path`: one panel per set; per target (anatomy, then lesions)
    each method's Dice per subject as jittered points with a bar at the mean; above each target the
    mean difference VoxelPrompt minus single-task network from `tests` (Dice x 100), with an asterisk
    when p < 0.05."""
    segmentation = _table(segmentation, "segmentation")
    if segmentation.empty:
        raise ValueError("the segmentation table is empty: there is nothing to plot")
    sets = _ordered(segmentation["set"])
    methods = _ordered(segmentation["method"], METHOD_ORDER)
    colours = method_colours(methods)
    differences = _differences_to_annotate(tests)
    spans = [_target_positions(_target_order(segmentation[segmentation["set"] == name]))[-1] for name in sets]
    widest = max(spans) + 1.2  # x units: one per target, and a margin of 0.6 either side
    figure = Figure(figsize=(max(6.0, 0.95 * widest + 1.0), 3.2 * len(sets) + 0.8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = np.atleast_1d(figure.subplots(len(sets), 1, squeeze=False)[:, 0])
    jitter = np.random.default_rng(JITTER_SEED)
    for ax, set_name in zip(axes, sets):
        _segmentation_panel(ax, segmentation[segmentation["set"] == set_name], set_name, methods, colours,
                            differences, jitter, widest)
    handles = [Line2D([], [], color=colours[method], marker="o", linestyle="-", label=method) for method in methods]
    figure.legend(handles=handles, loc="outside upper center", ncols=len(handles), frameon=False)
    if differences:
        figure.supxlabel(f"numbers: mean Dice difference {VOXELPROMPT} − {SINGLE_TASK_NETWORK} (× 100)\n"
                         f"* p < {SIGNIFICANCE_LEVEL:g}, paired t-test over subjects", fontsize=8)
    return _save_figure(figure, path)


def _differences_to_annotate(tests: pd.DataFrame | None) -> dict[tuple[str, str], tuple[float, bool]]:
    """(set, target) -> (mean difference, significant) of VoxelPrompt against the single-task networks."""
    if tests is None or tests.empty:
        return {}
    chosen = tests[(tests["method"] == VOXELPROMPT) & (tests["baseline"] == SINGLE_TASK_NETWORK)]
    return {(row.set, row.target): (float(row.mean_difference), bool(row.significant))
            for row in chosen.itertuples(index=False)}


def _target_positions(targets: list[tuple[str, str]]) -> list[float]:
    """x of each target: one unit apart, with a gap where the kind changes (anatomy to lesions)."""
    positions, x = [], 0.0
    for number, (_, kind) in enumerate(targets):
        if number and kind != targets[number - 1][1]:
            x += TARGET_GROUP_GAP
        positions.append(x)
        x += 1.0
    return positions


def _segmentation_panel(ax, rows: pd.DataFrame, set_name: str, methods: list[str], colours: dict[str, str],
                        differences: dict, jitter: np.random.Generator, width: float) -> None:
    """One set's panel, `width` x units wide whatever its number of targets, so that every panel of
    the figure has the same scale."""
    targets = _target_order(rows)
    positions = _target_positions(targets)
    present = [method for method in methods if (rows["method"] == method).any()]
    slot = 0.8 / len(present)  # of the unit width of a target, between its methods
    for number in range(1, len(targets)):
        if targets[number][1] != targets[number - 1][1]:
            ax.axvline((positions[number - 1] + positions[number]) / 2, color="#bbbbbb", linestyle=":", linewidth=1)
    for (target, kind), centre in zip(targets, positions):
        of_target = rows[rows["target"] == target]
        for number, method in enumerate(present):
            dice = pd.to_numeric(of_target.loc[of_target["method"] == method, "dice"], errors="coerce").dropna()
            if dice.empty:
                continue
            where = centre + (number - (len(present) - 1) / 2) * slot
            ax.scatter(where + jitter.uniform(-0.3, 0.3, len(dice)) * slot, dice, s=9, color=colours[method],
                       alpha=0.55, linewidths=0)
            ax.hlines(dice.mean(), where - 0.4 * slot, where + 0.4 * slot, color=colours[method], linewidth=2.2)
        if (set_name, target) in differences:
            difference, significant = differences[(set_name, target)]
            ax.text(centre, 1.03, f"{100 * difference:+.1f}" + ("*" if significant else ""), ha="center",
                    va="bottom", fontsize=7)
    for kind in _ordered(kind for _, kind in targets):
        spots = [centre for (_, of_kind), centre in zip(targets, positions) if of_kind == kind]
        ax.text(np.mean(spots), 1.11, kind, ha="center", va="bottom", fontsize=8, fontweight="bold")
    ax.set_xticks(positions, [_label(target, 14) for target, _ in targets], fontsize=7)
    ax.set_xlim(-0.6, width - 0.6)
    ax.set_ylim(0.0, 1.2)
    ax.set_yticks(np.linspace(0.0, 1.0, 6))
    ax.set_ylabel("Dice")
    subjects = rows["subject"].nunique()
    ax.set_title(f"{set_name} ({subjects} subject{'' if subjects == 1 else 's'})", fontsize=10, loc="left")
    ax.spines[["top", "right"]].set_visible(False)


def figure_characterisation(characterisation: pd.DataFrame, path: str | Path) -> Path:
    """Figure 5's layout as a PNG at `path`: accuracy per task and method as bars, the average over
    tasks leftmost (with the standard deviation over tasks), and the majority answer as a dashed line."""
    accuracy = characterisation_accuracy(characterisation)
    if accuracy.empty:
        raise ValueError("the characterisation table is empty: there is nothing to plot")
    methods = [column for column in accuracy.columns if column != MAJORITY]
    colours = method_colours(methods)
    tasks = accuracy.index[1:]
    per_task = accuracy.loc[tasks, methods]
    spread = per_task.std(axis=0, ddof=1) if len(tasks) > 1 else pd.Series(np.nan, index=methods)
    figure = Figure(figsize=(max(5.0, 1.1 * len(accuracy) + 1.5), 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    positions = np.array([0.0, *(1.3 + np.arange(len(tasks)))])  # a gap sets the average apart
    width = 0.8 / len(methods)
    for number, method in enumerate(methods):
        offsets = positions + (number - (len(methods) - 1) / 2) * width
        errors = [spread[method], *[np.nan] * len(tasks)]
        ax.bar(offsets, accuracy[method].to_numpy(float), width * 0.9, color=colours[method], label=method,
               yerr=errors, capsize=3, error_kw={"elinewidth": 1})
    for centre, majority in zip(positions, accuracy[MAJORITY]):
        ax.hlines(majority, centre - 0.45, centre + 0.45, color="#555555", linestyle="--", linewidth=1)
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="#555555", linestyle="--", linewidth=1, label=MAJORITY))
    figure.legend(handles=handles, loc="outside upper center", ncols=len(handles), frameon=False)
    ax.set_xticks(positions, [_label(name, 12) for name in accuracy.index], fontsize=8)
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("accuracy")
    ax.spines[["top", "right"]].set_visible(False)
    return _save_figure(figure, path)


# --- summary -------------------------------------------------------------------------------------

def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        # + 0.0 turns a rounded -0.0 into 0.0: a difference that rounds to zero is not "-0.000"
        return f"{round(float(value), DECIMALS) + 0.0:.{DECIMALS}f}"
    return _escaped(value)


def _escaped(value: Any) -> str:
    """`value` as text that stays in its markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _p_cell(p: float) -> str:
    if not np.isfinite(p):
        return "–"
    text = f"<{10 ** -DECIMALS:.{DECIMALS}f}" if p < 10 ** -DECIMALS else f"{p:.{DECIMALS}f}"
    return text + (" *" if p < SIGNIFICANCE_LEVEL else "")


def _markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def _setting(value: Any) -> str:
    """A setting as it was given, not rounded: a learning rate of 1e-4 is not 0.000."""
    if isinstance(value, (Mapping, list, tuple)):
        value = json.dumps(value, default=str)
    return _escaped(value)


def _settings_section(settings: Mapping[str, Any]) -> list[str]:
    lines = ["## Settings", ""]
    if not settings:
        return [*lines, "No settings were recorded.", ""]
    rows = [(f"`{key}`", _setting(value)) for key, value in settings.items()]
    return [*lines, *_markdown_table(["setting", "value"], rows)]


def _cohort_section(cohort: pd.DataFrame) -> list[str]:
    """What the held-out segmentation subjects are: contrasts, thick slices, lesion classes."""
    if cohort.empty:
        return []
    subjects = cohort.drop_duplicates("subject")
    contrasts = cohort["modality"].value_counts()
    spacing = cohort["acquisition_spacing_mm"].map(lambda text: [float(v) for v in text.split(" x ")])
    thick = int(sum(max(v) > THICK_RATIO * min(v) for v in spacing))
    classes = sorted({c.strip() for text in subjects["lesion_classes"] for c in text.split(",") if c.strip()})
    return ["## Held-out subjects (segmentation)", "",
            f"{len(subjects)} synthetic subjects on a {_setting(float(cohort['grid_spacing_mm'].iloc[0]))} mm grid, "
            f"{len(cohort)} images: " + ", ".join(f"{name} {count}" for name, count in contrasts.items())
            + f"; {thick} with slices over {THICK_RATIO:g}× their in-plane voxel side (thick for the networks); "
            f"lesion classes: {', '.join(classes) or 'none'}. "
            "Each image is listed in `cohort.parquet`.", ""]


def _segmentation_section(segmentation: pd.DataFrame) -> list[str]:
    lines = ["## Segmentation (§5.2, Figure 4)", ""]
    if segmentation.empty:
        return [*lines, "Not evaluated in this run.", ""]
    sets = _ordered(segmentation["set"])
    methods = _ordered(segmentation["method"], METHOD_ORDER)
    subjects = ", ".join(f"{name}: {segmentation.loc[segmentation['set'] == name, 'subject'].nunique()}"
                         for name in sets)
    lines += [f"Used {len(segmentation)} Dice values: subjects per set {subjects}; "
              f"{segmentation['target'].nunique()} targets; methods {', '.join(methods)}.", "",
              "Mean Dice per target and method. Δ is the mean paired difference (first method minus second) "
              f"over the subjects both segmented, p that of a paired t-test (* p < {SIGNIFICANCE_LEVEL:g}; – for "
              f"fewer than two subjects or identical differences). Every comparison is in `{SEGMENTATION_TESTS}"
              ".parquet`.", ""]
    tests = all_segmentation_tests(segmentation)
    present = set(zip(tests["method"], tests["baseline"]))
    comparisons = [pair for pair in SUMMARY_COMPARISONS if pair in present]
    means = segmentation.assign(dice=pd.to_numeric(segmentation["dice"], errors="coerce")).groupby(
        ["set", "target", "method"])["dice"].mean()
    header = ["target", "kind", "subjects", *methods,
              *(text for first, second in comparisons for text in (f"Δ {first} − {second}", "p"))]
    for set_name in sets:
        in_set = segmentation[segmentation["set"] == set_name]
        rows = []
        for target, kind in _target_order(in_set):
            row = [_cell(target), _cell(kind), _cell(in_set.loc[in_set["target"] == target, "subject"].nunique())]
            row += [_cell(means.get((set_name, target, method), float("nan"))) for method in methods]
            for first, second in comparisons:
                test = tests[(tests["set"] == set_name) & (tests["target"] == target) & (tests["method"] == first)
                             & (tests["baseline"] == second)]
                row += ([_cell(float(test["mean_difference"].iloc[0])), _p_cell(float(test["p"].iloc[0]))]
                        if len(test) else ["–", "–"])
            rows.append(row)
        lines += [f"### {set_name}", "", *_markdown_table(header, rows)]
    return lines


def _characterisation_section(characterisation: pd.DataFrame) -> list[str]:
    lines = ["## Pathology characterisation (§5.3, Figure 5)", ""]
    if characterisation.empty:
        return [*lines, "Not evaluated in this run.", ""]
    accuracy = characterisation_accuracy(characterisation)
    tests = all_characterisation_tests(characterisation)
    baselines = _ordered(tests["baseline"])
    methods = [column for column in accuracy.columns if column != MAJORITY]
    examples = characterisation.groupby("task")["example"].nunique()
    lines += [f"Used {len(characterisation)} answers to {examples.sum()} examples in {len(examples)} tasks; "
              f"methods {', '.join(methods)}.", "",
              "Accuracy per task and method; the majority answer is the accuracy of always giving the task's most "
              "frequent expected answer. "
              f"p per task is the exact McNemar test on the examples both methods answered (* p < "
              f"{SIGNIFICANCE_LEVEL:g}); for the average, a paired t-test over the tasks.", ""]
    header = ["task", "examples", *methods, MAJORITY,
              *(text for baseline in baselines for text in (f"Δ {VOXELPROMPT} − {baseline}", "p"))]
    rows = []
    for task in accuracy.index:
        count = int(examples.sum()) if task == AVERAGE_OVER_TASKS else int(examples.get(task, 0))
        row = [_cell(task), _cell(count), *(_cell(float(accuracy.at[task, column])) for column in [*methods, MAJORITY])]
        for baseline in baselines:
            test = tests[(tests["task"] == task) & (tests["baseline"] == baseline)]
            row += ([_cell(float(test["accuracy_difference"].iloc[0])), _p_cell(float(test["p"].iloc[0]))]
                    if len(test) else ["–", "–"])
        rows.append(row)
    return [*lines, *_markdown_table(header, rows)]


def _programs_section(examples: pd.DataFrame) -> list[str]:
    lines = ["## Programs per task family", ""]
    if examples.empty:
        return [*lines, "Not evaluated in this run.", ""]
    sources = examples["source"].value_counts()
    counts = ", ".join(f"{sources[source]} {source}" for source in _ordered(examples["source"], SOURCES))
    lines += [f"Used {len(examples)} agent runs: {counts}.", "",
              "Rates over the runs of each family: program identical to the expected one, program equivalent "
              "when executed, the targets it segments are the expected ones, run finished; answer accuracy over the runs with a chosen answer and mean Dice over "
              "those with a mask.", ""]
    summary = program_summary(examples)
    header = ["family", "runs", "program exact", "execution equivalent", "targets", "finished", "answers", "answer accuracy",
              "masks", "mean mask Dice"]
    for source in _ordered(summary["source"], SOURCES):
        # Run times stay in the table (examples.parquet): they are the machine's, not the model's.
        of_source = summary[summary["source"] == source].drop(columns=["source", "median_seconds"])
        rows = [[_cell(value) for value in row] for row in of_source.itertuples(index=False)]
        lines += [f"### {source}", "", *_markdown_table(header, rows)]
    return lines


def _relative_error_section(metrics: pd.DataFrame) -> list[str]:
    lines = ["## Relative error of the reported numbers", ""]
    if metrics.empty:
        return [*lines, "Not evaluated in this run.", ""]
    examples = metrics[["source", "family", "task", "example"]].drop_duplicates()
    lines += [f"Used {len(metrics)} expected numbers from {len(examples)} runs. |produced − expected| / |expected| "
              "over the numbers the agent reported; missing ones are counted apart.", ""]
    summary = relative_error_summary(metrics)
    header = ["source", "quantity", "numbers", "missing", "n", "median relative error", "mean relative error"]
    rows = ([_cell(value) for value in row] for row in summary.itertuples(index=False))
    return [*lines, *_markdown_table(header, rows)]


def _paraphrase_section(examples: pd.DataFrame) -> list[str]:
    lines = ["## Robustness to paraphrased prompts", ""]
    robustness = paraphrase_robustness(examples)
    if robustness.empty:
        return [*lines, "Not evaluated in this run.", ""]
    total = int(robustness.loc[robustness["family"] == ALL_FAMILIES, "pairs"].iloc[0])
    lines += [f"Used {total} examples, each prompted by its template and by a paraphrase with the same values. "
              "p is the exact McNemar test on execution equivalence.", ""]
    header = ["family", "pairs", "exact (template)", "exact (paraphrase)", "equivalent (template)",
              "equivalent (paraphrase)", "p", "answer (template)", "answer (paraphrase)", "Dice (template)",
              "Dice (paraphrase)"]
    rows = []
    for row in robustness.itertuples(index=False):
        cells = [_cell(value) for value in row]
        cells[6] = _p_cell(row.execution_equivalent_p)
        rows.append(cells)
    return [*lines, *_markdown_table(header, rows)]


def summary_markdown(tables: Mapping[str, pd.DataFrame], settings: Mapping[str, Any]) -> str:
    """The evaluation as markdown: the settings, then one section per part (segmentation,
    characterisation, programs, relative errors, paraphrases), each saying how much data it used, or
    that the part was not evaluated. Numbers are rounded to three decimals."""
    frames = {name: _table(tables.get(name), name) for name in INPUT_COLUMNS}
    lines = ["# VoxelPrompt evaluation", "", *_settings_section(settings), *_cohort_section(frames["cohort"]),
             *_segmentation_section(frames["segmentation"]),
             *_characterisation_section(frames["characterisation"]),
             *_programs_section(frames["examples"]),
             *_relative_error_section(frames["metrics"]),
             *_paraphrase_section(frames["examples"])]
    return "\n".join(lines).rstrip("\n") + "\n"


# --- writing -------------------------------------------------------------------------------------

def _write_parquet(frame: pd.DataFrame, path: Path, document: Mapping[str, Any]) -> Path:
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise ValueError(f"the {path.stem} table cannot be written as Parquet: {error}") from error
    metadata = (table.schema.metadata or {}) | {METADATA_KEY: json.dumps(document, default=str).encode()}
    with atomic_output(path) as tmp:
        pq.write_table(table.replace_schema_metadata(metadata), tmp)
    return path


def write_evaluation(out_dir: str | Path, tables: Mapping[str, pd.DataFrame], provenance: Mapping[str, str],
                     settings: Mapping[str, Any]) -> dict[str, Path]:
    """Write the evaluation into `out_dir`, returning the files written by name:

    - `<table>.parquet` for each non-empty input table (segmentation, characterisation, examples,
      metrics), and `segmentation_tests.parquet` and `characterisation_tests.parquet` (every
      comparison, see `all_segmentation_tests`), each with {"table", "provenance", "settings"} as
      JSON under the `voxelprompt` schema metadata key;
    - `segmentation.png` and `characterisation.png`, when there is data to plot;
    - `summary.md` (`summary_markdown`).

    All of it is made in a hidden folder inside `out_dir` first, then moved into place: an error on
    the way leaves `out_dir` as it was. A part with no data this time also loses its files from an
    earlier run, so the folder never mixes two evaluations; `summary.md` goes last and is removed
    first, so a folder with one is whole.
    """
    unknown = sorted(set(tables) - set(INPUT_COLUMNS))
    if unknown:
        raise ValueError(f"unknown evaluation tables {', '.join(unknown)}; expected {', '.join(INPUT_COLUMNS)}")
    frames = {name: _table(tables.get(name), name) for name in INPUT_COLUMNS}
    results = {**frames, SEGMENTATION_TESTS: all_segmentation_tests(frames["segmentation"]),
               CHARACTERISATION_TESTS: all_characterisation_tests(frames["characterisation"])}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".evaluation.", dir=out_dir))  # same file system: renames are atomic
    try:
        staged = {}
        for name, frame in results.items():
            if len(frame):
                document = {"table": name, "provenance": dict(provenance), "settings": dict(settings)}
                staged[f"{name}.parquet"] = _write_parquet(frame, staging / f"{name}.parquet", document)
        if len(frames["segmentation"]):
            staged[SEGMENTATION_FIGURE] = figure_segmentation(frames["segmentation"], results[SEGMENTATION_TESTS],
                                                              staging / SEGMENTATION_FIGURE)
        if len(frames["characterisation"]):
            staged[CHARACTERISATION_FIGURE] = figure_characterisation(frames["characterisation"],
                                                                      staging / CHARACTERISATION_FIGURE)
        staged[SUMMARY] = write_text(staging / SUMMARY, summary_markdown(frames, settings))
        return _publish(staged, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staged: Mapping[str, Path], out_dir: Path) -> dict[str, Path]:
    """Move the staged files (name -> path) into `out_dir`, and remove the outputs of an earlier
    evaluation that this one did not make; the summary goes out first and comes back last."""
    (out_dir / SUMMARY).unlink(missing_ok=True)
    written = {}
    for name in staged:
        if name != SUMMARY:
            written[name] = out_dir / name
            os.replace(staged[name], written[name])
    for name in OUTPUT_FILES:
        if name not in staged:
            (out_dir / name).unlink(missing_ok=True)
    written[SUMMARY] = out_dir / SUMMARY
    os.replace(staged[SUMMARY], written[SUMMARY])
    return written


# --- docs/evaluation.md's quote of the summary ---------------------------------------------------

# Two quotes: the reduced setting's, which CI reproduces, and the full setting's (its command is on the
# page).
EVALUATION_PAGE = "docs/evaluation.md"  # where the summaries of the shipped model are quoted, between markers
QUOTE_MARKERS = {
    "reduced": ("<!-- evaluation summary: start -->", "<!-- evaluation summary: end -->"),
    "full": ("<!-- evaluation summary, full setting: start -->", "<!-- evaluation summary, full setting: end -->"),
}
QUOTE_HEADING_SHIFT = 1  # summary.md's "## Settings" sits under the page's "## ... setting" heading


def page_quote(summary: str) -> str:
    """`summary.md` as the evaluation page quotes it: without its title, every heading one level
    down (each quote sits under a level-two heading of the page)."""
    lines = summary.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    shift = "#" * QUOTE_HEADING_SHIFT
    return "\n".join(shift + line if line.startswith("#") else line for line in lines).strip("\n") + "\n"


def _quote_span(page: str, setting: str) -> tuple[int, int] | None:
    start_marker, end_marker = QUOTE_MARKERS[setting]
    start, end = page.find(start_marker), page.find(end_marker)
    return (start + len(start_marker), end) if 0 <= start < end else None


def quoted_in_page(page: str, setting: str = "reduced") -> str:
    """The quote of a setting's summary between the page's markers ("" when it has none)."""
    span = _quote_span(page, setting)
    return page[span[0]:span[1]].strip("\n") + "\n" if span else ""


def with_quote(page: str, summary: str, setting: str = "reduced") -> str:
    """The page with its quote of `setting` replaced by that of `summary`."""
    span = _quote_span(page, setting)
    if span is None:
        raise ValueError("the page has no {} ... {} block".format(*QUOTE_MARKERS[setting]))
    return page[:span[0]] + "\n" + page_quote(summary) + page[span[1]:]
