"""The evaluation's two figures, in the style of the paper's Figures 4 (Dice per target and method,
with the paired tests) and 5 (accuracy per pathology task and method)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from voxelprompt.core.io import atomic_output
from voxelprompt.evaluation.statistics import (INSTRUCTABLE_NETWORK, MAJORITY, METHOD_ORDER, REGISTRATION,
                                               SIGNIFICANCE_LEVEL, SINGLE_TASK_CLASSIFIER, SINGLE_TASK_NETWORK,
                                               VOXELPROMPT, characterisation_accuracy, checked_table, ordered,
                                               target_order)

# The paper's colours: VoxelPrompt black, single-task benchmarks purple, the other baseline blue.
METHOD_COLOURS = {VOXELPROMPT: "#000000", INSTRUCTABLE_NETWORK: "#8c8c8c", SINGLE_TASK_NETWORK: "#7b3294",
                  SINGLE_TASK_CLASSIFIER: "#7b3294", REGISTRATION: "#2c7bb6"}
# Methods the paper does not name get these, none of them close to the colours above.
OTHER_COLOURS = ("#d95f02", "#1b9e77", "#e7298a", "#66a61e", "#e6ab02", "#a6761d")
FIGURE_DPI = 150
JITTER_SEED = 0  # the same tables always give the same picture
TARGET_GROUP_GAP = 0.6  # x units between the anatomy and the lesion targets of a segmentation panel


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
    segmentation = checked_table(segmentation, "segmentation")
    if segmentation.empty:
        raise ValueError("the segmentation table is empty: there is nothing to plot")
    sets = ordered(segmentation["set"])
    methods = ordered(segmentation["method"], METHOD_ORDER)
    colours = method_colours(methods)
    differences = _differences_to_annotate(tests)
    spans = [_target_positions(target_order(segmentation[segmentation["set"] == name]))[-1] for name in sets]
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
    targets = target_order(rows)
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
    for kind in ordered(kind for _, kind in targets):
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
