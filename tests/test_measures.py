"""Measurements on masks and scans, checked on shapes whose answers are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from voxelprompt.core.scan import Scan
from voxelprompt.core.volume import Volume
from voxelprompt.runtime import measures
from voxelprompt.runtime.measures import MeasureError


def box_mask(spacing_mm=(1.0, 2.0, 3.0), axcodes="RAS") -> Volume:
    """A 10 x 6 x 4 voxel box (10 x 12 x 12 mm with the default spacing) in a 30 x 20 x 12 grid."""
    array = np.zeros((30, 20, 12), np.uint8)
    array[5:15, 4:10, 2:6] = 1
    volume = Volume(array, np.diag([*spacing_mm, 1.0]))
    return volume.reoriented(axcodes)


@pytest.mark.parametrize("axcodes", ["RAS", "LPS", "PIR", "SAL"])
def test_volume_and_extents_are_exact_in_any_orientation(axcodes):
    mask = box_mask(axcodes=axcodes)
    assert measures.volume_mm3(mask) == pytest.approx(10 * 6 * 4 * 1 * 2 * 3)
    assert measures.width_mm(mask) == pytest.approx(10 * 1.0)   # left-right
    assert measures.depth_mm(mask) == pytest.approx(6 * 2.0)    # anterior-posterior
    assert measures.height_mm(mask) == pytest.approx(4 * 3.0)   # superior-inferior
    low, high = measures.bounding_box_ras_mm(mask)
    assert low == pytest.approx((5.0, 8.0, 6.0)) and high == pytest.approx((14.0, 18.0, 15.0))


def test_intensities_on_a_scan():
    mask = box_mask()
    values = np.arange(mask.array.size, dtype=np.float32).reshape(mask.shape)
    ct = Scan(mask.with_array(values), "CT")
    inside = values[mask.array > 0]
    assert measures.mean_intensity(ct, mask) == pytest.approx(inside.mean())
    assert measures.mean_hu(ct, mask) == pytest.approx(inside.mean())
    assert measures.signal_to_noise(ct, mask) == pytest.approx(inside.mean() / inside.std())
    with pytest.raises(MeasureError, match="needs an ADC map, got CT"):
        measures.mean_adc(ct, mask)
    with pytest.raises(MeasureError, match="needs a CT scan, got T1w"):
        measures.mean_hu(Scan(ct.volume, "T1w"), mask)


def test_comparisons():
    assert measures.difference(5, 3) == 2
    assert measures.ratio(3, 4) == 0.75
    assert measures.percent_change(200, 250) == pytest.approx(25.0)
    assert measures.asymmetry_index_percent(110, 90) == pytest.approx(20.0)
    assert measures.icv_fraction(4000.0, 1_600_000.0) == pytest.approx(0.0025)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: measures.extent_mm(m, "up"), "axis must be one of"),
        (lambda m: measures.volume_mm3("hippocampus"), "expected a mask"),
        (lambda m: measures.bounding_box_ras_mm(m.with_array(np.zeros(m.shape, np.uint8))), "the mask is empty"),
        (lambda m: measures.ratio(1, 0), "divide by zero"),
        (lambda m: measures.percent_change(0, 1), "from zero"),
        (lambda m: measures.icv_fraction(1, 0), "must be positive"),
        (lambda m: measures.mean_intensity(Scan(m.cropped((0, 0, 0), (5, 5, 5)), "T1w"), m), "different grids"),
        (lambda m: measures.difference("a", 1), "expected a number"),
    ],
)
def test_wrong_calls_explain_themselves(call, message):
    with pytest.raises(MeasureError, match=message):
        call(box_mask())
