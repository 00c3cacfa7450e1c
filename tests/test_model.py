"""The model (voxelprompt/model): vision networks, stream attention, native-space convolution, the
agent's tokens and episodes, and checkpoints. Everything runs on the `test` preset with random
weights and small volumes; nothing here synthesizes a subject."""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from voxelprompt.model import tokens
from voxelprompt.model.config import PRESETS, ModelConfig
from voxelprompt.model.transcript import prefix_pieces
from voxelprompt.train.episodes import SketchVision, _run, build, sample_text, text_only
from voxelprompt.model.joint import CheckpointError, VoxelPromptModel
from voxelprompt.model.tokens import ids_of, mark_vision_calls, text_of, unmark
from voxelprompt.model import vision as vision_module
from voxelprompt.model.inputs import working_grid
from voxelprompt.model.vision import HEADS, DynamicHead, NativeConv, StreamAttention, VisionNetworks, thick_axes
from voxelprompt.tasks.catalogue import catalogue
from voxelprompt.core.volume import Grid

PACKAGE = Path(__file__).resolve().parents[1] / "voxelprompt"
TEST = PRESETS["test"]
MODALITIES = ["T1w", "FLAIR", "CT"]


@pytest.fixture(scope="module")
def vision() -> VisionNetworks:
    torch.manual_seed(0)
    return VisionNetworks(TEST.vision, TEST.agent.hidden).eval()


def _phi(seed: int = 1) -> torch.Tensor:
    return torch.randn(TEST.vision.phi_dim, generator=torch.Generator().manual_seed(seed))


def _images(streams: int, shape: tuple[int, int, int], seed: int = 2) -> torch.Tensor:
    return torch.rand((streams, 1, *shape), generator=torch.Generator().manual_seed(seed))


# --- configuration ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PRESETS))
def test_config_round_trip(name):
    config = PRESETS[name]
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


# --- vision networks -------------------------------------------------------------------------------

@pytest.mark.parametrize("streams", [1, 2, 3])
@pytest.mark.parametrize("shape", [(20, 20, 20), (21, 18, 13)])
def test_vision_shapes(vision, streams, shape):
    modalities = MODALITIES[:streams]
    with torch.no_grad():
        encoded = vision.encode(_images(streams, shape), (2.0, 2.0, 2.0), modalities, _phi())
        logits = vision.generate(encoded, _phi(3), modalities)
    assert len(encoded.skips) == len(encoded.spacings) == TEST.vision.levels
    expected = list(shape)
    for level, skip in enumerate(encoded.skips):
        if level > 0:
            expected = [math.ceil(n / 2) for n in expected]  # isotropic: every axis pools (ceil mode)
        assert skip.shape == (streams, vision.channels[level], *expected)
        assert encoded.spacings[level] == tuple(2.0 * 2 ** level for _ in range(3))
    assert encoded.embeddings.shape == (streams, TEST.agent.hidden)
    assert logits.shape == shape
    assert torch.isfinite(logits).all() and torch.isfinite(encoded.embeddings).all()


def test_thick_slices_are_not_pooled(vision):
    """1 x 1 x 5 mm: the slice axis is thick at the first level, so level 1 keeps every slice (and the
    in-plane axes halve); the generated logits are on the input grid."""
    assert thick_axes((1.0, 1.0, 5.0)) == (False, False, True)
    assert thick_axes((1.0, 1.0, 2.0)) == (False, False, False)  # at most twice as coarse: not thick
    shape = (16, 14, 9)
    with torch.no_grad():
        encoded = vision.encode(_images(2, shape), (1.0, 1.0, 5.0), MODALITIES[:2], _phi())
        logits = vision.generate(encoded, _phi(3), MODALITIES[:2])
    assert encoded.skips[1].shape[2:] == (8, 7, 9)
    assert encoded.spacings[1] == (2.0, 2.0, 5.0)
    assert encoded.skips[0].shape[-1] == encoded.skips[1].shape[-1] == 9
    assert logits.shape == shape


def test_native_conv_does_not_mix_thick_slices():
    torch.manual_seed(4)
    conv = NativeConv(2, 3)
    x = torch.randn(1, 2, 7, 6, 5)
    changed = x.clone()
    changed[..., 2] += torch.randn(1, 2, 7, 6)
    with torch.no_grad():
        thick = conv(x, (False, False, True))
        thick_changed = conv(changed, (False, False, True))
        full = conv(x, (False, False, False))
        full_changed = conv(changed, (False, False, False))
    assert thick.shape == full.shape == (1, 3, 7, 6, 5)
    per_slice = (thick_changed - thick).abs().amax(dim=(0, 1, 2, 3))
    assert per_slice[2] > 1e-3
    assert torch.all(per_slice[[0, 1, 3, 4]] == 0)
    # the isotropic convolution does reach the neighbouring slices (the test above is not vacuous)
    per_slice_full = (full_changed - full).abs().amax(dim=(0, 1, 2, 3))
    assert torch.all(per_slice_full[[1, 2, 3]] > 1e-3) and torch.all(per_slice_full[[0, 4]] == 0)
    # each thick slice is a 2D convolution with the kernel's central slice
    for k in range(5):
        expected = F.conv2d(x[..., k], conv.weight[:, :, :, :, 1], conv.bias, padding=1)
        torch.testing.assert_close(thick[..., k], expected, atol=1e-5, rtol=1e-5)
    # and along a thick first axis as well
    with torch.no_grad():
        first = conv(x, (True, False, False))
    expected = F.conv2d(x[:, :, 3], conv.weight[:, :, 1], conv.bias, padding=1)
    torch.testing.assert_close(first[:, :, 3], expected, atol=1e-5, rtol=1e-5)


def _stream_attention_reference(module: StreamAttention, a: torch.Tensor) -> torch.Tensor:
    """Eq. 1 voxel by voxel: B = f(softmax(Q K^T / sqrt(b)) V) + A, with Q, K, V (S x b) linear maps of
    the S x c features A at the voxel and f a linear map back to c channels."""
    b = module.attention_dim
    w_qkv, b_qkv = module.qkv.weight[:, :, 0, 0, 0], module.qkv.bias
    w_out, b_out = module.out.weight[:, :, 0, 0, 0], module.out.bias
    out = torch.empty_like(a)
    for x, y, z in itertools.product(*(range(n) for n in a.shape[2:])):
        features = a[:, :, x, y, z]  # (S, c)
        qkv = features @ w_qkv.T + b_qkv
        q, k, v = qkv[:, :b], qkv[:, b: 2 * b], qkv[:, 2 * b:]
        weights = torch.softmax(q @ k.T / math.sqrt(b), dim=1)  # row s: how stream s attends to each t
        out[:, :, x, y, z] = (weights @ v) @ w_out.T + b_out + features
    return out


@pytest.mark.parametrize("streams", [1, 2, 3])
def test_stream_attention_is_equation_1(streams):
    torch.manual_seed(streams)
    module = StreamAttention(6, 4)
    with torch.no_grad():
        module.qkv.weight.mul_(3)  # sharper softmax than at initialisation
        a = torch.randn(streams, 6, 3, 4, 2)
        torch.testing.assert_close(module(a), _stream_attention_reference(module, a), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("streams", [1, 3])
def test_stream_attention_in_slabs_without_gradients_is_the_same(monkeypatch, streams):
    """At inference the attention runs slab by slab to bound memory; the result must not change."""
    torch.manual_seed(streams)
    module = StreamAttention(6, 4)
    a = torch.randn(streams, 6, 7, 5, 3)
    with torch.no_grad():
        whole = module(a)
        monkeypatch.setattr(vision_module, "SLAB_VOXELS", 2 * 5 * 3)  # slabs of two planes (the last one single)
        slabbed = module(a)
    torch.testing.assert_close(slabbed, whole, atol=1e-6, rtol=1e-6)
    with torch.enable_grad():  # training keeps one graph over the whole volume
        assert module(a.requires_grad_()).grad_fn is not None


@pytest.mark.parametrize("thick", [(False, False, False), (False, False, True)])
def test_native_conv_of_parts_is_the_conv_of_their_concatenation(thick):
    torch.manual_seed(4)
    conv = NativeConv(5, 3)
    parts = [torch.randn(2, 3, 6, 5, 4), torch.randn(2, 2, 6, 5, 4)]
    torch.testing.assert_close(conv(parts, thick), conv(torch.cat(parts, dim=1), thick), atol=1e-5, rtol=1e-5)
    # and gradients still reach every part and the weights
    parts = [p.requires_grad_() for p in parts]
    conv(parts, thick).sum().backward()
    assert all(p.grad is not None for p in parts) and conv.weight.grad is not None


def test_working_grid_coarsens_fine_axes_only():
    fine = Grid((180, 216, 36), np.diag([1.0, 1.0, 5.0, 1.0]))
    grid = working_grid(fine, 2.0)
    np.testing.assert_allclose(grid.spacing_mm, [2.0, 2.0, 5.0])
    assert grid.shape == (90, 108, 36)
    assert working_grid(fine, 0.0) is fine and working_grid(grid, 2.0) is grid


def test_stream_permutation(vision):
    """Streams are a set: permuting the input scans permutes their features and embeddings and leaves
    the segmentation unchanged."""
    shape = (12, 10, 9)
    images = _images(3, shape)
    order = [2, 0, 1]
    with torch.no_grad():
        encoded = vision.encode(images, (2.0, 2.0, 2.0), MODALITIES, _phi())
        permuted = vision.encode(images[order], (2.0, 2.0, 2.0), [MODALITIES[i] for i in order], _phi())
        logits = vision.generate(encoded, _phi(3), MODALITIES)
        logits_permuted = vision.generate(permuted, _phi(3), [MODALITIES[i] for i in order])
    torch.testing.assert_close(permuted.embeddings, encoded.embeddings[order], atol=1e-5, rtol=1e-4)
    for skip, skip_permuted in zip(encoded.skips, permuted.skips):
        torch.testing.assert_close(skip_permuted, skip[order], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(logits_permuted, logits, atol=1e-5, rtol=1e-4)
    # the streams do interact: another second scan changes the first stream's embedding
    other = images.clone()
    other[1] = torch.rand(1, *shape, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        changed = vision.encode(other, (2.0, 2.0, 2.0), MODALITIES, _phi())
    assert not torch.allclose(changed.embeddings[0], encoded.embeddings[0])


def test_encoder_latent():
    """Without encoder steering phi does not reach the encoding (it can be cached per subject); with it
    (the paper's configuration) phi changes the encoding."""
    images = _images(2, (10, 10, 10))
    for steered in (False, True):
        torch.manual_seed(0)
        networks = VisionNetworks(replace(TEST.vision, encoder_latent=steered), TEST.agent.hidden).eval()
        with torch.no_grad():
            one = networks.encode(images, (2.0, 2.0, 2.0), MODALITIES[:2], _phi(1))
            two = networks.encode(images, (2.0, 2.0, 2.0), MODALITIES[:2], _phi(2))
            none = networks.encode(images, (2.0, 2.0, 2.0), MODALITIES[:2], None)
        if steered:
            assert not torch.allclose(one.embeddings, two.embeddings)
            assert not torch.allclose(one.skips[0], two.skips[0])
        else:
            assert torch.equal(one.embeddings, two.embeddings) and torch.equal(one.embeddings, none.embeddings)
            assert all(torch.equal(a, b) for a, b in zip(one.skips, two.skips))
    # the modality steers the encoder in either configuration
    with torch.no_grad():
        t1 = networks.encode(images[:1], (2.0, 2.0, 2.0), ["T1w"])
        ct = networks.encode(images[:1], (2.0, 2.0, 2.0), ["CT"])
    assert not torch.allclose(t1.embeddings, ct.embeddings)


@pytest.mark.parametrize("head", HEADS)
def test_every_target_at_once_is_each_target_alone(head):
    """`segment_all` (the vision stage's one pass) gives each target the logits `generate` (inference)
    gives it alone; the dynamic head's features do not depend on phi, the modulated generator's do."""
    torch.manual_seed(0)
    networks = VisionNetworks(replace(TEST.vision, head=head), TEST.agent.hidden).eval()
    modalities = MODALITIES[:2]
    phi = torch.stack([_phi(n) for n in range(3)])
    with torch.no_grad():
        encoded = networks.encode(_images(2, (12, 10, 9)), (2.0, 2.0, 2.0), modalities)
        together = networks.segment_all(encoded, phi, modalities)
        alone = [networks.generate(encoded, p, modalities) for p in phi]
    assert together.shape == (3, 12, 10, 9)
    for one, other in zip(together, alone):
        torch.testing.assert_close(one, other, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(alone[0], alone[1])  # phi picks the target
    assert isinstance(networks.head, DynamicHead) == (head == "dynamic")


def test_the_dynamic_head_runs_the_generator_once_for_every_target_of_the_same_scans(monkeypatch):
    """Inference segments target after target: under the dynamic head, only the first runs m_gen."""
    torch.manual_seed(0)
    networks = VisionNetworks(replace(TEST.vision, head="dynamic"), TEST.agent.hidden).eval()
    passes = []
    generator = networks._generator
    monkeypatch.setattr(networks, "_generator", lambda *a, **k: passes.append(1) or generator(*a, **k))
    modalities = MODALITIES[:1]
    with torch.no_grad():
        encoded = networks.encode(_images(1, (12, 10, 9)), (2.0, 2.0, 2.0), modalities)
        first, second = (networks.generate(encoded, _phi(n), modalities) for n in range(2))
        fresh = networks.encode(_images(1, (12, 10, 9)), (2.0, 2.0, 2.0), modalities)
        torch.testing.assert_close(networks.generate(fresh, _phi(1), modalities), second)
    assert len(passes) == 2  # one for each encoding, none for the second target
    assert not torch.allclose(first, second)


def test_a_reader_keeps_the_encodings_the_agent_reads_when_m_enc_changes():
    torch.manual_seed(0)
    networks = VisionNetworks(replace(TEST.vision, reader=True), TEST.agent.hidden).eval()
    images, modalities = _images(2, (12, 10, 9)), MODALITIES[:2]
    with torch.no_grad():
        before = networks.encode(images, (2.0, 2.0, 2.0), modalities)
        for parameter in [*networks.encoder.parameters(), *networks.modality.parameters()]:
            parameter.add_(0.1)
        after = networks.encode(images, (2.0, 2.0, 2.0), modalities)
    torch.testing.assert_close(after.embeddings, before.embeddings, atol=0, rtol=0)
    assert not torch.allclose(after.skips[-1], before.skips[-1])
    assert networks.to_agent is None and networks.encoding_path() == [networks.reader]


def test_the_dynamic_head_of_a_single_task_network_is_a_plain_head():
    """Networks without phi (the single-task baselines) keep a plain 1x1x1 head whatever the config."""
    networks = VisionNetworks(replace(TEST.vision, head="dynamic"), TEST.agent.hidden, instructable=False)
    assert isinstance(networks.head, nn.Conv3d)


def test_a_modulated_network_without_a_reader_draws_its_weights_in_the_original_order():
    """The evaluation's baselines are seeded, so the order in which the networks draw their initial
    weights is part of its quoted numbers: adding the reader and the dynamic head must not move the
    modality embedding in front of the encodings' layer, as it once did."""
    networks = VisionNetworks(replace(TEST.vision, head="modulated", reader=False), TEST.agent.hidden)
    assert [name for name, _ in networks.named_children()] == ["encoder", "generator", "head", "to_agent", "modality"]


def test_an_unknown_head_is_refused():
    with pytest.raises(ValueError, match="unknown vision head 'mlp'"):
        VisionNetworks(replace(TEST.vision, head="mlp"), TEST.agent.hidden)


# --- tokens --------------------------------------------------------------------------------------

MARK = tokens.MOD + tokens.PHI


def test_marks_in_execution_order():
    code = 'v = volume_mm3(segment(encode(scans()), "x"))'
    marked = mark_vision_calls(code)
    assert marked == f'v = volume_mm3(segment(encode(scans()){MARK}, "x"){MARK})'
    assert unmark(marked) == code


def test_marks_on_several_lines_and_calls():
    code = ('e = encode(scans())\nread(e)\n'
            'a = union(segment(e, "left hippocampus"), segment(e, "right hippocampus"))\n'
            'b = segment(\n    e,\n    "brain")\nv = volume_mm3(a)')
    marked = mark_vision_calls(code)
    assert marked == ('e = encode(scans())' + MARK + '\nread(e)\n'
                      'a = union(segment(e, "left hippocampus")' + MARK + ', segment(e, "right hippocampus")' + MARK
                      + ')\nb = segment(\n    e,\n    "brain")' + MARK + '\nv = volume_mm3(a)')
    assert unmark(marked) == code
    # a program without vision calls is unchanged
    assert mark_vision_calls("v = volume_mm3(m)\nread(v)") == "v = volume_mm3(m)\nread(v)"


def test_marks_after_non_ascii_text():
    """Targets and metric names are text the code may hold in any script; the mark still goes right
    after the call (ast reports columns in UTF-8 bytes, not characters)."""
    code = 'v = volume_mm3(segment(e, "ventrículo lateral"))\nreport("Ödem", v, "mm3")'
    marked = mark_vision_calls(code)
    assert marked == f'v = volume_mm3(segment(e, "ventrículo lateral"){MARK})\nreport("Ödem", v, "mm3")'
    assert unmark(marked) == code


def test_unmark_inverts_marking_of_every_task_program():
    rng = np.random.default_rng(3)
    for task in catalogue().values():
        for step in sample_text(task, rng)[2]:
            marked = mark_vision_calls(step)
            assert unmark(marked) == step
            assert marked.count(tokens.MOD) == len(re.findall(r"\b(?:encode|segment)\(", step))


# --- episodes ------------------------------------------------------------------------------------

class CountingSketch(SketchVision):
    def __init__(self, rng):
        super().__init__(rng)
        self.calls = 0

    def encode(self, scans):
        self.calls += 1
        return super().encode(scans)

    def segment(self, encoding, target):
        self.calls += 1
        return super().segment(encoding, target)


@pytest.mark.parametrize("task_name", ["volume", "lesion-growth", "tumour-composition", "crop-field-of-view"])
def test_episode_layout(tokenizer, task_name):
    rng = np.random.default_rng(11)
    prompt, scans, steps, _ = sample_text(catalogue()[task_name], rng)
    vision = CountingSketch(np.random.default_rng(1))
    feedback, reads = _run(steps, scans, vision)
    episode = build(tokenizer, prompt, scans, steps, feedback)
    ids, target = episode.ids, episode.target
    assert len(ids) == len(target)
    special = {name: tokenizer.token_to_id(name) for name in tokens.SPECIAL_TOKENS}

    # what is learned is exactly the code with its <MOD> marks and <|end_step|>, never <PHI>
    learned = tokenizer.decode([t for t, learn in zip(ids, target) if learn], skip_special_tokens=False)
    assert learned == "".join(mark_vision_calls(s).replace(tokens.PHI, "") + tokens.END_STEP for s in steps)
    # the prompt and metadata are given
    prefix = ids_of(tokenizer, prefix_pieces(prompt, scans))
    assert ids[: len(prefix)] == prefix and not any(target[: len(prefix)])
    for name in (tokens.PROMPT, tokens.SCANS, tokens.CODE, tokens.FEEDBACK, tokens.END_FEEDBACK, tokens.PHI, tokens.ENC):
        assert all(not target[i] for i in episode.positions(tokenizer, name)), name
    for name in (tokens.MOD, tokens.END_STEP):
        assert all(target[i] for i in episode.positions(tokenizer, name)), name
    # feedback is given: every token between <|feedback|> and <|end_feedback|>
    starts = episode.positions(tokenizer, tokens.FEEDBACK)
    ends = episode.positions(tokenizer, tokens.END_FEEDBACK)
    assert len(starts) == len(ends) == len(steps) - 1
    for start, end in zip(starts, ends):
        assert not any(target[start: end + 1])
        assert tokenizer.decode(ids[start: end + 1], skip_special_tokens=False) == text_of(feedback[starts.index(start)])

    # one <MOD> per vision call, each followed by <PHI>; one <ENC> per scan of each encoding read
    mods = episode.positions(tokenizer, tokens.MOD)
    assert len(mods) == vision.calls > 0
    assert all(ids[m + 1] == special[tokens.PHI] for m in mods)
    assert len(episode.positions(tokenizer, tokens.PHI)) == len(mods)
    read_scans = sum(len(value.scans) for value in reads if hasattr(value, "scans"))
    assert len(episode.positions(tokenizer, tokens.ENC)) == read_scans > 0
    assert len(episode.positions(tokenizer, tokens.CODE)) == len(episode.positions(tokenizer, tokens.END_STEP)) == len(steps)


def test_text_only_episodes_are_seeded(tokenizer):
    task = catalogue()["volume"]
    one = text_only(tokenizer, task, np.random.default_rng(4))
    two = text_only(tokenizer, task, np.random.default_rng(4))
    assert one.ids == two.ids and one.target == two.target and any(one.target)


# --- checkpoints ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(tokenizer) -> VoxelPromptModel:
    torch.manual_seed(0)
    return VoxelPromptModel(TEST, tokenizer).eval()


@pytest.fixture
def checkpoint(model, tmp_path) -> Path:
    return model.save_pretrained(tmp_path / "model", card="# a test model\n")


def _outputs(model: VoxelPromptModel, tokenizer):
    ids = torch.tensor([ids_of(tokenizer, prefix_pieces("volume of the brain?", []) + [tokens.Special(tokens.CODE)])])
    with torch.no_grad():
        hidden, _ = model.hidden(model.embed(ids))
        logits = model.logits(hidden)
        phi = model.phi(hidden[0, -1])
        encoded = model.vision.encode(_images(2, (10, 9, 8)), (2.0, 2.0, 2.0), MODALITIES[:2], phi)
        segmentation = model.vision.generate(encoded, phi, MODALITIES[:2])
    return hidden, logits, encoded.embeddings, segmentation


def test_checkpoint_round_trip(model, tokenizer, checkpoint):
    assert sorted(p.name for p in checkpoint.iterdir()) == ["MODEL_CARD.md", "config.json", "model.safetensors",
                                                           "tokenizer.json"]
    assert (checkpoint / "MODEL_CARD.md").read_text() == "# a test model\n"
    loaded = VoxelPromptModel.from_pretrained(checkpoint).eval()
    assert loaded.config == model.config
    assert loaded.tokenizer.to_str() == tokenizer.to_str()
    assert loaded.special == model.special
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[name], loaded_state[name]) for name in state)
    for before, after in zip(_outputs(model, tokenizer), _outputs(loaded, loaded.tokenizer)):
        assert torch.equal(before, after)


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "model.safetensors"])
def test_checkpoint_missing_file(checkpoint, name):
    (checkpoint / name).unlink()
    with pytest.raises(CheckpointError, match=re.escape(name)):
        VoxelPromptModel.from_pretrained(checkpoint)


def test_checkpoint_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="nowhere"):
        VoxelPromptModel.from_pretrained(tmp_path / "nowhere")


@pytest.mark.parametrize("keep", [0.5, 0.999, 0.0001])
def test_checkpoint_truncated_weights(checkpoint, keep):
    weights = checkpoint / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: max(int(len(data) * keep), 1)])
    with pytest.raises(CheckpointError, match=re.escape("model.safetensors")):
        VoxelPromptModel.from_pretrained(checkpoint)


def test_checkpoint_damaged_weights(checkpoint):
    (checkpoint / "model.safetensors").write_bytes(b"\x00" * 64 + b"not safetensors at all" * 10)
    with pytest.raises(CheckpointError, match=re.escape("model.safetensors")):
        VoxelPromptModel.from_pretrained(checkpoint)


def test_checkpoint_damaged_config_and_tokenizer(checkpoint):
    config = (checkpoint / "config.json").read_text()
    (checkpoint / "config.json").write_text(config[: len(config) // 2])
    with pytest.raises(CheckpointError, match=re.escape("config.json")):
        VoxelPromptModel.from_pretrained(checkpoint)
    (checkpoint / "config.json").write_text(json.dumps({"format": 1, "vision": {"levels": 3, "colour": 1}, "agent": {}}))
    with pytest.raises(CheckpointError, match=re.escape("config.json")):
        VoxelPromptModel.from_pretrained(checkpoint)
    (checkpoint / "config.json").write_text(config.replace('"format": 1', '"format": 99'))
    with pytest.raises(CheckpointError, match=re.escape("config.json")):
        VoxelPromptModel.from_pretrained(checkpoint)
    (checkpoint / "config.json").write_text(config)
    (checkpoint / "tokenizer.json").write_text('{"not": "a tokenizer"')
    with pytest.raises(CheckpointError, match=re.escape("tokenizer.json")):
        VoxelPromptModel.from_pretrained(checkpoint)


def test_checkpoint_config_of_another_preset(checkpoint):
    (checkpoint / "config.json").write_text(json.dumps({"format": 1, **PRESETS["cpu"].to_dict()}))
    with pytest.raises(CheckpointError, match=re.escape("model.safetensors")) as error:
        VoxelPromptModel.from_pretrained(checkpoint)
    assert "config.json" in str(error.value)


def test_no_pickle_anywhere():
    """Checkpoints and training state are safetensors and JSON: nothing in the package can unpickle."""
    pattern = re.compile(r"torch\.load\b|torch\.save\b|\bpickle\b|\bcPickle\b|allow_pickle\s*=\s*True|\bdill\b|joblib")
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 20
    found = [f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}" for path in sources
             for number, line in enumerate(path.read_text().splitlines(), start=1) if pattern.search(line)]
    assert found == []


def test_checkpoint_files_are_readable_like_other_outputs(model, tmp_path):
    """safetensors replaces the temporary file with a 0600 one of its own; a shipped or shared
    checkpoint must be readable by the group and others like every other output (umask 022)."""
    import os
    import stat

    previous = os.umask(0o022)
    try:
        directory = model.save_pretrained(tmp_path / "shared", dtype=torch.float16)
    finally:
        os.umask(previous)
    for name in ("config.json", "tokenizer.json", "model.safetensors", "MODEL_CARD.md"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o644, name
    restored = VoxelPromptModel.from_pretrained(directory)
    assert all(p.dtype == torch.float32 for p in restored.parameters())
