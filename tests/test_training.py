"""Training (voxelprompt/train/loop.py, voxelprompt/train/objective.py): executed episodes on a synthetic
subject, the loss of Eq. 2 and where its gradients go, overfitting one batch, resumable optimiser
state, and the `voxelprompt train` command alone, resumed, and under torchrun (DDP on gloo)."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from voxelprompt.model.agent import Agent
from voxelprompt.model import SHIPPED_MODEL, tokens
from voxelprompt.train import episodes
from voxelprompt.model.config import PRESETS
from voxelprompt.model.joint import VoxelPromptModel
from voxelprompt.train.objective import Objective, TargetObjective
from voxelprompt.train.targets import chosen_targets, target_batch
from voxelprompt.synth import labels
from voxelprompt.tasks import values
from voxelprompt.tasks.catalogue import catalogue
from voxelprompt.tasks.sampling import example_for, sample_example
from voxelprompt.tasks.truth import GroundTruthVision, target_mask
from voxelprompt.tasks.subjects import Requirements, synthesize
from voxelprompt.train.loop import (LOG_COLUMNS, Settings, State, _load_optimiser, _save, cropped,
                                    freeze_encodings, initial_model, warm_started)

TEST = PRESETS["test"]
STEPS = ['e1 = encode([select("T1w")])\ne2 = encode(scans())\nread(e1)\nread(e2)',
         'm = segment(e2, "left lateral ventricle")\nv = volume_mm3(segment(e1, "brain"))\nread(v)',
         'output(m, "ventricle")\nstop()']
CROP = (20, 20, 20)
TRAIN_FLAGS = ["--preset", "test", "--tokenizer-episodes", "100", "--vocab-size", "512", "--validate-every", "2",
               "--validation-text", "4", "--validation-imaged", "1", "--crop-voxels", "24,24,24", "--spacing-mm", "4",
               "--episodes-per-subject", "2", "--checkpoint-every", "1", "--text-batch", "2"]
CHECKPOINT_FILES = ["MODEL_CARD.md", "config.json", "model.safetensors", "tokenizer.json"]


@pytest.fixture(scope="module")
def subject(anatomy_cache):
    """A 4 mm synthetic subject with a T1w and at least one other scan (and, as a side effect, the
    test session's anatomy cache that the training subprocesses below read)."""
    rng = np.random.default_rng(0)
    for _ in range(10):
        found = synthesize(Requirements(contrasts=("T1w",)), rng, 4.0, max_contrasts=2)
        if len(found.scans) >= 2:
            return found
    raise AssertionError("no subject with two scans in ten draws")


@pytest.fixture(scope="module")
def executed(tokenizer, subject):
    return episodes.from_execution(tokenizer, "how large is the left lateral ventricle?", STEPS, subject)


@pytest.fixture(scope="module")
def imaged(executed, subject):
    head = subject.sessions[0].synthetic.label_map.array > 0
    return cropped(executed, head, CROP, np.random.default_rng(1))


@pytest.fixture(scope="module")
def text_batch(tokenizer):
    rng = np.random.default_rng(2)
    return [episodes.text_only(tokenizer, catalogue()[name], rng) for name in ("volume", "lesion-growth")]


def _model(tokenizer, seed: int = 0) -> VoxelPromptModel:
    torch.manual_seed(seed)
    return VoxelPromptModel(TEST, tokenizer)


# --- executed episodes ----------------------------------------------------------------------------

def test_executed_episode(tokenizer, subject, executed):
    scans = len(subject.scans)
    assert [(c.kind, c.encoding) for c in executed.calls] == [("encode", 0), ("encode", 1), ("segment", 1),
                                                               ("segment", 0)]
    assert [len(c.scans) for c in executed.calls[:2]] == [1, scans]
    assert [c.target for c in executed.calls[2:]] == ["left lateral ventricle", "brain"]
    assert all(c.truth.shape == subject.scans[0].volume.shape and c.truth.array.any() for c in executed.calls[2:])
    # one <MOD> per vision call, in the order the calls ran; one <ENC> per scan of each encoding read
    assert len(executed.positions(tokenizer, tokens.MOD)) == len(executed.calls)
    assert executed.slots == [(0, 0)] + [(1, s) for s in range(scans)]
    assert len(executed.positions(tokenizer, tokens.ENC)) == 1 + scans
    assert executed.steps == STEPS


def test_executed_task_example(tokenizer, subject):
    """A catalogue task's program, run on the subject: vision calls, marks and slots agree."""
    example = example_for(catalogue()["volume"], subject, np.random.default_rng(3))
    episode = episodes.from_execution(tokenizer, example.prompt, example.program, subject)
    assert len(episode.positions(tokenizer, tokens.MOD)) == len(episode.calls) >= 2
    encodings = [c for c in episode.calls if c.kind == "encode"]
    assert len(episode.positions(tokenizer, tokens.ENC)) == len(episode.slots) == sum(len(c.scans) for c in encodings)


def test_cropped(imaged, subject):
    for call in imaged.calls:
        volume = call.scans[0].volume if call.kind == "encode" else call.truth
        assert all(n <= c for n, c in zip(volume.shape, CROP))
        assert volume.shape == imaged.calls[0].scans[0].volume.shape
        assert all(s.volume.shape == volume.shape for s in call.scans)


# --- the objective --------------------------------------------------------------------------------

def _vision_parameters(model):
    return {n: p for n, p in model.named_parameters() if n.startswith("vision.") or n.startswith("to_phi.")}


def test_losses_are_finite(tokenizer, text_batch, imaged):
    objective = Objective(_model(tokenizer), dice_weight=0.1, max_segmentations=2)
    losses = objective(text_batch, imaged, np.random.default_rng(0))
    assert torch.isfinite(losses.total) and math.isfinite(losses.code)
    assert 0 <= losses.dice <= 1
    assert losses.tokens > 0 and 0 <= losses.correct <= losses.tokens
    # total = code + lambda (1 - dice)
    assert float(losses.total.detach()) == pytest.approx(losses.code + 0.1 * (1 - losses.dice), rel=1e-5)
    text_only = objective(text_batch, None)
    assert text_only.dice is None and float(text_only.total.detach()) == pytest.approx(text_only.code)
    # the learned tokens are those of the code: as many as the episodes mark (less the first token)
    assert text_only.tokens == sum(sum(e.target[1:]) for e in text_batch)


def test_text_only_batch_does_not_train_vision(tokenizer, text_batch):
    model = _model(tokenizer)
    Objective(model)(text_batch, None).total.backward()
    untouched = [n for n, p in _vision_parameters(model).items() if p.grad is not None and p.grad.abs().max() > 0]
    assert untouched == []
    agent = [p for n, p in model.named_parameters() if n.startswith("agent.")]
    assert all(p.grad is not None for p in agent)


def test_imaged_episode_trains_vision_and_phi(tokenizer, imaged):
    model = _model(tokenizer)
    losses = Objective(model, dice_weight=0.1, max_segmentations=2)([], imaged, np.random.default_rng(0))
    losses.total.backward()
    without = [n for n, p in _vision_parameters(model).items() if p.grad is None or not p.grad.abs().max() > 0]
    assert without == []  # every parameter of m_enc, m_gen, the encodings' projection and to_phi
    assert model.to_phi.weight.grad.abs().max() > 0
    assert model.vision.to_agent.weight.grad.abs().max() > 0  # through the <ENC> slots


def test_imaged_episode_with_mismatched_calls_is_refused(tokenizer, imaged):
    broken = episodes.Episode(list(imaged.ids), list(imaged.target), imaged.calls[:-1], imaged.steps, imaged.slots)
    with pytest.raises(ValueError, match="<MOD>"):
        Objective(_model(tokenizer))([], broken)


def test_overfit_one_text_batch(tokenizer, text_batch):
    model = _model(tokenizer)
    objective = Objective(model)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for _ in range(25):
        optimiser.zero_grad()
        losses = objective(text_batch, None)
        losses.total.backward()
        optimiser.step()
        history.append((losses.code, losses.correct / losses.tokens))
    with torch.no_grad():
        final = objective(text_batch, None)
    assert final.code < 0.5 * history[0][0]
    assert final.correct / final.tokens > history[0][1] + 0.3


def test_optimiser_state_resumes_exactly(tokenizer, text_batch, tmp_path):
    """latest/ holds everything Adam needs: one more step after loading equals one more step without
    stopping."""
    settings = Settings(out=str(tmp_path), preset="test", learning_rate=1e-3)
    model = _model(tokenizer)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)

    def step(model, optimiser):
        optimiser.zero_grad()
        Objective(model)(text_batch, None).total.backward()
        optimiser.step()

    for _ in range(2):
        step(model, optimiser)
    _save(model, optimiser, State(step=2, learning_rate=settings.learning_rate), settings, tmp_path / "latest")
    saved = load_file(str(tmp_path / "latest" / "optimiser.safetensors"))
    assert {k.split("::")[1] for k in saved} == {"step", "exp_avg", "exp_avg_sq"}

    loaded = VoxelPromptModel.from_pretrained(tmp_path / "latest")
    loaded_optimiser = torch.optim.Adam(loaded.parameters(), lr=settings.learning_rate)
    _load_optimiser(loaded_optimiser, loaded, tmp_path / "latest" / "optimiser.safetensors", settings.learning_rate)
    step(model, optimiser)
    step(loaded, loaded_optimiser)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)


# --- the train command ------------------------------------------------------------------------------

def _train(out: Path, steps: int, *launcher: str, flags=TRAIN_FLAGS) -> subprocess.CompletedProcess:
    command = [*(launcher or (sys.executable,)), "-m", "voxelprompt", "train", "--out", str(out),
               "--steps", str(steps), *flags]
    done = subprocess.run(command, capture_output=True, text=True, timeout=400, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def _rows(out: Path) -> list[dict]:
    with (out / "log.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == LOG_COLUMNS
        return list(reader)


@pytest.fixture(scope="module")
def three_steps(subject, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "run"
    _train(out, 3)
    return out


def test_train_writes_checkpoints_and_log(three_steps):
    out = three_steps
    latest, best = out / "latest", out / "best"
    assert sorted(p.name for p in latest.iterdir()) == sorted(CHECKPOINT_FILES + ["optimiser.safetensors",
                                                                               "training_state.json"])
    assert sorted(p.name for p in best.iterdir()) == CHECKPOINT_FILES
    rows = _rows(out)
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(math.isfinite(float(r["loss"])) and math.isfinite(float(r["code_loss"])) for r in rows)
    assert all(r["dice"] != "" for r in rows)  # an imaged episode every step
    assert [r["validation_loss"] != "" for r in rows] == [False, True, False]
    state = json.loads((latest / "training_state.json").read_text())
    assert state["state"]["step"] == 3 and state["settings"]["preset"] == "test"
    assert json.loads((latest / "config.json").read_text())["preset"] == "test"
    assert "steps: 3" in (latest / "MODEL_CARD.md").read_text()
    for checkpoint in (latest, best):
        model = VoxelPromptModel.from_pretrained(checkpoint)
        assert model.config == TEST
    optimiser = load_file(str(latest / "optimiser.safetensors"))
    assert optimiser and all("::" in key for key in optimiser)


def test_train_resumes(three_steps, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(three_steps, out)
    log_before = (out / "log.csv").read_text()
    tokenizer_before = (out / "latest" / "tokenizer.json").read_bytes()
    weights_before = load_file(str(out / "latest" / "model.safetensors"))
    _train(out, 5)
    rows = _rows(out)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    assert (out / "log.csv").read_text().startswith(log_before)
    assert float(rows[3]["seconds"]) >= float(rows[2]["seconds"])  # time continues from the saved state
    assert rows[3]["validation_loss"] != ""
    assert (out / "latest" / "tokenizer.json").read_bytes() == tokenizer_before
    state = json.loads((out / "latest" / "training_state.json").read_text())
    assert state["state"]["step"] == 5
    weights_after = load_file(str(out / "latest" / "model.safetensors"))
    assert any(not torch.equal(weights_before[n], weights_after[n]) for n in weights_before)
    # A run killed after logging step 6 but before saving it: resuming redoes step 6, logged once.
    with (out / "log.csv").open("a") as handle:
        handle.write("6,99999.0,0.001,1.0,1.0,0.5,,,,\n")
    _train(out, 6)
    assert [int(r["step"]) for r in _rows(out)] == [1, 2, 3, 4, 5, 6]
    assert float(_rows(out)[5]["seconds"]) != 99999.0
    # nothing left to do: the log is unchanged
    log_done = (out / "log.csv").read_text()
    _train(out, 6)
    assert (out / "log.csv").read_text() == log_done


def _torchrun() -> list[str]:
    script = Path(sys.executable).parent / "torchrun"
    return [str(script)] if script.exists() else [sys.executable, "-m", "torch.distributed.run"]


def test_train_distributed(subject, tmp_path):
    out = tmp_path / "ddp"
    done = _train(out, 2, *_torchrun(), "--standalone", "--nproc_per_node", "2")
    assert [int(r["step"]) for r in _rows(out)] == [1, 2]  # one writer: rank 0
    assert (out / "latest" / "training_state.json").is_file()
    assert json.loads((out / "latest" / "training_state.json").read_text())["state"]["step"] == 2
    VoxelPromptModel.from_pretrained(out / "latest")
    assert "Traceback" not in done.stderr


def test_gamma_distortion_changes_mri_contrast_and_keeps_physical_units():
    """Exponential scaling (§4.3) reshapes MRI intensities monotonically; CT (HU) and ADC are kept."""
    from voxelprompt.train.episodes import Episode, VisionCall
    from voxelprompt.core.scan import Scan
    from voxelprompt.train.loop import gamma_distorted
    from voxelprompt.core.volume import Volume

    values = np.linspace(0, 100, 1000, dtype=np.float32).reshape(10, 10, 10)
    scans = tuple(Scan(Volume(values.copy(), np.eye(4)), modality) for modality in ("T1w", "CT", "ADC"))
    episode = Episode([], [], calls=[VisionCall("encode", 0, scans)])
    distorted = gamma_distorted(episode, np.random.default_rng(3), log_sigma=0.5).calls[0].scans
    t1, ct, adc = (s.volume.array for s in distorted)
    assert not np.allclose(t1, values) and np.all(np.diff(t1.ravel()) >= 0)
    assert np.array_equal(ct, values) and np.array_equal(adc, values)


def test_rank_zeros_halving_and_early_stop_are_taken_by_every_process(subject, tmp_path):
    """With the learning rate at 0 the validation loss cannot improve: the second validation halves
    the rate, which is the one halving allowed, so training stops after step 2. Rank 0 decides; both
    processes stop there (a process training on alone would wait in an all-reduce forever)."""
    out = tmp_path / "ddp-stop"
    flags = [flag for flag in TRAIN_FLAGS]
    flags[flags.index("--validate-every") + 1] = "1"
    flags += ["--patience", "1", "--halvings", "1", "--learning-rate", "0"]
    _train(out, 6, *_torchrun(), "--standalone", "--nproc_per_node", "2", flags=flags)
    assert [int(r["step"]) for r in _rows(out)] == [1, 2]
    state = json.loads((out / "latest" / "training_state.json").read_text())["state"]
    assert state["step"] == 2 and state["halvings"] == 1 and state["learning_rate"] == 0.0


# --- the program writer: what training teaches is what inference writes ------------------------------

OVERFIT_TASKS = ("segment-anatomy", "volume", "mean-intensity", "lesion-growth")


def test_a_memorised_program_is_written_back_exactly_by_the_inference_loop(tokenizer, anatomy_cache):
    """A model trained until it has memorised a handful of episodes writes each of their programs
    exactly through `Agent.run`: training and inference lay out the prompt, the scans' metadata, the
    code, the marks and the feedback the same way. Ground truth answers the vision calls on both sides,
    and the encodings keep their slot's own embedding, as in text-only training."""
    rng = np.random.default_rng(4)
    examples = [sample_example(rng, name, spacing_mm=4.0) for name in OVERFIT_TASKS]
    batch = []
    for example in examples:
        scans = list(example.subject.scans)
        feedback, _ = episodes._run(example.program, scans, GroundTruthVision(example.subject))
        batch.append(episodes.build(tokenizer, example.prompt, scans, example.program, feedback))
    torch.manual_seed(0)
    config = replace(TEST, agent=replace(TEST.agent, layers=2, hidden=64, heads=4, ffn=128))
    model = VoxelPromptModel(config, tokenizer)
    objective = Objective(model)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(400):
        optimiser.zero_grad()
        losses = objective(batch, None)
        if losses.correct == losses.tokens:
            break
        losses.total.backward()
        optimiser.step()
    assert losses.correct == losses.tokens, "the episodes were not memorised"
    for constrained in (True, False):
        agent = Agent(model, constrained=constrained)
        for example in examples:
            result = agent.run(example.prompt, example.subject.scans, vision=GroundTruthVision(example.subject))
            assert result.ok and result.steps == example.program, (constrained, example.task.name, result.steps)


def test_the_agent_stage_trains_the_writer_alone_and_validates_programs(tokenizer, subject, tmp_path):
    torch.manual_seed(2)
    start = VoxelPromptModel(TEST, tokenizer).save_pretrained(tmp_path / "start")
    out = tmp_path / "run"
    _train(out, 2, flags=[*TRAIN_FLAGS, "--stage", "agent", "--validation-programs", "2", "--init", str(start)])
    rows = _rows(out)
    assert all(r["dice"] == "" for r in rows)  # no imaged episode
    for column in ("validation_exact", "validation_equivalent", "validation_targets", "validation_finished"):
        assert rows[0][column] == "" and 0.0 <= float(rows[1][column]) <= 1.0
    # the writer learnt; the vision networks are untouched, for the text-only loss never reaches them
    before = load_file(str(start / "model.safetensors"))
    after = load_file(str(out / "latest" / "model.safetensors"))
    assert all(torch.equal(before[name], after[name]) for name in before if name.startswith("vision."))
    assert any(not torch.equal(before[name], after[name]) for name in before if name.startswith("agent."))


def test_a_run_without_checkpoint_starts_from_the_given_weights(tokenizer, tmp_path):
    torch.manual_seed(1)
    start = VoxelPromptModel(TEST, tokenizer).save_pretrained(tmp_path / "start")
    model = initial_model(Settings(out="", preset="test", init=str(start)), torch.device("cpu"))
    for (name, a), b in zip(model.state_dict().items(), VoxelPromptModel.from_pretrained(start).state_dict().values()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)
    # the shipped model starts the runs of every preset with its agent (whatever their vision head),
    # and of no other preset
    for preset in ("cpu", "cpu-modulated"):
        shipped = initial_model(Settings(out="", preset=preset), torch.device("cpu"))
        assert shipped.config == PRESETS[preset]
        assert shipped.tokenizer.to_str() == VoxelPromptModel.from_pretrained(SHIPPED_MODEL).tokenizer.to_str()
    assert initial_model(Settings(out="", preset="test", tokenizer_episodes=50, vocab_size=512),
                         torch.device("cpu")).config == TEST
    with pytest.raises(ValueError, match="preset"):
        initial_model(Settings(out="", preset="cpu", init=str(start)), torch.device("cpu"))


# --- the vision stage -----------------------------------------------------------------------------

DYNAMIC = replace(TEST, vision=replace(TEST.vision, head="dynamic"))


def test_a_target_batch_holds_each_targets_true_mask_and_the_episode_that_asks_for_it(tokenizer, subject):
    rng = np.random.default_rng(3)
    batch = target_batch(tokenizer, subject, 8, rng)
    assert len(batch.targets) == len(batch.episodes) == len(batch.truths) == 8
    kinds = dict(chosen for chosen in chosen_targets(subject, 200, np.random.default_rng(0)))
    assert sum(target not in values.allowed("anatomy", subject) for target in batch.targets) <= 1  # an eighth
    for target, truth, episode in zip(batch.targets, batch.truths, batch.episodes):
        np.testing.assert_array_equal(truth, target_mask(subject.sessions[0], target))
        last = [call for call in episode.calls if call.kind == "segment"][-1]
        assert last.target == target
        assert episode.steps[-1].startswith(f'segmentation = segment(e, "{target}")')
    assert all(s.session == subject.sessions[0].label for s in batch.scans)
    assert kinds  # the subject allows targets of every kind it has
    cut = target_batch(tokenizer, subject, 4, rng, box=((2, 3, 4), (12, 13, 14)))
    assert cut.truths.shape[1:] == (10, 10, 10) and cut.scans[0].volume.shape == (10, 10, 10)


def test_single_structures_are_drawn_more_often_than_the_unions_made_of_them(subject):
    rng = np.random.default_rng(8)
    anatomy = values.allowed("anatomy", subject)
    size = {name: len(labels.target(name).label_ids) for name in anatomy}
    drawn = Counter(value for _ in range(200) for kind, value in chosen_targets(subject, 16, rng) if kind == "anatomy")
    per_target = {n: np.mean([drawn[name] for name in anatomy if size[name] == n]) for n in set(size.values())}
    assert per_target[1] > 2 * per_target[max(per_target)] > 0


def test_the_vision_stage_loss_trains_the_networks_and_phi_through_a_frozen_agent(tokenizer, subject):
    torch.manual_seed(0)
    model = VoxelPromptModel(DYNAMIC, tokenizer)
    model.agent.requires_grad_(False)
    batch = target_batch(tokenizer, subject, 6, np.random.default_rng(4), box=((0, 0, 0), (20, 20, 20)))
    losses = TargetObjective(model)(batch)
    assert math.isfinite(losses.total.item()) and 0.0 <= losses.dice <= 1.0 and losses.targets == 6
    losses.total.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    # The encodings the agent reads stay the agent's: nothing flows back through its pass.
    assert all(grads[name] is None for name in grads if name.startswith(("agent.", "vision.to_agent.")))
    for part in ("vision.head.", "to_phi.", "vision.encoder.0.", "vision.generator.0."):
        assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(part)), part


@pytest.mark.parametrize("reader", [True, False])
def test_the_vision_stage_never_changes_the_encodings_the_agent_reads(tokenizer, subject, reader):
    """With a reader of its own, m_enc learns to segment while the reader stays; without one, m_enc stays."""
    torch.manual_seed(0)
    model = VoxelPromptModel(replace(DYNAMIC, vision=replace(DYNAMIC.vision, reader=reader)), tokenizer)
    model.agent.requires_grad_(False)
    freeze_encodings(model)
    batch = target_batch(tokenizer, subject, 4, np.random.default_rng(4), box=((0, 0, 0), (20, 20, 20)))
    TargetObjective(model)(batch).total.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    encoding_path = ("vision.reader.",) if reader else ("vision.encoder.", "vision.modality.", "vision.to_agent.")
    assert all(grads[name] is None for name in grads if name.startswith(("agent.", *encoding_path)))
    learnt = ("vision.generator.0.", "vision.head.", *(("vision.encoder.0.",) if reader else ()))
    for part in learnt:
        assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(part)), part


def test_a_warm_start_gives_a_new_reader_the_encodings_of_the_source(tokenizer):
    torch.manual_seed(6)
    source = VoxelPromptModel(DYNAMIC, tokenizer).eval()
    model = warm_started(source, replace(DYNAMIC, vision=replace(DYNAMIC.vision, reader=True))).eval()
    images = torch.rand((2, 1, 12, 10, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs, ours = (m.vision.encode(images, (2.0, 2.0, 2.0), ["T1w", "FLAIR"]) for m in (source, model))
    torch.testing.assert_close(ours.embeddings, theirs.embeddings, atol=0, rtol=0)
    for mine, other in zip(ours.skips, theirs.skips):  # m_enc starts from the source's encoder too
        torch.testing.assert_close(mine, other, atol=0, rtol=0)


def test_the_vision_stage_loss_runs_under_autocast(tokenizer, subject):
    """Training on a GPU runs under bfloat16 autocast: the encodings spliced into the episodes then
    come in half precision, the token embeddings in full (index_put refused the mix)."""
    torch.manual_seed(0)
    model = VoxelPromptModel(DYNAMIC, tokenizer)
    batch = target_batch(tokenizer, subject, 3, np.random.default_rng(5), box=((0, 0, 0), (16, 16, 16)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = TargetObjective(model)(batch)
    assert math.isfinite(losses.total.item())


def test_the_vision_stage_needs_an_encoder_that_phi_does_not_steer(tokenizer):
    steered = replace(TEST, vision=replace(TEST.vision, encoder_latent=True))
    with pytest.raises(ValueError, match="encoder_latent"):
        TargetObjective(VoxelPromptModel(steered, tokenizer))


def test_the_vision_stage_trains_the_networks_alone_and_validates_their_dice(tokenizer, subject, tmp_path):
    torch.manual_seed(3)
    start = VoxelPromptModel(TEST, tokenizer).save_pretrained(tmp_path / "start")
    out = tmp_path / "run"
    _train(out, 2, flags=[*TRAIN_FLAGS, "--stage", "vision", "--targets-per-step", "4", "--spacing-mm", "3",
                          "--validation-subjects", "1", "--validation-real-scans", "0", "--init", str(start)])
    rows = _rows(out)
    assert all(r["code_loss"] == "" and 0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    assert rows[0]["validation_dice"] == "" and 0.0 <= float(rows[1]["validation_dice"]) <= 1.0
    assert float(rows[1]["validation_loss"]) == pytest.approx(1 - float(rows[1]["validation_dice"]), abs=1e-4)
    before = load_file(str(start / "model.safetensors"))
    after = load_file(str(out / "latest" / "model.safetensors"))
    # The writer and the encodings it reads stay as they are (`train_encoder` 0); m_gen and the head learn.
    kept = ("agent.", "vision.encoder.", "vision.modality.", "vision.to_agent.")
    assert all(torch.equal(before[name], after[name]) for name in before if name.startswith(kept))
    assert any(not torch.equal(before[name], after[name]) for name in before if name.startswith("vision.generator."))


def test_a_warm_start_keeps_every_weight_the_new_configuration_can_take(tokenizer):
    torch.manual_seed(5)
    source = VoxelPromptModel(TEST, tokenizer)
    assert warm_started(source, TEST) is source
    model = warm_started(source, DYNAMIC)
    assert model.config == DYNAMIC and model.tokenizer is source.tokenizer
    theirs = source.state_dict()
    for name, tensor in model.state_dict().items():
        if name.startswith("vision.head."):
            assert name not in theirs or theirs[name].shape != tensor.shape
        else:
            torch.testing.assert_close(tensor, theirs[name], atol=0, rtol=0, msg=name)


def test_the_vision_stages_kept_the_shipped_writer_and_its_encodings():
    """The shipped checkpoint's vision networks come from two vision stages (docs/model.md): the
    first, without a prior, left checkpoints/vision-stage/; the second, with it, the shipped
    networks. Neither may have moved the writer or the reader that gives it its encodings: the
    agent and the reader are the same bit for bit in both, so the shipped model writes the programs
    the agent stage validated."""
    folder = Path(__file__).resolve().parents[1] / "checkpoints/vision-stage"
    candidate = load_file(str(folder / "model.safetensors"))
    shipped = load_file(str(SHIPPED_MODEL / "model.safetensors"))
    kept = [name for name in shipped if name.startswith(("agent.", "vision.reader."))]
    assert any(name.startswith("agent.") for name in kept) and any(name.startswith("vision.reader.") for name in kept)
    assert sorted(kept) == sorted(name for name in candidate if name.startswith(("agent.", "vision.reader.")))
    assert all(torch.equal(candidate[name], shipped[name]) for name in kept)
    assert VoxelPromptModel.from_pretrained(SHIPPED_MODEL).config == PRESETS["cpu"]
    # the design of the cpu preset before the atlas prior (cpu-no-prior), under the cpu preset's name
    assert VoxelPromptModel.from_pretrained(folder).config == replace(PRESETS["cpu-no-prior"], preset="cpu")
