"""Growing and shrinking masks by a distance in mm, with Euclidean distances on anisotropic grids.

Used wherever "within N mm of" is meant: the tissue surrounding a lesion (what its signal is relative
to), lesions growing or shrinking between sessions, the agent's `surroundings` function.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def grown_mm(mask: np.ndarray, spacing_mm: np.ndarray, distance_mm: float) -> np.ndarray:
    """Voxels within `distance_mm` of the mask (the mask included); a negative distance shrinks it to
    the voxels deeper than that inside it. Computed in the mask's bounding box plus the distance, so
    the cost follows the mask's size, not the image's."""
    mask = np.asarray(mask, dtype=bool)
    spacing_mm = np.asarray(spacing_mm, dtype=float)
    result = np.zeros(mask.shape, bool)
    indices = np.argwhere(mask)
    if len(indices) == 0:
        return result
    margin = np.ceil(max(distance_mm, 0.0) / spacing_mm).astype(int) + 1
    low = np.maximum(indices.min(axis=0) - margin, 0)
    high = np.minimum(indices.max(axis=0) + 1 + margin, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high))
    if distance_mm >= 0:
        result[box] = ndimage.distance_transform_edt(~mask[box], sampling=spacing_mm) <= distance_mm
    else:
        # Pad so that voxels on the image border count as next to the outside.
        inside = np.pad(mask[box], 1)
        result[box] = (ndimage.distance_transform_edt(inside, sampling=spacing_mm) > -distance_mm)[1:-1, 1:-1, 1:-1]
    return result


def shell_mm(mask: np.ndarray, spacing_mm: np.ndarray, distance_mm: float) -> np.ndarray:
    """Voxels outside the mask within `distance_mm` of it."""
    return grown_mm(mask, spacing_mm, distance_mm) & ~np.asarray(mask, dtype=bool)
