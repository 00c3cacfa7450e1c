"""One subject prepared in one process for `voxelprompt run`: scans co-registered onto the first
image's preprocessed grid in scanner units, and masks mapped back onto every input image's grid."""

from __future__ import annotations

import numpy as np
import pytest

from voxelprompt.study.cohort import modality_from_filename
from voxelprompt.study.demo import centred_motion_ras
from voxelprompt.core.errors import InputError
from voxelprompt.imaging.prepare import prepare
from tests.test_coregister import moved_scan


@pytest.fixture(scope="module")
def prepared(mni_t1_2mm, mni_brain):
    ct = mni_t1_2mm.with_array(np.where(mni_t1_2mm.array > 0.1 * np.percentile(mni_t1_2mm.array, 98), 30.0, -1000.0)
                               .astype(np.float32))
    moved_ct = moved_scan(ct, centred_motion_ras(ct, 3, 10, 8), spacing_mm=2.2)
    return prepare([mni_t1_2mm, moved_ct], ["T1w", "CT"], ["t1.nii.gz", "ct.nii.gz"], ["01", "01"],
                   ["2024-01-01", "2024-01-01"]), mni_t1_2mm, moved_ct


def test_scans_share_the_subject_grid_and_keep_scanner_units(prepared):
    subject, t1, _ = prepared
    t1_scan, ct_scan = subject.scans
    assert t1_scan.volume.grid.is_same(ct_scan.volume.grid)
    assert (t1_scan.modality, ct_scan.modality, ct_scan.session, ct_scan.date) == ("T1w", "CT", "01", "2024-01-01")
    inside = t1_scan.volume.array > 0.5 * np.percentile(t1_scan.volume.array, 99)
    # Hounsfield units come back: tissue at 30 HU stays near 30 HU after co-registration.
    assert abs(float(np.median(ct_scan.volume.array[inside])) - 30.0) < 5.0
    assert float(t1_scan.volume.array.max()) > 1.5  # the T1w is back in its own units, not [0, 1]


def test_masks_map_back_onto_each_input_image(prepared):
    subject, t1, ct = prepared
    scan = subject.scans[0]
    # A ball in the middle of the head: inside every image's field of view whatever its motion.
    centre = np.array(scan.volume.shape) / 2
    distance = np.linalg.norm((np.indices(scan.volume.shape).T - centre).T * scan.volume.spacing_mm[:, None, None, None], axis=0)
    mask = scan.volume.with_array((distance < 40).astype(np.uint8))
    on_t1 = subject.on_image_grid(mask, 0)
    on_ct = subject.on_image_grid(mask, 1)
    assert on_t1.grid.is_same(t1.grid) and on_ct.grid.is_same(ct.grid)
    # The same tissue in the world: volumes agree within a few percent whatever the voxel size.
    volumes = [float(m.array.sum() * m.voxel_volume_mm3) for m in (mask, on_t1, on_ct)]
    assert max(volumes) / min(volumes) < 1.05, volumes


@pytest.mark.parametrize(("name", "modality"), [("sub-01_ses-01_T1w.nii.gz", "T1w"), ("sub-01_ce-gadolinium_T1w.nii.gz", "T1w+ce"),
                                                ("sub-01_FLAIR.nii", "FLAIR"), ("sub-01_dwi.nii.gz", "DWI"), ("x_ct.mgz", "CT")])
def test_modality_from_filename(name, modality):
    assert modality_from_filename(name) == modality


def test_modality_from_an_unknown_filename_names_the_file():
    with pytest.raises(InputError, match="scan.nii.gz"):
        modality_from_filename("scan.nii.gz")
