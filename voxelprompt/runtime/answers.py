"""Answers in words computed from the image: how a lesion's signal compares with the tissue around it,
whether it enhances or restricts diffusion, and which named region holds most of it.

Radiologists describe a lesion relative to its surroundings, so every function takes the lesion mask
and a reference mask (usually the parenchyma within a few mm of it). Medians, not means, so that the
partial-volume voxels on the borders of both masks do not decide the answer. The thresholds sit
between the signal ranges the synthetic lesions are drawn from (iso: within 2 %; hyper: at least
+35 %; hypo: at most -30 %; ADC restriction: at most -40 %; CT: at least +25 or -8 HU).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from voxelprompt.core.scan import Scan
from voxelprompt.core.volume import Volume
from voxelprompt.runtime.measures import MeasureError, require_mask, require_scans, values_in

HYPER_RATIO, HYPO_RATIO = 1.17, 0.83  # geometric midpoints between the iso and hyper/hypo ranges
CT_HYPER_HU, CT_HYPO_HU = 4.0, -4.0
ENHANCING_RISE = 0.25  # rise of the post-contrast signal, relative to the reference tissue (enhancing: +35 % or more)
ENHANCING_FRACTION = 0.05  # share of the region that must enhance (a tumour's rim is a thin part of it)

SIGNAL_WORDS = {"MRI": ("hyperintense", "hypointense", "isointense"), "CT": ("hyperdense", "hypodense", "isodense")}
ENHANCEMENT_WORDS = ("enhancing", "non-enhancing")
DIFFUSION_WORDS = ("restricted", "not restricted")


def signal_intensity(scan: Scan, region: Volume, reference: Volume) -> str:
    """The region's signal relative to the reference tissue: hyperintense, hypointense or isointense
    (hyperdense, hypodense or isodense on CT)."""
    inside = float(np.median(values_in(scan, region)))
    around = float(np.median(values_in(scan, reference)))
    if scan.modality == "CT":
        higher, lower, same = SIGNAL_WORDS["CT"]
        difference_hu = inside - around
        return higher if difference_hu > CT_HYPER_HU else lower if difference_hu < CT_HYPO_HU else same
    higher, lower, same = SIGNAL_WORDS["MRI"]
    if around <= 0:
        raise MeasureError("the reference tissue has no signal to compare with")
    ratio = inside / around
    return higher if ratio > HYPER_RATIO else lower if ratio < HYPO_RATIO else same


def enhancement(pre: Scan, post: Scan, region: Volume, reference: Volume) -> str:
    """enhancing or non-enhancing: whether part of the region brightens after contrast more than the
    reference tissue does."""
    require_scans(pre, post)
    if pre.modality != "T1w" or post.modality != "T1w+ce":
        raise MeasureError(f"enhancement needs the pre-contrast T1w and the post-contrast T1w+ce, got "
                           f"{pre.modality} and {post.modality}")
    for scan in (pre, post):
        values_in(scan, region)
    if not pre.volume.grid.is_same(post.volume.grid):
        raise MeasureError("the pre- and post-contrast scans are on different grids")
    inside = region.array > 0
    # Each scan divided by its reference median, so that gain and bias differences between the two
    # acquisitions cancel; the rise is relative for tissue brighter than the reference (a T1-bright
    # haemorrhage is not enhancing because its noise is larger) and absolute otherwise.
    before = pre.volume.array / _reference_median(pre, reference)
    after = post.volume.array / _reference_median(post, reference)
    rising = inside & ((after - before) / np.maximum(before, 1.0) > ENHANCING_RISE)
    # Enhancement is a coherent region (a rim, a nodule); noise gives isolated voxels.
    neighbours = ndimage.convolve(rising.astype(np.uint8), ndimage.generate_binary_structure(3, 1).astype(np.uint8),
                                  mode="constant") - rising
    coherent = rising & (neighbours >= 1)
    fraction = np.count_nonzero(coherent) / np.count_nonzero(inside)
    return ENHANCEMENT_WORDS[0] if fraction >= ENHANCING_FRACTION else ENHANCEMENT_WORDS[1]


def diffusion(dwi: Scan, adc: Scan, region: Volume, reference: Volume) -> str:
    """restricted or not restricted: bright on the DWI and dark on the ADC map, relative to the
    reference tissue (bright DWI with a normal ADC is T2 shine-through, not restriction)."""
    require_scans(dwi, adc)
    if dwi.modality != "DWI" or adc.modality != "ADC":
        raise MeasureError(f"diffusion needs the DWI and the ADC map, got {dwi.modality} and {adc.modality}")
    dark_adc = signal_intensity(adc, region, reference) == "hypointense"
    bright_dwi = signal_intensity(dwi, region, reference) == "hyperintense"
    return DIFFUSION_WORDS[0] if dark_adc and bright_dwi else DIFFUSION_WORDS[1]


def largest_overlap(region: Volume, regions: list[Volume], names: list[str]) -> str:
    """The name of the region (from `regions`, named by `names`) that holds most of `region`."""
    require_mask(region)
    if not isinstance(regions, (list, tuple)) or not isinstance(names, (list, tuple)) or len(regions) != len(names):
        raise MeasureError("largest_overlap needs a list of masks and a list of as many names")
    if not regions:
        raise MeasureError("largest_overlap needs at least one region")
    counts = []
    for candidate in regions:
        require_mask(candidate)
        if not candidate.grid.is_same(region.grid):
            raise MeasureError("the masks are on different grids")
        counts.append(int(np.count_nonzero((candidate.array > 0) & (region.array > 0))))
    if max(counts) == 0:
        raise MeasureError("the region overlaps none of the named regions")
    return str(names[int(np.argmax(counts))])


def _reference_median(scan: Scan, reference: Volume) -> float:
    value = float(np.median(values_in(scan, reference)))
    if value <= 0:
        raise MeasureError("the reference tissue has no signal to compare with")
    return value
