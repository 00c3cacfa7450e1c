"""Answers in words (signal, enhancement, diffusion, location) on small synthetic lesions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from voxelprompt.core.morphology import shell_mm
from voxelprompt.core.scan import Scan
from voxelprompt.core.volume import Volume
from voxelprompt.runtime import Environment
from voxelprompt.runtime.answers import (CT_HYPER_HU, CT_HYPO_HU, HYPER_RATIO, HYPO_RATIO, diffusion, enhancement,
                                         largest_overlap, signal_intensity)
from voxelprompt.runtime.library import Library
from voxelprompt.runtime.measures import MeasureError
from voxelprompt.runtime.vision import Encoding

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])  # 2 mm voxels
SHAPE = (20, 20, 20)
LESION = (slice(7, 13),) * 3  # a 6-voxel (12 mm) cube in the middle
RIM = np.zeros(SHAPE, bool)
RIM[LESION] = True
RIM[(slice(8, 12),) * 3] = False  # the cube's outer layer of voxels: 216 - 64 = 152 voxels


def mask_volume(array: np.ndarray, affine: np.ndarray = AFFINE) -> Volume:
    return Volume(np.asarray(array, bool).astype(np.uint8), affine)


def lesion() -> Volume:
    array = np.zeros(SHAPE, bool)
    array[LESION] = True
    return mask_volume(array)


def reference() -> Volume:
    """The tissue within 4 mm (two voxels) around the lesion."""
    return mask_volume(shell_mm(lesion().array > 0, np.array([2.0, 2.0, 2.0]), 4.0))


def image(modality: str, background: float, inside: float | None = None, noise: float = 0.0, seed: int = 0,
          session: str = "01") -> Scan:
    """A scan of constant tissue (plus Gaussian noise, in percent of the background) with the lesion
    cube at another value."""
    array = np.full(SHAPE, background, np.float32)
    if inside is not None:
        array[LESION] = inside
    if noise:
        array += np.random.default_rng(seed).normal(0.0, noise / 100 * abs(background), SHAPE).astype(np.float32)
    return Scan(Volume(array, AFFINE), modality, session, "2024-01-10")


# --- signal intensity ------------------------------------------------------------------------------
@pytest.mark.parametrize(("ratio", "word"), [
    (1.3, "hyperintense"), (HYPER_RATIO + 0.01, "hyperintense"), (HYPER_RATIO - 0.01, "isointense"),
    (1.05, "isointense"), (1.0, "isointense"), (0.95, "isointense"),
    (HYPO_RATIO + 0.01, "isointense"), (HYPO_RATIO - 0.01, "hypointense"), (0.7, "hypointense"),
])
def test_mri_signal_is_a_ratio_of_medians_with_thresholds_on_both_sides(ratio, word):
    """On MRI the lesion/reference median ratio decides, just either side of each threshold."""
    assert signal_intensity(image("FLAIR", 100.0, 100.0 * ratio), lesion(), reference()) == word


def test_mri_signal_does_not_depend_on_the_scanner_gain():
    """A ratio: the same contrast at a tenth of the intensity scale gives the same word."""
    for ratio, word in ((1.3, "hyperintense"), (1.05, "isointense"), (0.7, "hypointense")):
        assert signal_intensity(image("T2w", 10.0, 10.0 * ratio, noise=3.0), lesion(), reference()) == word


def test_mri_signal_uses_medians_not_means():
    """A minority of extreme voxels (necrosis, partial volume) in either mask does not flip the answer."""
    scan = image("FLAIR", 100.0, 130.0)
    array = scan.volume.array.copy()
    array[RIM & (np.indices(SHAPE)[0] == 7)] = 0.0  # one face of the lesion black: the mean drops below iso
    shell = reference().array > 0
    array[shell & (np.indices(SHAPE)[2] < 7)] = 1000.0  # a bright part of the reference tissue
    scan = Scan(scan.volume.with_array(array), "FLAIR")
    assert array[lesion().array > 0].mean() / array[shell].mean() < HYPO_RATIO  # means would say hypointense
    assert signal_intensity(scan, lesion(), reference()) == "hyperintense"


def test_mri_signal_needs_reference_signal():
    """A reference without signal (zero or negative median) is refused rather than divided by."""
    with pytest.raises(MeasureError, match="no signal to compare with"):
        signal_intensity(image("T1w", 0.0, 50.0), lesion(), reference())


@pytest.mark.parametrize(("difference_hu", "word"), [
    (10.0, "hyperdense"), (CT_HYPER_HU + 0.5, "hyperdense"), (CT_HYPER_HU - 0.5, "isodense"),
    (0.0, "isodense"), (CT_HYPO_HU + 0.5, "isodense"), (CT_HYPO_HU - 0.5, "hypodense"), (-10.0, "hypodense"),
])
def test_ct_density_is_a_difference_in_hu(difference_hu, word):
    """On CT the lesion-minus-reference difference in HU decides, whatever the sign of the reference."""
    for background in (30.0, -20.0, 0.0):  # brain, fat-like, water: a difference needs no positive reference
        assert signal_intensity(image("CT", background, background + difference_hu), lesion(), reference()) == word


def test_ct_uses_hu_not_ratios():
    """+10 HU on bright tissue is a small ratio but hyperdense; a 30 % ratio that is 3 HU is isodense."""
    assert signal_intensity(image("CT", 60.0, 70.0), lesion(), reference()) == "hyperdense"  # ratio 1.17
    assert signal_intensity(image("CT", 10.0, 13.0), lesion(), reference()) == "isodense"  # ratio 1.3


def test_signal_checks_its_inputs():
    """Masks on another grid, empty masks and masks passed as scans come back as MeasureErrors."""
    with pytest.raises(MeasureError, match="different grids"):
        signal_intensity(image("FLAIR", 100.0, 130.0), mask_volume(lesion().array > 0, np.eye(4)), reference())
    with pytest.raises(MeasureError, match="empty"):
        signal_intensity(image("FLAIR", 100.0, 130.0), mask_volume(np.zeros(SHAPE)), reference())
    with pytest.raises(MeasureError, match="expected a scan"):
        signal_intensity(lesion(), lesion(), reference())


# --- enhancement -----------------------------------------------------------------------------------
def pre_and_post(post_array: np.ndarray | None = None, seed: int = 1) -> tuple[Scan, Scan]:
    """A pre-contrast T1w with 2 % noise, and a post-contrast T1w+ce (by default: the same, with new noise)."""
    pre = image("T1w", 100.0, 90.0, noise=2.0, seed=seed)
    post = image("T1w+ce", 100.0, 90.0, noise=2.0, seed=seed + 1)
    if post_array is not None:
        post = Scan(post.volume.with_array(post_array.astype(np.float32)), "T1w+ce", post.session, post.date)
    return pre, post


def test_a_coherent_enhancing_rim_is_enhancing():
    """A rim brightening by 60 % after contrast, a connected shell of voxels, is enhancing."""
    _, post = pre_and_post()
    array = post.volume.array.copy()
    array[RIM] *= 1.6
    pre, post = pre_and_post(array)
    assert enhancement(pre, post, lesion(), reference()) == "enhancing"


def test_a_small_enhancing_nodule_is_enhancing():
    """A nodule of 2x2x3 voxels, 12 of 216 (more than 5 %), enhancing strongly is enough."""
    _, post = pre_and_post()
    array = post.volume.array.copy()
    array[7:9, 7:9, 7:10] *= 2.0
    pre, post = pre_and_post(array)
    assert enhancement(pre, post, lesion(), reference()) == "enhancing"


def test_without_contrast_uptake_the_lesion_is_non_enhancing():
    """Only noise differs between the pre- and post-contrast scans: non-enhancing."""
    assert enhancement(*pre_and_post(), lesion(), reference()) == "non-enhancing"


def test_isolated_salt_noise_voxels_are_non_enhancing():
    """Bright voxels with no bright 6-neighbour are noise, even when they are 12.5 % of the lesion."""
    _, post = pre_and_post()
    array = post.volume.array.copy()
    salt = np.zeros(SHAPE, bool)
    salt[7:13:2, 7:13:2, 7:13:2] = True  # 27 of 216 voxels, no two of them touching by a face
    array[salt] *= 3.0
    pre, post = pre_and_post(array)
    assert np.count_nonzero(salt & (lesion().array > 0)) == 27
    assert enhancement(pre, post, lesion(), reference()) == "non-enhancing"
    array[8, 7, 7] *= 3.0  # two salt voxels joined by a third: still far under 5 % coherent
    assert enhancement(pre, Scan(post.volume.with_array(array), "T1w+ce"), lesion(), reference()) == "non-enhancing"


def test_a_brighter_post_contrast_acquisition_is_non_enhancing():
    """A post-contrast scan 50 % brighter everywhere (another receiver gain) shows no enhancement."""
    pre, post = pre_and_post()
    brighter = Scan(post.volume.with_array(post.volume.array * 1.5), "T1w+ce")
    assert enhancement(pre, brighter, lesion(), reference()) == "non-enhancing"
    array = post.volume.array * 1.5
    array[RIM] *= 1.6  # the same gain with a real enhancing rim
    assert enhancement(pre, Scan(post.volume.with_array(array), "T1w+ce"), lesion(), reference()) == "enhancing"


def test_enhancement_names_the_wrong_modalities():
    """enhancement needs T1w then T1w+ce; the error names what it was given."""
    pre, post = pre_and_post()
    flair = image("FLAIR", 100.0, 130.0)
    with pytest.raises(MeasureError, match="got FLAIR and T1w\\+ce"):
        enhancement(flair, post, lesion(), reference())
    with pytest.raises(MeasureError, match="got T1w\\+ce and T1w$"):
        enhancement(post, pre, lesion(), reference())


def test_enhancement_needs_scans_on_the_mask_grid():
    """A post-contrast scan on another grid is refused."""
    pre, _ = pre_and_post()
    elsewhere = Scan(Volume(np.full(SHAPE, 100.0, np.float32), np.diag([1.0, 1.0, 1.0, 1.0])), "T1w+ce")
    with pytest.raises(MeasureError, match="different grids"):
        enhancement(pre, elsewhere, lesion(), reference())


def test_answers_refuse_a_mask_where_a_scan_belongs():
    """A mask passed as the pre-contrast scan or the DWI (arguments out of order) is a MeasureError
    saying a scan was expected, as in signal_intensity (not an AttributeError from reading
    `.modality` before the inputs are checked)."""
    pre, post = pre_and_post()
    with pytest.raises(MeasureError, match="expected a scan, got Volume"):
        enhancement(lesion(), post, lesion(), reference())
    with pytest.raises(MeasureError, match="expected a scan, got Volume"):
        diffusion(lesion(), image("ADC", 0.8, 0.4), lesion(), reference())


# --- diffusion -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("adc_lesion", "dwi_lesion", "word"), [
    (0.4, 200.0, "restricted"),  # ADC dark, DWI bright: restriction (acute infarct)
    (0.4, 60.0, "not restricted"),  # ADC dark, DWI dark
    (0.8, 200.0, "not restricted"),  # ADC normal, DWI bright: T2 shine-through
    (1.6, 200.0, "not restricted"),  # ADC bright, DWI bright: vasogenic oedema
    (0.8, 100.0, "not restricted"),  # nothing there
])
def test_diffusion_needs_a_dark_adc_and_a_bright_dwi(adc_lesion, dwi_lesion, word):
    """Restriction is a hypointense ADC together with a brighter DWI than the reference tissue."""
    dwi = image("DWI", 100.0, dwi_lesion, noise=3.0, seed=2)
    adc = image("ADC", 0.8, adc_lesion, noise=3.0, seed=3)
    assert diffusion(dwi, adc, lesion(), reference()) == word


def test_diffusion_names_the_wrong_modalities():
    """diffusion needs the DWI then the ADC map; swapping them or passing another scan is refused."""
    dwi, adc = image("DWI", 100.0, 200.0), image("ADC", 0.8, 0.4)
    with pytest.raises(MeasureError, match="got ADC and DWI"):
        diffusion(adc, dwi, lesion(), reference())
    with pytest.raises(MeasureError, match="got DWI and FLAIR"):
        diffusion(dwi, image("FLAIR", 100.0, 130.0), lesion(), reference())


# --- largest overlap -------------------------------------------------------------------------------
def halves() -> tuple[Volume, Volume, Volume]:
    """Three regions: left (i < 10), right (i >= 10, above the slab) and a slab (k < 5)."""
    left, right, slab = (np.zeros(SHAPE, bool) for _ in range(3))
    left[:10], right[10:], slab[:, :, :5] = True, True, True
    return mask_volume(left), mask_volume(right & ~slab), mask_volume(slab)


def test_largest_overlap_picks_the_region_holding_most_of_the_lesion():
    """The name returned is the one whose region holds the most lesion voxels, in any order."""
    left, right, slab = halves()
    region = np.zeros(SHAPE, bool)
    region[8:14, 7:13, 7:13] = True  # 2 voxel columns left of i=10, 4 right of it
    assert largest_overlap(mask_volume(region), [left, right, slab], ["left", "right", "slab"]) == "right"
    assert largest_overlap(mask_volume(region), [slab, right, left], ["slab", "right", "left"]) == "right"
    region[:] = False
    region[2:5, 2:5, 2:5] = True  # in both left and slab (equal overlap): the first listed wins
    assert largest_overlap(mask_volume(region), [slab, left], ["slab", "left"]) == "slab"


def test_largest_overlap_refuses_no_overlap_and_mismatched_lists():
    """No overlap, a names list of another length, no regions, or a mask on another grid are errors."""
    left, right, slab = halves()
    region = np.zeros(SHAPE, bool)
    region[12:15, 12:15, 12:15] = True
    with pytest.raises(MeasureError, match="overlaps none"):
        largest_overlap(mask_volume(region), [left, slab], ["left", "slab"])
    with pytest.raises(MeasureError, match="as many names"):
        largest_overlap(mask_volume(region), [left, right], ["left"])
    with pytest.raises(MeasureError, match="as many names"):
        largest_overlap(mask_volume(region), left, ["left"])
    with pytest.raises(MeasureError, match="at least one region"):
        largest_overlap(mask_volume(region), [], [])
    with pytest.raises(MeasureError, match="different grids"):
        largest_overlap(mask_volume(region), [mask_volume(right.array, np.eye(4))], ["right"])


# --- through the sandbox ---------------------------------------------------------------------------
class LesionVision:
    """Ground truth standing in for the vision model: the lesion cube and two named halves."""

    def encode(self, scans: Sequence[Scan]) -> Encoding:
        return Encoding(tuple(scans))

    def segment(self, encoding: Encoding, target: str) -> Volume:
        left = np.zeros(SHAPE, bool)
        left[:9] = True  # 2 of the lesion's 6 voxel columns are left, 4 are right
        return {"lesion": lesion(), "left hemisphere": mask_volume(left), "right hemisphere": mask_volume(~left)}[target]


@pytest.fixture
def environment() -> Environment:
    pre, post = pre_and_post()
    array = post.volume.array.copy()
    array[RIM] *= 1.6
    post = Scan(post.volume.with_array(array), "T1w+ce", "01", "2024-01-10")
    scans = [image("FLAIR", 100.0, 130.0), image("CT", 30.0, 20.0), pre, post,
             image("DWI", 100.0, 200.0), image("ADC", 0.8, 0.4)]
    return Environment(Library(scans, vision=LesionVision()).functions())


def test_every_answer_runs_in_the_sandbox(environment):
    """The agent's way: segment the lesion, take its surroundings, and ask each question."""
    setup = environment.run("e = encode(scans())\nlesion = segment(e, 'lesion')\naround = surroundings(lesion, 4)")
    assert setup.ok, setup.error
    program = "\n".join([
        "signal_intensity(select(modality='FLAIR'), lesion, around)",
        "signal_intensity(select(modality='CT'), lesion, around)",
        "enhancement(select(modality='T1w'), select(modality='T1w+ce'), lesion, around)",
        "diffusion(select(modality='DWI'), select(modality='ADC'), lesion, around)",
        "largest_overlap(lesion, [segment(e, 'left hemisphere'), segment(e, 'right hemisphere')], "
        "['left hemisphere', 'right hemisphere'])",
    ])
    feedback = environment.run(program)
    assert feedback.ok, feedback.error
    assert feedback.output.splitlines() == ["'hyperintense'", "'hypodense'", "'enhancing'", "'restricted'",
                                            "'right hemisphere'"]


def test_answers_choose_and_read_in_the_sandbox(environment):
    """An answer can be read back and chosen from its fixed options."""
    environment.run("e = encode(scans())\nlesion = segment(e, 'lesion')\naround = surroundings(lesion, 4)")
    feedback = environment.run("a = signal_intensity(select(modality='FLAIR'), lesion, around)\n"
                               "read(a)\nchoose(a, ['hyperintense', 'hypointense', 'isointense'])")
    assert feedback.ok and feedback.output == "'hyperintense'"


def test_answer_mistakes_come_back_as_errors_in_the_sandbox(environment):
    """Wrong modalities and mismatched lists are readable errors, never exceptions."""
    environment.run("e = encode(scans())\nlesion = segment(e, 'lesion')\naround = surroundings(lesion, 4)")
    swapped = environment.run("enhancement(select(modality='T1w+ce'), select(modality='T1w'), lesion, around)")
    assert not swapped.ok and "MeasureError" in swapped.error and "got T1w+ce and T1w" in swapped.error
    adc_first = environment.run("diffusion(select(modality='ADC'), select(modality='DWI'), lesion, around)")
    assert not adc_first.ok and "got ADC and DWI" in adc_first.error
    names = environment.run("largest_overlap(lesion, [segment(e, 'left hemisphere')], ['left', 'right'])")
    assert not names.ok and "as many names" in names.error
