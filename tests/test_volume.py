"""Tests for the image type (`Volume`/`Grid`), the exact map back to the original grid, and the
SimpleITK bridge in `voxelprompt.imaging.register`.

Conventions under test: `array[i, j, k]` sits at world position `affine @ (i, j, k, 1)` in RAS mm;
SimpleITK works in LPS mm, so a physical point there is the RAS point with x and y negated.
"""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from voxelprompt.imaging.preprocess import PreprocessRecord, to_original_grid
from voxelprompt.imaging.register import (
    from_sitk,
    read_transform,
    resample,
    rigid_transform_from_ras,
    to_sitk,
    transform_to_ras_matrix,
    write_transform,
)
from voxelprompt.core.volume import Grid, Volume

SHAPE = (7, 8, 9)
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


# --------------------------------------------------------------------------------------------------
# helpers


def signed_permutation_affine(perm, signs, spacing, offset) -> np.ndarray:
    """Voxel axis k points along world axis perm[k] with sign signs[k] and length spacing[k]."""
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for k in range(3):
        affine[perm[k], k] = signs[k] * spacing[k]
    affine[:3, 3] = offset
    return affine


def rotation_about_axis(axis: str, degrees: float) -> np.ndarray:
    return Rotation.from_euler(axis, degrees, degrees=True).as_matrix()


def rigid(rotation: np.ndarray, translation) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = translation
    return matrix


def all_indices(shape) -> np.ndarray:
    """(N, 3) integer voxel indices in C order."""
    return np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1).reshape(-1, 3)


def source_indices_at_same_world_position(source: Volume, target_affine: np.ndarray, target_shape) -> tuple:
    """For every target voxel (C order): the target indices and the source index at the same world
    position, asserting that this source position is an integer voxel."""
    target_idx = all_indices(target_shape)
    world = target_idx @ target_affine[:3, :3].T + target_affine[:3, 3]
    inverse = np.linalg.inv(source.affine)
    source_cont = world @ inverse[:3, :3].T + inverse[:3, 3]
    source_idx = np.round(source_cont).astype(int)
    np.testing.assert_allclose(source_cont, source_idx, atol=1e-6)
    return target_idx, source_idx


def random_volume(rng, affine, shape=SHAPE, dtype=np.float64) -> Volume:
    return Volume(rng.normal(size=shape).astype(dtype), affine)


def ras_to_lps(points) -> np.ndarray:
    return np.asarray(points, dtype=float) @ LPS_FROM_RAS.T


# Source grids used across tests: a plain LPS-like scan, a sagittal-like one, and a coronal one.
SOURCE_AFFINES = {
    "LPS": signed_permutation_affine((0, 1, 2), (-1, -1, 1), (0.9, 1.1, 1.3), (12.0, -5.0, 3.5)),
    "ASL": signed_permutation_affine((1, 2, 0), (1, 1, -1), (1.0, 2.0, 0.7), (-40.0, 22.0, 9.25)),
    "RIP": signed_permutation_affine((0, 2, 1), (1, -1, -1), (1.5, 0.8, 2.2), (0.0, 100.0, -30.0)),
}
TARGET_AXCODES = ["RAS", "LPS", "PIR", "ILA", "SAL", "LAI", "ARS"]


# --------------------------------------------------------------------------------------------------
# Volume.reoriented


@pytest.mark.parametrize("source_name", sorted(SOURCE_AFFINES))
@pytest.mark.parametrize("axcodes", TARGET_AXCODES)
def test_reoriented_preserves_world_position_of_every_voxel(source_name, axcodes):
    rng = np.random.default_rng(0)
    vol = random_volume(rng, SOURCE_AFFINES[source_name])
    assert vol.grid.axcodes == source_name

    out = vol.reoriented(axcodes)

    assert "".join(nib.aff2axcodes(out.affine)) == axcodes
    assert out.grid.axcodes == axcodes
    assert sorted(out.shape) == sorted(vol.shape)
    target_idx, source_idx = source_indices_at_same_world_position(vol, out.affine, out.shape)
    assert ((source_idx >= 0) & (source_idx < np.array(vol.shape))).all()
    np.testing.assert_array_equal(out.array[tuple(target_idx.T)], vol.array[tuple(source_idx.T)])
    np.testing.assert_allclose(out.spacing_mm[np.argsort(out.shape)], vol.spacing_mm[np.argsort(vol.shape)])


@pytest.mark.parametrize("source_name", sorted(SOURCE_AFFINES))
@pytest.mark.parametrize("axcodes", TARGET_AXCODES)
def test_reoriented_back_to_source_orientation_is_identity(source_name, axcodes):
    rng = np.random.default_rng(1)
    vol = random_volume(rng, SOURCE_AFFINES[source_name])

    back = vol.reoriented(axcodes).reoriented(source_name)

    assert back.shape == vol.shape
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, rtol=0, atol=1e-12)


def test_reoriented_to_own_orientation_keeps_array_and_affine():
    vol = random_volume(np.random.default_rng(2), SOURCE_AFFINES["ASL"])
    same = vol.reoriented("ASL")
    np.testing.assert_array_equal(same.array, vol.array)
    np.testing.assert_array_equal(same.affine, vol.affine)


# --------------------------------------------------------------------------------------------------
# Volume.cropped


def oblique_affine() -> np.ndarray:
    linear = Rotation.from_euler("xyz", [17, -8, 31], degrees=True).as_matrix() @ np.diag([1.2, 0.9, 1.7])
    return rigid(linear, (4.0, -7.5, 11.0))


@pytest.mark.parametrize(
    "affine",
    [SOURCE_AFFINES["LPS"], SOURCE_AFFINES["RIP"], oblique_affine()],
    ids=["LPS", "RIP", "oblique"],
)
@pytest.mark.parametrize(
    "start, stop",
    [
        ((1, 2, 3), (5, 7, 8)),  # inside
        ((0, 0, 0), SHAPE),  # whole array
        ((-2, 3, -1), (4, 11, 12)),  # partly beyond the array on both sides
        ((6, 7, 8), (7, 8, 9)),  # single voxel, last corner
    ],
)
def test_cropped_preserves_world_positions_and_pads_with_fill(affine, start, stop):
    vol = random_volume(np.random.default_rng(3), affine)
    fill = -7.25

    out = vol.cropped(start, stop, fill=fill)

    assert out.shape == tuple(b - a for a, b in zip(start, stop))
    target_idx, source_idx = source_indices_at_same_world_position(vol, out.affine, out.shape)
    np.testing.assert_array_equal(source_idx, target_idx + np.asarray(start))
    inside = ((source_idx >= 0) & (source_idx < np.array(vol.shape))).all(axis=1)
    values = out.array[tuple(target_idx.T)]
    np.testing.assert_array_equal(values[inside], vol.array[tuple(source_idx[inside].T)])
    assert (values[~inside] == fill).all()
    assert out.array.dtype == vol.array.dtype


def test_cropped_entirely_outside_is_all_fill():
    vol = random_volume(np.random.default_rng(4), SOURCE_AFFINES["LPS"])
    out = vol.cropped((20, 0, 0), (23, 2, 2), fill=5.0)
    assert out.shape == (3, 2, 2)
    assert (out.array == 5.0).all()


@pytest.mark.parametrize(
    "start, stop",
    [((0, 0, 0), (0, 8, 9)), ((2, 3, 4), (5, 3, 6)), ((3, 3, 3), (2, 5, 5))],
    ids=["zero-width-x", "zero-width-y", "negative-width"],
)
def test_cropped_empty_box_raises(start, stop):
    vol = random_volume(np.random.default_rng(5), SOURCE_AFFINES["LPS"])
    with pytest.raises(ValueError, match="empty crop box"):
        vol.cropped(start, stop)


# --------------------------------------------------------------------------------------------------
# Volume.resampled_to


@pytest.mark.parametrize("order", [0, 1, 3])
@pytest.mark.parametrize("axcodes", ["PIR", "LPS", "SAL"])
@pytest.mark.parametrize("shift", [(0, 0, 0), (2, -3, 1), (-1, 4, -5), (40, 0, -2)])  # the last: no overlap
def test_resampled_to_permuted_shifted_grid_is_exact_copy(order, axcodes, shift):
    """Non-integer float values survive unchanged whatever the order: no interpolation happens."""
    vol = random_volume(np.random.default_rng(6), SOURCE_AFFINES["ASL"], dtype=np.float32)
    reoriented = vol.reoriented(axcodes)
    translate = np.eye(4)
    translate[:3, 3] = shift
    grid = Grid(reoriented.shape, reoriented.affine @ translate)

    out = vol.resampled_to(grid, order=order, fill=-99.0)

    assert out.shape == grid.shape
    np.testing.assert_array_equal(out.affine, grid.affine)
    assert out.array.dtype == np.float32
    target_idx, source_idx = source_indices_at_same_world_position(vol, grid.affine, grid.shape)
    inside = ((source_idx >= 0) & (source_idx < np.array(vol.shape))).all(axis=1)
    values = out.array[tuple(target_idx.T)]
    np.testing.assert_array_equal(values[inside], vol.array[tuple(source_idx[inside].T)])
    assert (values[~inside] == -99.0).all()


def linear_ramp(shape, coefficients=(1.5, -2.25, 0.75), constant=10.0) -> np.ndarray:
    i, j, k = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in shape), indexing="ij")
    a, b, c = coefficients
    return a * i + b * j + c * k + constant


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_resampled_to_half_voxel_shift_order1_is_mean_of_neighbours(axis):
    vol = Volume(linear_ramp(SHAPE), SOURCE_AFFINES["RIP"])
    half = np.eye(4)
    half[axis, 3] = 0.5
    grid = Grid(SHAPE, vol.affine @ half)

    out = vol.resampled_to(grid, order=1)

    lower = [slice(None)] * 3
    upper = [slice(None)] * 3
    lower[axis] = slice(0, -1)
    upper[axis] = slice(1, None)
    expected = (vol.array[tuple(lower)] + vol.array[tuple(upper)]) / 2
    np.testing.assert_allclose(out.array[tuple(lower)], expected, rtol=0, atol=1e-9)
    # Every value moved by half a step of the ramp: the grid really was shifted.
    assert (np.abs(out.array[tuple(lower)] - vol.array[tuple(lower)]) > 0.3).all()


def test_resampled_to_fractional_oblique_shift_order1_is_exact_on_linear_ramp():
    """Trilinear interpolation reproduces a linear function exactly at any fractional position."""
    vol = Volume(linear_ramp(SHAPE), SOURCE_AFFINES["LPS"])
    shift = np.eye(4)
    shift[:3, 3] = (0.3, 0.5, 0.8)
    grid = Grid((6, 7, 8), vol.affine @ shift)

    out = vol.resampled_to(grid, order=1)

    i, j, k = np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij")
    expected = 1.5 * (i + 0.3) - 2.25 * (j + 0.5) + 0.75 * (k + 0.8) + 10.0
    np.testing.assert_allclose(out.array, expected, rtol=0, atol=1e-9)


def test_resampled_to_rotated_grid_order0_keeps_only_source_labels():
    rng = np.random.default_rng(7)
    labels = np.array([0, 3, 7, 11, 250], dtype=np.uint8)
    vol = Volume(rng.choice(labels, size=SHAPE), SOURCE_AFFINES["LPS"])
    centre = vol.grid.world_coordinates_mm(((np.array(SHAPE) - 1) / 2)[None])[0]
    rotation = Rotation.from_euler("xyz", [30, -20, 12], degrees=True).as_matrix()
    about_centre = rigid(rotation, centre - rotation @ centre)
    grid = Grid(SHAPE, about_centre @ vol.affine)

    nearest = vol.resampled_to(grid, order=0)
    linear = vol.resampled_to(grid, order=1)

    assert nearest.array.dtype == np.uint8
    assert set(np.unique(nearest.array)) <= set(labels.tolist())
    assert len(np.unique(nearest.array)) >= 3  # labels were really carried over, not just fill
    # The grid is a genuine rotation: linear interpolation on it does invent values.
    assert not set(np.unique(linear.array)) <= set(labels.tolist())


# --------------------------------------------------------------------------------------------------
# Volume.resampled_to_spacing


def fov_centre_world(volume: Volume) -> np.ndarray:
    return volume.grid.world_coordinates_mm(((np.asarray(volume.shape) - 1) / 2)[None])[0]


@pytest.mark.parametrize(
    "shape, old_spacing, new_spacing",
    [
        ((8, 6, 10), (1.0, 1.5, 2.0), (2.0, 3.0, 4.0)),  # every extent a whole number of new voxels
        ((8, 6, 10), (1.0, 1.5, 2.0), (0.5, 0.75, 1.0)),
        ((8, 6, 10), (1.0, 1.5, 2.0), 1.0),
        ((7, 8, 9), (1.0, 1.0, 1.0), 2.0),  # 7 mm / 2 mm and 9 mm / 2 mm round
        ((7, 8, 9), (0.9, 1.1, 1.3), 1.7),
        ((7, 8, 9), (1.2, 0.8, 2.5), (0.7, 2.9, 1.1)),
    ],
)
@pytest.mark.parametrize("orientation", ["LPS", "ASL"])
def test_resampled_to_spacing_keeps_extent_and_centre(shape, old_spacing, new_spacing, orientation):
    base = SOURCE_AFFINES[orientation]
    perm = np.argmax(np.abs(base[:3, :3]), axis=0)
    signs = np.sign(base[perm, np.arange(3)])
    affine = signed_permutation_affine(perm, signs, old_spacing, base[:3, 3])
    vol = Volume(linear_ramp(shape), affine)

    out = vol.resampled_to_spacing(new_spacing, order=1)

    expected_spacing = np.broadcast_to(np.asarray(new_spacing, dtype=float), (3,))
    np.testing.assert_allclose(out.spacing_mm, expected_spacing, rtol=1e-12)
    assert out.grid.axcodes == vol.grid.axcodes
    extent_old = np.asarray(vol.shape) * vol.spacing_mm
    extent_new = np.asarray(out.shape) * out.spacing_mm
    assert (np.abs(extent_new - extent_old) <= out.spacing_mm + 1e-9).all()
    np.testing.assert_allclose(fov_centre_world(out), fov_centre_world(vol), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# The key guarantee: RAS + crop, then back onto the original grid, is exact.


def _record_for(vol: Volume, cropped: Volume, start, stop) -> PreprocessRecord:
    return PreprocessRecord(
        source="synthetic",
        modality="T1w",
        original_grid=vol.grid.to_dict(),
        original_axcodes=vol.grid.axcodes,
        preprocessed_grid=cropped.grid.to_dict(),
        crop_start_voxels=list(start),
        crop_stop_voxels=list(stop),
        crop_margin_mm=20.0,
        intensity_low=0.0,
        intensity_high=1.0,
        intensity_percentiles=[0.5, 99.5],
        intensity_unit="arbitrary",
        head_volume_mm3=0.0,
        cranial_cavity_volume_mm3=0.0,
        cranial_cavity_method="head-mask",
        template_from_image_ras=None,
    )


@st.composite
def oriented_volume_and_crop(draw):
    shape = tuple(draw(st.integers(3, 12)) for _ in range(3))
    perm = draw(st.permutations([0, 1, 2]))
    signs = [draw(st.sampled_from([-1, 1])) for _ in range(3)]
    spacing = [draw(st.floats(0.5, 3.0, allow_nan=False, allow_infinity=False)) for _ in range(3)]
    offset = [draw(st.floats(-200.0, 200.0, allow_nan=False, allow_infinity=False)) for _ in range(3)]
    seed = draw(st.integers(0, 2**32 - 1))
    affine = signed_permutation_affine(perm, signs, spacing, offset)
    # Voxel values are never 0, so "0 outside the crop" cannot be satisfied by accident.
    array = np.random.default_rng(seed).uniform(1.0, 2.0, size=shape).astype(np.float32)
    vol = Volume(array, affine)
    ras_shape = [shape[perm.index(world_axis)] for world_axis in range(3)]
    start, stop = [], []
    for n in ras_shape:
        a = draw(st.integers(0, n - 1))
        start.append(a)
        stop.append(draw(st.integers(a + 1, n)))
    return vol, tuple(start), tuple(stop)


@settings(max_examples=50, deadline=None)
@given(oriented_volume_and_crop())
def test_ras_crop_then_back_to_original_grid_is_exact(case):
    vol, start, stop = case
    ras = vol.reoriented("RAS")
    assert ras.grid.axcodes == "RAS"
    cropped = ras.cropped(start, stop)

    back = cropped.resampled_to(vol.grid, order=0)
    via_record = to_original_grid(cropped, _record_for(vol, cropped, start, stop))

    # Which original voxels fall in the crop box (computed independently, through world space).
    original_idx, ras_idx = source_indices_at_same_world_position(ras, vol.affine, vol.shape)
    in_box = ((ras_idx >= np.array(start)) & (ras_idx < np.array(stop))).all(axis=1).reshape(vol.shape)
    expected = np.where(in_box, vol.array, 0).astype(vol.array.dtype)
    assert in_box.sum() == np.prod(np.subtract(stop, start))

    for result in (back, via_record):
        assert result.shape == vol.shape
        np.testing.assert_array_equal(result.affine, vol.affine)
        assert result.array.dtype == vol.array.dtype
        np.testing.assert_array_equal(result.array, expected)


# --------------------------------------------------------------------------------------------------
# SimpleITK bridge


SITK_AFFINES = {
    "LPS": signed_permutation_affine((0, 1, 2), (-1, -1, 1), (0.9, 1.1, 1.3), (12.0, -5.0, 3.5)),
    "RAS": signed_permutation_affine((0, 1, 2), (1, 1, 1), (1.0, 1.0, 2.0), (-90.0, -126.0, -72.0)),
    "oblique": oblique_affine(),
    "oblique-sagittal": rigid(rotation_about_axis("y", 7.0), (0, 0, 0)) @ SOURCE_AFFINES["ASL"],
}


@pytest.mark.parametrize("name", sorted(SITK_AFFINES))
def test_to_sitk_from_sitk_round_trip(name):
    vol = random_volume(np.random.default_rng(8), SITK_AFFINES[name], dtype=np.float32)

    image = to_sitk(vol)
    back = from_sitk(image)

    assert image.GetSize() == vol.shape
    assert back.shape == vol.shape
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SITK_AFFINES))
def test_to_sitk_index_to_physical_point_is_lps_of_affine(name):
    vol = random_volume(np.random.default_rng(9), SITK_AFFINES[name])
    image = to_sitk(vol)
    corners = list(itertools.product(*[(0, n - 1) for n in vol.shape]))
    for index in corners + [(3, 1, 5), (2, 7, 0)]:
        ras = vol.affine @ np.array([*index, 1.0])
        physical = np.asarray(image.TransformIndexToPhysicalPoint(tuple(int(v) for v in index)))
        np.testing.assert_allclose(physical, ras_to_lps(ras[:3]), rtol=0, atol=1e-6)
        # and the voxel value sits where the index says
        assert image.GetPixel(*(int(v) for v in index)) == pytest.approx(vol.array[index])


def random_rigid(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rigid(Rotation.random(random_state=seed).as_matrix(), rng.uniform(-30, 30, size=3))


RIGID_MATRICES = {
    **{f"random{seed}": random_rigid(seed) for seed in range(4)},
    "z90": rigid(rotation_about_axis("z", 90.0), (3.0, -4.0, 5.0)),
    "x-90": rigid(rotation_about_axis("x", -90.0), (0.0, 7.0, -2.0)),
    # Rotations that carry RAS y onto +z (matrix[2, 1] == 1): the gimbal lock of ITK's Euler angles.
    "z90-after-x90": rigid(rotation_about_axis("z", 90.0) @ rotation_about_axis("x", 90.0), (3.0, -4.0, 5.0)),
    "zxy-30-90-20": rigid(Rotation.from_euler("ZXY", [30, 90, 20], degrees=True).as_matrix(), (1.0, 2.0, 3.0)),
}


@pytest.mark.parametrize("name", sorted(RIGID_MATRICES))
@pytest.mark.parametrize("centre", [(0.0, 0.0, 0.0), (12.5, -40.0, 7.0), (-150.0, 90.0, 300.0)])
def test_rigid_transform_from_ras_round_trips_through_ras_matrix(name, centre):
    matrix = RIGID_MATRICES[name]
    transform = rigid_transform_from_ras(matrix, np.asarray(centre))

    np.testing.assert_allclose(transform_to_ras_matrix(transform), matrix, rtol=0, atol=1e-6)
    # Independently of transform_to_ras_matrix: ITK maps LPS points as the RAS matrix maps RAS ones.
    for point in [(0.0, 0.0, 0.0), (10.0, -3.0, 25.0), centre]:
        expected = matrix[:3, :3] @ np.asarray(point) + matrix[:3, 3]
        mapped = np.asarray(transform.TransformPoint(tuple(ras_to_lps(point).tolist())))
        np.testing.assert_allclose(mapped, ras_to_lps(expected), rtol=0, atol=1e-6)


def test_rigid_transform_from_ras_removes_scale_but_keeps_the_centre_target():
    rotation = Rotation.from_euler("xyz", [10, -5, 20], degrees=True).as_matrix()
    similarity = rigid(1.2 * rotation, (5.0, -2.0, 8.0))
    centre = np.array([10.0, 20.0, -30.0])

    transform = rigid_transform_from_ras(similarity, centre)
    got = transform_to_ras_matrix(transform)

    np.testing.assert_allclose(got[:3, :3], rotation, atol=1e-6)
    np.testing.assert_allclose(
        got[:3, :3] @ centre + got[:3, 3], similarity[:3, :3] @ centre + similarity[:3, 3], atol=1e-6
    )


@pytest.mark.parametrize(
    "linear",
    [np.diag([-1.0, 1.0, 1.0]), np.diag([1.0, 1.0, -1.0]), -rotation_about_axis("z", 30.0)],
    ids=["flip-x", "flip-z", "minus-rotation"],
)
def test_rigid_transform_from_ras_rejects_reflection(linear):
    with pytest.raises(ValueError, match="reflection"):
        rigid_transform_from_ras(rigid(linear, (1.0, 2.0, 3.0)), np.zeros(3))


@pytest.mark.parametrize(
    "rotation",
    [
        rotation_about_axis("z", 90.0),
        rotation_about_axis("x", -90.0),
        rotation_about_axis("y", 180.0),
        rotation_about_axis("z", 90.0) @ rotation_about_axis("x", 90.0),
    ],
    ids=["z90", "x-90", "y180", "z90x90"],
)
def test_resample_through_rigid_transform_recovers_moved_volume(rotation):
    rng = np.random.default_rng(10)
    affine = SOURCE_AFFINES["LPS"]
    array = rng.uniform(1.0, 2.0, size=SHAPE).astype(np.float32)
    vol = Volume(array, affine)
    centre = fov_centre_world(vol)
    matrix = rigid(rotation, (3.0, -4.0, 5.0))  # fixed (vol) RAS -> moving RAS
    moved = Volume(array, matrix @ affine)

    out = resample(moved, vol.grid, rigid_transform_from_ras(matrix, centre), nearest=True)

    assert out.shape == vol.shape
    np.testing.assert_allclose(out.affine, vol.affine, atol=1e-6)
    interior = (slice(1, -1),) * 3
    np.testing.assert_array_equal(out.array[interior], array[interior])
    # Sanity: the moved volume really is elsewhere; the identity transform does not recover it.
    identity = rigid_transform_from_ras(np.eye(4), centre)
    not_aligned = resample(moved, vol.grid, identity, nearest=True)
    assert not np.array_equal(not_aligned.array[interior], array[interior])


@pytest.mark.parametrize("name", ["transform.txt", "nested/dir/transform.tfm"])
def test_write_read_transform_round_trip(tmp_path, name):
    matrix = random_rigid(11)
    centre = np.array([5.0, -12.0, 30.0])
    transform = rigid_transform_from_ras(matrix, centre)
    path = tmp_path / name

    written = write_transform(transform, path)

    assert written == path
    assert path.read_text().splitlines()[0].startswith("#Insight Transform File")
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left behind
    loaded = read_transform(path)
    assert isinstance(loaded, sitk.VersorRigid3DTransform)
    np.testing.assert_allclose(loaded.GetParameters(), transform.GetParameters(), atol=1e-9)
    np.testing.assert_allclose(loaded.GetFixedParameters(), transform.GetFixedParameters(), atol=1e-9)
    np.testing.assert_allclose(transform_to_ras_matrix(loaded), matrix, atol=1e-6)
    for point in [(0.0, 0.0, 0.0), (17.0, -8.0, 4.0)]:
        np.testing.assert_allclose(loaded.TransformPoint(point), transform.TransformPoint(point), atol=1e-9)
