"""The image type: a voxel array that carries its affine through every operation.

World coordinates are RAS+ millimetres (the NIfTI convention). Every operation returns a new
`Volume` whose affine already describes the new array, so no affine is ever re-derived by hand.
Operations that only permute, flip, crop or pad voxels (reorientation, cropping, mapping a mask
from a cropped grid back to the original one) are exact index copies, never interpolations: a mask
made on a preprocessed grid lands voxel-for-voxel on the scan it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

# Tolerances for deciding that two grids differ only by a voxel permutation and integer shift.
_PERMUTATION_ATOL = 1e-5
_INTEGER_SHIFT_ATOL_VOXELS = 1e-3


@dataclass(frozen=True, eq=False)
class Grid:
    """A voxel grid in world space: array shape and voxel-to-RAS-mm affine."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "affine", np.asarray(self.affine, dtype=np.float64).copy())
        if len(self.shape) != 3 or self.affine.shape != (4, 4):
            raise ValueError(f"a grid needs a 3D shape and a 4x4 affine, got {self.shape}, {self.affine.shape}")

    @property
    def spacing_mm(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    @property
    def axcodes(self) -> str:
        return "".join(nib.aff2axcodes(self.affine))

    def with_spacing(self, spacing_mm: float | tuple[float, float, float]) -> Grid:
        """A grid with this orientation and field of view (same centre) and the given voxel size."""
        new_spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=np.float64), (3,))
        ratio = new_spacing / self.spacing_mm
        shape = np.asarray(self.shape)
        new_shape = np.maximum(1, np.round(shape / ratio)).astype(int)
        scale = np.diag(np.append(ratio, 1.0))
        # Keep the centre of the field of view where it was, whatever the rounding of the shape.
        scale[:3, 3] = ((shape - 1) - (new_shape - 1) * ratio) / 2
        return Grid(tuple(new_shape), self.affine @ scale)

    def world_coordinates_mm(self, voxel_indices: np.ndarray) -> np.ndarray:
        """(N, 3) voxel indices -> (N, 3) RAS mm."""
        return voxel_indices @ self.affine[:3, :3].T + self.affine[:3, 3]

    def is_same(self, other: Grid, atol: float = 1e-4) -> bool:
        return self.shape == other.shape and np.allclose(self.affine, other.affine, atol=atol)

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "affine": self.affine.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Grid:
        return cls(tuple(data["shape"]), np.array(data["affine"], dtype=np.float64))


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image: `array[i, j, k]` sits at world position `affine @ (i, j, k, 1)` (RAS mm).

    `header` keeps the source file's header (NIfTI or MGH): it describes the file the volume came
    from (e.g. whether world space is scanner space), not the array after reorientation.
    """

    array: np.ndarray
    affine: np.ndarray
    header: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "affine", np.asarray(self.affine, dtype=np.float64))
        if self.array.ndim != 3:
            raise ValueError(f"a Volume is 3D, got an array of shape {self.array.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"a Volume needs a 4x4 affine, got {self.affine.shape}")

    @property
    def grid(self) -> Grid:
        return Grid(self.array.shape, self.affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.array.shape

    @property
    def spacing_mm(self) -> np.ndarray:
        return self.grid.spacing_mm

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    def with_array(self, array: np.ndarray) -> Volume:
        """The same grid holding other voxel values (e.g. a mask computed from this image)."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} does not match the grid {self.array.shape}")
        return Volume(array, self.affine, self.header)

    def reoriented(self, axcodes: str = "RAS") -> Volume:
        """Permute and flip voxel axes so that they point along `axcodes` (exact, no interpolation)."""
        current = nib.orientations.io_orientation(self.affine)
        target = nib.orientations.axcodes2ornt(tuple(axcodes))
        transform = nib.orientations.ornt_transform(current, target)
        array = nib.orientations.apply_orientation(self.array, transform)
        affine = self.affine @ nib.orientations.inv_ornt_aff(transform, self.array.shape)
        return Volume(np.ascontiguousarray(array), affine, self.header)

    def cropped(self, start: tuple[int, int, int], stop: tuple[int, int, int], fill: float = 0) -> Volume:
        """Voxels [start, stop) along each axis; ranges beyond the array are padded with `fill`."""
        start_arr = np.asarray(start, dtype=int)
        stop_arr = np.asarray(stop, dtype=int)
        if np.any(stop_arr <= start_arr):
            raise ValueError(f"empty crop box {tuple(start_arr)} -> {tuple(stop_arr)}")
        shift = np.eye(4)
        shift[:3, 3] = start_arr
        return self.resampled_to(Grid(tuple(stop_arr - start_arr), self.affine @ shift), order=0, fill=fill)

    def resampled_to(self, grid: Grid, order: int = 1, fill: float = 0) -> Volume:
        """This image on another grid (world positions preserved).

        Exact voxel copies when the grids differ only by axis permutation, flips and an integer
        shift; otherwise spline interpolation of the given order (0 = nearest, for labels).
        """
        target_to_source = np.linalg.solve(self.affine, grid.affine)  # target voxel -> source voxel
        exact = _as_signed_permutation(target_to_source)
        if exact is not None:
            array = _copy_permuted(self.array, grid.shape, *exact, fill=fill)
        else:
            array = ndimage.affine_transform(
                self.array,
                target_to_source[:3, :3],
                offset=target_to_source[:3, 3],
                output_shape=grid.shape,
                order=order,
                mode="constant",
                cval=fill,
                prefilter=order > 1,
            )
        return Volume(array, grid.affine)

    def resampled_to_spacing(self, spacing_mm: float | tuple[float, float, float], order: int = 1) -> Volume:
        """This image on a grid with the given voxel size and the same orientation and extent."""
        return self.resampled_to(self.grid.with_spacing(spacing_mm), order=order)


def _as_signed_permutation(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """If `matrix` maps voxels by permutation, flips and an integer shift, return (axes, signs, shift)."""
    linear = matrix[:3, :3]
    rounded = np.round(linear)
    if not np.allclose(linear, rounded, atol=_PERMUTATION_ATOL):
        return None
    if not (np.abs(rounded).sum(axis=0) == 1).all() or not (np.abs(rounded).sum(axis=1) == 1).all():
        return None
    shift = matrix[:3, 3]
    if not np.allclose(shift, np.round(shift), atol=_INTEGER_SHIFT_ATOL_VOXELS):
        return None
    source_axes = np.argmax(np.abs(rounded), axis=0)  # target axis k reads source axis source_axes[k]
    signs = rounded[source_axes, np.arange(3)].astype(int)
    return source_axes, signs, np.round(shift).astype(int)


def _copy_permuted(
    source: np.ndarray,
    shape: tuple[int, int, int],
    source_axes: np.ndarray,
    signs: np.ndarray,
    shift: np.ndarray,
    fill: float,
) -> np.ndarray:
    """out[j] = source[P j + shift] for a signed permutation P; voxels outside the source get `fill`.

    Along each axis the source indices are a run with step +1 or -1, so the copy is one strided
    slice assignment: 3 ms instead of 23 ms with fancy indexing for a 2 mm head (medians of 20)."""
    transposed = source.transpose(source_axes)
    out = np.full(shape, fill, dtype=source.dtype)
    out_slices, in_slices = [], []
    for k in range(3):
        indices = signs[k] * np.arange(shape[k]) + shift[source_axes[k]]
        inside = np.flatnonzero((indices >= 0) & (indices < transposed.shape[k]))
        if not len(inside):
            return out
        first, last = int(inside[0]), int(inside[-1])
        out_slices.append(slice(first, last + 1))
        start, stop, step = int(indices[first]), int(indices[last]) + int(signs[k]), int(signs[k])
        in_slices.append(slice(start, stop if stop >= 0 else None, step))
    out[tuple(out_slices)] = transposed[tuple(in_slices)]
    return out
