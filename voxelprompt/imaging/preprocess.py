"""Preprocessing (paper §4.3): RAS orientation, a crop to 20 mm around the cranial cavity, and
intensities normalised to [0, 1].

Nothing here interpolates: reorientation and cropping are exact voxel copies, so the record written
beside each output maps any array on the preprocessed grid back onto the original scan exactly.

The cranial cavity is found without assuming a contrast: a head mask from the air/tissue boundary
(air is dark in every MRI contrast and -1000 HU in CT), then a small MNI152 template with its
cranial-cavity mask aligned to the head by a similarity transform under mutual information. The
template's mask keeps the crop from following a long neck or shoulders into the field of view.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

import numpy as np
from scipy import ndimage

from voxelprompt import __version__
from voxelprompt.core.io import load_volume
from voxelprompt.core.volume import Grid, Volume
from voxelprompt.imaging.register import RegistrationSettings, register, resample

MODALITIES = ("T1w", "T2w", "FLAIR", "PDw", "DWI", "ADC", "CT")

CROP_MARGIN_MM = 20.0
LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
# Air in CT is -1000 HU, fat about -100 HU: anything above -500 HU is patient (or table, removed
# by keeping the largest component).
CT_HEAD_THRESHOLD_HU = -500.0
# MRI: tissue lies above 10 % of the robust range (the rule BET uses for its t2/t98 threshold).
MRI_HEAD_FRACTION = 0.10
# A cranial cavity outside this range means the template alignment failed; the head mask is used.
PLAUSIBLE_CAVITY_ML = (500.0, 2600.0)
CAVITY_TEMPLATE_SPACING_MM = 3.0


@dataclass(frozen=True)
class PreprocessRecord:
    """Everything needed to map preprocessed outputs back and to recover raw intensities."""

    source: str
    modality: str
    original_grid: dict[str, Any]
    original_axcodes: str
    preprocessed_grid: dict[str, Any]
    crop_start_voxels: list[int]  # in the RAS-reoriented array
    crop_stop_voxels: list[int]
    crop_margin_mm: float
    intensity_low: float  # raw value mapped to 0 (raw = low + x * (high - low) inside the range)
    intensity_high: float  # raw value mapped to 1
    intensity_percentiles: list[float]
    intensity_unit: str
    head_volume_mm3: float
    cranial_cavity_volume_mm3: float
    cranial_cavity_method: str  # "template" or "head-mask" (fallback)
    template_from_image_ras: list[list[float]] | None  # 4x4 similarity, image RAS -> MNI152 RAS
    voxelprompt_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessRecord:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Preprocessed:
    image: Volume  # normalised, RAS, cropped
    cranial_cavity: Volume  # uint8 mask on the same grid
    record: PreprocessRecord


def preprocess(volume: Volume, modality: str, source: str = "") -> Preprocessed:
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    ras = volume.reoriented("RAS")
    head = head_mask(ras, modality)
    cavity, method, template_fit = cranial_cavity_mask(ras, head)

    start, stop = crop_box(cavity, ras.spacing_mm, CROP_MARGIN_MM)
    cropped = ras.cropped(start, stop)
    cropped_head = ras.with_array(head).cropped(start, stop).array
    low, high = robust_range(cropped.array, cropped_head)
    image = cropped.with_array(normalise(cropped.array, low, high))
    cavity_cropped = ras.with_array(cavity.astype(np.uint8)).cropped(start, stop)

    record = PreprocessRecord(
        source=str(source),
        modality=modality,
        original_grid=volume.grid.to_dict(),
        original_axcodes=volume.grid.axcodes,
        preprocessed_grid=image.grid.to_dict(),
        crop_start_voxels=[int(v) for v in start],
        crop_stop_voxels=[int(v) for v in stop],
        crop_margin_mm=CROP_MARGIN_MM,
        intensity_low=low,
        intensity_high=high,
        intensity_percentiles=[LOW_PERCENTILE, HIGH_PERCENTILE],
        intensity_unit="HU" if modality == "CT" else "arbitrary",
        head_volume_mm3=float(head.sum() * ras.voxel_volume_mm3),
        cranial_cavity_volume_mm3=float(cavity.sum() * ras.voxel_volume_mm3),
        cranial_cavity_method=method,
        template_from_image_ras=None if template_fit is None else template_fit.tolist(),
    )
    return Preprocessed(image=image, cranial_cavity=cavity_cropped, record=record)


def to_original_grid(volume: Volume, record: PreprocessRecord) -> Volume:
    """Map an array on the preprocessed grid (e.g. a mask) back onto the original scan, exactly."""
    return volume.resampled_to(Grid.from_dict(record.original_grid), order=0)


def initial_alignment(reference: PreprocessRecord, moving: PreprocessRecord) -> np.ndarray | None:
    """Reference RAS -> moving RAS through the template both were aligned to, or None.

    This starts co-registration near the answer whatever the contrasts, so that mutual
    information only has to refine it (large motions between a T1w and a FLAIR otherwise trap it).
    """
    if reference.template_from_image_ras is None or moving.template_from_image_ras is None:
        return None
    to_template = np.asarray(reference.template_from_image_ras)
    from_template = np.linalg.inv(np.asarray(moving.template_from_image_ras))
    return from_template @ to_template


def head_mask(volume: Volume, modality: str) -> np.ndarray:
    """Boolean mask of the head (or of whatever is not air, for skull-stripped inputs)."""
    data = volume.array
    if modality == "CT":
        threshold = CT_HEAD_THRESHOLD_HU
    else:
        p2, p98 = np.percentile(data, [2, 98])
        threshold = p2 + MRI_HEAD_FRACTION * (p98 - p2)
    mask = data > threshold
    radius_voxels = np.maximum(1, np.round(3.0 / volume.spacing_mm)).astype(int)
    speckle_voxels = np.maximum(1, radius_voxels // 2)
    mask = _largest_component(_dilate(_erode(mask, speckle_voxels), speckle_voxels))
    # Pad before closing so that tissue touching the edge of the field of view is not eroded.
    pad = [(r, r) for r in radius_voxels]
    closed = _erode(_dilate(np.pad(mask, pad), radius_voxels), radius_voxels)
    mask = closed[tuple(slice(r, -r) for r in radius_voxels)]
    return _fill_holes(mask)


def cranial_cavity_mask(volume: Volume, head: np.ndarray) -> tuple[np.ndarray, str, np.ndarray | None]:
    """The cranial cavity on `volume`'s grid, how it was obtained ("template" or "head-mask"), and
    the template alignment (image RAS -> template RAS) when there is one."""
    template, template_cavity = _cavity_template()
    small = volume.with_array(ndimage.gaussian_filter(volume.array, 0.4 * CAVITY_TEMPLATE_SPACING_MM / volume.spacing_mm))
    small = small.resampled_to_spacing(CAVITY_TEMPLATE_SPACING_MM)
    small_head = volume.with_array(head.astype(np.float32)).resampled_to(small.grid).array > 0.5
    settings = RegistrationSettings(shrink_factors=(2, 1), smoothing_sigmas_mm=(6.0, 3.0), sampling_fraction=0.5)
    try:
        fit = register(small, template, fixed_mask=small.with_array(ndimage.binary_dilation(small_head, iterations=2)),
                       kind="similarity", settings=settings)
    except RuntimeError as error:  # ITK reports a failed optimisation as RuntimeError
        warnings.warn(f"cranial-cavity template alignment failed ({error}); using the head mask", stacklevel=2)
        return head, "head-mask", None
    cavity = resample(template_cavity, volume.grid, fit.transform).array > 0.5
    # The cavity cannot extend beyond the head; allow a few mm for template/head disagreement.
    cavity &= _dilate(head, np.maximum(1, np.round(5.0 / volume.spacing_mm)).astype(int))
    volume_ml = cavity.sum() * volume.voxel_volume_mm3 / 1000
    if not PLAUSIBLE_CAVITY_ML[0] <= volume_ml <= PLAUSIBLE_CAVITY_ML[1]:
        warnings.warn(f"cranial-cavity estimate of {volume_ml:.0f} mL is implausible; using the head mask", stacklevel=2)
        return head, "head-mask", None
    return cavity, "template", fit.ras_matrix


def crop_box(mask: np.ndarray, spacing_mm: np.ndarray, margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Voxel box [start, stop) around `mask` plus `margin_mm`, clipped to the array."""
    indices = np.argwhere(mask)
    if len(indices) == 0:
        return np.zeros(3, dtype=int), np.asarray(mask.shape)
    margin = np.ceil(margin_mm / np.asarray(spacing_mm)).astype(int)
    start = np.maximum(indices.min(axis=0) - margin, 0)
    stop = np.minimum(indices.max(axis=0) + 1 + margin, mask.shape)
    return start, stop


def robust_range(data: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    values = data[mask] if mask.any() else data.ravel()
    low, high = np.percentile(values, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if high <= low:  # e.g. a binary-looking image: fall back to the full range
        low, high = float(values.min()), float(values.max())
    return float(low), float(high)


def normalise(data: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((data - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _cavity_template() -> tuple[Volume, Volume]:
    folder = resources.files("voxelprompt") / "data" / "templates"
    with resources.as_file(folder) as path:
        return load_volume(path / "mni152_T1w_3mm.nii.gz"), load_volume(path / "mni152_cranialcavity_3mm.nii.gz")


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == np.argmax(sizes)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """3D fill, then slice-wise along each axis to close cavities open to the outside (ear canals)."""
    mask = ndimage.binary_fill_holes(mask)
    for axis in range(3):
        mask = np.stack([ndimage.binary_fill_holes(s) for s in np.moveaxis(mask, axis, 0)], axis=axis)
    return mask


def _dilate(mask: np.ndarray, radius_voxels: np.ndarray) -> np.ndarray:
    """Dilation by a box; a separable maximum filter is ~20x faster than binary_dilation here."""
    return ndimage.maximum_filter(mask, size=tuple(2 * np.asarray(radius_voxels) + 1), mode="constant", cval=0)


def _erode(mask: np.ndarray, radius_voxels: np.ndarray) -> np.ndarray:
    return ndimage.minimum_filter(mask, size=tuple(2 * np.asarray(radius_voxels) + 1), mode="constant", cval=1)
