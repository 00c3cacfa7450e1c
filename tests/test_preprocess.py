"""Preprocessing on real brain images: RAS, crop around the cranial cavity, [0, 1], exact map-back."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest
from conftest import dice, inverted_contrast

from voxelprompt.imaging.preprocess import (
    CROP_MARGIN_MM,
    PreprocessRecord,
    initial_alignment,
    normalise,
    preprocess,
    robust_range,
    to_original_grid,
)
from voxelprompt.core.volume import Volume


def _margins_mm(result, brain_on_input: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Distance from the brain's bounding box to the crop box, per side, in the RAS array."""
    brain_ras = brain_on_input.reoriented("RAS")
    indices = np.argwhere(brain_ras.array > 0)
    start = np.asarray(result.record.crop_start_voxels)
    stop = np.asarray(result.record.crop_stop_voxels)
    low = (indices.min(axis=0) - start) * brain_ras.spacing_mm
    high = (stop - indices.max(axis=0) - 1) * brain_ras.spacing_mm
    return low, high


@pytest.mark.parametrize("axcodes", ["LPS", "PIR"])
def test_real_t1_in_any_orientation_comes_out_ras_cropped_and_normalised(mni_t1, mni_brain, axcodes):
    scan = mni_t1.reoriented(axcodes)
    brain = mni_brain.reoriented(axcodes)
    result = preprocess(scan, "T1w", source="scan.nii.gz")

    assert nib.aff2axcodes(result.image.affine) == ("R", "A", "S")
    assert result.record.original_axcodes == axcodes
    assert result.image.array.min() == 0.0 and result.image.array.max() == 1.0
    assert result.cranial_cavity.grid.is_same(result.image.grid)

    # The whole brain is inside the crop, with about the 20 mm margin wherever the scan has room.
    back = to_original_grid(result.image.with_array(np.ones(result.image.shape, np.uint8)), result.record)
    assert back.array[brain.array > 0].all()
    low, high = _margins_mm(result, brain)
    room = np.concatenate([low, high])
    assert ((room > CROP_MARGIN_MM - 5) & (room < CROP_MARGIN_MM + 5) | (room <= 1)).all(), room


def test_mapping_back_is_exact_for_masks_on_the_preprocessed_grid(mni_t1):
    scan = mni_t1.reoriented("PIR")
    result = preprocess(scan, "T1w")
    back = to_original_grid(result.cranial_cavity, result.record)

    assert back.shape == scan.shape
    np.testing.assert_array_equal(back.affine, scan.affine)
    # The image itself round-trips voxel for voxel inside the crop: no interpolation anywhere.
    image_back = to_original_grid(result.image, result.record).array
    inside = to_original_grid(result.image.with_array(np.ones(result.image.shape, np.uint8)), result.record).array > 0
    expected = normalise(scan.array, result.record.intensity_low, result.record.intensity_high)
    np.testing.assert_array_equal(image_back[inside], expected[inside])
    assert (image_back[~inside] == 0).all()


@pytest.mark.parametrize(
    ("contrast", "modality", "min_dice"),
    [("t1", "T1w", 0.95), ("inverted", "T2w", 0.95), ("flair", "FLAIR", 0.85), ("ct", "CT", 0.92)],
)
def test_cranial_cavity_is_found_in_any_contrast(mni_t1, mni_brain, mean_flair, mni_ct, contrast, modality, min_dice):
    scan = {"t1": mni_t1, "inverted": inverted_contrast(mni_t1), "flair": mean_flair, "ct": mni_ct}[contrast]
    result = preprocess(scan, modality)
    cavity = to_original_grid(result.cranial_cavity, result.record)
    brain = mni_brain.resampled_to(scan.grid, order=0)

    assert result.record.cranial_cavity_method == "template"
    assert dice(cavity.array, brain.array) > min_dice
    assert 1300e3 < result.record.cranial_cavity_volume_mm3 < 2300e3


def test_ct_keeps_hounsfield_units_recoverable(mni_ct, mni_brain):
    ct = mni_ct
    result = preprocess(ct, "CT")
    record = result.record

    assert record.intensity_unit == "HU"
    back = to_original_grid(result.image, record).array
    brain = (mni_brain.array > 0) & (ct.array == 30.0)
    raw = record.intensity_low + back[brain] * (record.intensity_high - record.intensity_low)
    np.testing.assert_allclose(raw, 30.0, atol=1e-3)


def test_a_long_neck_in_the_field_of_view_is_cropped_away(mni_t1, mni_brain):
    """80 mm of extra tissue below the head: the crop follows the cranial cavity, not the head mask."""
    neck_mm = 80
    below = np.repeat(mni_t1.array[:, :, :1], neck_mm, axis=2)
    affine = mni_t1.affine.copy()
    affine[2, 3] -= neck_mm
    scan = Volume(np.concatenate([below, mni_t1.array], axis=2), affine)
    brain = Volume(np.concatenate([np.zeros_like(mni_brain.array[:, :, :neck_mm]), mni_brain.array], axis=2), affine)

    result = preprocess(scan, "T1w")
    low, _ = _margins_mm(result, brain)

    assert low[2] < CROP_MARGIN_MM + 5  # not the 80 mm of neck
    assert result.image.shape[2] < scan.shape[2] - neck_mm + 15


def test_an_image_that_is_not_a_head_falls_back_to_the_head_mask_with_a_warning():
    data = np.zeros((60, 60, 60), np.float32)
    data[20:40, 20:40, 20:40] = 100.0 + np.arange(20)[None, None, :]  # a small cube, ~8 mL at 1 mm
    with pytest.warns(UserWarning, match="head mask"):
        result = preprocess(Volume(data, np.eye(4)), "T1w")
    assert result.record.cranial_cavity_method == "head-mask"
    assert result.record.template_from_image_ras is None


def test_record_round_trips_through_a_dict(mni_t1_2mm):
    record = preprocess(mni_t1_2mm, "T1w").record
    assert PreprocessRecord.from_dict(record.to_dict()) == record


def test_template_fits_give_a_starting_alignment_between_two_scans(mni_t1_2mm):
    moved = Volume(mni_t1_2mm.array, _rotation_z(10.0, shift_mm=(8, -5, 3)) @ mni_t1_2mm.affine)
    start = initial_alignment(preprocess(mni_t1_2mm, "T1w").record, preprocess(moved, "T1w").record)
    # Within a few mm of the true motion at the head's centre: a good start for mutual information.
    centre = np.array([0.0, -18.0, 18.0, 1.0])
    assert np.linalg.norm((start @ centre)[:3] - (_rotation_z(10.0, (8, -5, 3)) @ centre)[:3]) < 5.0


def test_robust_range_ignores_outliers_and_handles_near_constant_images():
    data = np.concatenate([np.linspace(0, 100, 10_000), [1e6]]).astype(np.float32)
    low, high = robust_range(data, np.ones(data.shape, bool))
    assert high < 200
    # Over 99.5 % of one value: the percentiles coincide, so the full range is used instead.
    almost_constant = np.zeros(1001, np.float32)
    almost_constant[-1] = 7
    assert robust_range(almost_constant, np.ones(1001, bool)) == (0.0, 7.0)


def test_unknown_modality_is_refused(mni_t1_2mm):
    with pytest.raises(ValueError, match="unknown modality"):
        preprocess(mni_t1_2mm, "X-ray")


def _rotation_z(degrees: float, shift_mm: tuple[float, float, float]) -> np.ndarray:
    angle = np.deg2rad(degrees)
    matrix = np.eye(4)
    matrix[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    matrix[:3, 3] = shift_mm
    return matrix


def test_warnings_are_not_raised_for_a_normal_head(mni_t1_2mm):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preprocess(mni_t1_2mm, "T1w")
