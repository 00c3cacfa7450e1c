"""The evaluation as markdown (`summary.md`), and the quotes of it in docs/evaluation.md."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from voxelprompt.evaluation.statistics import (ALL_FAMILIES, AVERAGE_OVER_TASKS, INPUT_COLUMNS, INSTRUCTABLE_NETWORK,
                                               MAJORITY, METHOD_ORDER, SEGMENTATION_TESTS, SIGNIFICANCE_LEVEL,
                                               SINGLE_TASK_NETWORK, SOURCES, VOXELPROMPT, all_characterisation_tests,
                                               all_segmentation_tests, characterisation_accuracy, checked_table,
                                               ordered, paraphrase_robustness, program_summary, relative_error_summary,
                                               target_order)
from voxelprompt.model.vision import THICK_RATIO  # what the networks treat as thick slices

DECIMALS = 3
# The summary's segmentation table: what the agent adds to single-task networks, and what the
# instructable network alone does; the tests of VoxelPrompt against the other methods are in the Parquet.
SUMMARY_COMPARISONS = ((VOXELPROMPT, SINGLE_TASK_NETWORK), (INSTRUCTABLE_NETWORK, SINGLE_TASK_NETWORK))


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
    sets = ordered(segmentation["set"])
    methods = ordered(segmentation["method"], METHOD_ORDER)
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
        for target, kind in target_order(in_set):
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
    baselines = ordered(tests["baseline"])
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
    counts = ", ".join(f"{sources[source]} {source}" for source in ordered(examples["source"], SOURCES))
    lines += [f"Used {len(examples)} agent runs: {counts}.", "",
              "Rates over the runs of each family: program identical to the expected one, program equivalent "
              "when executed, the targets it segments are the expected ones, run finished; answer accuracy over the runs with a chosen answer and mean Dice over "
              "those with a mask.", ""]
    summary = program_summary(examples)
    header = ["family", "runs", "program exact", "execution equivalent", "targets", "finished", "answers", "answer accuracy",
              "masks", "mean mask Dice"]
    for source in ordered(summary["source"], SOURCES):
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
    frames = {name: checked_table(tables.get(name), name) for name in INPUT_COLUMNS}
    lines = ["# VoxelPrompt evaluation", "", *_settings_section(settings), *_cohort_section(frames["cohort"]),
             *_segmentation_section(frames["segmentation"]),
             *_characterisation_section(frames["characterisation"]),
             *_programs_section(frames["examples"]),
             *_relative_error_section(frames["metrics"]),
             *_paraphrase_section(frames["examples"])]
    return "\n".join(lines).rstrip("\n") + "\n"


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
