"""Measurements the agent's code can take: sizes, extents and intensities of masks on scans, and
the arithmetic that compares them. Every name says its unit; every input is checked so that a wrong
call comes back as a sentence the agent can act on.

Masks and scans are `Volume`s on the subject grid (after co-registration), so a voxel's size in mm
comes from the affine and "height" is always the superior-inferior extent in the world.
"""

from __future__ import annotations

import numpy as np

from voxelprompt.core.scan import Scan
from voxelprompt.core.volume import Volume

# World (RAS) axis of each anatomical direction, and the everyday name of the extent along it.
AXES = {"left-right": 0, "anterior-posterior": 1, "superior-inferior": 2}
EXTENT_NAMES = {"width": "left-right", "depth": "anterior-posterior", "height": "superior-inferior"}


class MeasureError(ValueError):
    """A measurement that cannot be taken; the message tells the agent why."""


def volume_mm3(mask: Volume) -> float:
    """Volume of a mask in mm^3."""
    require_mask(mask)
    return float(np.count_nonzero(mask.array) * mask.voxel_volume_mm3)


def extent_mm(mask: Volume, axis: str) -> float:
    """Length of the mask's bounding box along an anatomical axis: left-right, anterior-posterior or
    superior-inferior (voxel centres, plus one voxel: a single voxel is one voxel long)."""
    require_mask(mask)
    if axis not in AXES:
        raise MeasureError(f"axis must be one of {', '.join(AXES)}, got {axis!r}")
    low, high = bounding_box_ras_mm(mask)
    voxel_extent = np.abs(mask.affine[:3, :3]).sum(axis=1)  # world size of one voxel along x, y, z
    world = AXES[axis]
    return float(high[world] - low[world] + voxel_extent[world])


def width_mm(mask: Volume) -> float:
    """Left-right extent of a mask in mm."""
    return extent_mm(mask, EXTENT_NAMES["width"])


def depth_mm(mask: Volume) -> float:
    """Anterior-posterior extent of a mask in mm."""
    return extent_mm(mask, EXTENT_NAMES["depth"])


def height_mm(mask: Volume) -> float:
    """Superior-inferior extent of a mask in mm."""
    return extent_mm(mask, EXTENT_NAMES["height"])


def bounding_box_ras_mm(mask: Volume) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(lowest, highest) RAS corner of the voxel centres inside the mask."""
    require_mask(mask)
    indices = np.argwhere(mask.array > 0)
    if len(indices) == 0:
        raise MeasureError("the mask is empty")
    world = mask.grid.world_coordinates_mm(indices.astype(float))
    return tuple(float(v) for v in world.min(axis=0)), tuple(float(v) for v in world.max(axis=0))


def mean_intensity(scan: Scan, mask: Volume) -> float:
    """Mean intensity of a scan inside a mask, in the scan's units."""
    return float(values_in(scan, mask).mean())


def signal_to_noise(scan: Scan, mask: Volume) -> float:
    """Mean over standard deviation of the intensities inside the mask (a regional SNR)."""
    values = values_in(scan, mask)
    spread = float(values.std())
    if spread == 0:
        raise MeasureError("the intensities in the mask do not vary, so their SNR is undefined")
    return float(values.mean()) / spread


def mean_hu(scan: Scan, mask: Volume) -> float:
    """Mean Hounsfield units of a CT inside a mask."""
    if scan.modality != "CT":
        raise MeasureError(f"mean_hu needs a CT scan, got {scan.modality}")
    return mean_intensity(scan, mask)


def mean_adc(scan: Scan, mask: Volume) -> float:
    """Mean apparent diffusion coefficient in 10^-3 mm^2/s."""
    if scan.modality != "ADC":
        raise MeasureError(f"mean_adc needs an ADC map, got {scan.modality}")
    return mean_intensity(scan, mask)


def difference(a: float, b: float) -> float:
    """a - b."""
    return number(a) - number(b)


def ratio(a: float, b: float) -> float:
    """a / b."""
    if number(b) == 0:
        raise MeasureError("cannot divide by zero")
    return number(a) / b


def percent_change(before: float, after: float) -> float:
    """Change from before to after, in percent of before."""
    if number(before) == 0:
        raise MeasureError("percent change from zero is undefined")
    return 100.0 * (number(after) - before) / before


def asymmetry_index_percent(left: float, right: float) -> float:
    """(left - right) / mean(left, right) x 100: positive when the left is larger."""
    total = number(left) + number(right)
    if total == 0:
        raise MeasureError("asymmetry of two zeros is undefined")
    return 200.0 * (left - right) / total


def icv_fraction(volume: float, intracranial_volume: float) -> float:
    """A volume as a fraction of the intracranial volume (both in mm^3)."""
    if number(intracranial_volume) <= 0:
        raise MeasureError("the intracranial volume must be positive")
    return number(volume) / intracranial_volume


def values_in(scan: Scan, mask: Volume) -> np.ndarray:
    require_scans(scan)
    require_mask(mask)
    if not scan.volume.grid.is_same(mask.grid):
        raise MeasureError("the mask and the scan are on different grids")
    values = scan.volume.array[mask.array > 0]
    if values.size == 0:
        raise MeasureError("the mask is empty")
    return values


def require_scans(*scans: Scan) -> None:
    for scan in scans:
        if not isinstance(scan, Scan):
            raise MeasureError(f"expected a scan, got {type(scan).__name__}")


def require_mask(mask: Volume) -> None:
    if not isinstance(mask, Volume):
        raise MeasureError(f"expected a mask, got {type(mask).__name__}")


def number(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MeasureError(f"expected a number, got {type(value).__name__}")
    return float(value)
