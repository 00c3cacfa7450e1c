"""Inference (paper Figure 2): the agent writes a step of code, the sandbox runs it, what it read is
fed back, and so on until the code calls `stop()` or the step limit is reached.

Decoding is greedy with a key-value cache (`model.decoding`), so the same model, prompt and scans always give the same
program. It is constrained (`runtime.steps`): a token is taken only if the step's text with it can
still become a valid step, so every name the code uses is assigned, every call has the arguments its
function takes, every target is one the vision networks know, every contrast, session and date is one
of the subject's, and nothing follows `stop()`. The most likely token that passes is taken. Each `<MOD>` the agent writes yields the latent features of the vision call it follows;
`ModelVision` hands them to the networks in the order the calls run. Without encoder steering (the
`cpu` preset) a subject's encoding depends only on its scans, and is computed once for all prompts.
Scans finer than the model's working spacing are encoded on a coarser grid (`inputs.working_grid`),
and each segmentation comes back on the grid of the scans it was asked of.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from voxelprompt.core.scan import Scan
from voxelprompt.core.volume import Grid, Volume
from voxelprompt.model import tokens
from voxelprompt.model.decoding import CachedDecoder
from voxelprompt.model.inputs import on_scan_grid, on_working_grid, stacked, working_grid
from voxelprompt.model.joint import VoxelPromptModel
from voxelprompt.model.transcript import feedback_pieces, prefix_pieces
from voxelprompt.model.vision import Encoded
from voxelprompt.runtime import Environment
from voxelprompt.runtime.library import Library, Metric
from voxelprompt.runtime.measures import MeasureError
from voxelprompt.runtime.steps import MARK, Status, StepChecker
from voxelprompt.runtime.vision import Encoding, Vision
from voxelprompt.synth import atlas

MAX_STEPS = 8
MAX_STEP_TOKENS = 512
CANDIDATES = 16  # tokens checked in order of likelihood before every token is considered
# Tokens the agent never writes in code: they are given by the loop.
GIVEN = (tokens.PAD, tokens.PROMPT, tokens.SCANS, tokens.CODE, tokens.FEEDBACK, tokens.END_FEEDBACK, tokens.PHI,
         tokens.ENC)


class ContextFull(Exception):
    """The agent's context would grow past the positions its model was configured for."""


@dataclass
class Result:
    prompt: str
    steps: list[str] = field(default_factory=list)  # the code of each step, as run
    responses: list[str] = field(default_factory=list)
    metrics: list[Metric] = field(default_factory=list)
    outputs: dict[str, Volume] = field(default_factory=dict)
    ok: bool = False
    error: str = ""
    seconds: float = 0.0

    @property
    def program(self) -> str:
        return "\n".join(self.steps)


@dataclass
class Features:
    """What the networks keep of encoded scans: m_enc's output, the grid it lies on, and the atlas's
    labels carried onto that grid when the head takes a spatial prior (None without one, or when the
    scans could not be registered: the prior is then zero, no information)."""

    encoded: Encoded
    grid: Grid
    carried: np.ndarray | None = None

    @property
    def embeddings(self) -> torch.Tensor:
        return self.encoded.embeddings


class ModelVision:
    """The trained networks behind the library's `encode` and `segment`."""

    def __init__(self, model: VoxelPromptModel, cache: dict | None = None):
        self.model = model
        self.latents: list[torch.Tensor] = []  # phi of the calls the current step's code makes, in order
        self.cache = cache if cache is not None else {}

    def encode(self, scans: Sequence[Scan]) -> Encoding:
        phi = self._next_latent()
        modalities = [s.modality for s in scans]
        # Keyed by the scan objects themselves; the entry keeps them alive, so an id is never reused.
        key = tuple(id(s) for s in scans)
        cached = self.cache.get(key)
        if self.model.config.vision.encoder_latent or cached is None or any(a is not b for a, b in zip(cached[0], scans)):
            grid = working_grid(scans[0].volume.grid, self.model.config.vision.working_spacing_mm)
            images = stacked(on_working_grid(scans, grid), self.model.device)
            carried = atlas.carried_onto(scans, grid) if self.model.config.vision.atlas_prior else None
            encoded = Features(self.model.vision.encode(images, tuple(grid.spacing_mm), modalities, phi), grid, carried)
            if not self.model.config.vision.encoder_latent:
                self.cache[key] = (tuple(scans), encoded)
        else:
            encoded = cached[1]
        return Encoding(tuple(scans), features=encoded)

    def segment(self, encoding: Encoding, target: str) -> Volume:
        phi = self._next_latent()
        features: Features = encoding.features
        prior = None
        if self.model.config.vision.atlas_prior:
            prior = torch.zeros(features.grid.shape, device=self.model.device)
            if features.carried is not None:
                prior = torch.from_numpy(atlas.prior(features.carried, target, features.grid.spacing_mm)).to(prior)
        logits = self.model.vision.generate(features.encoded, phi, [s.modality for s in encoding.scans], prior)
        mask = Volume((logits.detach().float().cpu().numpy() > 0).astype(np.uint8), features.grid.affine)  # sigmoid > 0.5
        return on_scan_grid(mask, encoding.scans[0].volume)

    def _next_latent(self) -> torch.Tensor:
        if not self.latents:
            raise MeasureError("a vision call without latent features: write the mark after encode(...) and segment(...)")
        return self.latents.pop(0)


def vocabularies(scans: Sequence[Scan]) -> dict[tuple[str, int], frozenset[str]]:
    """The strings that name things in a program about these scans (see `runtime.steps`)."""
    from voxelprompt.tasks.values import segment_targets

    sessions = frozenset(s.session for s in scans)
    return {("segment", 1): segment_targets(), ("select", 0): frozenset(s.modality for s in scans),
            ("select", 1): sessions, ("select", 2): frozenset(s.date for s in scans), ("scans", 0): sessions}


class Agent:
    """Writes and runs a program for a prompt. `constrained=False` decodes without the step checker
    (to measure what the constraint adds)."""

    def __init__(self, model: VoxelPromptModel, max_steps: int = MAX_STEPS, max_step_tokens: int = MAX_STEP_TOKENS,
                 constrained: bool = True):
        if max_steps < 1 or max_step_tokens < 1:
            raise ValueError("the agent needs at least one step of at least one token")
        self.model = model.eval()
        self.max_steps = max_steps
        self.max_step_tokens = max_step_tokens
        self.constrained = constrained
        self.decoder = CachedDecoder(model.agent, model.config.agent.max_positions)
        vocabulary = model.tokenizer.get_vocab_size()
        self.forbidden = torch.zeros(vocabulary, dtype=torch.bool, device=model.device)
        self.forbidden[[model.special[t] for t in GIVEN]] = True
        # Each token's text as the step checker reads it; None for tokens no code may hold.
        self.pieces: list[str | None] = [model.tokenizer.decode([i], skip_special_tokens=False) for i in range(vocabulary)]
        for name, token in model.special.items():
            self.pieces[token] = MARK if name == tokens.MOD else None
        self.pieces = [None if piece is not None and "\ufffd" in piece else piece for piece in self.pieces]

    @torch.no_grad()
    def run(self, prompt: str, scans: Sequence[Scan], cache: dict | None = None, vision: Vision | None = None) -> Result:
        """Answer one prompt about one subject's co-registered scans. Pass the same `cache` for every
        prompt of a subject to reuse its encoding. `vision` replaces the model's vision networks (e.g.
        by ground truth, to score the program writer alone); its encodings reach the agent as the
        encoding slot's own embedding, as in text-only training."""
        started = time.perf_counter()
        result = Result(prompt)
        vision = vision if vision is not None else ModelVision(self.model, cache)
        library = Library(list(scans), vision)
        environment = Environment(library.functions())
        self._checker = StepChecker(environment.functions, vocabularies(scans)) if self.constrained else None
        self.decoder.reset()
        self._last, self._length = None, 0
        try:
            self._answer(prompt, scans, result, vision, library, environment)
        except ContextFull as error:
            result.error = str(error)
        result.responses, result.metrics, result.outputs = library.responses, library.metrics, library.outputs
        result.seconds = time.perf_counter() - started
        return result

    def _answer(self, prompt: str, scans: Sequence[Scan], result: Result, vision: ModelVision, library: Library,
                environment: Environment) -> None:
        """The loop of steps, filling `result`; raises ContextFull when the context runs out."""
        self._feed(prefix_pieces(prompt, scans))
        for _ in range(self.max_steps):
            if self._checker is not None:
                self._checker.assigned(environment.namespace)
            code, latents, unfinished = self._write_step()
            if unfinished:
                # A step cut off is not what the agent meant: it is not run.
                result.steps.append(code)
                result.error = unfinished
                return
            if isinstance(vision, ModelVision):
                vision.latents = latents
            before = len(library.reads)
            library.step = len(result.steps)
            given = (len(library.metrics), len(library.responses), dict(library.outputs))
            feedback = environment.run(code)
            result.steps.append(code)
            if not feedback.ok:
                # A failed step gives the user nothing: what it reported before failing is withdrawn,
                # so that the agent's next attempt does not report it twice.
                del library.metrics[given[0]:], library.responses[given[1]:]
                library.outputs.clear()
                library.outputs.update(given[2])
            if library.stopped or (feedback.ok and not code.strip()):
                break
            read = library.reads[before:]
            self._feed(feedback_pieces(read, "" if feedback.ok else feedback.error), read)
        result.ok = library.stopped
        if not library.stopped:
            result.error = feedback.error or ("the agent wrote an empty step" if not code.strip()
                                              else f"the program did not stop within {self.max_steps} steps")

    def _feed(self, pieces: list[tokens.Piece], read: Sequence = ()) -> None:
        """Append given text (with encodings in its <ENC> slots) to the agent's context."""
        model = self.model
        ids = torch.tensor(tokens.ids_of(model.tokenizer, pieces), device=model.device)[None]
        self._grow(ids.shape[1])
        # One <ENC> slot per scan of each encoding read, in order; an encoding without the networks'
        # features (ground truth) leaves its slots with the token's own embedding.
        embeddings = [scan_embedding if isinstance(value.features, Features) else None
                      for value in read if isinstance(value, Encoding)
                      for scan_embedding in (value.features.embeddings if isinstance(value.features, Features)
                                             else [None] * len(value.scans))]
        slots = (ids[0] == model.special[tokens.ENC]).nonzero().flatten().tolist()
        spliced = {slot: embedding for slot, embedding in zip(slots, embeddings) if embedding is not None}
        self._last = self.decoder.feed(model.embed(ids, spliced)[0])[-1]

    def _write_step(self) -> tuple[str, list[torch.Tensor], str]:
        """Greedy decoding of one step: its code, the latent features of its vision calls (the hidden
        state at each <MOD>, which <PHI> follows), and why the step did not end ("" when it did)."""
        model = self.model
        self._feed([tokens.Special(tokens.CODE)])
        written, latents, text = [], [], ""
        unfinished = f"the agent's step did not end within {self.max_step_tokens} tokens"
        for _ in range(self.max_step_tokens):
            logits = model.logits(self._last).masked_fill(self.forbidden, float("-inf"))
            token = int(logits.argmax()) if self._checker is None else self._allowed_best(logits, text)
            if token is None:
                unfinished = "no token could continue the agent's step as a valid step"
                break
            text += self.pieces[token] or ""
            if token == model.special[tokens.END_STEP]:
                self._feed_id(token)
                unfinished = ""
                break
            written.append(token)
            self._feed_id(token)
            if token == model.special[tokens.MOD]:
                latents.append(model.phi(self._last))
                self._feed_id(model.special[tokens.PHI])
        text = model.tokenizer.decode(written, skip_special_tokens=False)
        return tokens.unmark(text), latents, unfinished

    def _allowed_best(self, logits: torch.Tensor, text: str) -> int | None:
        """The most likely token with which the step's text can still become a valid step; the end of
        the step only where the text is a valid step."""
        end = self.model.special[tokens.END_STEP]
        # A piece can continue the text only if its first character can (what can still become a
        # valid step is closed under prefixes), so each first character is checked once: where few
        # tokens fit (inside a target's name), the search through the whole vocabulary checks a few
        # dozen characters and the pieces that start with them, not every piece.
        viable_start: dict[str, bool] = {}
        checked: set[int] = set()
        for candidates in (torch.topk(logits, CANDIDATES).indices.tolist(),
                           torch.argsort(logits, descending=True).tolist()):
            for token in candidates:
                if token in checked:
                    continue
                checked.add(token)
                if token == end:
                    if text and self._checker.check(text) is Status.COMPLETE:
                        return token
                    continue
                piece = self.pieces[token]
                if piece is None:
                    continue
                head = piece[:1]
                if head not in viable_start:
                    viable_start[head] = self._checker.check(text + head) is not Status.INVALID
                if viable_start[head] and self._checker.check(text + piece) is not Status.INVALID:
                    return token
        return None

    def _feed_id(self, token: int) -> None:
        model = self.model
        self._grow(1)
        ids = torch.tensor([[token]], device=model.device)
        self._last = self.decoder.feed(model.embed(ids)[0])[-1]

    def _grow(self, count: int) -> None:
        """Count tokens into the context, refusing to pass the model's configured positions: a long
        prompt or feedback fails at once, before the model runs on it."""
        limit = self.model.config.agent.max_positions
        if self._length + count > limit:
            raise ContextFull(f"the agent's context is full: {self._length + count:,} tokens, and the model "
                              f"was configured for {limit:,}; shorten the prompt")
        self._length += count
