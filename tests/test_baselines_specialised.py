"""The specialised baselines: same data and budget as the instructable network, no latent mixing, a
classifier that pools over space and streams, and training that learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxelprompt.evaluation import data
from voxelprompt.evaluation.baselines import specialised
from voxelprompt.model.config import PRESETS
from voxelprompt.model.vision import LatentMixing, StreamAttention, soft_dice
from voxelprompt.tasks.catalogue import catalogue

CONFIG = PRESETS["test"].vision
SPACING_MM = 4.0


@pytest.fixture(scope="module")
def subjects():
    return data.baseline_training_subjects(1, SPACING_MM)


def test_every_training_subject_shows_its_lesion_class_and_every_target_has_subjects(subjects):
    assert len(subjects) == len(specialised.LESION_TARGETS)
    for subject, target in zip(subjects, specialised.LESION_TARGETS):
        assert specialised.holds(subject, target)
    assert all(specialised.holds(s, t) for s in subjects for t in specialised.ANATOMY_TARGETS)


def test_both_arms_train_on_the_same_crops_with_the_same_number_of_steps_per_target(subjects, monkeypatch):
    seen = {"instructable": [], "single": []}
    original = specialised.training_crop
    arm = "instructable"

    def recording(pool, target, budget, number, step):
        seen[arm].append((target, number, step))
        return original(pool, target, budget, number, step)

    monkeypatch.setattr(specialised, "training_crop", recording)
    budget = specialised.Budget(2, crop_voxels=(16, 16, 16), seed=1)
    targets = ("brainstem", "all tumours")
    specialised.train_instructable(subjects, CONFIG, budget, targets)
    arm = "single"
    for number, target in enumerate(targets):
        specialised.train_single_task(subjects, CONFIG, budget, target, number)
    assert sorted(seen["instructable"]) == sorted(seen["single"])
    assert len(seen["single"]) == budget.steps * len(targets)
    # and a crop is a function of (target, step) alone
    first = original(subjects, "brainstem", budget, 0, 1)
    again = original(subjects, "brainstem", budget, 0, 1)
    assert torch.equal(first.images, again.images) and torch.equal(first.truth, again.truth)


def test_the_single_task_network_has_no_latent_mixing_and_no_stream_interaction():
    single = specialised.SingleTaskSegmenter(CONFIG)
    instructable = specialised.InstructableSegmenter(CONFIG, specialised.TARGETS)
    assert not any(isinstance(m, (LatentMixing, StreamAttention)) for m in single.modules())
    assert any(isinstance(m, LatentMixing) for m in instructable.modules())
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    # comparable capacity: the mixing's fully-connected layers stay, only the phi inputs and the
    # stream attention go
    assert 0.5 < count(single) / count(instructable) < 1.0


def test_a_single_task_network_learns_its_target(subjects):
    target = "left and right cerebral white matter"
    budget = specialised.Budget(20, learning_rate=3e-3, crop_voxels=(24, 24, 24), seed=2)
    trained, _ = specialised.train_single_task(subjects, CONFIG, budget, target, 0)
    torch.manual_seed(budget.seed)  # the network before training
    untrained = specialised.SingleTaskSegmenter(CONFIG).eval()
    other_draws = specialised.Budget(1, crop_voxels=(24, 24, 24), seed=99)
    unseen = [specialised.training_crop(subjects, target, other_draws, 0, k) for k in range(4)]

    def loss(network):
        with torch.no_grad():
            return np.mean([float(1 - soft_dice(torch.sigmoid(network(c.images, c.spacing_mm, c.modalities)), c.truth))
                            for c in unseen])

    assert loss(trained) < loss(untrained) - 0.05


def test_segmentations_come_back_on_the_subjects_grid(subjects):
    budget = specialised.Budget(1, crop_voxels=(16, 16, 16))
    instructable, _ = specialised.train_instructable(subjects, CONFIG, budget, ("brainstem", "all infarcts"))
    single, _ = specialised.train_single_task(subjects, CONFIG, budget, "brainstem", 0)
    subject = subjects[1]
    shape = subject.sessions[0].synthetic.label_map.shape
    masks = specialised.segment_instructable(instructable, subject, ["brainstem", "all infarcts"])
    assert {k: v.shape for k, v in masks.items()} == {"brainstem": shape, "all infarcts": shape}
    assert specialised.segment_single_task(single, subject).dtype == bool


def test_the_classifier_sees_the_scans_its_task_selects_and_answers_among_its_choices():
    names = list(catalogue())
    examples = data.single_lesion_examples("diffusion-restriction", names.index("diffusion-restriction"), 2, 5,
                                           SPACING_MM)
    example = examples[0]
    assert specialised.choices(example) == ["restricted", "not restricted"]
    assert [s.modality for s in specialised.classifier_scans(example)] == ["DWI", "ADC"]
    assert specialised.expected_answer(example) in specialised.choices(example)
    classifier, losses = specialised.train_classifier(examples, CONFIG, specialised.Budget(2))
    assert len(losses) == 2 and specialised.classify(classifier, example) in specialised.choices(example)


def test_the_classifier_pools_over_streams_so_their_order_does_not_matter():
    torch.manual_seed(0)
    classifier = specialised.Classifier(CONFIG, 3).eval()
    images = torch.rand(2, 1, 12, 12, 12)
    with torch.no_grad():
        forward = classifier(images, (4.0, 4.0, 4.0), ["T1w", "FLAIR"])
        backward = classifier(images.flip(0), (4.0, 4.0, 4.0), ["FLAIR", "T1w"])
    assert torch.allclose(forward, backward, atol=1e-6)


def test_characterisation_examples_hold_a_single_lesion():
    names = list(catalogue())
    for example in data.single_lesion_examples("enhancement", names.index("enhancement"), 2, 9, SPACING_MM):
        assert len(example.subject.sessions[0].synthetic.lesions) == 1
