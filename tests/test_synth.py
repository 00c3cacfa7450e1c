"""Synthesis: label vocabulary, the oasis-dk whole-head anatomy, random deformation, contrast rendering.

The anatomy is built once per session into a temporary cache (about half a minute); everything that
renders works on a 2 mm copy of it so that each image takes well under a second.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from voxelprompt.core.volume import Volume
from voxelprompt.synth import anatomy, anatomy_volumes, contrast, labels, spatial
from voxelprompt.synth.contrast import Acquisition

SUBJECT_SEED = 1
TISSUES = {label.id: label.tissue for label in labels.base_labels()}


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def label_map(anatomy_cache: Path) -> Volume:
    """The oasis-dk label map, built once per test session into the private cache."""
    return anatomy.load()


@pytest.fixture(scope="session")
def label_map_2mm(label_map: Volume) -> Volume:
    return label_map.resampled_to(label_map.grid.with_spacing(2.0), order=0)


@pytest.fixture(scope="session")
def deformed(label_map_2mm: Volume):
    """deformed(seed): the 2 mm label map deformed with default_rng(seed), computed once per seed."""
    cache: dict[int, Volume] = {}

    def get(seed: int) -> Volume:
        if seed not in cache:
            cache[seed] = spatial.deform(label_map_2mm, np.random.default_rng(seed))
        return cache[seed]

    return get


@pytest.fixture(scope="session")
def subject(deformed) -> Volume:
    return deformed(SUBJECT_SEED)


# One non-RAS 2 mm acquisition per contrast (permuted axes included), rendered once.
RENDER_AXCODES = {"T1w": "LPS", "T2w": "PIR", "FLAIR": "ASL", "CT": "SPR", "DWI": "LIA"}


@pytest.fixture(scope="session")
def rendered(subject: Volume):
    cache: dict[str, dict[str, Volume]] = {}

    def get(contrast_name: str) -> dict[str, Volume]:
        if contrast_name not in cache:
            acquisition = Acquisition((2.0, 2.0, 2.0), RENDER_AXCODES[contrast_name], 0.02, 0.1)
            cache[contrast_name] = contrast.render(subject, contrast_name, np.random.default_rng(5), acquisition)
        return cache[contrast_name]

    return get


def world_axis_mm(volume: Volume, axis: int) -> np.ndarray:
    """RAS world coordinate `axis` (0 = x, 2 = z) of every voxel, from the affine."""
    i, j, k = np.ogrid[: volume.shape[0], : volume.shape[1], : volume.shape[2]]
    row = volume.affine[axis]
    return row[0] * i + row[1] * j + row[2] * k + row[3]


def tissue_mask(label_array: np.ndarray, tissue: str) -> np.ndarray:
    return np.isin(label_array, [i for i, t in TISSUES.items() if t == tissue])


def interior_mean(image: Volume, label_array: np.ndarray, tissue: str, min_voxels: int = 200) -> float:
    """Mean intensity of a tissue class over its voxels eroded by one voxel (no partial volume)."""
    interior = ndimage.binary_erosion(tissue_mask(label_array, tissue))
    assert interior.sum() >= min_voxels, f"only {interior.sum()} interior {tissue} voxels"
    return float(image.array[interior].mean())


def tissue_means(image: Volume, label_map_: Volume, tissues=("white_matter", "cortex", "csf")) -> dict[str, float]:
    label_array = contrast.labels_on(image, label_map_).array
    return {tissue: interior_mean(image, label_array, tissue) for tissue in tissues}


# --------------------------------------------------------------------------------------------------
# 1. Label vocabulary
# --------------------------------------------------------------------------------------------------


def test_vocabulary_has_many_uniquely_named_targets_over_base_labels():
    targets = labels.targets()
    base_ids = {label.id for label in labels.base_labels()}
    assert len(targets) > 100
    names = [target.name for target in targets]
    assert len(set(names)) == len(names)
    assert len(base_ids) == len(labels.base_labels())
    for target in targets:
        assert target.label_ids, f"{target.name} has no base labels"
        assert target.label_ids <= base_ids, f"{target.name}: unknown ids {sorted(target.label_ids - base_ids)}"


def test_left_and_right_target_is_the_union_of_its_sides():
    by_name = {target.name: target for target in labels.targets()}
    pairs = [name for name in by_name if name.startswith("left and right ")]
    structures = {_unsided(label) for label in labels.base_labels() if label.hemisphere and label.id < 1000}
    parcels = {_unsided(label) for label in labels.base_labels() if label.tissue == "cortex"}
    assert {f"left and right {name}" for name in structures | parcels} <= set(pairs)
    for name in pairs:
        part = name.removeprefix("left and right ")
        left, right = by_name[f"left {part}"], by_name[f"right {part}"]
        assert by_name[name].label_ids == left.label_ids | right.label_ids, name
        assert not left.label_ids & right.label_ids, name
        assert all(labels_by_id()[i].hemisphere == "left" for i in left.label_ids), name
        assert all(labels_by_id()[i].hemisphere == "right" for i in right.label_ids), name


@pytest.mark.parametrize(
    ("alias", "expected_name", "expected_ids"),
    [
        ("intracranial volume", "cranial cavity",
         lambda: {l.id for l in labels.base_labels() if l.tissue not in ("background", "soft_tissue", "bone")}),
        ("cerebral cortex", "left and right cerebral cortex",
         lambda: {l.id for l in labels.base_labels() if 1000 < l.id < 3000}),
        ("middle cerebral artery territory", "left and right MCA territory",
         lambda: {l.id for l in labels.base_labels() if l.territory == "MCA"}),
    ],
)
def test_target_resolves_aliases(alias, expected_name, expected_ids):
    target = labels.target(alias)
    assert target.name == expected_name
    assert target.label_ids == frozenset(expected_ids())


def test_unknown_target_is_a_key_error():
    with pytest.raises(KeyError):
        labels.target("left frontal lobe of the cerebellum")


def test_every_cortical_parcel_has_a_lobe_and_territory_shared_by_its_white_matter():
    by_id = labels_by_id()
    cortex = [label for label in labels.base_labels() if label.tissue == "cortex"]
    assert len(cortex) == 2 * len(labels.parcel_names()) == 68
    for label in cortex:
        assert label.lobe in labels.LOBES, label
        assert label.territory in labels.TERRITORIES, label
        white = by_id[label.id + 2000]  # cortex 1000 + n / 2000 + n -> white matter 3000 + n / 4000 + n
        assert white.tissue == "white_matter", white
        assert (white.lobe, white.territory, white.hemisphere) == (label.lobe, label.territory, label.hemisphere)
        assert white.name == f"{label.hemisphere} white matter of the {label.name.split(' ', 1)[1]}"


def test_reference_markdown_lists_every_target_once():
    markdown = labels.reference_markdown()
    rows = [line.split("|")[1].strip() for line in markdown.splitlines()
            if line.startswith("| ") and not line.startswith("| target |")]
    assert sorted(rows) == sorted(target.name for target in labels.targets())
    assert f"{len(labels.targets())} targets over {len(labels.base_labels())} base labels" in markdown


def labels_by_id() -> dict[int, labels.BaseLabel]:
    return {label.id: label for label in labels.base_labels()}


def _unsided(label: labels.BaseLabel) -> str:
    return label.name.split(" ", 1)[1]


# --------------------------------------------------------------------------------------------------
# 2. Anatomy (oasis-dk), measured on the built map
# --------------------------------------------------------------------------------------------------


def test_anatomy_holds_every_base_label_and_nothing_else(label_map):
    assert label_map.array.dtype == np.uint16
    assert np.allclose(label_map.spacing_mm, 1.0)
    present = set(np.unique(label_map.array).tolist())
    expected = {label.id for label in labels.base_labels()}
    assert expected - present == set(), f"missing base labels {sorted(expected - present)}"
    assert present - expected == set(), f"unknown values {sorted(present - expected)}"


def _labels_off_their_side(label_map: Volume) -> dict[str, float]:
    """Sided labels with at most 95 % of their off-midline voxels on their own side (RAS x)."""
    x_mm = np.broadcast_to(world_axis_mm(label_map, 0), label_map.shape)
    ids = label_map.array.ravel()
    x = x_mm.ravel()
    on_left = np.bincount(ids, weights=x < 0, minlength=5000)
    on_right = np.bincount(ids, weights=x > 0, minlength=5000)
    wrong = {}
    for label in labels.base_labels():
        if not label.hemisphere:
            continue
        # Voxels on the midline plane itself (x = 0) belong to either side; count the others.
        off_midline = on_left[label.id] + on_right[label.id]
        fraction = (on_left if label.hemisphere == "left" else on_right)[label.id] / off_midline
        if fraction <= 0.95:
            wrong[label.name] = round(float(fraction), 3)
    return wrong


def test_anatomy_lateral_labels_lie_on_their_side_of_the_midline(label_map):
    wrong = _labels_off_their_side(label_map)
    assert wrong == {}, f"fraction of off-midline voxels on the labelled side (RAS x) <= 0.95: {wrong}"


@pytest.mark.parametrize(
    ("target_name", "low_ml", "high_ml"),
    [
        ("brain", 1000, 1800),
        ("cranial cavity", 1200, 2100),
        ("left lateral ventricle", 5, 80),
        ("right lateral ventricle", 5, 80),
        ("left hippocampus", 2, 12),
        ("right hippocampus", 2, 12),
    ],
)
def test_anatomy_volumes_are_plausible(label_map, target_name, low_ml, high_ml):
    volume_ml = labels.target(target_name).mask(label_map.array).sum() * label_map.voxel_volume_mm3 / 1000
    assert low_ml < volume_ml < high_ml


def test_cranial_cavity_is_enclosed_by_skull(label_map):
    array = label_map.array
    cavity = labels.target("cranial cavity").mask(array)
    shell = ndimage.binary_dilation(cavity, iterations=3) & ~cavity
    enclosing = np.isin(array[shell], [labels.label_by_name(name).id
                                       for name in ("skull", "extracerebral CSF", "scalp and face")])
    assert enclosing.mean() > 0.5
    assert (array[shell] == labels.label_by_name("skull").id).mean() > 0.5


def test_posterior_fossa_is_inferior_to_the_lateral_ventricles(label_map):
    z_mm = np.broadcast_to(world_axis_mm(label_map, 2), label_map.shape)
    mean_z = {name: float(z_mm[labels.target(name).mask(label_map.array)].mean())
              for name in ("brainstem", "left and right cerebellum", "left and right lateral ventricle")}
    assert mean_z["brainstem"] < mean_z["left and right lateral ventricle"] - 20
    assert mean_z["left and right cerebellum"] < mean_z["left and right lateral ventricle"] - 20


def test_second_load_comes_from_the_cache(label_map, anatomy_cache, monkeypatch):
    cached = anatomy_cache / "anatomy" / f"oasis-dk_v{anatomy.BUILD_VERSION}.nii.gz"
    assert anatomy.cache_dir() == anatomy_cache
    assert cached.is_file()

    def no_build():
        raise AssertionError("the cached map was built again")

    monkeypatch.setattr(anatomy, "build_oasis_dk", no_build)
    again = anatomy.load()
    assert again.array.dtype == label_map.array.dtype
    assert np.array_equal(again.array, label_map.array)
    assert np.allclose(again.affine, label_map.affine)


def test_the_cache_is_built_once_per_build_version(tmp_path, monkeypatch):
    """On a tiny map: the first load builds and stores it, the next reads it, a new build version
    (a changed construction) builds it again beside the old one."""
    builds = []

    def tiny_build():
        builds.append(anatomy.BUILD_VERSION)
        return Volume(np.arange(27, dtype=np.uint16).reshape(3, 3, 3) % 5, np.diag([2.0, 2.0, 2.0, 1.0]))

    monkeypatch.setenv("VOXELPROMPT_CACHE", str(tmp_path))
    monkeypatch.setattr(anatomy, "build_oasis_dk", tiny_build)
    first = anatomy.load()
    second = anatomy.load()
    assert builds == [anatomy.BUILD_VERSION]
    assert np.array_equal(first.array, second.array) and first.array.dtype == np.uint16
    monkeypatch.setattr(anatomy, "BUILD_VERSION", anatomy.BUILD_VERSION + 1)
    anatomy.load()
    assert builds == [anatomy.BUILD_VERSION - 1, anatomy.BUILD_VERSION]
    assert len(list((tmp_path / "anatomy").glob("oasis-dk_v*.nii.gz"))) == 2


def test_unknown_anatomy_source_is_refused():
    with pytest.raises(ValueError, match="unknown anatomy source"):
        anatomy.load("no-such-atlas")


# --------------------------------------------------------------------------------------------------
# 3. Spatial deformation
# --------------------------------------------------------------------------------------------------


def test_deform_keeps_the_grid_and_the_label_set_and_changes_the_map(label_map_2mm, subject):
    assert subject.shape == label_map_2mm.shape
    assert np.array_equal(subject.affine, label_map_2mm.affine)
    assert subject.array.dtype == label_map_2mm.array.dtype
    assert set(np.unique(subject.array)) <= set(np.unique(label_map_2mm.array))
    assert (subject.array != label_map_2mm.array).mean() > 0.01


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_deform_keeps_structure_volumes_within_40_percent(label_map_2mm, deformed, seed):
    before = np.bincount(label_map_2mm.array.ravel(), minlength=5000)
    after = np.bincount(deformed(seed).array.ravel(), minlength=5000)
    ratios = {labels_by_id()[i].name: round(float(after[i] / before[i]), 2)
              for i in np.nonzero(before >= 100)[0] if i != 0}  # structures of at least 0.8 mL
    assert len(ratios) > 100
    outside = {name: ratio for name, ratio in ratios.items() if not 0.6 <= ratio <= 1.4}
    assert outside == {}, f"seed {seed}: volume ratio after/before outside [0.6, 1.4]: {outside}"


def test_mirrored_anatomy_is_the_flip_with_sides_swapped(label_map_2mm):
    mirrored = spatial.mirrored(label_map_2mm)
    assert mirrored.grid.is_same(label_map_2mm.grid)
    assert _labels_off_their_side(mirrored) == {}, "sided labels must stay on their own side after the flip"
    left, right = labels.label_by_name("left hippocampus").id, labels.label_by_name("right hippocampus").id
    assert np.array_equal(mirrored.array == left, np.flip(label_map_2mm.array == right, axis=0))
    brainstem = labels.label_by_name("brainstem").id
    assert np.array_equal(mirrored.array == brainstem, np.flip(label_map_2mm.array == brainstem, axis=0))
    counts = np.bincount(label_map_2mm.array.ravel(), minlength=5000)
    mirrored_counts = np.bincount(mirrored.array.ravel(), minlength=5000)
    assert mirrored_counts[left] == counts[right] and mirrored_counts[right] == counts[left]
    assert np.array_equal(spatial.mirrored(mirrored).array, label_map_2mm.array)


def test_deform_is_reproducible_per_seed(label_map_2mm, deformed):
    again = spatial.deform(label_map_2mm, np.random.default_rng(SUBJECT_SEED))
    assert np.array_equal(again.array, deformed(SUBJECT_SEED).array)
    other = deformed(2)
    assert (other.array != deformed(SUBJECT_SEED).array).mean() > 0.01


# --------------------------------------------------------------------------------------------------
# 4. Contrast rendering (2 mm deformed subject)
# --------------------------------------------------------------------------------------------------


def test_t1w_white_matter_brighter_than_cortex_brighter_than_csf(rendered, subject):
    means = tissue_means(rendered("T1w")["T1w"], subject)
    assert means["white_matter"] > means["cortex"] > means["csf"], means


def test_t2w_csf_brighter_than_cortex_brighter_than_white_matter(rendered, subject):
    means = tissue_means(rendered("T2w")["T2w"], subject)
    assert means["csf"] > means["cortex"] > means["white_matter"], means


def test_flair_cortex_brighter_than_white_matter_brighter_than_csf(rendered, subject):
    means = tissue_means(rendered("FLAIR")["FLAIR"], subject)
    assert means["cortex"] > means["white_matter"] > means["csf"], means


def test_ct_hounsfield_units(rendered, subject):
    image = rendered("CT")["CT"]
    means = tissue_means(image, subject, ("bone", "white_matter", "background"))
    assert means["bone"] > 500, means
    assert 15 <= means["white_matter"] <= 40, means
    assert means["background"] < -900, means


def test_dwi_and_adc_follow_diffusion(rendered, subject):
    images = rendered("DWI")
    assert set(images) == {"DWI", "ADC"}
    dwi, adc = images["DWI"], images["ADC"]
    assert dwi.grid.is_same(adc.grid)
    adc_means = tissue_means(adc, subject)
    dwi_means = tissue_means(dwi, subject)
    assert adc_means["csf"] > 2.0, adc_means
    assert 0.5 <= adc_means["white_matter"] <= 1.0, adc_means
    assert dwi_means["csf"] < dwi_means["white_matter"], dwi_means  # free water decays at b = 1000


@pytest.mark.parametrize("contrast_name", list(RENDER_AXCODES))
def test_rendered_images_are_stored_as_acquired(rendered, contrast_name):
    for image in rendered(contrast_name).values():
        assert "".join(nib.aff2axcodes(image.affine)) == RENDER_AXCODES[contrast_name]
        assert np.allclose(image.spacing_mm, 2.0, atol=1e-3)
        assert image.array.dtype == np.float32
        assert np.isfinite(image.array).all()


@pytest.mark.parametrize(
    "acquisition",
    [Acquisition((1.0, 1.0, 5.0), "LPS", 0.02, 0.1)]
    + [Acquisition((1.0, 1.5, 3.0), axcodes, 0.02, 0.1) for axcodes in contrast._ORIENTATIONS],
    ids=lambda a: f"{'x'.join(map(str, a.spacing_mm))}-{a.axcodes}",
)
def test_stored_orientation_and_spacing_equal_the_acquisition(label_map_2mm, acquisition):
    # Geometry only: a 64 mm cube of the anatomy renders in a few milliseconds.
    centre = np.asarray(label_map_2mm.shape) // 2
    piece = label_map_2mm.cropped(tuple(centre - 16), tuple(centre + 16))
    image = contrast.render(piece, "T1w", np.random.default_rng(0), acquisition)["T1w"]
    stored_axcodes = "".join(nib.aff2axcodes(image.affine))
    # Acquisition.spacing_mm is the voxel size along the world axes (x, y, z); storage permutes axes.
    world_spacing = [round(float(s), 3) for s in image.reoriented("RAS").spacing_mm]
    assert stored_axcodes == acquisition.axcodes
    assert world_spacing == pytest.approx(list(acquisition.spacing_mm), abs=1e-3), (
        f"{stored_axcodes} image with world voxel size {world_spacing}, acquired as {list(acquisition.spacing_mm)}")


def test_tissue_ordering_survives_reorientation_to_ras(rendered, subject):
    for contrast_name, order in (("T1w", ("white_matter", "cortex", "csf")), ("T2w", ("csf", "cortex", "white_matter"))):
        image = rendered(contrast_name)[contrast_name]
        ras = image.reoriented("RAS")
        assert ras.grid.axcodes == "RAS"
        labels_ras = contrast.labels_on(ras, subject)
        assert np.array_equal(labels_ras.array, contrast.labels_on(image, subject).reoriented("RAS").array)
        means = tissue_means(ras, subject)
        assert means[order[0]] > means[order[1]] > means[order[2]], (contrast_name, means)


def test_same_seed_renders_identical_images(subject, rendered):
    acquisition = Acquisition((2.0, 2.0, 2.0), "LPS", 0.02, 0.1)
    first = contrast.render(subject, "T1w", np.random.default_rng(11), acquisition)["T1w"]
    second = contrast.render(subject, "T1w", np.random.default_rng(11), acquisition)["T1w"]
    assert np.array_equal(first.array, second.array)
    assert np.array_equal(first.affine, second.affine)
    other_seed = rendered("T1w")["T1w"]  # same acquisition, seed 5
    assert not np.array_equal(first.array, other_seed.array)


def test_explicit_means_are_rendered_where_the_labels_are(subject):
    # Random, side-specific means: a flipped or shifted image would miss them (a symmetric ordering
    # of tissue classes would not notice a left-right flip). No bias field, little noise.
    ids = sorted(TISSUES)
    chosen = dict(zip(ids, np.random.default_rng(7).uniform(20.0, 200.0, len(ids)).tolist()))
    acquisition = Acquisition((2.0, 2.0, 2.0), "PIR", 0.005, 0.0)
    image = contrast.render(subject, "T1w", np.random.default_rng(3), acquisition, means={"T1w": chosen})["T1w"]
    label_array = contrast.labels_on(image, subject).array
    checked, off = 0, {}
    for label_id, mean in chosen.items():
        interior = ndimage.binary_erosion(label_array == label_id)
        if interior.sum() < 30:
            continue
        checked += 1
        measured = float(image.array[interior].mean())
        if abs(measured - mean) > 0.1 * mean:
            off[labels_by_id()[label_id].name] = (round(measured, 1), round(mean, 1))
    assert checked >= 40
    assert off == {}, f"measured vs chosen mean: {off}"


def test_explicit_means_missing_a_label_are_refused(subject):
    ids = sorted(TISSUES)
    incomplete = {label_id: 50.0 for label_id in ids if label_id != labels.label_by_name("left hippocampus").id}
    with pytest.raises(ValueError, match="no T1w intensity"):
        contrast.render(subject, "T1w", np.random.default_rng(0), Acquisition((2.0, 2.0, 2.0), "RAS", 0.01, 0.0),
                        means={"T1w": incomplete})


def test_unknown_contrast_is_refused(subject):
    with pytest.raises(ValueError, match="unknown contrast"):
        contrast.render(subject, "SWI", np.random.default_rng(0))


def test_the_committed_label_reference_page_is_current():
    """docs/labels.md is generated (`voxelprompt label-reference docs/labels.md`); it must match the data."""
    committed = (Path(__file__).resolve().parents[1] / "docs" / "labels.md").read_text()
    assert committed == labels.reference_markdown()


@pytest.fixture(scope="session")
def fsaverage_map(anatomy_cache: Path) -> Volume:
    if importlib.util.find_spec(anatomy.FREESURFER_PACKAGE) is None:
        pytest.skip("optional FreeSurfer anatomy not installed (requirements/freesurfer-data.txt)")
    return anatomy.load("fsaverage")


def test_fsaverage_anatomy_has_every_label_in_plausible_volumes_on_the_right_side(fsaverage_map):
    present = set(np.unique(fsaverage_map.array).tolist())
    assert present == {label.id for label in labels.base_labels()}
    voxel_ml = fsaverage_map.voxel_volume_mm3 / 1000
    assert 1000 < labels.target("brain").mask(fsaverage_map.array).sum() * voxel_ml < 1800
    assert 2 < labels.target("left hippocampus").mask(fsaverage_map.array).sum() * voxel_ml < 12
    x_mm = np.broadcast_to(world_axis_mm(fsaverage_map, 0), fsaverage_map.shape)
    for side, sign in (("left", -1), ("right", 1)):
        hemisphere = labels.target(f"{side} cerebral hemisphere").mask(fsaverage_map.array)
        assert (np.sign(x_mm[hemisphere]) == sign).mean() > 0.95


def test_the_committed_anatomy_volume_page_is_current(label_map, fsaverage_map):
    """docs/anatomy-volumes.md is generated (`voxelprompt anatomy-reference docs/anatomy-volumes.md`)."""
    committed = (Path(__file__).resolve().parents[1] / "docs" / "anatomy-volumes.md").read_text()
    assert committed == anatomy_volumes.reference_markdown({"oasis-dk": label_map, "fsaverage": fsaverage_map})


def test_volumes_are_counted_per_target_and_compared_at_the_same_intracranial_volume():
    hippocampus, cavity = labels.label_by_name("left hippocampus").id, labels.label_by_name("extracerebral CSF").id
    small = np.full((10, 10, 10), cavity, np.uint16)
    small[:2, :5] = hippocampus  # 100 voxels of 8 mm3: 0.8 ml in a cavity of 8 ml
    large = np.full((10, 10, 20), cavity, np.uint16)  # twice the cavity, the same fraction of hippocampus
    large[:2, :5] = hippocampus
    volumes = anatomy_volumes.volumes_ml(Volume(small, np.diag([2.0, 2.0, 2.0, 1.0])))
    assert volumes["left hippocampus"] == pytest.approx(0.8) and volumes["cranial cavity"] == pytest.approx(8.0)
    assert volumes["left and right hippocampus"] == volumes["left hippocampus"] and volumes["right hippocampus"] == 0
    twice = anatomy_volumes.volumes_ml(Volume(large, np.diag([2.0, 2.0, 2.0, 1.0])))
    deviation = anatomy_volumes.deviation_from_reference(twice, volumes)
    assert deviation["left hippocampus"] == pytest.approx(0.0) and np.isnan(deviation["right hippocampus"])
    large[2, :2] = hippocampus  # 40 voxels more: 20 % above the same fraction
    more = anatomy_volumes.volumes_ml(Volume(large, np.diag([2.0, 2.0, 2.0, 1.0])))
    assert anatomy_volumes.deviation_from_reference(more, volumes)["left hippocampus"] == pytest.approx(0.2)


def test_each_anatomy_names_the_protocol_that_defines_a_target():
    hippocampus = labels.target("left hippocampus")
    assert anatomy_volumes.definition("fsaverage", hippocampus) == "FreeSurfer aseg"
    assert "Desikan-Killiany" in anatomy_volumes.definition("oasis-dk", hippocampus)
    assert "OASIS" in anatomy_volumes.definition("oasis-dk", labels.target("third ventricle"))
    assert all(anatomy_volumes.definition(source, target) for source in anatomy.SOURCES for target in labels.targets())


def test_field_of_view_covers_the_head_with_the_drawn_margin(subject):
    acquisition = Acquisition((2.0, 2.0, 2.0), "RAS", 0.02, 0.1, fov_margin_mm=6.0)
    image = contrast.render(subject, "T1w", np.random.default_rng(3), acquisition)["T1w"]
    head = np.argwhere(subject.array > 0)
    head_low, head_high = (subject.grid.world_coordinates_mm(head.min(axis=0)[None].astype(float))[0],
                           subject.grid.world_coordinates_mm(head.max(axis=0)[None].astype(float))[0])
    image_low = image.grid.world_coordinates_mm(np.zeros((1, 3)))[0]
    image_high = image.grid.world_coordinates_mm((np.asarray(image.shape) - 1)[None].astype(float))[0]
    full_low = subject.grid.world_coordinates_mm(np.zeros((1, 3)))[0]
    full_high = subject.grid.world_coordinates_mm((np.asarray(subject.shape) - 1)[None].astype(float))[0]
    for axis in range(3):
        assert image_low[axis] <= head_low[axis] + 1e-6 and image_high[axis] >= head_high[axis] - 1e-6
        # the margin is about 6 mm unless the label map itself ends sooner
        assert image_low[axis] >= max(head_low[axis] - 6.0 - 2.0, full_low[axis] - 2.0) - 1e-6
        assert image_high[axis] <= min(head_high[axis] + 6.0 + 2.0, full_high[axis] + 2.0) + 1e-6
