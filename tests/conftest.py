"""Shared fixtures: real brain images shipped in the demo data packages (requirements/data.txt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from voxelprompt.core.packaged_data import package_file
from voxelprompt.core.io import load_volume
from voxelprompt.core.volume import Volume

MNI_T1 = ("nimare", "resources/templates/tpl-MNI152NLin6Asym_res-01_T1w.nii.gz")
MNI_T1_2MM = ("nimare", "resources/templates/tpl-MNI152NLin6Asym_res-02_T1w.nii.gz")
MNI_BRAIN = ("nimare", "resources/templates/tpl-MNI152NLin6Asym_res-01_desc-brain_mask.nii.gz")
MEAN_FLAIR = ("swane_supplement", "resources/doMAP_template/mean_flair.nii.gz")  # same MNI152NLin6 space


@pytest.fixture(scope="session")
def anatomy_cache() -> Path:
    """The anatomy cache (`anatomy.cache_dir`: $VOXELPROMPT_CACHE, else the user's cache). The label
    maps and the atlas image are built there once per build version (about a minute and a half) and
    reused by every later test and run, the workflow's own included; a new `BUILD_VERSION` rebuilds
    them (test_synth checks the rebuild on a tiny map)."""
    from voxelprompt.synth import anatomy

    return anatomy.cache_dir()


@pytest.fixture(scope="session")
def mni_t1() -> Volume:
    return load_volume(package_file(*MNI_T1))


@pytest.fixture(scope="session")
def mni_t1_2mm() -> Volume:
    return load_volume(package_file(*MNI_T1_2MM))


@pytest.fixture(scope="session")
def mni_brain() -> Volume:
    return load_volume(package_file(*MNI_BRAIN))


@pytest.fixture(scope="session")
def mean_flair() -> Volume:
    return load_volume(package_file(*MEAN_FLAIR))


@pytest.fixture(scope="session")
def mni_ct(mni_t1, mni_brain) -> Volume:
    return ct_like(mni_t1, mni_brain)


def inverted_contrast(t1: Volume) -> Volume:
    """A T2-like image: tissue intensities reversed inside the head, air stays dark."""
    head = t1.array > 0.1 * np.percentile(t1.array, 98)
    return t1.with_array(np.where(head, t1.array.max() - t1.array, 0).astype(np.float32))


def ct_like(t1: Volume, brain: Volume) -> Volume:
    """A CT in Hounsfield units built from the T1's anatomy: air -1000, scalp 40, skull 1000, brain
    30, CSF 5. The skull is the dark band between scalp and brain in the T1."""
    data = t1.array
    head = data > 0.1 * np.percentile(data, 98)
    brain_mask = brain.array > 0
    hu = np.full(data.shape, -1000.0, dtype=np.float32)
    hu[head] = 40.0
    near_brain = ndimage.binary_dilation(brain_mask, iterations=8) & ~brain_mask
    hu[near_brain & (data < np.percentile(data[head], 30))] = 1000.0
    hu[brain_mask] = 30.0
    hu[brain_mask & (data < np.percentile(data[brain_mask], 15))] = 5.0
    return t1.with_array(hu)


def brain_points_mm(brain: Volume, every: int = 50) -> np.ndarray:
    """(N, 3) RAS mm positions of a subsample of brain voxels, for displacement errors."""
    return brain.grid.world_coordinates_mm(np.argwhere(brain.array > 0)[::every].astype(float))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="session")
def tokenizer():
    """A small BPE over sampled task texts, made as training makes its own (fewer episodes)."""
    from voxelprompt.train.loop import Settings, build_tokenizer

    return build_tokenizer(Settings(out="", tokenizer_episodes=80, vocab_size=512))


SLOW_TEST_TIMEOUT_S = 3600  # a slow test may build a whole study or evaluation first


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests get a limit of their own, above the default one of pyproject.toml."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TEST_TIMEOUT_S))
