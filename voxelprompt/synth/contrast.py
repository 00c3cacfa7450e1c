"""Images of any contrast from a label map (SynthSeg-style domain randomisation, paper §4.3).

Each label gets a Gaussian intensity whose mean is drawn from the contrast's prior for its tissue
class (data/synth/contrast_priors.json). The image is blurred for partial volume, multiplied by a
smooth bias field (MRI), blurred and resampled onto a random acquisition grid (voxel size, thick
slices, field of view), given noise, and stored in a random voxel orientation. DWI (b = 1000) and
ADC are rendered together: DWI = S0 * exp(-b * ADC), so restricted diffusion is bright on one and
dark on the other by construction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
from scipy import ndimage

from voxelprompt.core.volume import Grid, Volume
from voxelprompt.synth import labels as vocabulary
from voxelprompt.synth.spatial import upsample

CONTRASTS = ("T1w", "T1w+ce", "T2w", "FLAIR", "PDw", "DWI", "ADC", "CT")
B_VALUE_S_PER_MM2 = 1000.0
# The intensity channels rendered for a contrast, and the prior each channel draws from. DWI and ADC
# come together from a T2-like S0 and the ADC; a post-contrast T1w shares the T1w's tissue priors.
CHANNELS = {"DWI": ("S0", "ADC"), "ADC": ("S0", "ADC")}
PRIOR_OF = {"T1w+ce": "T1w"}
_ORIENTATIONS = ("RAS", "LPS", "LAS", "RPI", "PIR", "ASL", "LIA", "SPR")


@dataclass(frozen=True)
class Acquisition:
    spacing_mm: tuple[float, float, float]  # voxel size along the world axes x, y, z (R-L, A-P, S-I)
    axcodes: str  # voxel orientation on disk (permutes the stored axes, not the voxel size in the world)
    noise_fraction: float  # noise std relative to the brightest tissue mean (MRI) or in HU (CT)
    bias_strength: float  # std of the log bias field (MRI)
    fov_margin_mm: float | None = None  # field of view: the head plus this margin (None: the whole map)

    @classmethod
    def random(cls, rng: np.random.Generator, base_spacing_mm: float = 1.0,
               thick_slice_probability: float = 0.3) -> Acquisition:
        """Voxels 0.8-1.3x the label map's (never finer than it carries detail for), or thick slices
        of 3-6 mm along one axis (e.g. 0.9 x 0.9 x 5 mm); a random on-disk orientation."""
        in_plane = base_spacing_mm * rng.uniform(0.8, 1.3)
        spacing = np.full(3, in_plane)
        if rng.random() < thick_slice_probability:
            spacing[rng.integers(3)] = max(rng.uniform(3.0, 6.0), 1.5 * in_plane)
        else:
            spacing *= rng.uniform(0.9, 1.1, 3)
        axcodes = _ORIENTATIONS[rng.integers(len(_ORIENTATIONS))]
        return cls(tuple(np.round(spacing, 2)), axcodes, float(rng.uniform(0.01, 0.04)), float(rng.uniform(0.0, 0.25)),
                   float(rng.uniform(2.0, 25.0)))


@cache
def priors() -> dict[str, Any]:
    return json.loads((resources.files("voxelprompt") / "data" / "synth" / "contrast_priors.json").read_text())


def label_means(channel: str, rng: np.random.Generator) -> dict[int, float]:
    """Mean intensity of every base label in a channel: one draw per label from its tissue's range."""
    table = priors()["means"][PRIOR_OF.get(channel, channel)]
    return {label.id: float(rng.uniform(*table[label.tissue])) for label in vocabulary.base_labels()}


def channels(contrast: str) -> tuple[str, ...]:
    return CHANNELS.get(contrast, (contrast,))


def render(label_map: Volume, contrast: str, rng: np.random.Generator, acquisition: Acquisition | None = None,
           means: dict[str, dict[int, float]] | None = None) -> dict[str, Volume]:
    """Images of `contrast` (DWI also gives its ADC) from a label map, keyed by contrast.

    `means` gives, per channel (see `channels`), the mean of every label in the map, e.g. to paint
    lesions with chosen signal; channels not given are drawn from the priors (base labels only).
    The label map's world space is kept: images land where the labels are.
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}; expected one of {', '.join(CONTRASTS)}")
    acquisition = acquisition or Acquisition.random(rng, float(label_map.spacing_mm.min()))
    chosen = {channel: dict((means or {}).get(channel) or label_means(channel, rng)) for channel in channels(contrast)}
    if contrast in ("DWI", "ADC"):
        s0 = _label_image(label_map, chosen["S0"], "S0", rng)
        adc = np.maximum(_label_image(label_map, chosen["ADC"], "ADC", rng), 0.0)
        dwi = s0 * np.exp(-B_VALUE_S_PER_MM2 * adc * 1e-3)  # ADC in 10^-3 mm^2/s
        grid = _acquisition_grid(label_map, acquisition)
        return {"DWI": _acquire(label_map.with_array(dwi), grid, acquisition, rng, mri=True),
                "ADC": _acquire(label_map.with_array(adc), grid, acquisition, rng, mri=False, noise=False)}
    image = _label_image(label_map, chosen[contrast], contrast, rng)
    return {contrast: _acquire(label_map.with_array(image), _acquisition_grid(label_map, acquisition), acquisition,
                               rng, mri=contrast != "CT", ct=contrast == "CT")}


def _acquisition_grid(label_map: Volume, acquisition: Acquisition) -> Grid:
    """The acquisition's voxel size over the head plus its margin (within the label map's extent)."""
    full = label_map.grid.with_spacing(acquisition.spacing_mm)
    if acquisition.fov_margin_mm is None:
        return full
    head = np.argwhere(label_map.array > 0)
    if len(head) == 0:
        return full
    corners = label_map.grid.world_coordinates_mm(np.array([head.min(axis=0), head.max(axis=0)], dtype=float))
    to_voxels = np.linalg.inv(full.affine)
    corner_voxels = corners @ to_voxels[:3, :3].T + to_voxels[:3, 3]
    margin = acquisition.fov_margin_mm / np.asarray(acquisition.spacing_mm)
    start = np.maximum(np.floor(corner_voxels.min(axis=0) - margin), 0).astype(int)
    stop = np.minimum(np.ceil(corner_voxels.max(axis=0) + margin) + 1, full.shape).astype(int)
    shift = np.eye(4)
    shift[:3, 3] = start
    return Grid(tuple(stop - start), full.affine @ shift)


def _label_image(label_map: Volume, means: dict[int, float], channel: str, rng: np.random.Generator) -> np.ndarray:
    lookup = np.full(max(means) + 1, np.nan, np.float32)
    lookup[list(means)] = list(means.values())
    values = label_map.array.astype(np.int64)
    if values.max() >= len(lookup) or np.isnan(lookup[values]).any():
        missing = sorted(set(np.unique(values).tolist()) - set(means))
        raise ValueError(f"no {channel} intensity for labels {missing[:10]}")
    mean = lookup[values]
    if channel == "CT":
        std = np.float32(rng.uniform(*priors()["ct_std_hu"]))
        noise = rng.standard_normal(label_map.shape, dtype=np.float32) * std
    else:
        fraction = np.float32(rng.uniform(*priors()["std_fraction"][PRIOR_OF.get(channel, channel)]))
        noise = rng.standard_normal(label_map.shape, dtype=np.float32) * fraction * np.abs(mean)
    # Partial volume: tissue boundaries are blurred at the scale of a fraction of a voxel.
    return ndimage.gaussian_filter(mean + noise, sigma=0.5 / label_map.spacing_mm)


def _acquire(image: Volume, target: Grid, acquisition: Acquisition, rng: np.random.Generator, *, mri: bool,
             ct: bool = False, noise: bool = True) -> Volume:
    data = image.array
    if mri and acquisition.bias_strength > 0:
        coarse = rng.normal(0, acquisition.bias_strength, (4, 4, 4))
        data = data * np.exp(upsample(coarse, data.shape)).astype(np.float32)
    # A voxel of the acquisition integrates over its extent: blur with FWHM ~ its size, then sample.
    sigma_voxels = np.maximum(np.asarray(acquisition.spacing_mm) / image.spacing_mm - 1, 0) * 0.42
    blurred = ndimage.gaussian_filter(data, sigma=sigma_voxels) if sigma_voxels.any() else data
    acquired = image.with_array(blurred).resampled_to(target, order=1, fill=float(data.min()))
    values = acquired.array
    if noise:
        if ct:
            values = values + rng.normal(0, priors()["ct_std_hu"][1], values.shape).astype(np.float32)
        else:
            scale = acquisition.noise_fraction * float(np.percentile(values, 99))
            real = values + rng.normal(0, scale, values.shape).astype(np.float32)
            imaginary = rng.normal(0, scale, values.shape).astype(np.float32)
            values = np.sqrt(real**2 + imaginary**2)  # magnitude images have Rician noise
    return Volume(values.astype(np.float32), acquired.affine).reoriented(acquisition.axcodes)


def labels_on(image: Volume, label_map: Volume) -> Volume:
    """The label map seen on an image's own grid (nearest neighbour): ground truth per image."""
    return label_map.resampled_to(Grid(image.shape, image.affine), order=0)
