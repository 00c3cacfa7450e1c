"""Growing and shrinking masks by mm: the bounding-box shortcut against brute-force Euclidean distances."""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from voxelprompt.core.morphology import grown_mm, shell_mm

TIE_MM = 1e-6  # distances this close to the threshold could round either way; such examples are skipped


def nearest_mm(points: np.ndarray, targets: np.ndarray, spacing_mm: np.ndarray) -> np.ndarray:
    """For each voxel index in `points`, the Euclidean distance in mm to the nearest index in `targets`."""
    if len(targets) == 0:
        return np.full(len(points), np.inf)
    offsets = (points[:, None, :] - targets[None, :, :]) * spacing_mm
    return np.sqrt((offsets ** 2).sum(axis=-1)).min(axis=1)


def brute_force(mask: np.ndarray, spacing_mm: np.ndarray, distance_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The expected result of grown_mm, and the nearest distances it was decided on (for tie checks).
    Growing: every voxel within the distance of a mask voxel. Shrinking: every mask voxel farther
    than the distance from any voxel outside the mask, the ring just beyond the image included."""
    if distance_mm >= 0:
        points = np.argwhere(np.ones(mask.shape, bool))
        nearest = nearest_mm(points, np.argwhere(mask), spacing_mm)
        return (nearest <= distance_mm).reshape(mask.shape), nearest
    padded = np.pad(mask, 1)
    points = np.argwhere(mask)
    nearest = nearest_mm(points + 1, np.argwhere(~padded), spacing_mm)
    expected = np.zeros(mask.shape, bool)
    expected[tuple(points[nearest > -distance_mm].T)] = True
    return expected, nearest


shapes = st.tuples(*(st.integers(1, 6) for _ in range(3)))
masks = shapes.flatmap(lambda shape: arrays(bool, shape, elements=st.booleans()))
sparse_masks = shapes.flatmap(lambda shape: arrays(bool, shape, elements=st.sampled_from([False] * 4 + [True])))
spacings = st.tuples(*(st.floats(0.3, 3.0) for _ in range(3))).map(np.array)
distances = st.floats(-6.0, 6.0)


@settings(max_examples=50, deadline=None, database=None)
@given(mask=st.one_of(masks, sparse_masks), spacing_mm=spacings, distance_mm=distances)
def test_grown_mm_matches_brute_force_euclidean_distances(mask, spacing_mm, distance_mm):
    """Growing and shrinking on anisotropic grids agree voxel for voxel with pairwise distances in mm,
    so the bounding-box crop and the border padding lose nothing."""
    expected, nearest = brute_force(mask, spacing_mm, distance_mm)
    assume(not np.any(np.abs(nearest - abs(distance_mm)) < TIE_MM))
    np.testing.assert_array_equal(grown_mm(mask, spacing_mm, distance_mm), expected)


@settings(max_examples=50, deadline=None, database=None)
@given(mask=sparse_masks, spacing_mm=spacings, distance_mm=st.floats(0.0, 6.0))
def test_shell_mm_is_the_grown_mask_without_the_mask(mask, spacing_mm, distance_mm):
    """shell_mm never contains a mask voxel and is exactly the growth outside the mask."""
    shell = shell_mm(mask, spacing_mm, distance_mm)
    assert not np.any(shell & mask)
    np.testing.assert_array_equal(shell, grown_mm(mask, spacing_mm, distance_mm) & ~mask)


def test_growth_follows_the_voxel_size_on_each_axis():
    """One voxel grown by 3 mm on a 1 x 1 x 3 mm grid reaches 3 voxels in-plane and 1 slice."""
    mask = np.zeros((11, 11, 7), bool)
    mask[5, 5, 3] = True
    grown = grown_mm(mask, np.array([1.0, 1.0, 3.0]), 3.0)
    assert grown[2:9, 5, 3].all() and not grown[1, 5, 3] and not grown[9, 5, 3]
    assert grown[5, 5, 2:5].all() and not grown[5, 5, 1] and not grown[5, 5, 5]
    assert grown[7, 7, 3] and not grown[8, 7, 3]  # sqrt(8) <= 3 < sqrt(13)
    assert not grown[5, 6, 2]  # sqrt(1 + 9) > 3
    assert grown.sum() == 29 + 2  # a disc of radius 3 in the lesion's slice, one voxel above and below


def test_a_small_mask_in_a_large_image_matches_the_whole_image_transform():
    """The bounding-box shortcut gives the same ball as a distance transform of the whole image."""
    mask = np.zeros((48, 48, 32), bool)
    mask[30, 12, 20] = mask[31, 12, 20] = True
    spacing = np.array([0.8, 1.0, 2.5])
    for distance in (4.0, 10.0):
        whole = ndimage.distance_transform_edt(~mask, sampling=spacing) <= distance
        np.testing.assert_array_equal(grown_mm(mask, spacing, distance), whole)


def test_negative_distances_shrink_and_the_image_border_is_outside():
    """Shrinking removes the layers within the distance of the outside; a mask filling the image loses
    its voxels on the image border as if the outside continued beyond it."""
    full = np.ones((5, 5, 5), bool)
    shrunk = grown_mm(full, np.ones(3), -1.0)
    expected = np.zeros_like(full)
    expected[1:4, 1:4, 1:4] = True
    np.testing.assert_array_equal(shrunk, expected)
    np.testing.assert_array_equal(grown_mm(full, np.ones(3), -2.0), np.pad(np.ones((1, 1, 1), bool), 2))
    assert not grown_mm(full, np.ones(3), -3.0).any()
    np.testing.assert_array_equal(grown_mm(full, np.ones(3), -0.5), full)  # centres are 1 mm from the outside
    slab = np.zeros((6, 6, 6), bool)
    slab[:3] = True  # touches the image border on five faces
    np.testing.assert_array_equal(grown_mm(slab, np.ones(3), -1.0)[1:2, 1:5, 1:5], np.ones((1, 4, 4), bool))
    assert grown_mm(slab, np.ones(3), -1.0).sum() == 16
    thick_slices = grown_mm(full, np.array([1.0, 1.0, 3.0]), -2.0)  # 2 mm: two 1 mm layers, no 3 mm slice
    expected = np.zeros_like(full)
    expected[2, 2, :] = True
    np.testing.assert_array_equal(thick_slices, expected)


def test_empty_masks_stay_empty():
    """An empty mask grows and shrinks to nothing, and has no shell."""
    empty = np.zeros((4, 5, 6), bool)
    for distance in (-3.0, 0.0, 2.0, 50.0):
        result = grown_mm(empty, np.array([1.0, 2.0, 3.0]), distance)
        assert result.shape == empty.shape and result.dtype == bool and not result.any()
    assert not shell_mm(empty, np.ones(3), 5.0).any()


def test_zero_distance_and_shell_examples():
    """Growing by 0 mm is the mask itself; a shell of 1 mm around a voxel is its 6 face neighbours."""
    mask = np.zeros((5, 5, 5), bool)
    mask[2, 2, 2] = True
    np.testing.assert_array_equal(grown_mm(mask, np.ones(3), 0.0), mask)
    shell = shell_mm(mask, np.ones(3), 1.0)
    assert shell.sum() == 6 and not shell[2, 2, 2]
    assert shell_mm(mask.astype(np.uint8), np.ones(3), 1.0).sum() == 6  # integer masks are accepted
