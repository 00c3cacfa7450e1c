"""The agent loop (voxelprompt/model/agent.py) on `test`-preset models with random weights: greedy decoding
is deterministic and bounded; and, with the decoder's choices scripted, the latent features of each
<MOD> reach the vision calls in order, encodings reach the <ENC> slots, the key-value cache gives
the hidden states of a full pass, and a subject's encoding is computed once per cache."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from voxelprompt.core.scan import Scan
from voxelprompt.core.volume import Volume
from voxelprompt.model import tokens
from voxelprompt.model.agent import Agent, ModelVision, Result
from voxelprompt.model.config import PRESETS
from voxelprompt.model.decoding import CachedDecoder
from voxelprompt.model.joint import VoxelPromptModel
from voxelprompt.model.tokens import mark_vision_calls, text_of
from voxelprompt.runtime import Environment
from voxelprompt.runtime.library import Library
from voxelprompt.runtime.measures import MeasureError
from voxelprompt.runtime.steps import Status
from voxelprompt.tasks.values import segment_targets

TEST = PRESETS["test"]
SHAPE = (16, 14, 12)
PROGRAM = ['e = encode(scans())\nread(e)',
           'm = segment(e, "left lateral ventricle")\nb = segment(e, "brain")\noutput(m, "ventricle")\n'
           'report("volume of the brain", volume_mm3(b), "mm3")\nstop()']


def _model(tokenizer, encoder_latent: bool = False, seed: int = 0) -> VoxelPromptModel:
    torch.manual_seed(seed)
    config = replace(TEST, vision=replace(TEST.vision, encoder_latent=encoder_latent))
    return VoxelPromptModel(config, tokenizer).eval()


def _scan(modality: str, seed: int, shape=SHAPE) -> Scan:
    rng = np.random.default_rng(seed)
    array = rng.uniform(0.0, 1.0, shape).astype(np.float32)
    return Scan(Volume(array, np.diag([4.0, 4.0, 4.0, 1.0])), modality, "01", "2024-03-02")


@pytest.fixture
def scans() -> list[Scan]:
    return [_scan("T1w", 1), _scan("FLAIR", 2)]


def _script(model: VoxelPromptModel, steps: list[str], *, marked: bool = True) -> list[int]:
    """The token ids the agent is to write for these steps: the code, with a <MOD> after each vision
    call (unless `marked` is False), then <|end_step|>; <PHI> is the loop's to feed, not the agent's."""
    ids = []
    for step in steps:
        code = mark_vision_calls(step).replace(tokens.PHI, "") if marked else step
        ids += model.tokenizer.encode(code + tokens.END_STEP, add_special_tokens=False).ids
    return ids


def _follow(monkeypatch, model: VoxelPromptModel, queue: list[int]) -> None:
    """Make the decoder write the queued tokens, whatever its weights say."""
    vocabulary = model.tokenizer.get_vocab_size()

    def logits(hidden: torch.Tensor) -> torch.Tensor:
        chosen = torch.zeros(vocabulary)
        chosen[queue.pop(0)] = 1.0
        return chosen

    monkeypatch.setattr(model, "logits", logits)


def _record(monkeypatch, owner, name: str) -> list:
    """Wrap owner.name so that every call's arguments and result are kept."""
    original = getattr(owner, name)
    calls = []

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append((args, kwargs, result))
        return result

    monkeypatch.setattr(owner, name, wrapper)
    return calls


# --- random weights -------------------------------------------------------------------------------

def test_random_model_runs_deterministically(tokenizer, scans):
    model = _model(tokenizer)
    agent = Agent(model, max_steps=3, max_step_tokens=24)
    first = agent.run("what is the volume of the left hippocampus?", scans)
    second = agent.run("what is the volume of the left hippocampus?", scans)
    assert isinstance(first, Result)
    assert 1 <= len(first.steps) <= 3
    assert first.steps == second.steps and first.responses == second.responses and first.ok == second.ok
    assert first.ok or first.error
    # a fresh agent on a model loaded with the same weights writes the same program
    assert Agent(_model(tokenizer), max_steps=3, max_step_tokens=24).run(
        "what is the volume of the left hippocampus?", scans).steps == first.steps


@pytest.mark.parametrize("max_steps", [1, 2])
def test_random_model_respects_max_steps(tokenizer, scans, max_steps, monkeypatch):
    model = _model(tokenizer, seed=3)
    # a model that never stops: every step is `x = 1` (a literal, which only unconstrained decoding writes)
    agent = Agent(model, max_steps=max_steps, max_step_tokens=8, constrained=False)
    queue = _script(model, ["x = 1"] * (max_steps + 2))
    _follow(monkeypatch, model, queue)
    result = agent.run("volume?", scans)
    assert result.steps == ["x = 1"] * max_steps
    assert not result.ok and f"within {max_steps} steps" in result.error
    # and one that never ends a step writes at most max_step_tokens tokens per step
    monkeypatch.undo()
    written = _record(monkeypatch, model, "logits")
    result = Agent(model, max_steps=max_steps, max_step_tokens=8).run("volume?", scans)
    assert len(result.steps) <= max_steps
    assert len(written) <= max_steps * 8


def test_zero_steps_or_tokens_are_refused_when_the_agent_is_made(tokenizer):
    model = _model(tokenizer)
    for limits in ({"max_steps": 0}, {"max_step_tokens": 0}, {"max_steps": -1}):
        with pytest.raises(ValueError, match="at least one step"):
            Agent(model, **limits)


def test_a_prompt_longer_than_the_context_fails_at_once_without_running_the_model(tokenizer, scans, monkeypatch):
    model = _model(tokenizer)
    calls = []
    agent = Agent(model)
    monkeypatch.setattr(agent.decoder, "feed", lambda *args, **kwargs: calls.append(1))
    prompt = "volume of the left hippocampus " * 2_000  # 62,000 characters
    result = agent.run(prompt, scans)
    assert not result.ok and result.steps == [] and calls == []
    assert "context is full" in result.error and f"{TEST.agent.max_positions:,}" in result.error
    assert "hippocampus" not in result.error  # the prompt is not repeated


def test_a_step_that_fills_the_context_ends_the_run_with_an_error(tokenizer, scans, monkeypatch):
    """Feedback counts against the context: once it is full, the run stops with an error row."""
    model = _model(tokenizer)
    _follow(monkeypatch, model, _script(model, ['x = 1\nread(x)'] * 4))
    agent = Agent(model, max_steps=4, constrained=False)
    limited = replace(model.config, agent=replace(model.config.agent, max_positions=60))
    monkeypatch.setattr(model, "config", limited)
    result = agent.run("volume?", scans)
    assert not result.ok and "context is full" in result.error


PROMPTS = ("what is the volume of the left hippocampus?", "segment the brain", "mean FLAIR intensity of the thalamus")


def test_constrained_decoding_writes_only_valid_steps(tokenizer, scans):
    """Random weights write random code; constrained, every step they end is valid: names defined,
    calls with the arguments their functions take, targets and contrasts of the vocabulary, a mark
    after each vision call, nothing after stop(). Unconstrained, the same weights write invalid code."""
    model = _model(tokenizer, seed=5)
    checker_errors = ("not defined", "syntax error", "is a function", "argument", "latent features", "no scan with")

    def errors_of(agent: Agent) -> list[str]:
        found = []
        for prompt in PROMPTS:
            result = agent.run(prompt, scans)
            environment = Environment(Library(scans).functions())
            cut = "did not end within" in result.error or "no token could continue" in result.error
            ended = result.steps[:-1] if cut else result.steps
            for step in ended:
                checked = environment.check(step)
                found += [] if checked.ok else [checked.error]
            found += [result.error] if any(e in result.error for e in checker_errors) else []
        return found

    constrained = Agent(model, max_steps=3, max_step_tokens=64)
    assert errors_of(constrained) == []
    for prompt in PROMPTS:
        for step in constrained.run(prompt, scans).steps:
            assert "stop()" not in step or step.rstrip().endswith("stop()")
            for target in re.findall(r'segment\([^,]+, "([^"]*)"\)', step):
                assert target in segment_targets()
            for contrast in re.findall(r'select\("([^"]*)"', step):
                assert contrast in {"T1w", "FLAIR"}
    unconstrained = Agent(model, max_steps=3, max_step_tokens=64, constrained=False)
    environment = Environment(Library(scans).functions())
    assert any(not environment.check(step).ok for prompt in PROMPTS for step in unconstrained.run(prompt, scans).steps)


def test_the_pruned_search_takes_the_token_a_search_of_every_token_takes(tokenizer, scans, monkeypatch):
    """Constrained decoding checks each first character once and skips the pieces that start with a
    character the step cannot take; at every token of a random model's run it takes the token that
    checking every piece in order of likelihood takes, also where the 16 likeliest all fail."""
    model = _model(tokenizer, seed=5)
    agent = Agent(model, max_steps=2, max_step_tokens=48)
    pruned, end = agent._allowed_best, model.special[tokens.END_STEP]
    compared = []

    def exhaustive(logits: torch.Tensor, text: str) -> int | None:
        for token in torch.argsort(logits, descending=True).tolist():
            if token == end:
                if text and agent._checker.check(text) is Status.COMPLETE:
                    return token
            elif agent.pieces[token] is not None and agent._checker.check(text + agent.pieces[token]) is not Status.INVALID:
                return token
        return None

    def both(logits: torch.Tensor, text: str) -> int | None:
        token = pruned(logits, text)
        compared.append((token, exhaustive(logits, text), torch.topk(logits, 16).indices.tolist()))
        return token

    monkeypatch.setattr(agent, "_allowed_best", both)
    agent.run(PROMPTS[0], scans)
    assert [taken for taken, _, _ in compared] == [expected for _, expected, _ in compared]
    assert any(taken not in likeliest for taken, _, likeliest in compared), "the search past the 16 likeliest never ran"


# --- scripted decoding -----------------------------------------------------------------------------

def test_scripted_program_runs(tokenizer, scans, monkeypatch):
    model = _model(tokenizer)
    queue = _script(model, PROGRAM)
    _follow(monkeypatch, model, queue)
    encodes = _record(monkeypatch, model.vision, "encode")
    generates = _record(monkeypatch, model.vision, "generate")
    latents = _record(monkeypatch, model, "phi")
    result = Agent(model).run("how large is the brain?", scans)
    assert queue == []
    assert result.ok and result.error == "" and result.steps == PROGRAM
    assert result.outputs["ventricle"].shape == SHAPE
    assert [m.name for m in result.metrics] == ["volume of the brain"]
    assert len(latents) == 3 and len(encodes) == 1 and len(generates) == 2
    # the features of each <MOD>, in the order the calls ran
    assert encodes[0][0][3] is latents[0][2]
    assert generates[0][0][1] is latents[1][2] and generates[1][0][1] is latents[2][2]
    assert encodes[0][0][0].shape == (2, 1, *SHAPE) and encodes[0][0][1] == (4.0, 4.0, 4.0)


def test_a_failed_step_withdraws_what_it_reported(tokenizer, scans, monkeypatch):
    """The agent retries a step that failed half-way: its first report must not stay in the results."""
    model = _model(tokenizer)
    failing = ('b = segment(e, "brain")\nreport("volume of the brain", volume_mm3(b), "mm3")\noutput(b, "brain")\n'
               'respond("done")\nnot_a_function()')
    queue = _script(model, [PROGRAM[0], failing, PROGRAM[1]])
    _follow(monkeypatch, model, queue)
    result = Agent(model, constrained=False).run("how large is the brain?", scans)
    assert queue == [] and result.ok
    assert [m.name for m in result.metrics] == ["volume of the brain"]
    assert len(result.responses) == 1 and result.responses[0].startswith("volume of the brain: ")
    assert list(result.outputs) == ["ventricle"]
    assert [m.step for m in result.metrics] == [2]


def test_encodings_fill_the_slots_and_the_cache_matches_a_full_pass(tokenizer, scans, monkeypatch):
    """What the agent computes token by token with its key-value cache equals one pass over the whole
    sequence, and each <ENC> slot of the feedback holds its scan's encoding."""
    model = _model(tokenizer)
    _follow(monkeypatch, model, _script(model, PROGRAM))
    embedded = _record(monkeypatch, model, "embed")
    latents = _record(monkeypatch, model, "phi")
    encodes = _record(monkeypatch, model.vision, "encode")
    Agent(model).run("how large is the brain?", scans)

    ids, spliced = [], {}
    for args, kwargs, _ in embedded:
        encodings = args[1] if len(args) > 1 else kwargs.get("encodings")
        for position, value in (encodings or {}).items():
            spliced[len(ids) + position] = value
        ids += args[0][0].tolist()
    enc = model.special[tokens.ENC]
    slots = [i for i, t in enumerate(ids) if t == enc]
    assert sorted(spliced) == slots and len(slots) == len(scans)
    embeddings = encodes[0][2].embeddings
    for stream, slot in enumerate(slots):
        assert torch.equal(spliced[slot], embeddings[stream])

    full_ids = torch.tensor([ids])
    with torch.no_grad():
        hidden, _ = model.hidden(model.embed(full_ids, spliced))
    mods = [i for i, t in enumerate(ids) if t == model.special[tokens.MOD]]
    assert len(mods) == 3 and all(ids[m + 1] == model.special[tokens.PHI] for m in mods)
    for position, (_, _, phi) in zip(mods, latents):
        torch.testing.assert_close(model.phi(hidden[0, position]), phi, atol=1e-5, rtol=1e-4)


def test_model_vision_consumes_latents_in_order(tokenizer, scans, monkeypatch):
    model = _model(tokenizer)
    encodes = _record(monkeypatch, model.vision, "encode")
    generates = _record(monkeypatch, model.vision, "generate")
    vision = ModelVision(model)
    latents = [torch.randn(TEST.vision.phi_dim) for _ in range(3)]
    vision.latents = list(latents)
    environment = Environment(Library(scans, vision).functions())
    feedback = environment.run('e = encode(scans())\na = segment(e, "brain")\nb = segment(e, "left hippocampus")')
    assert feedback.ok, feedback.error
    assert vision.latents == []
    assert encodes[0][0][3] is latents[0]
    assert [call[0][1] for call in generates] == [latents[1], latents[2]]
    assert all(call[0][1] is latent for call, latent in zip(generates, latents[1:]))


def test_vision_call_without_latent(tokenizer, scans, monkeypatch):
    model = _model(tokenizer)
    vision = ModelVision(model)
    with pytest.raises(MeasureError, match="latent features"):
        vision.encode(scans)
    vision.latents = [torch.randn(TEST.vision.phi_dim)]
    encoding = vision.encode(scans)
    with pytest.raises(MeasureError):
        vision.segment(encoding, "brain")
    # in the sandbox the error is feedback for the agent, never an exception
    feedback = Environment(Library(scans, ModelVision(model)).functions()).run("e = encode(scans())")
    assert not feedback.ok and "MeasureError" in feedback.error and "vision call" in feedback.error

    # and through the agent: a step that calls encode without writing <MOD> reads the error and goes on
    # (only unconstrained decoding can write such a step: the step checker makes the mark compulsory)
    agent = Agent(model, constrained=False)
    fed = _record(monkeypatch, agent, "_feed")
    _follow(monkeypatch, model, _script(model, ["e = encode(scans())\nread(e)", "stop()"], marked=False))
    result = agent.run("volume?", scans)
    assert result.ok and result.steps == ["e = encode(scans())\nread(e)", "stop()"]
    feedback_texts = [text_of(args[0]) for args, _, _ in fed if text_of(args[0]).startswith(tokens.FEEDBACK)]
    assert len(feedback_texts) == 1 and "error: MeasureError" in feedback_texts[0]


@pytest.mark.parametrize("steered", [False, True])
def test_cache_encodes_a_subject_once(tokenizer, scans, monkeypatch, steered):
    model = _model(tokenizer, encoder_latent=steered)
    encodes = _record(monkeypatch, model.vision, "encode")
    queue = _script(model, PROGRAM) + _script(model, PROGRAM)
    _follow(monkeypatch, model, queue)
    agent = Agent(model)
    cache: dict = {}
    first = agent.run("how large is the brain?", scans, cache=cache)
    second = agent.run("segment the left lateral ventricle", scans, cache=cache)
    assert queue == [] and first.ok and second.ok
    if steered:  # the encoding depends on the prompt's phi: nothing is cached
        assert len(encodes) == 2 and cache == {}
    else:
        assert len(encodes) == 1 and len(cache) == 1
    # without a shared cache each prompt encodes
    _follow(monkeypatch, model, _script(model, PROGRAM))
    agent.run("how large is the brain?", scans)
    assert len(encodes) == (3 if steered else 2)


def test_cache_never_answers_for_another_scan(tokenizer):
    """The cache is keyed by the scans' id(); a later scan at the same address (a crop or mask made
    by a later prompt of the subject) must not get a stale encoding. Entries keep their scans alive,
    and a lookup checks that the cached scans are the very ones asked for: here an entry whose key is
    the new scan's id but whose scans are others must be ignored."""
    model = _model(tokenizer)
    cache = {}
    vision = ModelVision(model, cache)
    first = _scan("T1w", 1, (10, 10, 10))
    vision.latents = [torch.zeros(TEST.vision.phi_dim)]
    vision.encode([first])
    (stale,) = cache.values()
    assert stale[0][0] is first, "the entry keeps its scans alive"
    second = _scan("T1w", 2, (12, 12, 12))
    cache[(id(second),)] = stale  # what an address reused by `second` would look like
    vision.latents = [torch.zeros(TEST.vision.phi_dim)]
    encoding = vision.encode([second])
    assert tuple(encoding.features.encoded.skips[0].shape[2:]) == (12, 12, 12)


def test_special_token_text_in_feedback_does_not_shift_encodings(tokenizer, scans, monkeypatch):
    """Text the program reads back (here the literal text "<ENC>") must not become an <ENC> slot, or
    the scans' encodings land in the wrong slots."""
    model = _model(tokenizer)
    encode = model.tokenizer.encode
    queue = (encode('e = encode(scans())' + tokens.MOD + '\nread("<', add_special_tokens=False).ids
             + encode('ENC>")\nread(e)' + tokens.END_STEP, add_special_tokens=False).ids
             + _script(model, ["stop()"]))
    _follow(monkeypatch, model, queue)
    embedded = _record(monkeypatch, model, "embed")
    result = Agent(model, constrained=False).run("volume?", scans)  # read("...") of a literal is unconstrained only
    assert result.ok and result.steps[0] == 'e = encode(scans())\nread("<ENC>")\nread(e)'
    feedback = [(args[0][0].tolist(), args[1] if len(args) > 1 else {}) for args, _, _ in embedded
                if args[0][0, 0] == model.special[tokens.FEEDBACK]]
    assert len(feedback) == 1
    ids, spliced = feedback[0]
    encoding_text = tokenizer.encode(" encoding of", add_special_tokens=False).ids
    start = next(i for i in range(len(ids)) if ids[i: i + len(encoding_text)] == encoding_text)
    # the scans' slots are the <ENC> tokens just before "encoding of T1w (01), FLAIR (01)"
    assert sorted(spliced) == list(range(start - len(scans), start))


def test_scans_finer_than_the_working_spacing_are_encoded_coarser_and_masks_come_back_on_their_grid(tokenizer, monkeypatch):
    torch.manual_seed(0)
    config = replace(TEST, vision=replace(TEST.vision, working_spacing_mm=2.0))
    model = VoxelPromptModel(config, tokenizer).eval()
    encodes = _record(monkeypatch, model.vision, "encode")
    fine = Scan(Volume(np.random.default_rng(3).uniform(0, 1, (24, 20, 6)).astype(np.float32),
                       np.diag([1.0, 1.0, 5.0, 1.0])), "T1w", "01", "2024-03-02")
    vision = ModelVision(model)
    vision.latents = [torch.zeros(TEST.vision.phi_dim), torch.zeros(TEST.vision.phi_dim)]
    with torch.no_grad():
        encoding = vision.encode([fine])
        mask = vision.segment(encoding, "brain")
    (images, spacing, *_), _, _ = encodes[0]
    assert tuple(images.shape[2:]) == (12, 10, 6) and tuple(spacing) == (2.0, 2.0, 5.0)  # thick slices stay
    assert mask.grid.is_same(fine.volume.grid) and mask.array.dtype == np.uint8
    assert set(np.unique(mask.array)) <= {0, 1}


def test_the_cached_decoder_gives_the_hidden_states_of_transformers(tokenizer):
    """Fed in pieces of any length, the inference decoder's hidden states are those of one pass of
    the `transformers` model over the whole sequence."""
    torch.manual_seed(7)
    config = replace(TEST, agent=replace(TEST.agent, layers=2, hidden=64, heads=4, ffn=96, max_positions=64))
    model = VoxelPromptModel(config, tokenizer).eval()
    ids = torch.randint(0, tokenizer.get_vocab_size(), (1, 40))
    with torch.no_grad():
        full, _ = model.hidden(model.embed(ids))
    decoder = CachedDecoder(model.agent, config.agent.max_positions)
    for _ in range(2):  # a reset starts a new sequence in the same buffers
        decoder.reset()
        pieces, start = [], 0
        for count in (10, 1, 1, 5, 23):
            pieces.append(decoder.feed(model.embed(ids[:, start:start + count])[0]))
            start += count
        torch.testing.assert_close(torch.cat(pieces), full[0], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="64 positions"):
        decoder.feed(model.embed(torch.zeros((1, 25), dtype=torch.long))[0])
