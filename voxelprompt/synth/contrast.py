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

from voxelprompt.synth import labels as vocabulary
from voxelprompt.synth.spatial import upsample
from voxelprompt.volume import Grid, Volume

CONTRASTS = ("T1w", "T2w", "FLAIR", "PDw", "DWI", "ADC", "CT")
B_VALUE_S_PER_MM2 = 1000.0
_ORIENTATIONS = ("RAS", "LPS", "LAS", "RPI", "PIR", "ASL", "LIA", "SPR")


@dataclass(frozen=True)
class Acquisition:
    spacing_mm: tuple[float, float, float]
    axcodes: str  # voxel orientation on disk
    noise_fraction: float  # noise std relative to the brightest tissue mean (MRI) or in HU (CT)
    bias_strength: float  # std of the log bias field (MRI)

    @classmethod
    def random(cls, rng: np.random.Generator, thick_slice_probability: float = 0.3) -> Acquisition:
        in_plane = rng.uniform(0.8, 1.3)
        spacing = np.full(3, in_plane)
        if rng.random() < thick_slice_probability:
            spacing[rng.integers(3)] = rng.uniform(3.0, 6.0)  # e.g. 0.9 x 0.9 x 5 mm
        else:
            spacing *= rng.uniform(0.9, 1.1, 3)
        axcodes = _ORIENTATIONS[rng.integers(len(_ORIENTATIONS))]
        return cls(tuple(np.round(spacing, 2)), axcodes, float(rng.uniform(0.01, 0.04)), float(rng.uniform(0.0, 0.25)))


@cache
def priors() -> dict[str, Any]:
    return json.loads((resources.files("voxelprompt") / "data" / "synth" / "contrast_priors.json").read_text())


def label_means(contrast: str, rng: np.random.Generator) -> dict[int, float]:
    """Mean intensity of every base label: one draw per label from its tissue class's range."""
    table = priors()["means"][contrast]
    return {label.id: float(rng.uniform(*table[label.tissue])) for label in vocabulary.base_labels()}


def render(label_map: Volume, contrast: str, rng: np.random.Generator, acquisition: Acquisition | None = None,
           means: dict[int, float] | None = None) -> dict[str, Volume]:
    """Images of `contrast` (DWI also gives its ADC) from a label map, keyed by contrast.

    `means` fixes per-label means (e.g. to paint lesions with chosen signal); otherwise drawn.
    The label map's world space is kept: images land where the labels are.
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}; expected one of {', '.join(CONTRASTS)}")
    acquisition = acquisition or Acquisition.random(rng)
    if contrast in ("DWI", "ADC"):
        s0_means = means_or_drawn("S0", means, rng)
        adc_means = means_or_drawn("ADC", None, rng)
        s0 = _label_image(label_map, s0_means, "S0", rng)
        adc = _label_image(label_map, adc_means, "ADC", rng)
        adc = np.maximum(adc, 0.0)
        dwi = s0 * np.exp(-B_VALUE_S_PER_MM2 * adc * 1e-3)  # ADC in 10^-3 mm^2/s
        return {"DWI": _acquire(label_map.with_array(dwi), acquisition, rng, mri=True),
                "ADC": _acquire(label_map.with_array(adc), acquisition, rng, mri=False, noise=False)}
    image = _label_image(label_map, means_or_drawn(contrast, means, rng), contrast, rng)
    return {contrast: _acquire(label_map.with_array(image), acquisition, rng, mri=contrast != "CT",
                               ct=contrast == "CT")}


def means_or_drawn(contrast: str, means: dict[int, float] | None, rng: np.random.Generator) -> dict[int, float]:
    return dict(means) if means is not None else label_means(contrast, rng)


def _label_image(label_map: Volume, means: dict[int, float], contrast: str, rng: np.random.Generator) -> np.ndarray:
    ids = np.asarray(sorted(means))
    index = np.searchsorted(ids, label_map.array)
    index = np.clip(index, 0, len(ids) - 1)
    mean = np.asarray([means[i] for i in ids], np.float32)[index]
    if contrast == "CT":
        std = np.float32(rng.uniform(*priors()["ct_std_hu"]))
        noise = rng.standard_normal(label_map.shape, dtype=np.float32) * std
    else:
        fraction = np.float32(rng.uniform(*priors()["std_fraction"][contrast]))
        noise = rng.standard_normal(label_map.shape, dtype=np.float32) * fraction * np.abs(mean)
    # Partial volume: tissue boundaries are blurred at the scale of a fraction of a voxel.
    return ndimage.gaussian_filter(mean + noise, sigma=0.5 / label_map.spacing_mm)


def _acquire(image: Volume, acquisition: Acquisition, rng: np.random.Generator, *, mri: bool, ct: bool = False,
             noise: bool = True) -> Volume:
    data = image.array
    if mri and acquisition.bias_strength > 0:
        coarse = rng.normal(0, acquisition.bias_strength, (4, 4, 4))
        data = data * np.exp(upsample(coarse, data.shape)).astype(np.float32)
    # A voxel of the acquisition integrates over its extent: blur with FWHM ~ its size, then sample.
    target = image.grid.with_spacing(acquisition.spacing_mm)
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
