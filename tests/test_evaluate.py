"""Scoring of the agent against the ground-truth program: exact programs, Dice of masks, relative
error of reported numbers, exact answers, per family and overall."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from voxelprompt.agent import Result
from voxelprompt.evaluate import Scores, _score, dice
from voxelprompt.runtime.library import Metric
from voxelprompt.volume import Volume


def mask(*indices) -> Volume:
    array = np.zeros((4, 4, 4), np.uint8)
    for index in indices:
        array[index] = 1
    return Volume(array, np.eye(4))


def example(kind: str, program: list[str]):
    return SimpleNamespace(task=SimpleNamespace(answer={"kind": kind}), program=program)


def truth(**library):
    return SimpleNamespace(library=SimpleNamespace(**({"outputs": {}, "metrics": [], "responses": []} | library)))


def test_dice_of_masks():
    assert dice(mask((0, 0, 0), (1, 1, 1)).array, mask((0, 0, 0)).array) == 2 / 3
    assert dice(mask().array, mask().array) == 1.0


def test_a_program_scores_exact_only_when_every_step_matches():
    scores = Scores()
    program = ["e = encode(scans())\nread(e)", "stop()"]
    _score(scores, example("choice", program), truth(responses=["MCA"]),
           Result("p", steps=[program[0] + "\n", "stop()"], responses=["MCA"], ok=True), 1.0)
    _score(scores, example("choice", program), truth(responses=["MCA"]),
           Result("p", steps=[program[0], "choose(answer, ['x'])"], responses=["ACA"]), 3.0)
    summary = scores.summary()
    assert (summary["examples"], summary["program_exact_match"], summary["finished"]) == (2, 0.5, 0.5)
    assert summary["answer_accuracy"] == 0.5 and summary["median_seconds"] == 2.0


def test_masks_score_dice_and_a_missing_mask_scores_zero():
    scores = Scores()
    expected = truth(outputs={"left hippocampus": mask((0, 0, 0), (1, 1, 1))})
    _score(scores, example("mask", []), expected, Result("p", outputs={"left hippocampus": mask((0, 0, 0))}), 1.0)
    _score(scores, example("mask", []), expected, Result("p", outputs={"something else": mask((0, 0, 0))}), 1.0)
    assert scores.dice == [2 / 3, 0.0]


def test_numbers_score_relative_error_and_a_missing_metric_counts_as_wholly_wrong():
    scores = Scores()
    expected = truth(metrics=[Metric("volume of the brain", 1000.0, "mm3"), Metric("width of the brain", 100.0, "mm")])
    _score(scores, example("number", []), expected, Result("p", metrics=[Metric("volume of the brain", 1100.0, "mm3")]), 1.0)
    assert scores.relative_error == [0.1, 1.0]
    assert scores.summary()["median_relative_error"] == 0.55
