"""Scans as the vision networks take them: intensities on a common scale, one channel per scan.

MRI has arbitrary units, so each scan is divided by its 99th percentile over the head; CT keeps its
physical meaning through a brain window in Hounsfield units; the ADC map through a fixed scale.
"""

from __future__ import annotations

import numpy as np
import torch

from voxelprompt.runtime.measures import Scan

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
