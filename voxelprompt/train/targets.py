"""Target batches for the vision stage: one subject's scans and many of the targets its label map
defines, each with its ground-truth mask and the episode of the segmentation task that asks for it.

Each target's phi is then the agent's hidden state at the `<MOD>` after its `segment(e, "<target>")`
call, with the scans' encodings in the episode's `<ENC>` slots: exactly what the networks get at
inference. One encoder and generator pass serves all of them (the dynamic head).

Targets are every anatomical target the subject allows (structures, sides, unions, cortical parcels,
lobes, territories) and every lesion, lesion class and tumour part it has. Anatomy is drawn with
probability inversely proportional to the number of base labels a target unites: single structures
and parcels, which are small, come often; a lobe or a territory, which is their union and large, is
learnt from them and asked for less. Lesion targets fill up to an eighth of every batch: a lesion
has many descriptions, and they would otherwise crowd out the anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from tokenizers import Tokenizer

from voxelprompt.core.scan import Scan
from voxelprompt.synth import atlas, labels
from voxelprompt.tasks import values
from voxelprompt.tasks.catalogue import catalogue
from voxelprompt.tasks.grammar import grammar
from voxelprompt.tasks.roughen import roughen
from voxelprompt.tasks.subjects import TaskSubject
from voxelprompt.train.episodes import Episode, from_execution

# The value kind of a segment argument -> the task whose program segments a value of that kind.
SEGMENT_TASKS = {"anatomy": "segment-anatomy", "lesion": "segment-lesion", "lesion_class": "segment-lesion-class",
                 "tumour_part": "segment-tumour-part"}


@dataclass
class TargetBatch:
    scans: tuple[Scan, ...]  # the scans of the subject's one session, on one grid
    targets: list[str]
    truths: np.ndarray  # (K, X, Y, Z) bool, on the scans' grid
    episodes: list[Episode]  # per target: the segmentation episode whose last vision call segments it
    priors: np.ndarray | None = None  # (K, X, Y, Z) float32: each target's atlas prior, when asked for


def candidates(subject: TaskSubject) -> dict[str, list[str]]:
    """Every value the segmentation tasks can take on the subject, by kind."""
    return {kind: values.allowed(kind, subject) for kind in SEGMENT_TASKS}


def chosen_targets(subject: TaskSubject, count: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Up to `count` (kind, value) pairs: lesion targets (up to an eighth), then anatomy, drawn
    without replacement with weights 1 / (base labels of the target)."""
    found = candidates(subject)
    lesions = [(kind, value) for kind in SEGMENT_TASKS if kind != "anatomy" for value in found[kind]]
    anatomy = [("anatomy", value) for value in found["anatomy"]]
    rng.shuffle(lesions)
    picked = lesions[:max(1, count // 8)]
    room = count - len(picked)
    if room > 0 and anatomy:
        weights = np.array([1 / len(labels.target(value).label_ids) for _, value in anatomy])
        chosen = rng.choice(len(anatomy), size=min(room, len(anatomy)), replace=False, p=weights / weights.sum())
        picked += [anatomy[int(i)] for i in chosen]
    return picked


def segmentation_episode(tokenizer: Tokenizer, subject: TaskSubject, kind: str, value: str,
                         rng: np.random.Generator, rough: float = 0.0) -> Episode:
    """The teacher-forced episode of the task that segments `value`, with a prompt of its grammar."""
    task = catalogue()[SEGMENT_TASKS[kind]]
    (name,) = task.values
    template = task.prompts[int(rng.integers(len(task.prompts)))]
    prompt = grammar().expand(template, rng, values.lesion_noun_bindings() | {name: values.forms(kind, value)})
    if rough and rng.random() < rough:
        prompt = roughen(prompt, rng)
    return from_execution(tokenizer, prompt, task.program_for({name: value}), subject)


def target_batch(tokenizer: Tokenizer, subject: TaskSubject, count: int, rng: np.random.Generator,
                 box: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None,
                 rough: float = 0.0, picked: list[tuple[str, str]] | None = None,
                 carried: np.ndarray | None = None) -> TargetBatch:
    """`count` targets of the subject's first session (or the (kind, value) pairs `picked`), its scans
    and masks cut to `box` (start, stop voxels) when given; with `carried` (the atlas's labels carried
    onto the session's grid by `atlas.carried_onto`), each target's spatial prior too."""
    view = replace(subject, sessions=subject.sessions[:1])
    picked = chosen_targets(view, count, rng) if picked is None else picked
    if not picked:
        raise ValueError("the subject defines no target to segment")
    made = [segmentation_episode(tokenizer, view, kind, value, rng, rough) for kind, value in picked]
    encode = next(call for call in made[0].calls if call.kind == "encode")
    scans = encode.scans
    truths = [next(call for call in reversed(episode.calls) if call.kind == "segment").truth for episode in made]
    priors = None
    if carried is not None:
        # Made on the whole session, then cut: a box's edge is not the carried boundary.
        priors = np.stack([atlas.prior(carried, value, scans[0].volume.spacing_mm) for _, value in picked])
    if box is not None:
        if priors is not None:
            priors = np.stack([scans[0].volume.with_array(p).cropped(*box).array for p in priors]).astype(np.float32)
        scans = tuple(replace(s, volume=s.volume.cropped(*box)) for s in scans)
        truths = [truth.cropped(*box) for truth in truths]
    return TargetBatch(scans, [value for _, value in picked], np.stack([t.array > 0 for t in truths]), made, priors)
