"""Episodes: a prompt, the scans' metadata, and the program's steps with the feedback each step read,
laid out as one token sequence for the agent (paper §3: mu_1 = prompt + metadata, then eta_i and z_i).

    <|prompt|> volume of the left hippocampus? <|scans|> T1w 01 2024-03-02 ...
    <|code|> e = encode(scans())<MOD><PHI>
    read(e) <|end_step|> <|feedback|> <ENC> encoding of T1w (01) <|end_feedback|>
    <|code|> ... stop() <|end_step|>

Training teaches the tokens of code and `<|end_step|>` (and `<MOD>`); everything else is given.
An episode also lists its vision calls in the order they run, which is the order of `<MOD>` marks,
with the ground-truth mask of every segmentation (the target of the generator's Dice loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from voxelprompt.core.scan import Scan
from voxelprompt.core.volume import Volume
from voxelprompt.model import tokens
from voxelprompt.model.transcript import feedback_pieces, prefix_pieces
from voxelprompt.runtime import Environment
from voxelprompt.runtime.library import Library
from voxelprompt.runtime.vision import Encoding
from voxelprompt.tasks import values
from voxelprompt.tasks.catalogue import Task
from voxelprompt.tasks.grammar import grammar
from voxelprompt.tasks.roughen import roughen
from voxelprompt.tasks.subjects import Requirements, choose_contrasts, session_dates
from voxelprompt.tasks.truth import GroundTruthVision

SKETCH_SHAPE = (6, 6, 6)


@dataclass
class VisionCall:
    kind: str  # encode or segment
    encoding: int  # which encoding (in order of encode calls)
    scans: tuple[Scan, ...] = ()  # encode: the scans
    target: str = ""  # segment: what to segment
    truth: Volume | None = None  # segment: the ground-truth mask
    prior: Volume | None = None  # segment: the target's atlas prior, for networks that take one (`with_priors`)


@dataclass
class Episode:
    ids: list[int]
    target: list[bool]  # per token: learned (code) or given (prompt, metadata, feedback, <PHI>)
    calls: list[VisionCall] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    slots: list[tuple[int, int]] = field(default_factory=list)  # per <ENC>: (encoding, scan within it)

    def positions(self, tokenizer: Tokenizer, token: str) -> list[int]:
        wanted = tokenizer.token_to_id(token)
        return [i for i, t in enumerate(self.ids) if t == wanted]


def build(tokenizer: Tokenizer, prompt: str, scans: Sequence[Scan], steps: Sequence[str],
          feedback: Sequence[list[tokens.Piece]]) -> Episode:
    """Token sequence of an episode; `feedback[i]` follows step i (none after the last step)."""
    ids: list[int] = []
    target: list[bool] = []

    def add(pieces: list[tokens.Piece], learned: bool) -> None:
        encoded = tokens.ids_of(tokenizer, pieces)
        ids.extend(encoded)
        target.extend([learned] * len(encoded))

    add(prefix_pieces(prompt, scans), False)
    phi = tokenizer.token_to_id(tokens.PHI)
    for number, step in enumerate(steps):
        add([tokens.Special(tokens.CODE)], False)
        start = len(ids)
        add(tokens.code_pieces(step) + [tokens.Special(tokens.END_STEP)], True)
        for i in range(start, len(ids)):
            target[i] = ids[i] != phi  # <PHI> always follows <MOD>: nothing to learn
        if number < len(steps) - 1:
            add(feedback[number], False)
    return Episode(ids, target, steps=list(steps))


class RecordingVision:
    """Ground truth that records every vision call, for the generator's targets during training."""

    def __init__(self, truth: GroundTruthVision):
        self.truth = truth
        self.calls: list[VisionCall] = []
        self.encodings = 0

    def encode(self, scans: Sequence[Scan]) -> Encoding:
        self.calls.append(VisionCall("encode", self.encodings, tuple(scans)))
        self.encodings += 1
        return Encoding(tuple(scans), features=self.encodings - 1)

    def segment(self, encoding: Encoding, target: str) -> Volume:
        mask = self.truth.segment(encoding, target)
        self.calls.append(VisionCall("segment", int(encoding.features), target=target, truth=mask))
        return mask


def from_execution(tokenizer: Tokenizer, prompt: str, steps: Sequence[str], subject) -> Episode:
    """Run a ground-truth program on a synthetic subject (teacher forcing: later steps see the true
    outcomes of earlier ones) and lay the episode out with what each step read."""
    scans = list(subject.scans)
    vision = RecordingVision(GroundTruthVision(subject))
    feedback, read = _run(steps, scans, vision)
    episode = build(tokenizer, prompt, scans, steps, feedback)
    episode.calls = vision.calls
    episode.slots = [(int(value.features), stream) for value in read if isinstance(value, Encoding)
                     for stream in range(len(value.scans))]
    return episode


def text_only(tokenizer: Tokenizer, task: Task, rng: np.random.Generator, rough: float = 0.0,
              undated: float = 0.0) -> Episode:
    """An episode of a task without images (see `sample_text`)."""
    return build(tokenizer, *sample_text(task, rng, rough, undated))


def sample_text(task: Task, rng: np.random.Generator, rough: float = 0.0,
                undated: float = 0.0) -> tuple[str, list[Scan], list[str], list[list[tokens.Piece]]]:
    """Prompt, scans, steps and feedback of a task without images: values drawn from everything the
    task can take, and the program run on a sketch of a subject (the metadata of scans a subject with
    what the task needs could have, tiny random images, random masks). Programs pass variables on,
    never the values they read, so these teach the code as executed episodes do, at a thousandth of
    the cost; only the numbers and words in the feedback are not a real subject's.

    A share `rough` of the prompts is roughened as people type (`roughen`), and a share `undated` of
    single-session subjects has scans without a session label or date, as a lone image given to
    `voxelprompt run` or an undated BIDS session has."""
    bound = values.bind(task.values, None, rng)
    named = tuple(bound.program[name] for name, kind in task.values.items() if kind in values.CONTRAST_KINDS)
    requirements = replace(task.requirements, contrasts=task.requirements.contrasts + named)
    template = task.prompts[int(rng.integers(len(task.prompts)))]
    prompt = grammar().expand(template, rng, values.lesion_noun_bindings() | bound.prompt)
    if rough and rng.random() < rough:
        prompt = roughen(prompt, rng)
    steps = task.program_for(bound.program)
    scans = sketch_scans(requirements, rng)
    if undated and requirements.sessions == 1 and rng.random() < undated:
        # No label, no date, or neither (a lone image given to `voxelprompt run`).
        blank_session, blank_date = ((True, False), (False, True), (True, True))[int(rng.integers(3))]
        scans = [replace(s, session="" if blank_session else s.session, date="" if blank_date else s.date)
                 for s in scans]
    return prompt, scans, steps, _run(steps, scans, SketchVision(rng))[0]


def sketch_scans(requirements: Requirements, rng: np.random.Generator) -> list[Scan]:
    contrasts = choose_contrasts(requirements, rng)
    dates = session_dates(requirements.sessions, rng)
    affine = np.eye(4)
    return [Scan(Volume(rng.uniform(0.5, 1.5, SKETCH_SHAPE).astype(np.float32), affine), contrast, f"{number:02d}", date)
            for number, date in enumerate(dates, start=1) for contrast in contrasts]


class SketchVision:
    """Random masks (each voxel in with probability 1/2): stands in for segmentation where only the
    code matters. Such masks overlap one another and their surroundings, so every program can run."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def encode(self, scans: Sequence[Scan]) -> Encoding:
        return Encoding(tuple(scans))

    def segment(self, encoding: Encoding, target: str) -> Volume:
        grid = encoding.scans[0].volume
        mask = self.rng.random(grid.shape) < 0.5
        mask.flat[int(self.rng.integers(mask.size))] = True
        return grid.with_array(mask.astype(np.uint8))


def _run(steps: Sequence[str], scans: list[Scan], vision) -> tuple[list[list[tokens.Piece]], list[Any]]:
    """The feedback of each step of a program that must run, and every value it read."""
    library = Library(scans, vision)
    environment = Environment(library.functions())
    feedback = []
    for step in steps:
        before = len(library.reads)
        result = environment.run(step)
        if not result.ok:
            raise RuntimeError(f"the ground-truth program failed: {result.error}\n{step}")
        feedback.append(feedback_pieces(library.reads[before:]))
    return feedback, library.reads
