"""The evaluation's statistics, tables, figures and summary (voxelprompt/evaluation/: statistics.py, figures.py,
summary.py, report.py): paired
t-tests and exact McNemar tests against hand computations, summaries of the agent's runs, Parquet
tables read back with their metadata, figures read back as images, and a folder that is written
whole or not at all."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy import stats

from voxelprompt.evaluation import figures, statistics
from voxelprompt.evaluation import summary as evaluation_summary
from voxelprompt.evaluation.figures import figure_characterisation, figure_segmentation
from voxelprompt.evaluation.report import write_evaluation
from voxelprompt.evaluation.statistics import (AVERAGE_OVER_TASKS, MCNEMAR, PAIRED_T_OVER_TASKS, all_segmentation_tests,
                                               characterisation_accuracy, characterisation_tests, paraphrase_robustness,
                                               program_summary, relative_error_summary, segmentation_comparisons,
                                               segmentation_tests)
from voxelprompt.evaluation.summary import summary_markdown

HELD_OUT, REAL = "held-out synthetic", "real scan (fsaverage T1w)"
HIPPOCAMPUS, THALAMUS, INFARCTS = "left and right hippocampus", "left and right thalamus", "all infarcts"
PROVENANCE = {"package_version": "0.1.0", "model_sha256": "ab" * 32, "created_utc": "2025-01-01T00:00:00+00:00"}
SETTINGS = {"per_task": 4, "spacing_mm": 2.0, "model": "voxelprompt-cpu", "learning_rate": 1e-4,
            "tasks": ["segment", "enhancement"]}


def dice_rows(set_name: str, target: str, kind: str, method: str, values: list[float]) -> list[dict]:
    return [{"set": set_name, "subject": f"s{number:02d}", "target": target, "target_kind": kind, "method": method,
             "dice": value} for number, value in enumerate(values)]


def segmentation_table() -> pd.DataFrame:
    """Held-out set: VoxelPrompt beats the single-task network on the hippocampus by known differences;
    the real scan has one subject, the infarct target no registration rows."""
    rows = (dice_rows(HELD_OUT, HIPPOCAMPUS, "anatomy", "VoxelPrompt", [0.90, 0.85, 0.80, 0.88])
            + dice_rows(HELD_OUT, HIPPOCAMPUS, "anatomy", "single-task network", [0.80, 0.80, 0.76, 0.84])
            + dice_rows(HELD_OUT, HIPPOCAMPUS, "anatomy", "instructable network", [0.89, 0.84, 0.81, 0.87])
            + dice_rows(HELD_OUT, HIPPOCAMPUS, "anatomy", "registration", [0.70, 0.72, 0.68, 0.71])
            # lesion rows first in the table: the figure and summary must still put anatomy first
            + dice_rows(HELD_OUT, INFARCTS, "lesion", "VoxelPrompt", [0.60, 0.70, 0.65, 0.50])
            + dice_rows(HELD_OUT, INFARCTS, "lesion", "single-task network", [0.55, 0.72, 0.60, 0.52])
            + dice_rows(HELD_OUT, THALAMUS, "anatomy", "VoxelPrompt", [0.91, 0.90, 0.92, 0.89])
            + dice_rows(HELD_OUT, THALAMUS, "anatomy", "single-task network", [0.90, 0.89, 0.91, 0.88])
            + dice_rows(REAL, HIPPOCAMPUS, "anatomy", "VoxelPrompt", [0.78])
            + dice_rows(REAL, HIPPOCAMPUS, "anatomy", "single-task network", [0.75])
            + dice_rows(REAL, HIPPOCAMPUS, "anatomy", "registration", [0.73]))
    order = [1 if row["target"] == INFARCTS else 2 for row in rows]
    return pd.DataFrame([row for _, row in sorted(zip(order, rows), key=lambda pair: pair[0])])


def answers(task: str, method: str, correct: list[bool], expected: list[str]) -> list[dict]:
    return [{"task": task, "example": number, "method": method, "expected": expected[number % len(expected)],
             "predicted": expected[number % len(expected)] if right else None, "correct": right}
            for number, right in enumerate(correct)]


def characterisation_table() -> pd.DataFrame:
    """Enhancement: VoxelPrompt alone right on examples 0-4, the classifier alone on 5; both right on 6-7,
    both wrong on 8-9: a McNemar table with 5 and 1 discordant pairs."""
    voxelprompt = [True] * 5 + [False] + [True, True] + [False, False]
    classifier = [False] * 5 + [True] + [True, True] + [False, False]
    return pd.DataFrame(answers("enhancement", "VoxelPrompt", voxelprompt, ["enhancing", "not enhancing"])
                        + answers("enhancement", "single-task classifier", classifier, ["enhancing", "not enhancing"])
                        + answers("signal-intensity", "VoxelPrompt", [True, True, False, True],
                                  ["hyperintense", "hypointense", "isointense"])
                        + answers("signal-intensity", "single-task classifier", [True, False, False, True],
                                  ["hyperintense", "hypointense", "isointense"]))


def run(source: str, family: str, task: str, example: int, exact: bool, equivalent: bool,
        dice: float = float("nan"), correct: bool | None = None) -> dict:
    return {"source": source, "family": family, "task": task, "example": example, "prompt": f"{task} {example}",
            "program_exact": exact, "execution_equivalent": equivalent, "targets_correct": equivalent,
            "finished": equivalent, "mask_dice": dice,
            "answer_expected": None if correct is None else "yes", "answer_produced": None if correct is None else
            ("yes" if correct else "no"), "answer_correct": correct, "seconds": 2.0 + example}


def examples_table() -> pd.DataFrame:
    rows = [run("held-out", "segmentation", "segment", 0, True, True, dice=0.9),
            run("held-out", "segmentation", "segment", 1, False, True, dice=0.7),
            run("held-out", "characterisation", "enhancement", 0, True, True, correct=True),
            run("held-out", "characterisation", "enhancement", 1, False, False, correct=False),
            run("held-out", "characterisation", "enhancement", 2, True, True, correct=True)]
    # paraphrase robustness: three segmentation examples under both wordings, the paraphrase loses one
    for example, (template_ok, paraphrase_ok) in enumerate([(True, True), (True, False), (True, True)]):
        rows.append(run("template (same values)", "segmentation", "segment", example, template_ok, template_ok, 0.8))
        rows.append(run("paraphrase", "segmentation", "segment", example, False, paraphrase_ok, 0.6))
    return pd.DataFrame(rows)


def metrics_table() -> pd.DataFrame:
    def number(quantity: str, example: int, expected: float, produced: float) -> dict:
        error = abs(produced - expected) / abs(expected) if np.isfinite(produced) else float("nan")
        return {"source": "held-out", "family": "morphology", "task": f"{quantity} task", "example": example,
                "metric": f"{quantity} of the lesion", "quantity": quantity, "unit": "mm3", "expected": expected,
                "produced": produced, "relative_error": error}

    return pd.DataFrame([number("volume", 0, 100.0, 110.0), number("volume", 1, 200.0, 190.0),
                         number("volume", 2, 50.0, 60.0), number("volume", 3, 80.0, float("nan")),
                         number("ratio", 0, 0.5, 0.5)])


def all_tables() -> dict[str, pd.DataFrame]:
    return {"segmentation": segmentation_table(), "characterisation": characterisation_table(),
            "examples": examples_table(), "metrics": metrics_table()}


# --- segmentation tests -------------------------------------------------------------------------------

def test_paired_t_test_matches_a_hand_computation():
    tests = segmentation_tests(segmentation_table())
    row = tests[(tests["set"] == HELD_OUT) & (tests["target"] == HIPPOCAMPUS)].iloc[0]
    differences = np.array([0.10, 0.05, 0.04, 0.04])
    t = differences.mean() / (differences.std(ddof=1) / math.sqrt(4))
    assert row["n"] == 4 and row["method"] == "VoxelPrompt" and row["baseline"] == "single-task network"
    assert row["method_mean"] == pytest.approx(0.8575) and row["baseline_mean"] == pytest.approx(0.80)
    assert row["mean_difference"] == pytest.approx(0.0575)
    assert row["t"] == pytest.approx(t)
    assert row["p"] == pytest.approx(2 * stats.t.sf(t, 3))  # two-sided, 3 degrees of freedom
    assert row["significant"] == (row["p"] < 0.05)


def test_known_t_value_and_p():
    """Differences 1, 2, 3 (mean 2, standard deviation 1): t = 2 / (1 / sqrt 3) = 2 sqrt 3. With two
    degrees of freedom the t distribution has P(|T| > t) = 1 - t / sqrt(t² + 2) = 1 - sqrt(12 / 14)."""
    rows = (dice_rows(HELD_OUT, HIPPOCAMPUS, "anatomy", "VoxelPrompt", [3.0, 5.0, 7.0])
            + dice_rows(HELD_OUT, HIPPOCAMPUS, "anatomy", "single-task network", [2.0, 3.0, 4.0]))
    row = segmentation_tests(pd.DataFrame(rows)).iloc[0]
    assert row["t"] == pytest.approx(2 * math.sqrt(3))
    assert row["p"] == pytest.approx(1 - math.sqrt(12 / 14))
    assert not row["significant"]


def test_targets_come_anatomy_first_and_lesions_after():
    table = segmentation_table()
    assert table["target"].iloc[0] == INFARCTS
    tests = segmentation_tests(table)
    assert list(tests.loc[tests["set"] == HELD_OUT, "target"]) == [HIPPOCAMPUS, THALAMUS, INFARCTS]
    assert list(tests["set"]) == [HELD_OUT] * 3 + [REAL]


def test_single_subject_gives_nan_p():
    tests = segmentation_tests(segmentation_table())
    row = tests[tests["set"] == REAL].iloc[0]
    assert row["n"] == 1 and row["mean_difference"] == pytest.approx(0.03)
    assert math.isnan(row["t"]) and math.isnan(row["p"]) and not row["significant"]


def test_identical_differences_give_nan_p():
    rows = (dice_rows(HELD_OUT, HIPPOCAMPUS, "anatomy", "VoxelPrompt", [0.5, 0.75, 1.0])
            + dice_rows(HELD_OUT, HIPPOCAMPUS, "anatomy", "single-task network", [0.25, 0.5, 0.75]))
    row = segmentation_tests(pd.DataFrame(rows)).iloc[0]
    assert row["mean_difference"] == pytest.approx(0.25) and math.isnan(row["p"])


def test_pairs_only_subjects_both_methods_segmented():
    rows = (dice_rows(HELD_OUT, HIPPOCAMPUS, "anatomy", "VoxelPrompt", [0.9, 0.8, 0.7])
            + dice_rows(HELD_OUT, HIPPOCAMPUS, "anatomy", "single-task network", [0.85, float("nan")]))
    row = segmentation_tests(pd.DataFrame(rows)).iloc[0]
    assert row["n"] == 1 and row["method_mean"] == pytest.approx(0.9)


def test_other_method_pairs_and_targets_without_the_baseline():
    table = segmentation_table()
    tests = segmentation_tests(table, "instructable network", "single-task network")
    assert list(tests["target"]) == [HIPPOCAMPUS]
    assert tests["mean_difference"].iloc[0] == pytest.approx(np.mean([0.09, 0.04, 0.05, 0.03]))
    assert segmentation_comparisons(table) == [("VoxelPrompt", "instructable network"),
                                               ("VoxelPrompt", "single-task network"),
                                               ("VoxelPrompt", "registration"),
                                               ("instructable network", "single-task network")]
    every = all_segmentation_tests(table)
    assert len(every) == 1 + 4 + 2 + 1
    registration = every[every["baseline"] == "registration"]
    assert list(zip(registration["set"], registration["target"])) == [(HELD_OUT, HIPPOCAMPUS), (REAL, HIPPOCAMPUS)]


def test_repeated_subject_is_refused():
    rows = dice_rows(HELD_OUT, HIPPOCAMPUS, "anatomy", "VoxelPrompt", [0.9]) * 2
    with pytest.raises(ValueError, match="repeat a key"):
        segmentation_tests(pd.DataFrame(rows))


# --- characterisation tests -----------------------------------------------------------------------

def test_exact_mcnemar_for_a_known_table():
    """Discordant pairs 5 and 1: p = 2 * P(X <= 1), X ~ Binomial(6, 1/2) = 2 * 7/64 = 0.21875."""
    tests = characterisation_tests(characterisation_table())
    row = tests[tests["task"] == "enhancement"].iloc[0]
    assert (row["method_only_correct"], row["baseline_only_correct"]) == (5, 1)
    assert row["p"] == pytest.approx(14 / 64)
    assert row["method_accuracy"] == pytest.approx(0.7) and row["baseline_accuracy"] == pytest.approx(0.3)
    assert row["accuracy_difference"] == pytest.approx(0.4)
    assert row["test"] == MCNEMAR and not row["significant"]


def test_mcnemar_without_disagreement_and_average_over_tasks():
    tests = characterisation_tests(characterisation_table())
    assert list(tests["task"]) == ["signal-intensity", "enhancement", AVERAGE_OVER_TASKS]
    intensity = tests[tests["task"] == "signal-intensity"].iloc[0]
    assert (intensity["method_only_correct"], intensity["baseline_only_correct"]) == (1, 0)
    assert intensity["p"] == pytest.approx(1.0)  # one discordant pair: as likely either way
    average = tests[tests["task"] == AVERAGE_OVER_TASKS].iloc[0]
    assert average["test"] == PAIRED_T_OVER_TASKS and average["n"] == 2
    assert average["method_accuracy"] == pytest.approx((0.75 + 0.7) / 2)
    # differences 0.25 and 0.4 over two tasks (one degree of freedom): t = 0.325 / (0.15 / sqrt 2 / sqrt 2)
    # = 13 / 3, and P(|T| > t) = 1 - 2 atan(t) / pi for the Cauchy distribution
    assert average["p"] == pytest.approx(1 - 2 * math.atan(13 / 3) / math.pi)

    same = pd.DataFrame(answers("enhancement", "VoxelPrompt", [True, False], ["a", "b"])
                        + answers("enhancement", "single-task classifier", [True, False], ["a", "b"]))
    only = characterisation_tests(same).iloc[0]
    assert only["p"] == 1.0 and math.isnan(characterisation_tests(same).iloc[1]["p"])


def test_a_missing_answer_counts_as_wrong():
    table = pd.DataFrame(answers("enhancement", "VoxelPrompt", [True, True], ["a", "b"])
                         + answers("enhancement", "single-task classifier", [True, True], ["a", "b"]))
    table["correct"] = table["correct"].astype(object)
    table.loc[table.index[-1], "correct"] = None
    row = characterisation_tests(table).iloc[0]
    assert row["baseline_accuracy"] == pytest.approx(0.5) and row["method_only_correct"] == 1


def test_accuracy_table_with_the_majority_answer():
    accuracy = characterisation_accuracy(characterisation_table())
    assert list(accuracy.index) == [AVERAGE_OVER_TASKS, "signal-intensity", "enhancement"]
    assert list(accuracy.columns) == ["VoxelPrompt", "single-task classifier", "majority answer"]
    # expected answers hyper, hypo, iso, hyper: always "hyperintense" is right on 2 of 4
    assert accuracy.at["signal-intensity", "majority answer"] == pytest.approx(2 / 4)
    assert accuracy.at["enhancement", "majority answer"] == pytest.approx(5 / 10)
    assert accuracy.at[AVERAGE_OVER_TASKS, "single-task classifier"] == pytest.approx((0.5 + 0.3) / 2)


# --- summaries of the agent's runs ------------------------------------------------------------------

def test_program_summary_per_source_and_family():
    summary = program_summary(examples_table()).set_index(["source", "family"])
    characterisation = summary.loc[("held-out", "characterisation")]
    assert characterisation["examples"] == 3
    assert characterisation["program_exact"] == pytest.approx(2 / 3)
    assert characterisation["answers"] == 3 and characterisation["answer_accuracy"] == pytest.approx(2 / 3)
    assert characterisation["masks"] == 0 and math.isnan(characterisation["mean_mask_dice"])
    segmentation = summary.loc[("held-out", "segmentation")]
    assert segmentation["mean_mask_dice"] == pytest.approx(0.8) and math.isnan(segmentation["answer_accuracy"])
    everything = summary.loc[("held-out", "all families")]
    assert everything["examples"] == 5 and everything["execution_equivalent"] == pytest.approx(4 / 5)
    assert list(summary.index.get_level_values("source").unique()) == ["held-out", "paraphrase",
                                                                       "template (same values)"]


def test_relative_error_summary_per_quantity():
    summary = relative_error_summary(metrics_table()).set_index("quantity")
    volume = summary.loc["volume"]
    assert (volume["numbers"], volume["missing"], volume["n"]) == (4, 1, 3)
    assert volume["median_relative_error"] == pytest.approx(0.1)
    assert volume["mean_relative_error"] == pytest.approx((0.1 + 0.05 + 0.2) / 3)
    assert summary.loc["ratio", "median_relative_error"] == 0.0
    assert summary.loc["all quantities", "n"] == 4


def test_paraphrase_robustness_pairs_the_same_examples():
    robustness = paraphrase_robustness(examples_table()).set_index("family")
    segmentation = robustness.loc["segmentation"]
    assert segmentation["pairs"] == 3
    assert segmentation["template_execution_equivalent"] == 1.0
    assert segmentation["paraphrase_execution_equivalent"] == pytest.approx(2 / 3)
    assert segmentation["template_program_exact"] == 1.0 and segmentation["paraphrase_program_exact"] == 0.0
    assert segmentation["execution_equivalent_p"] == pytest.approx(1.0)  # one discordant pair
    assert segmentation["template_mask_dice"] == pytest.approx(0.8)
    assert segmentation["paraphrase_mask_dice"] == pytest.approx(0.6)
    assert list(robustness.index) == ["segmentation", "all families"]


# --- figures ----------------------------------------------------------------------------------------

def read_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(path)


def test_figures_are_valid_images(tmp_path):
    table = segmentation_table()
    segmentation = figure_segmentation(table, all_segmentation_tests(table), tmp_path / "segmentation.png")
    characterisation = figure_characterisation(characterisation_table(), tmp_path / "characterisation.png")
    for path in (segmentation, characterisation):
        image = read_png(path)
        assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600
        assert image[..., :3].std() > 0.05  # something was drawn
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["characterisation.png", "segmentation.png"]


def test_figures_refuse_empty_tables(tmp_path):
    with pytest.raises(ValueError, match="nothing to plot"):
        figure_segmentation(pd.DataFrame(), pd.DataFrame(), tmp_path / "segmentation.png")
    with pytest.raises(ValueError, match="nothing to plot"):
        figure_characterisation(pd.DataFrame(), tmp_path / "characterisation.png")
    assert not any(tmp_path.iterdir())


# --- summary ----------------------------------------------------------------------------------------

def test_summary_holds_the_numbers():
    text = summary_markdown(all_tables(), SETTINGS)
    # settings as given, not rounded
    assert "| `spacing_mm` | 2.0 |" in text and "| `learning_rate` | 0.0001 |" in text
    assert '| `tasks` | ["segment", "enhancement"] |' in text and "| `model` | voxelprompt-cpu |" in text
    # held-out hippocampus: mean Dice of each method, then Δ and p of VoxelPrompt and of the instructable
    # network against the single-task network
    assert ("| target | kind | subjects | VoxelPrompt | instructable network | single-task network "
            "| registration | Δ VoxelPrompt − single-task network | p "
            "| Δ instructable network − single-task network | p |") in text
    p_voxelprompt = segmentation_tests(segmentation_table())["p"].iloc[0]
    p_instructable = segmentation_tests(segmentation_table(), "instructable network")["p"].iloc[0]
    assert p_voxelprompt < 0.05 and p_instructable < 0.05
    assert (f"| {HIPPOCAMPUS} | anatomy | 4 | 0.858 | 0.853 | 0.800 | 0.703 | 0.057 | {p_voxelprompt:.3f} * "
            f"| 0.052 | {p_instructable:.3f} * |") in text
    assert f"| {INFARCTS} | lesion | 4 | 0.613 | – | 0.598 | – | 0.015 | 0.512 | – | – |" in text
    # the real scan: one subject, so no p
    assert f"| {HIPPOCAMPUS} | anatomy | 1 | 0.780 | – | 0.750 | 0.730 | 0.030 | – | – | – |" in text
    assert "Used 35 Dice values: subjects per set held-out synthetic: 4, real scan (fsaverage T1w): 1" in text
    assert "| enhancement | 10 | 0.700 | 0.300 | 0.500 | 0.400 | 0.219 |" in text
    assert "Used 28 answers to 14 examples in 2 tasks" in text
    assert "| characterisation | 3 | 0.667 | 0.667 | 0.667 | 0.667 | 3 | 0.667 | 0 | – |" in text
    assert "| held-out | volume | 4 | 1 | 3 | 0.100 | 0.117 |" in text
    assert "| segmentation | 3 | 1.000 | 0.000 | 1.000 | 0.667 | 1.000 |" in text
    assert text.index("## Segmentation") < text.index("## Pathology") < text.index("## Programs") \
        < text.index("## Relative error") < text.index("## Robustness")


def test_summary_of_empty_tables():
    text = summary_markdown({"segmentation": pd.DataFrame(), "metrics": metrics_table().iloc[:0]}, {})
    assert text.count("Not evaluated in this run.") == 5
    assert "No settings were recorded." in text


def test_empty_and_malformed_tables():
    for empty in (pd.DataFrame(), None, segmentation_table().iloc[:0]):
        assert segmentation_tests(empty).empty and all_segmentation_tests(empty).empty
        assert list(segmentation_tests(empty).columns) == list(statistics.SEGMENTATION_TEST_COLUMNS)
    assert characterisation_tests(pd.DataFrame()).empty and characterisation_accuracy(pd.DataFrame()).empty
    assert program_summary(pd.DataFrame()).empty and relative_error_summary(None).empty
    assert paraphrase_robustness(examples_table().query("source == 'template'")).empty
    with pytest.raises(ValueError, match="lacks the columns target_kind, dice"):
        segmentation_tests(segmentation_table().drop(columns=["target_kind", "dice"]))


# --- writing the folder ------------------------------------------------------------------------------

def test_write_evaluation_round_trip(tmp_path):
    written = write_evaluation(tmp_path / "evaluation", all_tables(), PROVENANCE, SETTINGS)
    expected = {f"{name}.parquet" for name in ("segmentation", "characterisation", "examples", "metrics",
                                               "segmentation_tests", "characterisation_tests")}
    expected |= {"segmentation.png", "characterisation.png", "summary.md"}
    assert set(written) == expected
    assert {path.name for path in (tmp_path / "evaluation").iterdir()} == expected  # nothing else left
    for name, table in all_tables().items():
        read = pd.read_parquet(written[f"{name}.parquet"])
        pd.testing.assert_frame_equal(read, table, check_dtype=False)
        document = json.loads(pq.read_schema(written[f"{name}.parquet"]).metadata[b"voxelprompt"])
        assert document == {"table": name, "provenance": PROVENANCE, "settings": SETTINGS}
    tests = pd.read_parquet(written["segmentation_tests.parquet"])
    pd.testing.assert_frame_equal(tests, all_segmentation_tests(segmentation_table()), check_dtype=False)
    assert written["summary.md"].read_text() == summary_markdown(all_tables(), SETTINGS)
    read_png(written["segmentation.png"])


def test_write_evaluation_with_parts_turned_off(tmp_path):
    out = tmp_path / "evaluation"
    write_evaluation(out, all_tables(), PROVENANCE, SETTINGS)
    # a later evaluation without segmentation and characterisation drops their files from the folder
    written = write_evaluation(out, {"examples": examples_table(), "segmentation": pd.DataFrame()}, PROVENANCE, {})
    assert set(written) == {"examples.parquet", "summary.md"}
    assert {path.name for path in out.iterdir()} == {"examples.parquet", "summary.md"}
    assert written["summary.md"].read_text().count("Not evaluated in this run.") == 3
    nothing = write_evaluation(tmp_path / "empty", {}, PROVENANCE, SETTINGS)
    assert set(nothing) == {"summary.md"}


def test_unknown_table_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown evaluation tables segmentations"):
        write_evaluation(tmp_path, {"segmentations": segmentation_table()}, PROVENANCE, SETTINGS)
    assert not any(tmp_path.iterdir())


def test_failure_midway_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    out = tmp_path / "evaluation"
    write_evaluation(out, {"examples": examples_table()}, PROVENANCE, SETTINGS)
    before = {path.name: path.read_bytes() for path in out.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("the figure could not be drawn")

    # parquet tables are written before the figures, so they exist in the hidden folder when this fails
    monkeypatch.setattr(figures, "figure_characterisation", broken)
    with pytest.raises(RuntimeError, match="could not be drawn"):
        write_evaluation(out, all_tables(), PROVENANCE, SETTINGS)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert not list(tmp_path.rglob("*.tmp*")) and not list(tmp_path.rglob(".evaluation.*"))

    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError):
        write_evaluation(fresh, all_tables(), PROVENANCE, SETTINGS)
    assert not any(fresh.iterdir())


def test_a_difference_that_rounds_to_zero_is_written_without_a_sign():
    from voxelprompt.evaluation.summary import _cell

    assert _cell(-0.0004) == "0.000" and _cell(-0.0006) == "-0.001" and _cell(0.1234) == "0.123"


# --- the evaluation page's quotes ------------------------------------------------------------------

def test_each_setting_has_its_own_quote_in_the_page_and_replacing_one_leaves_the_other():
    reduced, full = evaluation_summary.QUOTE_MARKERS["reduced"], evaluation_summary.QUOTE_MARKERS["full"]
    readme = f"# Tool\n\n{reduced[0]}\nold reduced\n{reduced[1]}\n\ntext\n\n{full[0]}\nold full\n{full[1]}\n"
    summary = "# VoxelPrompt evaluation\n\n## Settings\n\n| setting | value |\n|---|---|\n| `steps` | 100 |\n"

    updated = evaluation_summary.with_quote(readme, summary, "full")

    assert evaluation_summary.quoted_in_page(updated, "reduced") == "old reduced\n"
    assert evaluation_summary.quoted_in_page(updated, "full") == evaluation_summary.page_quote(summary)
    # The title goes; headings move under the page's "## ... setting" heading.
    assert evaluation_summary.page_quote(summary).splitlines()[0] == "### Settings"
    assert updated.startswith("# Tool\n") and "\ntext\n" in updated


def test_a_page_without_the_markers_of_a_setting_is_refused_by_name():
    reduced = evaluation_summary.QUOTE_MARKERS["reduced"]
    readme = f"{reduced[0]}\nquote\n{reduced[1]}\n"
    assert evaluation_summary.quoted_in_page(readme, "full") == ""
    with pytest.raises(ValueError, match="evaluation summary, full setting: start"):
        evaluation_summary.with_quote(readme, "# title\n", "full")
