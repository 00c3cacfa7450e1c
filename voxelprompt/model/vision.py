"""The instructable vision networks m_enc and m_gen (paper §3.1, Appendix A.1): the down- and
up-sampling arms of a UNet whose every level is a 3^3 convolution, latent-feature mixing, stream
interaction across the S input volumes, GroupNorm (groups of four channels) and SiLU.

Native-space processing: each level knows its voxel spacing; along an axis more than twice as coarse
as the finest one (thick slices) the level convolves each slice in 2D with the kernel's central
slice and does not pool, so a 1 x 1 x 5 mm scan is never resampled to isotropic voxels.

Memory at inference: the stream attention is pointwise, so without gradients it runs slab by slab
(its query/key/value maps are the largest tensors of a level), and m_gen convolves the upsampled
features and the skip connection separately instead of concatenating them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from voxelprompt.model.config import VisionConfig

HEADS = ("modulated", "dynamic")
MODALITIES = ("T1w", "T1w+ce", "T2w", "FLAIR", "PDw", "DWI", "ADC", "CT")
THICK_RATIO = 2.0
SLAB_VOXELS = 1 << 18  # voxels per slab of the stream attention at inference
PRIOR_GAIN_START = 4.0  # softplus(4) ~ 4: a logit of +4 at the prior's centre, -4 far outside it


def thick_axes(spacing_mm: tuple[float, float, float]) -> tuple[bool, bool, bool]:
    finest = min(spacing_mm)
    return tuple(s > THICK_RATIO * finest for s in spacing_mm)  # type: ignore[return-value]


def soft_dice(probabilities: torch.Tensor, truth: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """The soft Dice overlap of probabilities with a mask (1: perfect), smoothed by eps so that an empty
    mask predicted empty scores 1: the loss the vision networks and their baselines train on."""
    intersection = (probabilities * truth).sum()
    return (2 * intersection + eps) / (probabilities.sum() + truth.sum() + eps)


class NativeConv(nn.Module):
    """A 3^3 convolution that becomes slice-wise 2D (the kernel's central slice) along thick axes."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, inputs: torch.Tensor | list[torch.Tensor], thick: tuple[bool, bool, bool]) -> torch.Tensor:
        """`inputs`: one tensor, or several whose channels add up to in_channels (the convolution of
        their concatenation, computed part by part so that the concatenation never exists)."""
        weight, padding = self.weight, [1, 1, 1]
        for axis, is_thick in enumerate(thick):
            if is_thick:
                weight = weight.narrow(2 + axis, 1, 1)
                padding[axis] = 0
        if isinstance(inputs, torch.Tensor):
            return F.conv3d(inputs, weight, self.bias, padding=tuple(padding))
        out, first = None, 0
        for part in inputs:
            term = F.conv3d(part, weight[:, first:first + part.shape[1]], None, padding=tuple(padding))
            out = term if out is None else out.add_(term)
            first += part.shape[1]
        return out.add_(self.bias[:, None, None, None])


class LatentMixing(nn.Module):
    """Concatenate each stream's phi to its voxel features and map back to c channels (a 1x1x1
    convolution of [a_s, phi_s], written as two terms so that phi is not broadcast over space first)."""

    def __init__(self, channels: int, phi_dim: int):
        super().__init__()
        self.features = nn.Conv3d(channels, channels, 1)
        self.latent = nn.Linear(phi_dim, channels, bias=False)

    def forward(self, x: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        return self.features(x) + self.latent(phi)[:, :, None, None, None]


class StreamAttention(nn.Module):
    """Eq. 1: at every voxel, attention across the S streams, B = f(softmax(Q K^T / sqrt(b)) V) + A."""

    def __init__(self, channels: int, attention_dim: int):
        super().__init__()
        self.attention_dim = attention_dim
        self.qkv = nn.Conv3d(channels, 3 * attention_dim, 1)
        self.out = nn.Conv3d(attention_dim, channels, 1)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        voxels_per_plane = a.shape[3] * a.shape[4]
        if torch.is_grad_enabled() or a[0, 0].numel() <= SLAB_VOXELS:
            return self._attend(a)
        out = torch.empty_like(a)
        step = max(1, SLAB_VOXELS // voxels_per_plane)
        for first in range(0, a.shape[2], step):
            out[:, :, first:first + step] = self._attend(a[:, :, first:first + step])
        return out

    def _attend(self, a: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(a).chunk(3, dim=1)  # each (S, b, X, Y, Z)
        streams = a.shape[0]
        if streams == 1:
            mixed = v  # softmax over a single stream is 1: exactly Eq. 1, without the arithmetic
        else:
            # Scores stream by stream (S is small), so memory stays at S^2 voxel maps, never S^2 * b.
            scores = torch.stack([(q * k[t]).sum(dim=1) for t in range(streams)], dim=1) / math.sqrt(self.attention_dim)
            weights = torch.softmax(scores, dim=1)  # (S, S, X, Y, Z): stream s attends to stream t
            mixed = sum(weights[:, t : t + 1] * v[t] for t in range(streams))
        return self.out(mixed) + a


class Level(nn.Module):
    """Convolution, latent mixing, stream interaction, GroupNorm, SiLU. Not `instructable`: the same
    level with a plain fully-connected layer in place of the mixing and no stream interaction (the
    single-task baselines of §5)."""

    def __init__(self, in_channels: int, channels: int, config: VisionConfig, instructable: bool = True):
        super().__init__()
        self.conv = NativeConv(in_channels, channels)
        self.mix = LatentMixing(channels, config.phi_dim) if instructable else nn.Conv3d(channels, channels, 1)
        self.streams = StreamAttention(channels, config.attention_dim) if instructable else nn.Identity()
        self.norm = nn.GroupNorm(max(channels // 4, 1), channels)
        self.instructable = instructable

    def forward(self, x: torch.Tensor | list[torch.Tensor], phi: torch.Tensor, thick: tuple[bool, bool, bool]) -> torch.Tensor:
        x = self.conv(x, thick)
        x = self.mix(x, phi) if self.instructable else self.mix(x)
        return F.silu(self.norm(self.streams(x)))


class DynamicHead(nn.Module):
    """Masks of any number of targets from one feature map. The features are projected once to an
    embedding per voxel (a 1x1x1 convolution and SiLU, shared by all targets); a target's logit at a
    voxel is the dot product of that embedding with weights generated from the target's phi, plus a
    bias (as the text-driven heads of the CLIP-driven Universal Model and SAT do). A target costs one
    dot product per voxel, so a step can supervise dozens of them.

    With `prior`, each target's logit is its spatial prior (in [-1, 1], 0: no information) times a
    positive gain, plus that readout times a scale and times the prior's uncertainty 1 - |prior|; gain
    and scale are generated from phi. A new head starts with a gain of about 4 and a scale of 0 for
    every target: it gives the prior's mask exactly, and training lets the readout in only as far as
    it corrects the prior (as ReZero and ControlNet start a new branch at zero), and only where the
    prior is unsure. A lesion, which has no prior, needs the readout everywhere."""

    def __init__(self, channels: int, hidden: int, phi_dim: int, prior: bool = False):
        super().__init__()
        self.project = nn.Conv3d(channels, hidden, 1)
        self.generate = nn.Linear(phi_dim, hidden + 1)
        self.weighting = None  # per target: the prior's gain (before softplus) and the readout's scale
        if prior:
            self.weighting = nn.Linear(phi_dim, 2)
            nn.init.zeros_(self.weighting.weight)
            with torch.no_grad():
                self.weighting.bias.copy_(torch.tensor([PRIOR_GAIN_START, 0.0]))

    def forward(self, features: torch.Tensor, phi: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """features (c, X, Y, Z), phi (K, phi_dim), prior (K, X, Y, Z) -> logits (K, X, Y, Z). A head
        with a prior given none reads it as zero: no information."""
        embedding = F.silu(self.project(features[None]))[0].flatten(1)  # (hidden, V)
        weights, bias = self.generate(phi).split([embedding.shape[0], 1], dim=1)
        logits = (weights @ embedding + bias).view(phi.shape[0], *features.shape[1:])
        if self.weighting is None:
            return logits
        gain, scale = self.weighting(phi).unbind(dim=1)
        logits = scale[:, None, None, None] * logits
        if prior is not None:
            prior = prior.to(logits.dtype)
            # The readout corrects the prior where it is uncertain (|prior| < 1: within a few mm of the
            # carried boundary, or anywhere for a target without a prior) and nowhere else: trained on
            # crops, it once lit up voxels far from any target, which a whole head then counted.
            logits = logits * (1 - prior.abs()) + F.softplus(gain)[:, None, None, None] * prior
        return logits


def modality_ids(embedding: nn.Embedding, modalities: list[str]) -> torch.Tensor:
    ids = [MODALITIES.index(m) if m in MODALITIES else len(MODALITIES) for m in modalities]
    return torch.tensor(ids, device=embedding.weight.device)


def encoder_levels(config: VisionConfig, channels: list[int], instructable: bool) -> nn.ModuleList:
    """m_enc's levels: one per resolution, from the image's one channel to `channels[-1]`."""
    return nn.ModuleList(Level(1 if i == 0 else channels[i - 1], channels[i], config, instructable)
                         for i in range(config.levels))


def encoder_pass(levels: nn.ModuleList, images: torch.Tensor, spacing_mm: tuple[float, float, float],
                 stream_phi: torch.Tensor) -> tuple[list[torch.Tensor], list[tuple[float, float, float]]]:
    """m_enc's levels on images (S, 1, X, Y, Z): the features and the spacing of every level."""
    skips, spacings = [], []
    x, spacing = images, tuple(float(s) for s in spacing_mm)
    for number, level in enumerate(levels):
        if number > 0:
            thick = thick_axes(spacing)
            kernel = tuple(1 if t else 2 for t in thick)
            x = F.max_pool3d(x, kernel, kernel, ceil_mode=True)
            spacing = tuple(s * k for s, k in zip(spacing, kernel))
        x = level(x, stream_phi, thick_axes(spacing))
        skips.append(x)
        spacings.append(spacing)
    return skips, spacings


class Reader(nn.Module):
    """An encoder of the agent's own: modality embeddings, m_enc's levels and the fully-connected layer
    to epsilon_v. Kept apart from the encoder m_gen reads, the encodings the agent learnt to read stay
    the same while the vision networks keep learning to segment (the vision stage)."""

    def __init__(self, config: VisionConfig, channels: list[int], agent_hidden: int, instructable: bool = True):
        super().__init__()
        self.encoder = encoder_levels(config, channels, instructable)
        self.modality = nn.Embedding(len(MODALITIES) + 1, config.phi_dim)
        self.to_agent = nn.Linear(channels[-1], agent_hidden)

    def forward(self, images: torch.Tensor, spacing_mm: tuple[float, float, float], modalities: list[str]
                ) -> torch.Tensor:
        """(S, agent_hidden) encodings of images (S, 1, X, Y, Z)."""
        stream_phi = self.modality(modality_ids(self.modality, modalities))
        skips, _ = encoder_pass(self.encoder, images, spacing_mm, stream_phi)
        return self.to_agent(torch.amax(skips[-1], dim=(2, 3, 4)))


@dataclass
class Encoded:
    """m_enc's output for S scans of one subject: features per level (for m_gen), the spacing of each
    level, and one embedding epsilon_v per scan for the agent to read."""

    skips: list[torch.Tensor]  # level -> (S, c, X, Y, Z)
    spacings: list[tuple[float, float, float]]
    embeddings: torch.Tensor  # (S, d)
    # The dynamic head's input depends on these scans alone, not on the target: the first target of
    # the scans computes it, every later one reuses it (a generator pass is most of a target's cost).
    head_features: torch.Tensor | None = None


class VisionNetworks(nn.Module):
    def __init__(self, config: VisionConfig, agent_hidden: int, instructable: bool = True):
        super().__init__()
        self.config = config
        channels = [config.first_channels] + [config.channels] * (config.levels - 1)
        self.channels = channels
        self.encoder = encoder_levels(config, channels, instructable)
        self.generator = nn.ModuleList(Level(channels[i + 1] + channels[i], channels[i], config, instructable)
                                       for i in range(config.levels - 1))
        if config.head not in HEADS:
            raise ValueError(f"unknown vision head {config.head!r}; heads: {', '.join(HEADS)}")
        # Single-task networks (not instructable) have no phi to generate weights from: a plain head.
        self.dynamic = config.head == "dynamic" and instructable
        # The dynamic head reads the top two levels of m_gen: the top level alone has too few channels
        # (8 in the cpu preset) to tell a hundred targets apart with one dot product per voxel.
        if config.atlas_prior and not self.dynamic and instructable:
            raise ValueError("the atlas prior is a term of the dynamic head: set head to 'dynamic'")
        self.head = (DynamicHead(channels[0] + channels[1], config.head_channels, config.phi_dim, config.atlas_prior)
                     if self.dynamic else nn.Conv3d(channels[0], 1, 1))
        # The interpretable encodings epsilon_v: from m_enc's deepest features, or from a reader of their own.
        # The modules are made in this order because seeded baselines draw their initial weights in it:
        # a modulated network without a reader starts from the same weights as before readers existed,
        # so the evaluation's quoted numbers do not move with code that does not touch them.
        self.to_agent = None if config.reader else nn.Linear(channels[-1], agent_hidden)
        self.modality = nn.Embedding(len(MODALITIES) + 1, config.phi_dim)  # the last row: unknown modality
        self.reader = Reader(config, channels, agent_hidden, instructable) if config.reader else None

    def encode(self, images: torch.Tensor, spacing_mm: tuple[float, float, float], modalities: list[str],
               phi: torch.Tensor | None = None) -> Encoded:
        """m_enc: images (S, 1, X, Y, Z) of one subject on one grid -> Encoded. `phi` (phi_dim) steers
        every stream when the config lets the agent steer the encoder."""
        stream_phi = self.modality(modality_ids(self.modality, modalities))
        if self.config.encoder_latent and phi is not None:
            stream_phi = stream_phi + phi
        skips, spacings = encoder_pass(self.encoder, images, spacing_mm, stream_phi)
        if self.reader is None:
            embeddings = self.to_agent(torch.amax(skips[-1], dim=(2, 3, 4)))
        else:
            embeddings = self.reader(images, spacing_mm, modalities)
        return Encoded(skips, spacings, embeddings)

    def encoding_path(self) -> list[nn.Module]:
        """The modules between the scans and the encodings the agent reads."""
        return [self.reader] if self.reader is not None else [self.encoder, self.modality, self.to_agent]

    def generate(self, encoded: Encoded, phi: torch.Tensor, modalities: list[str], prior: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """m_gen: logits (X, Y, Z) of the target phi names, on the grid of the encoded scans; `prior`
        (X, Y, Z) is the target's spatial prior when the head takes one."""
        if self.dynamic:
            if encoded.head_features is None:
                encoded.head_features = self.features(encoded, modalities)
            return self.head(encoded.head_features, phi[None], None if prior is None else prior[None])[0]
        x = self._generator(encoded, self.modality(modality_ids(self.modality, modalities)) + phi)
        return self.head(x).mean(dim=0)[0]  # streams agree on one segmentation

    def features(self, encoded: Encoded, modalities: list[str]) -> torch.Tensor:
        """The dynamic head's input: m_gen's per-voxel features (c, X, Y, Z), steered by the scans'
        modalities only and averaged over the streams; the same for every target."""
        top, second = self._generator(encoded, self.modality(modality_ids(self.modality, modalities)), levels=2)
        second = F.interpolate(second, size=top.shape[2:], mode="trilinear", align_corners=False)
        return torch.cat([top, second], dim=1).mean(dim=0)

    def segment_all(self, encoded: Encoded, phi: torch.Tensor, modalities: list[str],
                    priors: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (K, X, Y, Z) of K targets, phi (K, phi_dim), priors (K, X, Y, Z) or None: one
        generator pass with the dynamic head, one per target otherwise."""
        if self.dynamic:
            return self.head(self.features(encoded, modalities), phi, priors)
        return torch.stack([self.generate(encoded, p, modalities) for p in phi])

    def _generator(self, encoded: Encoded, stream_phi: torch.Tensor, levels: int = 1):
        """m_gen's output (streams, c, X, Y, Z) at the top level; with `levels` > 1, a list of the
        outputs of that many levels, top first."""
        x, outputs = encoded.skips[-1], []
        for number in range(self.config.levels - 2, -1, -1):
            skip = encoded.skips[number]
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = self.generator[number]([x, skip], stream_phi, thick_axes(encoded.spacings[number]))
            outputs.insert(0, x)
        return outputs[:levels] if levels > 1 else x
