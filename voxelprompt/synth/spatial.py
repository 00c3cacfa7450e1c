"""Random spatial variation of an anatomy: a global affine and a smooth non-linear deformation, and
the left-right mirror image of an anatomy (paper §4.3: flips that swap left and right labels).

A deformed label map is the ground truth of one synthetic subject; every image of the subject is
then rendered from it, so all of them share its world space.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from voxelprompt.core.volume import Volume
from voxelprompt.synth import labels as base_labels


@dataclass(frozen=True)
class DeformationSettings:
    max_rotation_deg: float = 12.0
    max_scaling: float = 0.10  # relative, per axis
    max_shear: float = 0.03
    max_translation_mm: float = 8.0
    # Standard deviation of the smooth field (drawn per subject) and its control-point spacing: local
    # volume changes stay within about +-30 % (a stronger field shrank or doubled small structures).
    max_displacement_mm: float = 2.0
    control_spacing_mm: float = 40.0


def mirrored(label_map: Volume) -> Volume:
    """The label map flipped left-right (along the array axis closest to world x, about the grid's
    centre) with every sided label turned into its other-side counterpart: a plausible brain whose
    left is the original's right, so that nothing learnt can rest on the anatomy's own asymmetries."""
    axis = int(np.argmax(np.abs(label_map.affine[0, :3])))
    flipped = np.flip(np.asarray(label_map.array), axis=axis)
    return label_map.with_array(base_labels.mirror_lookup()[flipped].astype(label_map.array.dtype))


def random_affine_ras(rng: np.random.Generator, settings: DeformationSettings) -> np.ndarray:
    """A 4x4 RAS matrix: rotation, scaling and shear about the origin, then a translation."""
    rotation = Rotation.from_rotvec(np.deg2rad(rng.uniform(-1, 1, 3) * settings.max_rotation_deg / np.sqrt(3)))
    scaling = np.diag(1 + rng.uniform(-1, 1, 3) * settings.max_scaling)
    shear = np.eye(3)
    shear[np.triu_indices(3, 1)] = rng.uniform(-1, 1, 3) * settings.max_shear
    matrix = np.eye(4)
    matrix[:3, :3] = rotation.as_matrix() @ scaling @ shear
    matrix[:3, 3] = rng.uniform(-1, 1, 3) * settings.max_translation_mm
    return matrix


def smooth_displacement_mm(shape: tuple[int, int, int], spacing_mm: np.ndarray, rng: np.random.Generator,
                           settings: DeformationSettings) -> np.ndarray:
    """(3, *shape) displacement in mm: random values on a coarse control grid, cubic upsampling."""
    control = np.maximum(2, np.ceil(np.asarray(shape) * spacing_mm / settings.control_spacing_mm)).astype(int) + 1
    amplitude = rng.uniform(0, settings.max_displacement_mm)
    coarse = rng.normal(0, amplitude, (3, *control))
    return np.stack([upsample(component, shape) for component in coarse])


def upsample(coarse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Smooth upsampling of a coarse field to exactly `shape`: cubic splines to a quarter of the
    size, then linear (a cubic spline over the full volume cost most of a sample's time)."""
    middle = tuple(max(c, n // 4) for c, n in zip(coarse.shape, shape))
    field = _resize(coarse, middle, order=3)
    return _resize(field, shape, order=1)


def _resize(array: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    resized = ndimage.zoom(array, [n / c for n, c in zip(shape, array.shape)], order=order, mode="nearest")
    resized = resized[tuple(slice(0, n) for n in shape)]
    return np.pad(resized, [(0, n - m) for n, m in zip(shape, resized.shape)], mode="edge")


def deform(labels: Volume, rng: np.random.Generator, settings: DeformationSettings = DeformationSettings()) -> Volume:
    """`labels` warped by a random affine and smooth deformation, on the same grid (nearest neighbour)."""
    affine = random_affine_ras(rng, settings)
    shape = labels.shape
    displacement = smooth_displacement_mm(shape, labels.spacing_mm, rng, settings)
    # Output voxel -> world -> displaced -> moved by the affine's inverse -> source voxel.
    index = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = labels.affine[:3, :3] @ index + labels.affine[:3, 3:4] + displacement.reshape(3, -1)
    source_from_world = np.linalg.inv(labels.affine) @ np.linalg.inv(affine)
    source = source_from_world[:3, :3] @ world + source_from_world[:3, 3:4]
    warped = ndimage.map_coordinates(labels.array, source, order=0, mode="constant", cval=0)
    return labels.with_array(warped.reshape(shape).astype(labels.array.dtype))
