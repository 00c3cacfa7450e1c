"""The training objective (paper Eq. 2): cross-entropy of the agent's code tokens plus lambda times
the soft Dice loss of every segmentation the vision networks generate while the ground-truth
program runs (teacher forcing).

A batch holds text-only episodes (code only; cheap) and at most one episode with images, whose
`segment` calls train the vision networks through phi. The <ENC> slots of an episode with images
hold the encodings of its scans; those of text-only episodes keep the <ENC> token's own embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from voxelprompt.model import tokens
from voxelprompt.model.inputs import stacked
from voxelprompt.model.joint import VoxelPromptModel
from voxelprompt.model.vision import soft_dice
from voxelprompt.train.episodes import Episode

IGNORE = -100
TEXT_GROUP = 8  # text-only episodes per forward pass


@dataclass
class Losses:
    total: torch.Tensor
    code: float  # mean cross-entropy per code token
    dice: float | None  # mean soft Dice of the generated segmentations (None: no images in the batch)
    tokens: int
    correct: int  # code tokens predicted right (teacher forcing)


def padded(episodes: list[Episode], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The episodes' token ids as one batch (B, T), padded at the end with `pad`, and its attention mask."""
    length = max(len(e.ids) for e in episodes)
    ids = torch.full((len(episodes), length), pad, dtype=torch.long)
    mask = torch.zeros((len(episodes), length), dtype=torch.long)
    for row, episode in enumerate(episodes):
        ids[row, : len(episode.ids)] = torch.tensor(episode.ids)
        mask[row, : len(episode.ids)] = 1
    return ids, mask


class Objective(nn.Module):
    """Wraps the model so that one `forward` computes the whole loss (what DistributedDataParallel needs)."""

    def __init__(self, model: VoxelPromptModel, dice_weight: float = 0.1, max_segmentations: int = 2):
        super().__init__()
        self.model = model
        self.dice_weight = dice_weight
        self.max_segmentations = max_segmentations

    def forward(self, text: list[Episode], imaged: Episode | None = None,
                rng: np.random.Generator | None = None) -> Losses:
        logits, labels, dice = [], [], []
        if text:
            # Episodes of like length run together: padding a batch to its longest episode would
            # spend about half of the compute on padding (measured: 3.8 s for 32 episodes in one
            # batch, 1.9 s in length-sorted groups of 8, on two cores).
            ordered = sorted(text, key=lambda e: len(e.ids))
            for start in range(0, len(ordered), TEXT_GROUP):
                group_logits, group_labels = self._text(ordered[start: start + TEXT_GROUP])
                logits.append(group_logits.reshape(-1, group_logits.shape[-1]))
                labels.append(group_labels.reshape(-1))
        if imaged is not None:
            episode_logits, episode_labels, dice = self._imaged(imaged, rng or np.random.default_rng())
            logits.append(episode_logits)
            labels.append(episode_labels)
        logits_all, labels_all = torch.cat(logits), torch.cat(labels)
        code = F.cross_entropy(logits_all.float(), labels_all, ignore_index=IGNORE)
        total = code
        if dice:
            total = total + self.dice_weight * (1 - torch.stack(dice)).mean()
        counted = labels_all != IGNORE
        correct = int((logits_all.argmax(-1)[counted] == labels_all[counted]).sum())
        return Losses(total, float(code.detach()), float(torch.stack(dice).detach().mean()) if dice else None,
                      int(counted.sum()), correct)

    def _labels(self, episode: Episode, length: int) -> torch.Tensor:
        """Next-token targets: the token at t + 1 where it is learned, else ignored."""
        labels = torch.full((length,), IGNORE, dtype=torch.long)
        for t in range(min(length, len(episode.ids)) - 1):
            if episode.target[t + 1]:
                labels[t] = episode.ids[t + 1]
        return labels

    def _text(self, episodes: list[Episode]) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        ids, mask = padded(episodes, model.special[tokens.PAD])
        length = ids.shape[1]
        labels = torch.stack([self._labels(e, length) for e in episodes])
        device = model.device
        hidden, _ = model.hidden(model.embed(ids.to(device)), attention_mask=mask.to(device))
        return model.logits(hidden), labels.to(device)

    def _imaged(self, episode: Episode, rng: np.random.Generator):
        model = self.model
        device = model.device
        ids = torch.tensor(episode.ids, device=device)[None]
        mods = episode.positions(model.tokenizer, tokens.MOD)
        slots = episode.positions(model.tokenizer, tokens.ENC)
        if len(mods) != len(episode.calls) or len(slots) != len(episode.slots):
            raise ValueError("the episode's <MOD> marks or <ENC> slots do not match its vision calls")
        # Pass A, up to the first encoding slot: the phi of every encode call (causal attention makes
        # these hidden states the same as in the full pass below).
        first_slot = slots[0] if slots else len(episode.ids)
        prefix, _ = model.hidden(model.embed(ids[:, :first_slot]))
        encoded = {}
        for call, position in zip(episode.calls, mods):
            if call.kind == "encode":
                if position >= first_slot:
                    raise ValueError("an encode call comes after an encoding was read")
                modalities = [s.modality for s in call.scans]
                images = stacked(call.scans, device)
                encoded[call.encoding] = (model.vision.encode(images, tuple(call.scans[0].volume.spacing_mm), modalities,
                                                              model.phi(prefix[0, position])), modalities)
        # Pass B, the whole episode with the encodings in their slots.
        spliced = {position: encoded[e][0].embeddings[s] for position, (e, s) in zip(slots, episode.slots)}
        hidden, _ = model.hidden(model.embed(ids, spliced))
        segmentations = [(call, position) for call, position in zip(episode.calls, mods) if call.kind == "segment"]
        chosen = rng.permutation(len(segmentations))[: self.max_segmentations]
        dice = []
        for index in sorted(chosen):
            call, position = segmentations[index]
            features, modalities = encoded[call.encoding]
            prior = None
            if model.config.vision.atlas_prior:
                if call.prior is None:
                    raise ValueError("the networks take an atlas prior and the episode has none (train.loop.with_priors)")
                prior = torch.from_numpy(np.asarray(call.prior.array, dtype=np.float32)).to(device)
            logits = model.vision.generate(features, model.phi(hidden[0, position]), modalities, prior)
            truth = torch.from_numpy(np.asarray(call.truth.array > 0, dtype=np.float32)).to(device)
            dice.append(soft_dice(torch.sigmoid(logits.float()), truth))
        return model.logits(hidden[0]), self._labels(episode, len(episode.ids)).to(device), dice


@dataclass
class TargetLosses:
    total: torch.Tensor
    dice: float  # mean soft Dice over the batch's targets
    targets: int


class TargetObjective(nn.Module):
    """The vision stage: soft Dice plus binary cross-entropy of every target of a `TargetBatch`, from one
    encoder and generator pass (the dynamic head). Each target's phi comes from its episode with the
    scans' encodings in the `<ENC>` slots, as at inference. The agent is frozen and its pass runs
    without gradients (a backward pass through it cost a third of a step): phi learns through
    `to_phi` alone. The path to the encodings the agent reads is frozen (`encoding_path`): a model
    with a reader of its own trains m_enc; one without runs m_enc without gradients too."""

    def __init__(self, model: VoxelPromptModel, cross_entropy_weight: float = 1.0):
        super().__init__()
        if model.config.vision.encoder_latent:
            raise ValueError("the vision stage needs an encoder that phi does not steer (encoder_latent: false): "
                             "one encoding must serve every target of a batch")
        self.model = model
        self.cross_entropy_weight = cross_entropy_weight

    def forward(self, batch) -> TargetLosses:
        logits = self.logits(batch)
        truth = torch.from_numpy(batch.truths.astype(np.float32)).to(logits.device)
        probabilities = torch.sigmoid(logits.float())
        dice = torch.stack([soft_dice(p, t) for p, t in zip(probabilities, truth)])
        # Cross-entropy gives every voxel a gradient from the first step, when soft Dice is near zero
        # and flat (SynthSeg warms up with an L2 loss for the same reason).
        cross_entropy = F.binary_cross_entropy_with_logits(logits.float(), truth)
        total = (1 - dice).mean() + self.cross_entropy_weight * cross_entropy
        return TargetLosses(total, float(dice.detach().mean()), len(batch.targets))

    def logits(self, batch) -> torch.Tensor:
        """(K, X, Y, Z) logits of the batch's targets on its scans' grid."""
        model = self.model
        device = model.device
        modalities = [s.modality for s in batch.scans]
        # An encoder that `freeze_encodings` froze (no reader) runs without a graph: its backward pass would be wasted.
        with torch.set_grad_enabled(any(p.requires_grad for p in model.vision.encoder.parameters())):
            encoded = model.vision.encode(stacked(batch.scans, device), tuple(batch.scans[0].volume.spacing_mm),
                                          modalities)
        with torch.no_grad():
            hidden = self._mod_hidden(batch.episodes, encoded.embeddings)
        phi = model.phi(hidden)
        priors = None
        if model.config.vision.atlas_prior:
            # A batch without priors (scans the atlas could not be registered to) is given none: zero.
            priors = (torch.zeros((len(batch.targets), *batch.truths.shape[1:]), device=device) if batch.priors is None
                      else torch.from_numpy(batch.priors).to(device))
        return model.vision.segment_all(encoded, phi, modalities, priors)

    def _mod_hidden(self, episodes: list[Episode], embeddings: torch.Tensor) -> torch.Tensor:
        """The hidden state at each episode's last `<MOD>` (its segment call), encodings spliced in."""
        model = self.model
        device = model.device
        ids, mask = padded(episodes, model.special[tokens.PAD])
        rows, columns, streams, last_mod = [], [], [], []
        for row, episode in enumerate(episodes):
            slots = episode.positions(model.tokenizer, tokens.ENC)
            rows += [row] * len(slots)
            columns += slots
            streams += [stream for _, stream in episode.slots]
            last_mod.append(episode.positions(model.tokenizer, tokens.MOD)[-1])
        embedded = model.embed(ids.to(device))
        if rows:
            embedded = embedded.index_put((torch.tensor(rows, device=device), torch.tensor(columns, device=device)),
                                          embeddings[torch.tensor(streams, device=device)].to(embedded.dtype))
        hidden, _ = model.hidden(embedded, attention_mask=mask.to(device))
        return hidden[torch.arange(len(episodes), device=device), torch.tensor(last_mod, device=device)]
