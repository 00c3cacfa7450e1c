"""The evaluation protocol end to end at the smallest size, with a stand-in for the agent: every
table has its rows, methods and sources, and the agent's masks are scored against the right truth."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from voxelprompt.evaluation import data, protocol
from voxelprompt.evaluation.baselines import specialised
from voxelprompt.evaluation.paraphrases import load_paraphrases
from voxelprompt.evaluation.report import write_evaluation
from voxelprompt.model.agent import Result
from voxelprompt.model.config import PRESETS
from voxelprompt.tasks.truth import target_mask

# About four minutes in a fresh process, most of it training the baselines and registering the atlas to
# four subjects: slow, so CI runs it with the other slow tests (.ci/run), next to `snakemake evaluate` itself.
pytestmark = pytest.mark.slow

SETTINGS = protocol.ProtocolSettings(per_task=0, paraphrases_per_family=1, segmentation_subjects=1,
                                     characterisation_examples=1, training_subjects=1, classifier_examples=2, steps=1,
                                     spacing_mm=4.0, real_scan=False, threads=1)


class SegmentingAgent:
    """Segments exactly what "Segment (the) X" names, for subjects it was shown; answers nothing else."""

    subjects: dict[int, object] = {}

    def __init__(self, model):
        self.model = model

    def run(self, prompt, scans, cache=None):
        subject = self.subjects.get(id(scans[0]))
        if subject is None or not prompt.startswith("Segment "):
            return Result(prompt, ok=True)
        target = prompt.removeprefix("Segment ").removeprefix("the ")
        mask = target_mask(subject.sessions[0], target).astype(np.uint8)
        return Result(prompt, outputs={target: subject.sessions[0].synthetic.label_map.with_array(mask)}, ok=True)


@pytest.fixture(scope="module")
def tables(anatomy_cache):
    patch = pytest.MonkeyPatch()
    original = data.held_out_segmentation_subjects

    def registered(per_class, spacing_mm):
        subjects = original(per_class, spacing_mm)
        SegmentingAgent.subjects.update({id(s.scans[0]): s for _, s in subjects})
        return subjects

    patch.setattr(protocol, "Agent", SegmentingAgent)
    patch.setattr(data, "held_out_segmentation_subjects", registered)
    model = SimpleNamespace(config=SimpleNamespace(vision=PRESETS["test"].vision))
    try:
        yield protocol.run(model, SETTINGS, log=lambda line: None)
    finally:
        patch.undo()


def test_segmentation_scores_every_method_on_the_targets_each_subject_holds(tables):
    segmentation = tables["segmentation"]
    assert set(segmentation["method"]) == {"VoxelPrompt", "instructable network", "single-task network", "registration"}
    assert segmentation["subject"].nunique() == len(specialised.LESION_TARGETS)
    # a perfect agent scores 1 on every target; registration is scored on the anatomy only
    assert (segmentation.loc[segmentation["method"] == "VoxelPrompt", "dice"] == 1.0).all()
    assert set(segmentation.loc[segmentation["method"] == "registration", "target_kind"]) == {"anatomy"}
    # every subject is scored on the anatomy and on its own lesion class
    for subject, rows in segmentation[segmentation["method"] == "single-task network"].groupby("subject"):
        assert set(specialised.ANATOMY_TARGETS) <= set(rows["target"])
        assert any(subject.startswith(cls.replace(" ", "-")) for cls in
                   (specialised.LESION_TARGETS[t] for t in rows["target"] if t in specialised.LESION_TARGETS))
    assert segmentation["dice"].between(0, 1).all()


def test_characterisation_pairs_voxelprompt_and_the_classifiers_on_the_same_examples(tables):
    characterisation = tables["characterisation"]
    assert set(characterisation["task"]) == set(specialised.CHARACTERISATION_TASKS)
    assert (characterisation.groupby(["task", "example"])["method"].nunique() == 2).all()
    classifier = characterisation[characterisation["method"] == "single-task classifier"]
    assert classifier["predicted"].notna().all()
    # the stand-in agent answers nothing, which is wrong
    assert not characterisation.loc[characterisation["method"] == "VoxelPrompt", "correct"].any()


def test_paraphrases_and_their_template_twins_are_scored_in_pairs(tables):
    examples = tables["examples"]
    families = {p.family for p in load_paraphrases()}
    for source in ("paraphrase", "template (same values)"):
        assert set(examples.loc[examples["source"] == source, "family"]) == families
    assert set(examples["source"]) == {"paraphrase", "template (same values)", "characterisation"}
    # The stand-in agent reports no number: every number the paraphrases' programs report is a row
    # without an answer, wholly wrong.
    metrics = tables["metrics"]
    assert len(metrics) > 0 and metrics["produced"].isna().all() and (metrics["relative_error"] == 1.0).all()


def test_the_cohort_lists_every_image_of_the_held_out_subjects(tables):
    cohort = tables["cohort"]
    assert cohort["subject"].nunique() == len(specialised.LESION_TARGETS)
    assert (cohort["grid_spacing_mm"] == SETTINGS.spacing_mm).all()


def test_the_tables_write_and_read_back(tables, tmp_path):
    written = write_evaluation(tmp_path, tables, {"model": "stand-in"}, SETTINGS.to_dict())
    assert {"cohort.parquet", "segmentation.parquet", "characterisation.parquet", "summary.md",
            "segmentation.png", "characterisation.png"} <= set(written)
    assert len(pd.read_parquet(tmp_path / "segmentation.parquet")) == len(tables["segmentation"])


def test_a_subset_of_paraphrases_keeps_their_places_in_the_whole_set():
    chosen = protocol.chosen_paraphrases(load_paraphrases(), 2)
    whole = load_paraphrases()
    assert all(whole[index] == paraphrase for index, paraphrase in chosen)
    assert len(chosen) == 2 * len({p.family for p in whole})
