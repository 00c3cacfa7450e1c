"""Training (paper §3.2): sample a task, a prompt and a subject, run the ground-truth program with
teacher forcing, and minimise cross-entropy of the code plus lambda times the soft Dice loss of the
segmentations the vision networks generate along the way.

Training runs in stages (`Settings.stage`): `agent` trains the program writer alone on text-only
episodes; `vision` trains the vision networks alone, the writer frozen, on target batches
(`train/targets.py`); `joint` trains both together. In the joint stage each step takes a batch of
text-only episodes (the code of any task, cheap) and, every `imaged_every` steps, one episode drawn
in a background process, cropped around the head: on a synthetic subject (half of them on the
mirror image of the anatomy), or, with a manifest of the lab's own labelled scans
(`voxelprompt.study.labelled`), on one of those scans a fraction of the time.

Adam; the learning rate halves when the validation loss stops improving, and training stops early
when it has halved enough. Everything needed to resume is saved as safetensors and JSON in
`<out>/latest/`; the best model by validation is kept in `<out>/best/`; every step is a row of
`<out>/log.csv`.

Several processes (`torchrun --nproc_per_node N -m voxelprompt train ...`) train one model with
DistributedDataParallel: gloo on CPU, NCCL on GPUs; each process draws its own examples.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, IterableDataset

from voxelprompt.core.io import atomic_output, write_text
from voxelprompt.core.seeds import VALIDATION_SEED, refuse_reserved
from voxelprompt.evaluation.baselines import specialised
from voxelprompt.evaluation.scoring import dice
from voxelprompt.model import SHIPPED_MODEL
from voxelprompt.model.config import PRESETS, ModelConfig
from voxelprompt.model.joint import VoxelPromptModel, device_for
from voxelprompt.model.tokens import mark_vision_calls, text_of, train_tokenizer
from voxelprompt.study import labelled as labelled_scans
from voxelprompt.synth import atlas, labels
from voxelprompt.tasks.catalogue import catalogue
from voxelprompt.tasks.sampling import example_for, sample_example
from voxelprompt.tasks.subjects import Requirements, TaskSubject, synthesize
from voxelprompt.tasks.values import NoValue
from voxelprompt.train import episodes
from voxelprompt.train.objective import Objective, TargetObjective
from voxelprompt.train.targets import target_batch

LOG_COLUMNS = ("step", "seconds", "learning_rate", "loss", "code_loss", "token_accuracy", "dice", "validation_loss",
               "validation_token_accuracy", "validation_dice", "validation_exact", "validation_equivalent",
               "validation_targets", "validation_finished", "validation_real_dice")
STAGES = ("agent", "vision", "joint")


@dataclass
class Settings:
    out: str
    # "agent": the program writer alone, on text-only episodes (no image work), validated by decoding
    # held-out prompts through the inference loop; "vision": the vision networks alone (the agent frozen),
    # each step one encoder and generator pass supervising `targets_per_step` targets of a subject
    # through the dynamic head, validated by the Dice of held-out subjects; "joint": text-only episodes
    # plus imaged ones that train the vision networks through phi (Eq. 2).
    stage: str = "joint"
    preset: str = "cpu"
    steps: int = 20000
    seed: int = 0
    learning_rate: float = 1e-4
    accumulate: int = 1  # gradient accumulation: optimiser steps every N batches
    text_batch: int = 8
    imaged_every: int = 1  # an episode with images every N steps (0: text only)
    max_segmentations: int = 2  # generator passes per imaged episode
    targets_per_step: int = 32  # vision stage: targets supervised by each step's one pass
    dice_weight: float = 0.1  # lambda of Eq. 2
    spacing_mm: float = 2.0
    crop_voxels: tuple[int, int, int] = (48, 56, 48)  # largest input to the vision networks in training
    max_contrasts: int = 2  # scans per synthetic subject (streams cost time: attention across them)
    episodes_per_subject: int = 4
    validate_every: int = 250
    validation_text: int = 64
    validation_imaged: int = 4
    validation_programs: int = 26  # agent stage: held-out prompts decoded at each validation (cycling through the tasks)
    validation_subjects: int = 1  # vision stage: held-out synthetic subjects per lesion class, scored whole
    validation_real_scans: int = 1  # vision stage: 1 watches fsaverage's real T1w (when installed), 0 does not
    patience: int = 4  # validations without improvement before the learning rate halves
    halvings: int = 5  # stop early after this many halvings
    checkpoint_every: int = 50
    tokenizer_episodes: int = 4000
    vocab_size: int = 2048
    device: str = "auto"
    threads: int = 0  # torch threads (0: torch's default)
    labelled: str = ""  # manifest of the lab's labelled scans (voxelprompt/study/labelled.py); "": synthetic only
    labelled_fraction: float = 0.25  # of imaged episodes, when there is a manifest
    rough_prompts: float = 0.5  # share of text-only prompts roughened as people type (tasks/roughen.py)
    undated_scans: float = 0.15  # share of single-session text-only subjects without session labels or dates
    # Weights to start from when the run folder holds no checkpoint: "shipped" (the packaged model,
    # when its configuration is the preset's; else random weights), "random", or a checkpoint folder.
    init: str = "shipped"


@dataclass
class State:
    step: int = 0
    learning_rate: float = 0.0
    best_validation: float = math.inf
    stale_validations: int = 0
    halvings: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


def build_tokenizer(settings: Settings) -> Tokenizer:
    """A BPE over the texts of text-only episodes of every task (seeded: the same settings give the
    same tokenizer)."""
    rng = np.random.default_rng([settings.seed, 17])
    tasks = list(catalogue().values())
    texts = []
    for number in range(settings.tokenizer_episodes):
        prompt, scans, steps, feedback = episodes.sample_text(tasks[number % len(tasks)], rng)
        texts += [text_of(episodes.prefix_pieces(prompt, scans)), *map(mark_vision_calls, steps), *map(text_of, feedback)]
    return train_tokenizer(texts, settings.vocab_size)


def initial_model(settings: Settings, device: torch.device) -> VoxelPromptModel:
    """The model a run starts from when its folder holds no checkpoint (see `Settings.init`)."""
    if settings.init not in ("shipped", "random"):
        model = VoxelPromptModel.from_pretrained(settings.init, device)
        if model.config.agent != PRESETS[settings.preset].agent:
            raise ValueError(f"{settings.init}: its agent is not that of the {settings.preset!r} preset")
        # Vision networks of another design (e.g. without the atlas prior) give what weights fit.
        return warm_started(model, replace(PRESETS[settings.preset], preset=model.config.preset))
    if settings.init == "shipped":
        # The shipped program writer starts every preset whose agent is its size; vision networks of
        # another design (e.g. another head) take what weights fit.
        shipped = json.loads((SHIPPED_MODEL / "config.json").read_text())
        if shipped.get("agent") == asdict(PRESETS[settings.preset].agent):
            return warm_started(VoxelPromptModel.from_pretrained(SHIPPED_MODEL, device), PRESETS[settings.preset])
    return VoxelPromptModel(PRESETS[settings.preset], build_tokenizer(settings)).to(device)


def warm_started(source: VoxelPromptModel, config: ModelConfig) -> VoxelPromptModel:
    """`source` itself when its configuration is `config`; otherwise a model of `config` with the
    source's tokenizer and every weight of the same name and shape (e.g. the agent and the encoder
    when only the vision head changed), a new reader from the source's path to the encodings, the
    rest freshly initialised."""
    if source.config.to_dict() == config.to_dict():
        return source
    model = VoxelPromptModel(config, source.tokenizer).to(source.device)
    theirs = source.state_dict()
    if model.vision.reader is not None and source.vision.reader is None:
        # The new reader starts as the source's path to the encodings, so the agent reads what it learnt to.
        path = ("vision.encoder.", "vision.modality.", "vision.to_agent.")
        theirs |= {"vision.reader." + name.removeprefix("vision."): tensor
                   for name, tensor in theirs.items() if name.startswith(path)}
    ours = model.state_dict()
    taken = {name: theirs[name] for name, tensor in ours.items() if name in theirs and theirs[name].shape == tensor.shape}
    model.load_state_dict(taken, strict=False)
    print(f"warm start: {len(taken)} of {len(ours)} tensors from the source model, "
          f"{len(ours) - len(taken)} new", file=sys.stderr)
    return model


def freeze_encodings(model: VoxelPromptModel) -> None:
    """The vision stage's rule: the encodings in the agent's `<ENC>` slots stay those the program
    writer learnt to read (docs/model.md measures what retraining them did to its programs). With a
    reader of its own, m_enc still learns; without one, m_enc stays as it is too."""
    for module in model.vision.encoding_path():
        module.requires_grad_(False)


class ImagedEpisodes(IterableDataset):
    """Endless episodes: one subject per `episodes_per_subject` episodes, each of a task the subject
    allows, cropped around the head (drawn in a worker process). Subjects are synthetic, or with
    probability `labelled_fraction` one of the scans the `labelled` manifest lists."""

    def __init__(self, tokenizer_json: str, seed: list[int], spacing_mm: float, crop: tuple[int, int, int],
                 per_subject: int, max_contrasts: int = 2, labelled: str = "", labelled_fraction: float = 0.0,
                 prior: bool = False):
        self.tokenizer_json, self.seed, self.spacing_mm, self.crop, self.per_subject, self.max_contrasts = (
            tokenizer_json, seed, spacing_mm, crop, per_subject, max_contrasts)
        self.prior = prior
        self.manifest = labelled_scans.load_manifest(labelled) if labelled else []
        self.labelled_fraction = labelled_fraction if self.manifest else 0.0

    def __iter__(self):
        tokenizer = Tokenizer.from_str(self.tokenizer_json)
        rng = np.random.default_rng(self.seed)
        tasks = list(catalogue().values())
        loaded: dict[int, TaskSubject] = {}
        while True:
            if rng.random() < self.labelled_fraction:
                number = int(rng.integers(len(self.manifest)))
                if number not in loaded:
                    loaded[number] = labelled_scans.task_subject(self.manifest[number], self.spacing_mm)
                subject, first = loaded[number], None
            else:
                first = tasks[int(rng.integers(len(tasks)))]
                # Half the subjects are built on the mirror image of the anatomy (left-right flip, §4.3).
                subject = synthesize(first.requirements, rng, self.spacing_mm, max_contrasts=self.max_contrasts,
                                     mirrored=bool(rng.random() < 0.5))
            made, carried = 0, {}
            for attempt in range(4 * self.per_subject):
                if made == self.per_subject:
                    break
                task = first if attempt == 0 and first is not None else tasks[int(rng.integers(len(tasks)))]
                if not set(task.requirements.contrasts) <= set(subject.contrasts):
                    continue
                view = subject if task.requirements.sessions > 1 else replace(subject, sessions=subject.sessions[:1])
                if len(view.sessions) != task.requirements.sessions:
                    continue
                try:
                    example = example_for(task, view, rng)
                except NoValue:
                    continue
                episode = episodes.from_execution(tokenizer, example.prompt, example.program, view)
                if not all(_annotated(view, call.target) for call in episode.calls if call.kind == "segment"):
                    continue  # a fixed target of the program (e.g. the brain as reference) is not labelled
                if self.prior:
                    episode = with_priors(episode, carried)
                episode = cropped(episode, view.sessions[0].synthetic.label_map.array > 0, self.crop, rng)
                yield gamma_distorted(episode, rng)
                made += 1


class TargetBatches(IterableDataset):
    """Endless target batches for the vision stage (drawn in a worker process): a synthetic subject
    every `per_subject` batches (half on the mirror image of the anatomy), its first session cut to a
    random box of at most `crop` voxels of the head, `count` targets each, intensities gamma-distorted."""

    def __init__(self, tokenizer_json: str, seed: list[int], spacing_mm: float, crop: tuple[int, int, int],
                 per_subject: int, count: int, max_contrasts: int = 2, rough: float = 0.0, prior: bool = False):
        self.tokenizer_json, self.seed, self.spacing_mm, self.crop = tokenizer_json, seed, spacing_mm, crop
        self.per_subject, self.count, self.max_contrasts, self.rough = per_subject, count, max_contrasts, rough
        self.prior = prior

    def __iter__(self):
        tokenizer = Tokenizer.from_str(self.tokenizer_json)
        rng = np.random.default_rng(self.seed)
        tasks = list(catalogue().values())
        while True:
            task = tasks[int(rng.integers(len(tasks)))]
            # The task's lesions, not its contrasts: one to `max_contrasts` scans of any kind (each scan
            # is a stream through the networks, and the step's cost grows with them).
            subject = synthesize(Requirements(lesions=task.requirements.lesions), rng, self.spacing_mm,
                                 max_contrasts=self.max_contrasts, mirrored=bool(rng.random() < 0.5))
            head = subject.sessions[0].synthetic.label_map.array > 0
            # The prior of inference: the atlas registered to this subject's scans, with the error a real fit makes.
            carried = _carried_onto_first_session(subject) if self.prior else None
            for _ in range(self.per_subject):
                batch = target_batch(tokenizer, subject, self.count, rng, random_box(head, self.crop, rng), self.rough,
                                     carried=carried)
                yield replace(batch, scans=gamma_distorted_scans(batch.scans, rng))


def drawn_in_a_worker(dataset: IterableDataset):
    """The dataset's items, drawn ahead in one background process while the step trains."""
    return iter(DataLoader(dataset, batch_size=None, num_workers=1, collate_fn=lambda x: x,
                           persistent_workers=True, prefetch_factor=4))


def random_box(head: np.ndarray, crop: tuple[int, int, int], rng: np.random.Generator
               ) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """At most `crop` voxels, anywhere within the bounding box of the `head` mask."""
    low, high, size = _head_extent(head, crop)
    start = low + np.array([int(rng.integers(n + 1)) for n in high - low - size])
    return tuple(int(v) for v in start), tuple(int(v) for v in start + size)


def _head_extent(head: np.ndarray, crop: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bounding box of the `head` mask (low, high: voxels) and the size of a crop within it."""
    inside = np.argwhere(head)
    low, high = inside.min(axis=0), inside.max(axis=0) + 1
    return low, high, np.minimum(np.asarray(crop), high - low)


def _annotated(subject: TaskSubject, target: str) -> bool:
    if subject.labelled is None:
        return True
    try:
        return subject.annotates(labels.target(target).label_ids)
    except KeyError:  # a lesion: labelled scans have none
        return False


def cropped(episode: episodes.Episode, head: np.ndarray, crop: tuple[int, int, int],
            rng: np.random.Generator) -> episodes.Episode:
    """The episode's scans and masks cut to at most `crop` voxels of the `head` mask's bounding box;
    where the head is larger, at a random place around one of the segmentation targets."""
    low, high, size = _head_extent(head, crop)
    targets = [np.argwhere(c.truth.array > 0).mean(axis=0) for c in episode.calls
               if c.kind == "segment" and c.truth.array.any()]
    centre = targets[int(rng.integers(len(targets)))] if targets else (low + high) / 2
    start = np.clip(np.round(centre - size / 2 + rng.integers(-8, 9, 3)).astype(int), low, high - size)
    box = (tuple(int(v) for v in start), tuple(int(v) for v in start + size))
    for call in episode.calls:
        if call.kind == "encode":
            call.scans = tuple(replace(s, volume=s.volume.cropped(*box)) for s in call.scans)
        elif call.truth is not None:
            call.truth = call.truth.cropped(*box)
            if call.prior is not None:
                call.prior = call.prior.cropped(*box)
    return episode


def with_priors(episode: episodes.Episode, carried: dict[str, np.ndarray | None]) -> episodes.Episode:
    """Each segment call of the episode given its target's atlas prior on its scans' grid, from the
    atlas's labels carried onto each session (`carried`: session label -> labels, filled as needed;
    None where the session's scans could not be registered, whose prior is then zero)."""
    scans = {call.encoding: call.scans for call in episode.calls if call.kind == "encode"}
    for call in episode.calls:
        if call.kind == "segment":
            session = scans[call.encoding]
            grid = session[0].volume.grid
            if session[0].session not in carried:
                carried[session[0].session] = atlas.carried_onto(session, grid)
            labels_on_grid = carried[session[0].session]
            prior = (np.zeros(grid.shape, np.float32) if labels_on_grid is None
                     else atlas.prior(labels_on_grid, call.target, grid.spacing_mm))
            call.prior = session[0].volume.with_array(prior)
    return episode


def gamma_distorted(episode: episodes.Episode, rng: np.random.Generator, log_sigma: float = 0.25) -> episodes.Episode:
    """Every encoded scan of the episode distorted as `gamma_distorted_scans` does."""
    for call in episode.calls:
        if call.kind == "encode":
            call.scans = gamma_distorted_scans(call.scans, rng, log_sigma)
    return episode


def gamma_distorted_scans(scans, rng: np.random.Generator, log_sigma: float = 0.25) -> tuple:
    """Exponential intensity scaling (paper §4.3): each MRI scan becomes top * (x / top)^gamma with a
    log-normal gamma, on top of the synthesis' own random contrasts. CT and ADC keep their physical
    units, which the networks are meant to rely on."""
    distorted = []
    for scan in scans:
        if scan.modality not in ("CT", "ADC"):
            values = scan.volume.array
            top = float(np.percentile(values, 99.5)) or 1.0
            gamma = float(np.exp(rng.normal(0.0, log_sigma)))
            scan = replace(scan, volume=scan.volume.with_array((top * np.clip(values / top, 0, None) ** gamma)
                                                               .astype(np.float32)))
        distorted.append(scan)
    return tuple(distorted)


def train(settings: Settings) -> Path:
    if settings.stage not in STAGES:
        raise ValueError(f"unknown stage {settings.stage!r}; stages: {', '.join(STAGES)}")
    refuse_reserved(settings.seed)
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    device = device_for(settings.device)
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank = dist.get_rank()
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    else:
        rank = 0
    if settings.threads:
        torch.set_num_threads(settings.threads)
    out = Path(settings.out)
    latest, best = out / "latest", out / "best"
    state = State(learning_rate=settings.learning_rate)
    if (latest / "training_state.json").is_file():
        model = VoxelPromptModel.from_pretrained(latest, device)
        saved = json.loads((latest / "training_state.json").read_text())
        state = State(**saved["state"])
    else:
        torch.manual_seed(settings.seed)
        model = initial_model(settings, device)
    tokenizer = model.tokenizer
    vision_stage = settings.stage == "vision"
    if vision_stage:
        model.agent.requires_grad_(False)  # the program writer stays as it is; phi is learnt through to_phi
        freeze_encodings(model)
        objective = TargetObjective(model)
    else:
        objective = Objective(model, settings.dice_weight, settings.max_segmentations)
    trained = torch.nn.parallel.DistributedDataParallel(objective, find_unused_parameters=True) if distributed else objective
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=state.learning_rate)
    if (latest / "optimiser.safetensors").is_file():
        _load_optimiser(optimiser, model, latest / "optimiser.safetensors", state.learning_rate)

    rng = np.random.default_rng([settings.seed, rank, state.step])
    tasks = list(catalogue().values())
    if settings.stage in ("agent", "vision"):
        settings = replace(settings, imaged_every=0, validation_imaged=0)
    imaged = batches = None
    if vision_stage:
        dataset = TargetBatches(tokenizer.to_str(), [settings.seed, rank, state.step, 2], settings.spacing_mm,
                                settings.crop_voxels, settings.episodes_per_subject, settings.targets_per_step,
                                settings.max_contrasts, settings.rough_prompts, model.config.vision.atlas_prior)
        batches = drawn_in_a_worker(dataset)
    if settings.imaged_every:
        dataset = ImagedEpisodes(tokenizer.to_str(), [settings.seed, rank, state.step, 1], settings.spacing_mm,
                                 settings.crop_voxels, settings.episodes_per_subject, settings.max_contrasts,
                                 settings.labelled, settings.labelled_fraction, model.config.vision.atlas_prior)
        imaged = drawn_in_a_worker(dataset)
    validation = _validation_set(tokenizer, settings, tasks, model.config.vision.atlas_prior) if rank == 0 else None
    log = out / "log.csv"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if not log.exists():
            write_text(log, ",".join(LOG_COLUMNS) + "\n")
        else:
            _drop_rows_after(log, state.step)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    started = time.perf_counter() - state.seconds
    while state.step < settings.steps and state.halvings < settings.halvings:
        trained.train()
        if vision_stage:
            with autocast:
                losses = trained(next(batches))
            row = {"loss": round(float(losses.total.detach()), 5), "dice": round(losses.dice, 5)}
        else:
            text = [episodes.text_only(tokenizer, tasks[int(rng.integers(len(tasks)))], rng, settings.rough_prompts,
                                       settings.undated_scans) for _ in range(settings.text_batch)]
            with_images = next(imaged) if imaged is not None and state.step % settings.imaged_every == 0 else None
            with autocast:
                losses = trained(text, with_images, rng)
            row = {"loss": round(float(losses.total.detach()), 5), "code_loss": round(losses.code, 5),
                   "token_accuracy": round(losses.correct / max(losses.tokens, 1), 5),
                   "dice": "" if losses.dice is None else round(losses.dice, 5)}
        (losses.total / settings.accumulate).backward()
        if (state.step + 1) % settings.accumulate == 0:
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
        state.step += 1
        state.seconds = time.perf_counter() - started
        row = {"step": state.step, "seconds": round(state.seconds, 1), "learning_rate": state.learning_rate} | row
        if state.step % settings.validate_every == 0:
            if rank == 0:
                row |= (_validate_vision(objective, validation["subjects"], autocast) if vision_stage
                        else _validate(objective, validation, autocast))
                if settings.stage == "agent":
                    row |= _validate_programs(model, validation["programs"])
                    # Programs decide; the token loss (well below 1) orders equally good models.
                    row["validation_loss"] = round(1 - row["validation_equivalent"] + row["validation_loss"], 5)
                _plateau(state, settings, optimiser, row["validation_loss"], model, best)
            if distributed:
                _take_rank_zeros_decisions(state, optimiser, device)
        if rank == 0:
            _append(log, row)
            _progress(row, settings.steps)
            if state.step % settings.checkpoint_every == 0 or state.step == settings.steps:
                _save(model, optimiser, state, settings, latest)
    if rank == 0:
        _save(model, optimiser, state, settings, latest)
        if not best.exists():
            model.save_pretrained(best, card=model_card(settings, state))
        print(file=sys.stderr)
    if distributed:
        # Were DDP's reducer the last owner of the gloo process group, the group's destructor would
        # run under the GIL and join worker threads that may need the GIL to free the tensor of a
        # finished broadcast: the process would hang at exit. So the reducer goes first, and the group
        # goes with `destroy_process_group`, which releases the GIL.
        del trained
        gc.collect()
        dist.destroy_process_group()
    return best


def _validation_set(tokenizer: Tokenizer, settings: Settings, tasks, prior: bool = False) -> dict:
    text, imaged, programs, subjects = [], [], [], []
    if settings.stage == "vision":
        subjects = _vision_validation_subjects(settings, prior)
    else:
        rng = np.random.default_rng(VALIDATION_SEED)
        text = [episodes.text_only(tokenizer, tasks[n % len(tasks)], rng) for n in range(settings.validation_text)]
        dataset = ImagedEpisodes(tokenizer.to_str(), [VALIDATION_SEED], settings.spacing_mm, settings.crop_voxels, 1,
                                 settings.max_contrasts, prior=prior)
        imaged = [episode for episode, _ in zip(iter(dataset), range(settings.validation_imaged))]
    if settings.stage == "agent":
        names = list(catalogue())
        # 3 mm subjects: the writer does not look at the images, and they keep memory small.
        programs = [sample_example(np.random.default_rng([VALIDATION_SEED, n]), names[n % len(names)], 3.0)
                    for n in range(settings.validation_programs)]
    return {"text": text, "imaged": imaged, "programs": programs, "subjects": subjects}


def _vision_validation_subjects(settings: Settings, prior: bool) -> list[tuple[str, object, list[str], object]]:
    """Whole held-out subjects with the evaluation's targets each holds: synthetic ones of every lesion
    class, and fsaverage's real T1w when asked for and installed; with `prior`, each with the atlas's
    labels carried onto its first session (else None)."""
    # Imported here: the evaluation's data pulls in the evaluation's whole stack, which only this stage needs.
    from voxelprompt.evaluation.data import lesion_class_subjects, real_scan_on

    subjects = [(name, subject, [t for t in specialised.TARGETS if specialised.holds(subject, t)])
                for name, subject in lesion_class_subjects(settings.validation_subjects, VALIDATION_SEED,
                                                           settings.spacing_mm)]
    if settings.validation_real_scans:
        with contextlib.suppress(ImportError, FileNotFoundError):  # fsaverage's package is optional
            real = real_scan_on(settings.spacing_mm)
            subjects.append(("fsaverage", real, [t for t in specialised.ANATOMY_TARGETS if specialised.holds(real, t)]))
    return [(name, subject, targets, _carried_onto_first_session(subject) if prior else None)
            for name, subject, targets in subjects]


def _carried_onto_first_session(subject: TaskSubject) -> np.ndarray | None:
    """The atlas's labels on the grid of the subject's first session, the session a target batch uses."""
    first = [scan for scan in subject.scans if scan.session == subject.sessions[0].label]
    return atlas.carried_onto(first, first[0].volume.grid)


def _validate_programs(model: VoxelPromptModel, examples: list) -> dict:
    """The writer scored as evaluate-model scores it, on held-out prompts decoded greedily (and
    constrained) through the inference loop, ground truth standing in for the vision networks."""
    from voxelprompt.evaluation.scoring import score_examples
    from voxelprompt.model.agent import Agent

    model.eval()
    table, _ = score_examples(None, list(enumerate(examples)), "validation", Agent(model), truth_vision=True)
    model.train()
    return {"validation_exact": round(float(table.program_exact.mean()), 4),
            "validation_equivalent": round(float(table.execution_equivalent.mean()), 4),
            "validation_targets": round(float(table.targets_correct.mean()), 4),
            "validation_finished": round(float(table.finished.mean()), 4)}


@torch.no_grad()
def _validate(objective: Objective, validation: dict, autocast) -> dict:
    objective.eval()
    rng = np.random.default_rng(0)
    with autocast:
        text = [objective(validation["text"][i:i + 16], None, rng) for i in range(0, len(validation["text"]), 16)]
        imaged = [objective([], e, rng) for e in validation["imaged"]]
    tokens = sum(l.tokens for l in text + imaged)
    code = sum(l.code * l.tokens for l in text + imaged) / tokens
    dice = [l.dice for l in imaged if l.dice is not None]
    mean_dice = float(np.mean(dice)) if dice else 0.0
    loss = code + objective.dice_weight * (1 - mean_dice)
    return {"validation_loss": round(loss, 5), "validation_token_accuracy": round(sum(l.correct for l in text + imaged) / tokens, 5),
            "validation_dice": round(mean_dice, 5)}


@torch.no_grad()
def _validate_vision(objective: TargetObjective, subjects: list, autocast) -> dict:
    """Dice of the evaluation's targets (thresholded at 0.5) on whole held-out synthetic subjects and on
    fsaverage's real T1w. Only the synthetic ones decide (validation loss: 1 - their mean Dice); the
    real scan is watched, never chosen on."""
    objective.eval()
    rng = np.random.default_rng(0)
    tokenizer = objective.model.tokenizer
    synthetic, real = [], []
    for name, subject, targets, carried in subjects:
        picked = [("lesion_class" if t in specialised.LESION_TARGETS else "anatomy", t) for t in targets]
        batch = target_batch(tokenizer, subject, len(picked), rng, picked=picked, carried=carried)
        with autocast:
            masks = (objective.logits(batch) > 0).cpu().numpy()
        scores = [dice(mask, truth) for mask, truth in zip(masks, batch.truths)]
        (real if name == "fsaverage" else synthetic).extend(scores)
    objective.train()
    mean = float(np.mean(synthetic)) if synthetic else 0.0
    return {"validation_loss": round(1 - mean, 5), "validation_dice": round(mean, 5),
            "validation_real_dice": round(float(np.mean(real)), 5) if real else ""}


def _plateau(state: State, settings: Settings, optimiser, loss: float, model: VoxelPromptModel, best: Path) -> None:
    """Keep the best model; halve the learning rate after `patience` validations without improvement."""
    if loss < state.best_validation:
        state.best_validation, state.stale_validations = loss, 0
        model.save_pretrained(best, card=model_card(settings, state))
        return
    state.stale_validations += 1
    if state.stale_validations >= settings.patience:
        state.learning_rate /= 2
        state.halvings += 1
        state.stale_validations = 0
        for group in optimiser.param_groups:
            group["lr"] = state.learning_rate


def _take_rank_zeros_decisions(state: State, optimiser, device: torch.device) -> None:
    """Rank 0 validates and decides the learning rate and when to stop; every process takes its
    decision. DDP averages gradients, not learning rates, so a rate changed on one process alone
    makes the copies drift apart, and a process that stopped alone would leave the others waiting."""
    decided = torch.tensor([state.learning_rate, state.halvings, state.best_validation, state.stale_validations],
                           dtype=torch.float64, device=device)
    dist.broadcast(decided, src=0)
    state.learning_rate, state.best_validation = float(decided[0]), float(decided[2])
    state.halvings, state.stale_validations = int(decided[1]), int(decided[3])
    for group in optimiser.param_groups:
        group["lr"] = state.learning_rate


def _save(model: VoxelPromptModel, optimiser, state: State, settings: Settings, latest: Path) -> None:
    model.save_pretrained(latest, card=model_card(settings, state))
    names = {id(p): n for n, p in model.named_parameters()}
    tensors = {}
    for group in optimiser.param_groups:
        for parameter in group["params"]:
            for key, value in optimiser.state.get(parameter, {}).items():
                tensors[f"{names[id(parameter)]}::{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    with atomic_output(latest / "optimiser.safetensors") as temporary:
        save_file(tensors, str(temporary))
    write_text(latest / "training_state.json", json.dumps({"settings": asdict(settings), "state": asdict(state)}, indent=1))


def _load_optimiser(optimiser, model: VoxelPromptModel, path: Path, learning_rate: float) -> None:
    saved = load_file(str(path), device=str(model.device))
    parameters = dict(model.named_parameters())
    for key, value in saved.items():
        name, field_name = key.split("::")
        optimiser.state[parameters[name]][field_name] = value if field_name != "step" else value.cpu()
    for group in optimiser.param_groups:
        group["lr"] = learning_rate


def _drop_rows_after(log: Path, step: int) -> None:
    """A run killed between two checkpoints logged steps that resuming redoes: keep the log to the
    checkpoint's step, so that every step has one row."""
    lines = log.read_text().splitlines(keepends=True)
    kept = lines[:1] + [line for line in lines[1:] if int(line.split(",", 1)[0]) <= step]
    if len(kept) < len(lines):
        write_text(log, "".join(kept))


def _append(log: Path, row: dict) -> None:
    with log.open("a", newline="") as handle:
        csv.DictWriter(handle, LOG_COLUMNS).writerow({k: row.get(k, "") for k in LOG_COLUMNS})


def _progress(row: dict, steps: int) -> None:
    """One status line, rewritten in place on a terminal (a line per 50 steps in a log file)."""
    width = 30
    done = int(width * row["step"] / steps)
    code = f"code {row['code_loss']:.3f} acc {row['token_accuracy']:.3f} " if "code_loss" in row else ""
    text = (f"[{'#' * done}{'.' * (width - done)}] step {row['step']}/{steps} loss {row['loss']:.3f} "
            f"{code}dice {row['dice'] or '-'} {row['seconds'] / max(row['step'], 1):.2f} s/step")
    if sys.stderr.isatty():
        print("\r" + text, end="", file=sys.stderr, flush=True)
    elif row["step"] % 50 == 0 or "validation_loss" in row:
        real = f" real {row['validation_real_dice']:.3f}" if row.get("validation_real_dice") not in (None, "") else ""
        print(text + (f" | validation {row['validation_loss']:.4f} dice {row['validation_dice']:.3f}{real}"
                      if "validation_loss" in row else ""), file=sys.stderr, flush=True)


def model_card(settings: Settings, state: State) -> str:
    return "\n".join([
        f"# VoxelPrompt model ({settings.preset})",
        "",
        "Trained by `voxelprompt train` (voxelprompt/train/loop.py) on synthetic subjects",
        "(voxelprompt/synth) and the task catalogue (voxelprompt/data/tasks).",
        "",
        f"- stage: {settings.stage}; started from: {settings.init}",
        f"- steps: {state.step}; seconds: {state.seconds:.0f}; learning rate now {state.learning_rate:g}",
        f"- best validation loss: {state.best_validation:.4f}",
        f"- settings: `{json.dumps(asdict(settings))}`",
        f"- hardware: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}",
        "",
    ])
