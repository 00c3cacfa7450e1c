"""Scans as the vision networks take them: intensities on a common scale, one channel per scan.

MRI has arbitrary units, so each scan is divided by its 99th percentile over the head; CT keeps its
physical meaning through a brain window in Hounsfield units; the ADC map through a fixed scale.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from scipy import ndimage

from voxelprompt.core.scan import Scan
from voxelprompt.core.volume import Grid, Volume

CT_LEVEL_HU, CT_WIDTH_HU = 40.0, 160.0  # brain window: -40 HU -> 0, 120 HU -> 1
ADC_SCALE = 3.0  # 10^-3 mm^2/s: free water is about 3
MAX_VALUE = 1.5  # clip bright outliers (fat, vessels, bone on CT)


def normalised(scan: Scan) -> np.ndarray:
    values = np.asarray(scan.volume.array, dtype=np.float32)
    if scan.modality == "CT":
        scaled = (values - CT_LEVEL_HU) / CT_WIDTH_HU + 0.5
    elif scan.modality == "ADC":
        scaled = values / ADC_SCALE
    else:
        foreground = values[values > 0]
        scaled = values / (float(np.percentile(foreground, 99)) if foreground.size else 1.0)
    return np.clip(scaled, 0.0, MAX_VALUE)


def stacked(scans: list[Scan] | tuple[Scan, ...], device: torch.device | str = "cpu") -> torch.Tensor:
    """(S, 1, X, Y, Z) tensor of scans on one grid."""
    return torch.from_numpy(np.stack([normalised(s) for s in scans])[:, None]).to(device)


def working_grid(grid: Grid, working_spacing_mm: float) -> Grid:
    """The grid the networks see for scans on `grid`: axes finer than the working spacing coarsened
    to it, the others (thick slices) as they are, over the same field of view."""
    spacing = np.asarray(grid.spacing_mm, dtype=np.float64)
    if working_spacing_mm <= 0 or np.all(spacing >= working_spacing_mm - 1e-6):
        return grid
    return grid.with_spacing(tuple(np.maximum(spacing, working_spacing_mm)))


def on_working_grid(scans: list[Scan] | tuple[Scan, ...], grid: Grid) -> list[Scan]:
    """Scans moved onto `grid` (see `working_grid`): each coarsened axis is smoothed first, with the
    Gaussian of scikit-image's anti-aliasing ((factor - 1) / 2 voxels), so that fine detail does not
    alias into the coarse voxels."""
    moved = []
    for scan in scans:
        if scan.volume.grid.is_same(grid):
            moved.append(scan)
            continue
        factors = np.asarray(grid.spacing_mm) / np.asarray(scan.volume.spacing_mm)
        sigmas = np.maximum(factors - 1, 0) / 2
        values = np.asarray(scan.volume.array, dtype=np.float32)
        smooth = ndimage.gaussian_filter(values, sigmas) if sigmas.any() else values
        moved.append(replace(scan, volume=scan.volume.with_array(smooth).resampled_to(grid, order=1)))
    return moved


def on_scan_grid(mask: Volume, scan: Volume) -> Volume:
    """A mask decided on the working grid, on `scan`'s own grid: each scan voxel takes the decision of
    the working voxel it lies in (nearest neighbour), so a structure keeps the volume the networks
    gave it. Interpolating the logits instead moved the boundary inwards wherever they fall off more
    steeply outside than inside (the networks are trained at their working grid, so the sub-voxel
    position of a logit's zero means nothing): the demo's right amygdala lost 36 % of its volume
    between its 2 mm and its 1 mm mask."""
    if mask.grid.is_same(scan.grid):
        return scan.with_array(mask.array.astype(np.uint8))
    return scan.with_array((mask.resampled_to(scan.grid, order=0, fill=0).array > 0).astype(np.uint8))
