"""Lesions, follow-up sessions and written cohorts: every recorded attribute is measured true."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from voxelprompt.core.io import load_volume
from voxelprompt.study import cohort
from voxelprompt.synth import labels
from voxelprompt.synth.cohort import CohortSettings, write_cohort
from voxelprompt.synth.contrast import Acquisition, labels_on
from voxelprompt.synth.lesions import LESION_LABEL_BASE, lesion_classes, parenchyma_ids, surrounding_shell
from voxelprompt.synth.longitudinal import follow_up
from voxelprompt.synth.subject import synthesize_subject

CONTRASTS = ("T1w", "T1w+ce", "T2w", "FLAIR", "DWI", "CT")
ALL_CLASSES = tuple(lesion_classes())
SPACING_MM = 2.0


@pytest.fixture(scope="session")
def subjects(anatomy_cache):
    """Two subjects with every lesion class, seen in every contrast. Acquisitions are isotropic at the
    label resolution: signal is measured here, not thick-slice partial volume (tested elsewhere)."""
    acquisitions = {name: Acquisition((SPACING_MM,) * 3, "LPS", 0.02, 0.15) for name in CONTRASTS}
    return [synthesize_subject(np.random.default_rng([7, n]), CONTRASTS, ALL_CLASSES, SPACING_MM, acquisitions=acquisitions)
            for n in (1, 2)]


def _interior_means(image, label_map, lesion, component):
    """Mean of a component's interior and of the lesion's surrounding tissue, measured on the image."""
    on_image = labels_on(image, label_map).array
    shell_map = label_map.with_array(surrounding_shell(label_map, lesion).astype(np.uint16))
    shell = labels_on(image, shell_map).array > 0
    inside = ndimage.binary_erosion(on_image == component.label_id)
    # Leave out the bands next to the lesion and next to non-parenchyma (CSF, bone), where partial
    # volume mixes tissues: the recorded signal is relative to the parenchyma itself.
    shell &= ~ndimage.binary_dilation(on_image >= LESION_LABEL_BASE)
    shell &= ~ndimage.binary_dilation(~np.isin(on_image, parenchyma_ids()) & (on_image < LESION_LABEL_BASE))
    if inside.sum() < 10 or shell.sum() < 10:
        return None
    return float(image.array[inside].mean()), float(image.array[shell].mean())


@pytest.mark.parametrize("contrast", ["T1w", "T1w+ce", "T2w", "FLAIR", "CT", "ADC"])
def test_recorded_signal_is_measured_on_the_image(subjects, contrast):
    checked = 0
    for subject in subjects:
        for lesion in subject.lesions:
            for component in lesion.components:
                means = _interior_means(subject.images[contrast], subject.label_map, lesion, component)
                if means is None:
                    continue
                lesion_mean, surround = means
                signal = component.signals[contrast]
                checked += 1
                where = f"{lesion.lesion_class} {component.name} {contrast} {signal}: {lesion_mean:.2f} vs {surround:.2f}"
                if contrast == "CT":
                    expected = {"hyper": lesion_mean > surround + 10, "hypo": lesion_mean < surround - 4,
                                "iso": abs(lesion_mean - surround) < 5}[signal]
                else:
                    ratio = lesion_mean / surround
                    expected = {"hyper": ratio > 1.1, "high": ratio > 1.1, "hypo": ratio < 0.9, "low": ratio < 0.9,
                                "iso": 0.88 < ratio < 1.12}[signal]
                assert expected, where
    assert checked >= 3


def test_restricting_lesions_are_bright_on_dwi_and_dark_on_adc(subjects):
    checked = 0
    for subject in subjects:
        for lesion in subject.lesions:
            for component in lesion.components:
                if component.signals["ADC"] != "low":
                    continue
                dwi = _interior_means(subject.images["DWI"], subject.label_map, lesion, component)
                adc = _interior_means(subject.images["ADC"], subject.label_map, lesion, component)
                if dwi is None or adc is None:
                    continue
                checked += 1
                assert dwi[0] > 1.1 * dwi[1] and adc[0] < 0.9 * adc[1], (lesion.lesion_class, dwi, adc)
    assert checked >= 1, "no restricting lesion large enough to measure"


def test_enhancing_components_are_brighter_after_contrast(subjects):
    checked = 0
    for subject in subjects:
        for lesion in subject.lesions:
            for component in lesion.components:
                pre = _interior_means(subject.images["T1w"], subject.label_map, lesion, component)
                post = _interior_means(subject.images["T1w+ce"], subject.label_map, lesion, component)
                if pre is None or post is None:
                    continue
                change = (post[0] / post[1]) / (pre[0] / pre[1])  # relative to the unchanged tissue around
                if component.enhancing:
                    assert change > 1.15, (lesion.lesion_class, component.name, change)
                    checked += 1
                elif not _touches_enhancing(subject, lesion, component):  # else partial volume of the rim
                    assert change < 1.15, (lesion.lesion_class, component.name, change)
    assert checked >= 1


def _touches_enhancing(subject, lesion, component) -> bool:
    enhancing = [c.label_id for c in lesion.components if c.enhancing]
    near = ndimage.binary_dilation(np.isin(subject.label_map.array, enhancing), iterations=2)
    return bool((near & (subject.label_map.array == component.label_id)).any())


def test_recorded_location_and_volume_hold_on_the_label_map(subjects):
    for subject in subjects:
        for lesion in subject.lesions:
            mask = np.isin(subject.label_map.array, lesion.label_ids)
            attributes = lesion.attributes
            assert attributes["volume_mm3"] == pytest.approx(mask.sum() * subject.label_map.voxel_volume_mm3, rel=1e-6)
            replaced = subject.anatomy.array[mask]
            if attributes["hemisphere"] in labels.SIDES:
                sided = replaced[np.isin(replaced, [label.id for label in labels.base_labels() if label.hemisphere])]
                side = [label.id for label in labels.base_labels() if label.hemisphere == attributes["hemisphere"]]
                assert np.isin(sided, side).mean() > 0.5, lesion.lesion_class
            if attributes["lobe"]:
                lobe_ids = {label.id for label in labels.base_labels() if label.lobe == attributes["lobe"]}
                assert np.isin(replaced, sorted(lobe_ids)).mean() >= max(
                    np.isin(replaced, sorted({l.id for l in labels.base_labels() if l.lobe == other})).mean()
                    for other in labels.LOBES), lesion.lesion_class
            if attributes["territory"]:
                supplied = replaced[np.isin(replaced, [label.id for label in labels.base_labels() if label.territory])]
                territory = labels.target(f"left and right {attributes['territory']} territory").label_ids
                assert np.isin(supplied, sorted(territory)).mean() > 1 / 3, lesion.lesion_class
            if lesion.lesion_class == "meningioma":  # extra-axial: on the surface, never in deep tissue
                surface = [labels.label_by_name("extracerebral CSF").id] + sorted(
                    labels.target("left and right cerebral cortex").label_ids)
                assert np.isin(replaced, surface).mean() > 0.9


def test_every_class_appears_and_lesions_do_not_overlap(subjects):
    classes = {lesion.lesion_class for subject in subjects for lesion in subject.lesions}
    assert classes == set(ALL_CLASSES)
    for subject in subjects:
        ids = [component.label_id for lesion in subject.lesions for component in lesion.components]
        assert len(ids) == len(set(ids))
        assert set(np.unique(subject.label_map.array[subject.label_map.array >= LESION_LABEL_BASE])) <= set(ids)


def test_follow_up_changes_lesions_and_ventricles_and_records_the_new_volumes(subjects):
    first = subjects[0]
    second = follow_up(first, np.random.default_rng(11))
    ventricles = labels.target("left and right lateral ventricle")
    assert ventricles.mask(second.anatomy.array).sum() >= ventricles.mask(first.anatomy.array).sum()
    assert [lesion.index for lesion in second.lesions] == [lesion.index for lesion in first.lesions]
    for before, after in zip(first.lesions, second.lesions):
        measured = np.isin(second.label_map.array, after.label_ids).sum() * second.label_map.voxel_volume_mm3
        assert after.attributes["volume_mm3"] == pytest.approx(measured, rel=0.01)
        # the first session's record is untouched
        assert before.attributes["volume_mm3"] == pytest.approx(
            np.isin(first.label_map.array, before.label_ids).sum() * first.label_map.voxel_volume_mm3, rel=1e-6)
    assert any(abs(a.attributes["volume_mm3"] - b.attributes["volume_mm3"]) > 0 for a, b in zip(first.lesions, second.lesions))


def test_written_cohort_is_valid_bids_and_its_tables_match_the_masks(anatomy_cache, tmp_path):
    settings = CohortSettings(subjects=2, seed=3, contrasts=("T1w", "FLAIR", "DWI"), sessions=2,
                              lesion_classes=("tumour", "infarct"), spacing_mm=3.0)
    root = write_cohort(tmp_path / "cohort", settings, jobs=2)

    validator = shutil.which("bids-validator-deno", path=os.path.dirname(sys.executable))
    result = subprocess.run([validator, str(root)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]

    table = pd.read_csv(root / "derivatives/synth/lesions.tsv", sep="\t")
    assert set(table["participant_id"]) == {"sub-001", "sub-002"} and set(table["session_id"]) == {"ses-01", "ses-02"}
    for (subject, session), rows in table.groupby(["participant_id", "session_id"]):
        dseg = load_volume(root / f"derivatives/synth/{subject}/{session}/anat/{subject}_{session}_desc-synth_dseg.nii.gz")
        voxel_mm3 = dseg.voxel_volume_mm3
        for row in rows.itertuples():
            measured = (np.rint(dseg.array) == row.label_id).sum() * voxel_mm3
            assert row.component_volume_mm3 == pytest.approx(measured, rel=0.01)
    # The workflow reads it back as a study: every image, with its acquisition date.
    study = cohort.from_bids(root)
    assert study.rejected == [] and len(study.images) == 2 * 2 * 3
    assert set(study.images["modality"]) == {"T1w", "FLAIR", "DWI"} and (study.images["acquisition_date"] != "").all()
    dates = pd.read_csv(root / "sub-001/sub-001_sessions.tsv", sep="\t")["acq_time"]
    assert dates.iloc[1] > dates.iloc[0]
    assert (root / "sub-001/ses-01/dwi/sub-001_ses-01_dwi.bval").read_text().strip() == "1000"
    assert (root / "derivatives/synth/sub-001/ses-01/dwi/sub-001_ses-01_desc-ADC_dwimap.nii.gz").is_file()


def test_same_seed_same_bytes_whatever_the_number_of_jobs(anatomy_cache, tmp_path):
    settings = CohortSettings(subjects=2, seed=5, contrasts=("T1w",), lesion_classes=("cyst",), spacing_mm=3.0)
    one = write_cohort(tmp_path / "one", settings, jobs=1)
    two = write_cohort(tmp_path / "two", settings, jobs=2)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    for name in files:
        digest = lambda root: hashlib.sha256((root / name).read_bytes()).hexdigest()  # noqa: E731
        assert digest(one) == digest(two), name


def test_descriptors_pick_out_one_lesion_each_and_are_true(subjects):
    for subject in subjects:
        lesions = subject.lesions
        assert len(lesions) >= 2
        seen: dict[str, int] = {}
        for lesion in lesions:
            assert lesion.attributes["descriptors"], lesion.lesion_class
            for phrase in lesion.attributes["descriptors"]:
                assert phrase not in seen, f"{phrase!r} names two lesions"
                seen[phrase] = lesion.index
        volumes = {lesion.index: lesion.attributes["volume_mm3"] for lesion in lesions}
        anterior = {lesion.index: lesion.attributes["centroid_ras_mm"][1] for lesion in lesions}
        assert seen["the largest lesion"] == max(volumes, key=volumes.get)
        assert seen["the smallest lesion"] == min(volumes, key=volumes.get)
        assert seen["the most anterior lesion"] == max(anterior, key=anterior.get)
