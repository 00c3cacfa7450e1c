"""The evaluation's statistics (paper §5.2 and §5.3): the four long-form tables it gives, checked,
and what is computed from them.

- `segmentation`: one Dice per set, subject, target and method (VoxelPrompt and its baselines);
- `characterisation`: one right-or-wrong answer per pathology task, example and method;
- `examples`: one end-to-end agent run per prompt: program match, Dice of its mask, its answer;
- `metrics`: one row per number a run reported, with its relative error.

From them come the paired tests (a paired t-test on Dice per target, as in Figure 4; an exact
McNemar test on right-or-wrong answers per task), summaries per task family and per quantity, and
the robustness to paraphrased prompts. Any table may be empty, when its part was turned off.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from voxelprompt.evaluation.scoring import CHARACTERISATION, HELD_OUT, PARAPHRASE
from voxelprompt.evaluation.scoring import TEMPLATE as SAME_VALUES

VOXELPROMPT = "VoxelPrompt"
INSTRUCTABLE_NETWORK = "instructable network"
SINGLE_TASK_NETWORK = "single-task network"
SINGLE_TASK_CLASSIFIER = "single-task classifier"
REGISTRATION = "registration"
METHOD_ORDER = (VOXELPROMPT, INSTRUCTABLE_NETWORK, SINGLE_TASK_NETWORK, SINGLE_TASK_CLASSIFIER, REGISTRATION)
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
SEGMENTATION_TESTS, CHARACTERISATION_TESTS = "segmentation_tests", "characterisation_tests"  # their tables
MCNEMAR, PAIRED_T_OVER_TASKS = "exact McNemar", "paired t-test over tasks"


# --- input tables --------------------------------------------------------------------------------

def checked_table(frame: pd.DataFrame | None, name: str) -> pd.DataFrame:
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


def ordered(values: Iterable[Any], preferred: Sequence[Any] = ()) -> list[Any]:
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


def target_order(segmentation: pd.DataFrame) -> list[tuple[str, str]]:
    """(target, kind) of one set's targets: anatomy, then lesions, each in the order they come."""
    kinds = segmentation.groupby("target", sort=False)["target_kind"].first()
    order = ordered(kinds.values, TARGET_KINDS)
    return [(target, kind) for group in order for target, kind in kinds.items() if kind == group]


def segmentation_tests(segmentation: pd.DataFrame, method: str = VOXELPROMPT,
                       baseline: str = SINGLE_TASK_NETWORK) -> pd.DataFrame:
    """Paired t-test of `method` against `baseline` on Dice, per set and target where both have
    subjects (Figure 4): the subjects both segmented, both mean Dice, the mean difference (method
    minus baseline), t and p (NaN for fewer than two subjects or identical differences), and whether
    p < 0.05. Subjects where either Dice is missing are left out of the pair."""
    segmentation = checked_table(segmentation, "segmentation")
    _refuse_duplicates(segmentation, ["set", "target", "subject", "method"], "segmentation")
    rows = []
    for set_name in ordered(segmentation["set"]):
        in_set = segmentation[segmentation["set"] == set_name]
        for target, kind in target_order(in_set):
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
    methods = ordered(checked_table(segmentation, "segmentation")["method"], METHOD_ORDER)
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
    characterisation = checked_table(characterisation, "characterisation")
    _refuse_duplicates(characterisation, ["task", "example", "method"], "characterisation")
    characterisation = characterisation.assign(correct=_as_bool(characterisation["correct"]))
    rows = []
    for task in ordered(characterisation["task"], CHARACTERISATION_TASKS):
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
    methods = ordered(checked_table(characterisation, "characterisation")["method"], METHOD_ORDER)
    tests = [characterisation_tests(characterisation, VOXELPROMPT, other)
             for other in methods if VOXELPROMPT in methods and other != VOXELPROMPT]
    tests = [table for table in tests if len(table)]
    return pd.concat(tests, ignore_index=True) if tests else pd.DataFrame(columns=list(CHARACTERISATION_TEST_COLUMNS))


def characterisation_accuracy(characterisation: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per task (rows, in the paper's order) and method (columns), with "average over tasks"
    (the mean of the accuracies of the tasks the method answered, as in Figure 5) as the first row,
    and the accuracy of always giving the task's most frequent expected answer ("majority answer")
    as the last column: what a model that ignores the images can reach."""
    characterisation = checked_table(characterisation, "characterisation")
    if characterisation.empty:
        return pd.DataFrame()
    characterisation = characterisation.assign(correct=_as_bool(characterisation["correct"]).astype(float))
    tasks = ordered(characterisation["task"], CHARACTERISATION_TASKS)
    methods = ordered(characterisation["method"], METHOD_ORDER)
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
    examples = checked_table(examples, "examples")
    rows = []
    for source in ordered(examples["source"], SOURCES):
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
    metrics = checked_table(metrics, "metrics")
    rows = []
    for source in ordered(metrics["source"], SOURCES):
        of_source = metrics[metrics["source"] == source]
        quantities = [(quantity, of_source[of_source["quantity"] == quantity])
                      for quantity in ordered(of_source["quantity"], QUANTITIES)]
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
    examples = checked_table(examples, "examples")
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
