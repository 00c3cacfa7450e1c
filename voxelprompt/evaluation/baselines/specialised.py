"""Specialised single-task baselines (paper §5.2, §5.3) and the instructable network they are set
against, trained on the same data with the same budget.

Segmentation: one network per target, the vision UNet of VoxelPrompt (m_enc + m_gen, the same
configuration) with every latent-mixing layer replaced by a plain fully-connected layer (a 1x1x1
convolution, no phi input) and no stream interaction (`VisionNetworks(instructable=False)`), trained
with the soft Dice loss on the training subjects that hold its target. Against them: one
instructable network of the same configuration, trained on all the targets at once, steered by a phi
learned per target (the agent's part reduced to naming the target), so that the comparison isolates
what the paper asks: does one network told what to segment match one network per target?

Same data, same budget: training step k of target t uses the same subject, crop and contrasts in
both arms (drawn from `[seed, t, k]`), each single-task network takes `steps_per_target` steps, and
the instructable network takes that many steps per target, interleaved (target 0, 1, ..., K-1, 0, ...).

Characterisation: one classifier per task, m_enc (non-instructable) whose deepest features are
max-pooled over space and then over the input streams, followed by a fully-connected layer with
softmax over the task's answers, trained with cross-entropy. Its inputs are the scans the task asks
about (those the ground-truth program selects, e.g. DWI and ADC for diffusion restriction, else all
of the subject's scans) of subjects with exactly one lesion, so that which lesion is meant is never
in doubt for a model that cannot read the prompt.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from voxelprompt.core.scan import Scan
from voxelprompt.core.seeds import Stream, generator
from voxelprompt.model.config import VisionConfig
from voxelprompt.model.inputs import stacked
from voxelprompt.model.vision import VisionNetworks, soft_dice
from voxelprompt.tasks.sampling import Example, execute
from voxelprompt.tasks.subjects import TaskSubject
from voxelprompt.tasks.truth import target_mask

ANATOMY_TARGETS = ("left and right cerebral white matter", "left and right lateral ventricle",
                   "left and right thalamus", "left and right putamen", "left and right hippocampus", "brainstem")
LESION_TARGETS = {"all tumours": "tumour", "all infarcts": "infarct", "all haemorrhages": "haemorrhage",
                  "all white matter hyperintensities": "white matter hyperintensity"}  # target -> lesion class
TARGETS = (*ANATOMY_TARGETS, *LESION_TARGETS)
CHARACTERISATION_TASKS = ("signal-intensity", "cerebral-location", "vascular-territory", "diffusion-restriction",
                          "enhancement")
NO_AGENT = 1  # the width of the (unused) agent encodings of a baseline network
_CHOICES = re.compile(r"choose\(answer, (\[.*?\])\)")
_SELECTED = re.compile(r'select\("([^"]+)"\)')


@dataclass(frozen=True)
class Budget:
    steps: int  # per target (segmentation) or per task (characterisation)
    learning_rate: float = 1e-3
    crop_voxels: tuple[int, int, int] = (40, 48, 40)  # training crops; inference sees the whole grid
    seed: int = 0


def target_kind(target: str) -> str:
    return "lesion" if target in LESION_TARGETS else "anatomy"


def holds(subject: TaskSubject, target: str) -> bool:
    """Whether the subject's first session shows the target (lesion targets need their class)."""
    return bool(target_mask(subject.sessions[0], target).any())


# --- segmentation ------------------------------------------------------------------------------------

@dataclass
class Crop:
    images: torch.Tensor  # (S, 1, X, Y, Z)
    truth: torch.Tensor  # (X, Y, Z) float 0/1
    spacing_mm: tuple[float, float, float]
    modalities: list[str]


def training_crop(subjects: list[TaskSubject], target: str, budget: Budget, target_number: int, step: int) -> Crop:
    """The crop that step `step` of target number `target_number` trains on: a subject that holds the
    target, cut to the budget's crop around the target's centre, shifted by up to 8 voxels."""
    rng = generator(budget.seed, Stream.TRAINING_CROP, target_number, step)
    holding = [s for s in subjects if holds(s, target)]
    if not holding:
        raise ValueError(f"no training subject holds {target!r}")
    subject = holding[int(rng.integers(len(holding)))]
    truth = target_mask(subject.sessions[0], target)
    scans = [s for s in subject.scans if s.session == subject.sessions[0].label]
    size = np.minimum(np.asarray(budget.crop_voxels), truth.shape)
    centre = np.argwhere(truth).mean(axis=0)
    start = np.clip(np.round(centre - size / 2 + rng.integers(-8, 9, 3)).astype(int), 0, np.asarray(truth.shape) - size)
    box = tuple(slice(int(a), int(a + n)) for a, n in zip(start, size))
    images = stacked(scans)[(slice(None), slice(None), *box)]
    return Crop(images, torch.from_numpy(truth[box].astype(np.float32)),
                tuple(float(v) for v in scans[0].volume.spacing_mm), [s.modality for s in scans])


class InstructableSegmenter(nn.Module):
    """The instructable vision network with a learned phi per target."""

    def __init__(self, config: VisionConfig, targets: tuple[str, ...]):
        super().__init__()
        self.targets = targets
        self.vision = VisionNetworks(config, NO_AGENT, instructable=True)
        self.phi = nn.Embedding(len(targets), config.phi_dim)

    def forward(self, images: torch.Tensor, spacing_mm, modalities: list[str],
                targets: list[str]) -> list[torch.Tensor]:
        """Logits of each target, one encoding shared by all of them (the encoder is not steered)."""
        encoded = self.vision.encode(images, spacing_mm, modalities)
        return [self.vision.generate(encoded, self.phi.weight[self.targets.index(t)], modalities) for t in targets]


class SingleTaskSegmenter(nn.Module):
    """One target's network: the same UNet with plain fully-connected layers in place of the mixing."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        self.vision = VisionNetworks(config, NO_AGENT, instructable=False)
        self.register_buffer("no_phi", torch.zeros(config.phi_dim))  # read by nothing: the layers take no phi

    def forward(self, images: torch.Tensor, spacing_mm, modalities: list[str]) -> torch.Tensor:
        return self.vision.generate(self.vision.encode(images, spacing_mm, modalities), self.no_phi, modalities)


def train_instructable(subjects: list[TaskSubject], config: VisionConfig, budget: Budget,
                       targets: tuple[str, ...] = TARGETS) -> tuple[InstructableSegmenter, list[float]]:
    """The instructable network after `budget.steps` steps per target; returns it and the loss of every step."""
    torch.manual_seed(budget.seed)
    network = InstructableSegmenter(config, targets)
    optimiser = torch.optim.Adam(network.parameters(), budget.learning_rate)
    losses = []
    for step in range(budget.steps):
        for number, target in enumerate(targets):
            crop = training_crop(subjects, target, budget, number, step)
            logits = network(crop.images, crop.spacing_mm, crop.modalities, [target])[0]
            losses.append(_step(optimiser, 1 - soft_dice(torch.sigmoid(logits), crop.truth)))
    return network.eval(), losses


def train_single_task(subjects: list[TaskSubject], config: VisionConfig, budget: Budget, target: str,
                      target_number: int) -> tuple[SingleTaskSegmenter, list[float]]:
    """One target's network after `budget.steps` steps, on the crops the instructable network saw for it."""
    torch.manual_seed(budget.seed)
    network = SingleTaskSegmenter(config)
    optimiser = torch.optim.Adam(network.parameters(), budget.learning_rate)
    losses = []
    for step in range(budget.steps):
        crop = training_crop(subjects, target, budget, target_number, step)
        logits = network(crop.images, crop.spacing_mm, crop.modalities)
        losses.append(_step(optimiser, 1 - soft_dice(torch.sigmoid(logits), crop.truth)))
    return network.eval(), losses


@torch.no_grad()
def segment_instructable(network: InstructableSegmenter, subject: TaskSubject,
                         targets: list[str]) -> dict[str, np.ndarray]:
    """Boolean masks (logit > 0) of the targets on the subject's grid (first session)."""
    images, spacing, modalities = _inputs(_first_session_scans(subject))
    return {t: (logits > 0).numpy() for t, logits in zip(targets, network(images, spacing, modalities, targets))}


@torch.no_grad()
def segment_single_task(network: SingleTaskSegmenter, subject: TaskSubject) -> np.ndarray:
    images, spacing, modalities = _inputs(_first_session_scans(subject))
    return (network(images, spacing, modalities) > 0).numpy()


# --- characterisation --------------------------------------------------------------------------------

def choices(example: Example) -> list[str]:
    """The answers the ground-truth program chooses among (its `choose(answer, [...])`)."""
    found = _CHOICES.search(example.program[-1]) or next(
        (m for m in (_CHOICES.search(step) for step in example.program) if m), None)
    if found is None:
        raise ValueError(f"the program of {example.task.name!r} chooses among no listed answers")
    return json.loads(found.group(1))


def expected_answer(example: Example) -> str:
    """The ground-truth program's answer, run with ground truth standing in for the vision networks."""
    responses = execute(example.program, example.subject).library.responses
    if not responses:
        raise ValueError(f"the ground-truth program of {example.prompt!r} gave no answer")
    return responses[-1]


def classifier_scans(example: Example) -> list[Scan]:
    """The scans a classifier sees: those the ground-truth program selects, else all of the subject's."""
    selected = list(dict.fromkeys(m for step in example.program for m in _SELECTED.findall(step)))
    scans = _first_session_scans(example.subject)
    return [s for s in scans if s.modality in selected] if selected else scans


class Classifier(nn.Module):
    """m_enc without mixing, a global max over space and then over streams, a fully-connected layer."""

    def __init__(self, config: VisionConfig, answers: int):
        super().__init__()
        self.vision = VisionNetworks(config, NO_AGENT, instructable=False)
        self.out = nn.Linear(self.vision.channels[-1], answers)

    def forward(self, images: torch.Tensor, spacing_mm, modalities: list[str]) -> torch.Tensor:
        deepest = self.vision.encode(images, spacing_mm, modalities).skips[-1]  # (S, c, x, y, z)
        return self.out(torch.amax(deepest, dim=(0, 2, 3, 4)))  # logits; softmax is in the loss


def train_classifier(examples: list[Example], config: VisionConfig, budget: Budget) -> tuple[Classifier, list[float]]:
    """A task's classifier after `budget.steps` steps over its training examples (drawn with
    replacement from `[seed, step]`); answers are indices into each example's choices, which for one
    task always list the same descriptions in the same order (words differ for CT and MRI only)."""
    torch.manual_seed(budget.seed)
    network = Classifier(config, max(len(choices(e)) for e in examples))
    optimiser = torch.optim.Adam(network.parameters(), budget.learning_rate)
    labels = [choices(e).index(expected_answer(e)) for e in examples]
    inputs = [_inputs(classifier_scans(e)) for e in examples]
    losses = []
    for step in range(budget.steps):
        number = int(generator(budget.seed, Stream.CLASSIFIER_EXAMPLE, step).integers(len(examples)))
        logits = network(*inputs[number])
        losses.append(_step(optimiser, F.cross_entropy(logits[None], torch.tensor([labels[number]]))))
    return network.eval(), losses


@torch.no_grad()
def classify(network: Classifier, example: Example) -> str:
    listed = choices(example)
    logits = network(*_inputs(classifier_scans(example)))[: len(listed)]
    return listed[int(torch.argmax(logits))]


# --- shared ------------------------------------------------------------------------------------------

def _first_session_scans(subject: TaskSubject) -> list[Scan]:
    return [s for s in subject.scans if s.session == subject.sessions[0].label]


def _inputs(scans: list[Scan]) -> tuple[torch.Tensor, tuple[float, float, float], list[str]]:
    return stacked(scans), tuple(float(v) for v in scans[0].volume.spacing_mm), [s.modality for s in scans]


def _step(optimiser: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    return float(loss.detach())
