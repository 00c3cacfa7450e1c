"""The oracle check: with ground truth standing in for the vision networks, every task's program phi*
reproduces the truth of synthetic subjects, computed here independently of the programs and of the
label vocabulary: masks and images voxel by voxel, volumes to the voxel (lesion volumes as the
synthesis measured them), extents and crops from the world coordinates of the voxels' corners,
intensities, longitudinal changes, and every characterisation answer the lesions were built with.

The label ids of a few dozen targets are written out here by hand from the base labels
(data/labels/structures.tsv; Desikan-Killiany parcel n of data/labels/cortical_parcels.tsv is 1000 + n
on the left and 2000 + n on the right, its white matter 3000 + n and 4000 + n): singles, pairs,
unions, sides, lobes and territories. Every one of them is checked through the programs voxel by
voxel; the random pairs take their masks from this table whenever it names their target."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from voxelprompt.synth import labels
from voxelprompt.tasks.catalogue import FAMILIES, catalogue
from voxelprompt.tasks.sampling import example_for, execute
from voxelprompt.tasks.subjects import Requirements, TaskSubject, acquisitions_at_label_resolution, synthesize
from voxelprompt.tasks.values import ALL_LESIONS, NoValue, vocabulary

SPACING_MM = 2.0
ALL_CONTRASTS = ("T1w", "T1w+ce", "T2w", "FLAIR", "PDw", "DWI", "ADC", "CT")
POOL = [("tumour",), ("infarct",), ("white matter hyperintensity",), ("cyst",), ("haemorrhage",), ("meningioma",),
        ("infarct",), ("haemorrhage",)]
PAIRS_PER_TASK = 8
SIGNAL_WORD = {"hyper": "hyperintense", "hypo": "hypointense", "iso": "isointense", "low": "hypointense",
               "high": "hyperintense"}
DENSITY_WORD = {"hyper": "hyperdense", "hypo": "hypodense", "iso": "isodense"}

# Desikan-Killiany parcel numbers (row order of cortical_parcels.tsv) by lobe and by territory.
LOBE_PARCELS = {"frontal": (3, 11, 13, 16, 17, 18, 19, 23, 26, 27, 31), "parietal": (7, 21, 24, 28, 30),
                "temporal": (1, 5, 6, 8, 14, 15, 29, 32, 33), "occipital": (4, 10, 12, 20),
                "cingulate": (2, 9, 22, 25), "insular": (34,)}
TERRITORY_PARCELS = {"MCA": (1, 3, 7, 11, 14, 17, 18, 19, 21, 23, 26, 28, 29, 30, 32, 33, 34),
                     "ACA": (2, 13, 16, 22, 24, 25, 27, 31), "PCA": (4, 5, 6, 8, 9, 10, 12, 15, 20)}
TERRITORY_DEEP = {"left MCA": {12, 13, 14, 15, 17}, "right MCA": {22, 23, 24, 25, 27}, "left PCA": {11, 16},
                  "right PCA": {21, 26}, "left ACA": set(), "right ACA": set()}


def _grey_and_white(side: str, parcels) -> set[int]:
    cortex, white = (1000, 3000) if side == "left" else (2000, 4000)
    return {cortex + n for n in parcels} | {white + n for n in parcels}


CORTEX = {"left": set(range(1001, 1035)), "right": set(range(2001, 2035))}
WHITE = {"left": set(range(3001, 3035)), "right": set(range(4001, 4035))}
DEEP = {"left": {11, 12, 13, 14, 15}, "right": {21, 22, 23, 24, 25}}
GREY = {"left": {16, 17}, "right": {26, 27}}  # hippocampus, amygdala
BRAIN = CORTEX["left"] | CORTEX["right"] | WHITE["left"] | WHITE["right"] | DEEP["left"] | DEEP["right"] | \
    GREY["left"] | GREY["right"] | {8, 9, 10}  # cerebellum and brainstem
HAND_IDS = {
    "left hippocampus": {16}, "right hippocampus": {26}, "left and right hippocampus": {16, 26},
    "left amygdala": {17}, "right amygdala": {27}, "left thalamus": {11}, "left and right thalamus": {11, 21},
    "left caudate": {12}, "right putamen": {23}, "left and right putamen": {13, 23}, "right pallidum": {24},
    "left accumbens": {15}, "left lateral ventricle": {4}, "left and right lateral ventricle": {4, 5},
    "third ventricle": {6}, "fourth ventricle": {7}, "brainstem": {10}, "left cerebellum": {8},
    "left and right cerebellum": {8, 9}, "left superior frontal gyrus": {1027}, "right insula": {2034},
    "left and right precuneus": {1024, 2024}, "right banks of the superior temporal sulcus": {2001},
    "left cerebral cortex": CORTEX["left"], "left and right cerebral cortex": CORTEX["left"] | CORTEX["right"],
    "right cerebral white matter": WHITE["right"], "left and right cerebral white matter": WHITE["left"] | WHITE["right"],
    "left and right deep grey matter": DEEP["left"] | DEEP["right"],
    "left and right basal ganglia": {12, 13, 14, 15, 22, 23, 24, 25},
    "left cerebral hemisphere": CORTEX["left"] | WHITE["left"] | DEEP["left"] | GREY["left"],
    "ventricular system": {4, 5, 6, 7}, "brain": BRAIN, "cranial cavity": BRAIN | {3, 4, 5, 6, 7},
    "infratentorial brain": {7, 8, 9, 10},
    "supratentorial brain": BRAIN - {8, 9, 10} | {4, 5, 6},
    "left frontal lobe": _grey_and_white("left", LOBE_PARCELS["frontal"]),
    "right temporal lobe": _grey_and_white("right", LOBE_PARCELS["temporal"]),
    "left and right occipital lobe": _grey_and_white("left", LOBE_PARCELS["occipital"])
    | _grey_and_white("right", LOBE_PARCELS["occipital"]),
    "right insular lobe": _grey_and_white("right", LOBE_PARCELS["insular"]),
    "left MCA territory": _grey_and_white("left", TERRITORY_PARCELS["MCA"]) | TERRITORY_DEEP["left MCA"],
    "right PCA territory": _grey_and_white("right", TERRITORY_PARCELS["PCA"]) | TERRITORY_DEEP["right PCA"],
    "left ACA territory": _grey_and_white("left", TERRITORY_PARCELS["ACA"]),
    "left and right PCA territory": _grey_and_white("left", TERRITORY_PARCELS["PCA"])
    | _grey_and_white("right", TERRITORY_PARCELS["PCA"]) | TERRITORY_DEEP["left PCA"] | TERRITORY_DEEP["right PCA"],
}


@pytest.fixture(scope="module")
def pool(anatomy_cache) -> list[TaskSubject]:
    """Two-session subjects with every contrast, each with one lesion class (some also another)."""
    acquisitions = acquisitions_at_label_resolution(SPACING_MM)
    return [synthesize(Requirements(ALL_CONTRASTS, classes, 2), np.random.default_rng([11, n]), SPACING_MM,
                       acquisitions=acquisitions) for n, classes in enumerate(POOL)]


@pytest.fixture(scope="module")
def executions(pool):
    """PAIRS_PER_TASK (task, subject) pairs per task, each run through the sandbox."""
    found = []
    rng = np.random.default_rng(5)
    # One view per subject and number of sessions, made once: a view resamples its scans once.
    views_with = {2: pool, 1: [TaskSubject(s.sessions[:1]) for s in pool]}
    for task in catalogue().values():
        views = views_with[2 if task.requirements.sessions == 2 else 1]
        made = 0
        for attempt in range(PAIRS_PER_TASK * 6):
            if made == PAIRS_PER_TASK:
                break
            try:
                example = example_for(task, views[attempt % len(views)], rng)
            except NoValue:
                continue
            found.append((example, execute(example.program, example.subject)))
            made += 1
    return found


def test_at_least_200_pairs_cover_every_task_and_family(executions):
    per_task = Counter(example.task.name for example, _ in executions)
    assert len(executions) >= 200
    assert set(per_task) == set(catalogue()), set(catalogue()) - set(per_task)
    assert {example.task.family for example, _ in executions} == set(FAMILIES)
    assert min(per_task.values()) >= 4, per_task


def test_every_program_runs_and_stops(executions):
    failures = [(e.task.name, e.program, [f.error for f in run.feedback if not f.ok]) for e, run in executions if not run.ok]
    assert not failures, failures[:3]


def test_every_program_reproduces_the_ground_truth(executions):
    wrong = []
    for example, run in executions:
        if not run.ok:
            continue
        expected, got = truth(example), answer(example, run)
        if not _same(expected, got):
            wrong.append((example.task.name, example.bound.program, expected, got))
    assert not wrong, f"{len(wrong)} of {len(executions)} disagree, e.g. {wrong[:3]}"


# --- ground truth, computed from the label maps and the lesions' construction records ---------------

def truth(example):
    name, values = example.task.name, example.bound.program
    first = example.subject.sessions[0]
    scan = {s.modality: s for s in example.subject.scans if s.session == first.label}
    if example.task.family == "segmentation":
        key = next(iter(example.task.values))
        return {"mask": _mask(first, values[key], example)}
    if name in ("extract-region", "remove-region", "crop-field-of-view"):
        mask = _mask(first, values["target"], example)
        volume = scan[values["contrast"]].volume
        if name == "extract-region":
            return {"image": np.where(mask, volume.array, 0)}
        if name == "remove-region":
            return {"image": np.where(mask, 0, volume.array)}
        return _crop(volume, mask, float(values["margin_mm"]))
    if name in ("mean-intensity", "mean-hu", "mean-adc"):
        modality = {"mean-hu": "CT", "mean-adc": "ADC"}.get(name, values.get("contrast"))
        return {"value": float(scan[modality].volume.array[_mask(first, values["region"], example)].mean())}
    if name == "signal-to-noise":
        inside = scan[values["contrast"]].volume.array[_mask(first, values["target"], example)]
        return {"value": float(inside.mean() / inside.std())}
    if name == "volume":
        lesion = example.bound.lesions.get("region")
        return {"value": lesion.attributes["volume_mm3"] if lesion else _volume(first, values["region"], example)}
    if name in ("bounding-box", "extent"):
        extents = _extents(first.synthetic.label_map.affine, _mask(first, values["region"], example))
        return {"value": extents[values["extent"]]} if name == "extent" else {"values": list(extents.values())}
    if name == "asymmetry":
        left = _volume(first, f"left {values['structure']}", example)
        right = _volume(first, f"right {values['structure']}", example)
        return {"value": 200 * (left - right) / (left + right)}
    if name in ("volume-ratio", "tumour-composition"):
        key = "target" if name == "volume-ratio" else "part"
        return {"value": _volume(first, values[key], example) / _volume(first, values["other"], example)}
    if name == "icv-normalised-volume":
        return {"value": _volume(first, values["target"], example) / _volume(first, "cranial cavity", example)}
    if name in ("lesion-growth", "ventricular-growth"):
        if name == "lesion-growth":
            index = example.bound.lesions["lesion"].index
            before, after = (next(l for l in s.synthetic.lesions if l.index == index).attributes["volume_mm3"]
                             for s in example.subject.sessions)
        else:
            before, after = (_volume(s, values["target"], example) for s in example.subject.sessions)
        return {"values": [after - before, 100 * (after - before) / before]}
    if name == "signal-change":
        means = [next(s for s in example.subject.scans if s.session == session.label
                      and s.modality == values["contrast"]).volume.array[_mask(session, values["lesion"], example)].mean()
                 for session in example.subject.sessions]
        return {"value": float(100 * (means[1] - means[0]) / means[0])}
    lesion = example.bound.lesions["lesion"]
    if name == "signal-intensity":
        signal = lesion.components[0].signals[values["contrast"]]
        return {"choice": (DENSITY_WORD if values["contrast"] == "CT" else SIGNAL_WORD)[signal]}
    if name == "cerebral-location":
        return {"choice": lesion.attributes["lobe"]}
    if name == "vascular-territory":
        return {"choice": lesion.attributes["territory"]}
    if name == "diffusion-restriction":
        return {"choice": "restricted" if lesion.restricts_diffusion else "not restricted"}
    if name == "enhancement":
        return {"choice": "enhancing" if lesion.enhances else "non-enhancing"}
    raise AssertionError(f"no ground truth for task {name}")


def answer(example, run):
    """What the program produced, in the shape of `truth`."""
    library, kind = run.library, example.task.answer["kind"]
    if kind == "mask":
        (mask,) = library.outputs.values()
        return {"mask": mask.array > 0}
    if kind == "image":
        (image,) = library.outputs.values()
        if example.task.name == "crop-field-of-view":
            return {"image": image.array, "origin_mm": tuple(np.round(image.affine[:3, 3], 6))}
        return {"image": image.array}
    if kind == "choice":
        return {"choice": library.responses[-1]}
    values = [metric.value for metric in library.metrics]
    return {"value": values[0]} if len(values) == 1 and example.task.name not in ("lesion-growth", "ventricular-growth") else {"values": values}


def _same(expected, got) -> bool:
    if expected.keys() != got.keys():
        return False
    for key, value in expected.items():
        if key in ("mask", "image"):
            if got[key].shape != value.shape or not np.array_equal(got[key], value):
                return False
        elif key in ("value", "values"):
            if not np.allclose(np.atleast_1d(got[key]), np.atleast_1d(value), rtol=1e-4, atol=1e-3):
                return False
        elif got[key] != value:
            return False
    return True


def _mask(session, target, example) -> np.ndarray:
    """The target on the session's label map: from the hand-written ids, else from the vocabulary,
    else from the lesions' own label ids. Lobes and territories are anatomy, lesions included: they
    are read from the label map before lesions were painted in."""
    synthetic = session.synthetic
    if target in HAND_IDS:
        ids = HAND_IDS[target]
        spatial = "lobe" in target or "territory" in target
    else:
        try:
            entry = labels.target(target)
        except KeyError:
            return np.isin(synthetic.label_map.array, _lesion_ids(session, target))
        ids, spatial = entry.label_ids, entry.kind in ("lobe", "territory")
    return np.isin((synthetic.anatomy if spatial else synthetic.label_map).array, sorted(ids))


def _lesion_ids(session, target) -> list[int]:
    lesions = session.synthetic.lesions
    parts = {"enhancing part": ("rim",), "necrotic core": ("necrosis",), "oedema": ("oedema",), "the core": ("rim", "necrosis")}
    for words, names in parts.items():
        if target.startswith(f"the {words}") or target.startswith(words):
            return [c.label_id for l in lesions if l.lesion_class == "tumour" for c in l.components if c.name in names]
    if target == ALL_LESIONS:
        return [i for l in lesions for i in l.label_ids]
    for name, forms in vocabulary()["lesions"].items():
        if target == f"all {forms['plural'][0]}":
            return [i for l in lesions if l.lesion_class == name for i in l.label_ids]
    (lesion,) = [l for l in lesions if target in l.attributes["descriptors"]]
    return lesion.label_ids


def _volume(session, target, example) -> float:
    voxel_mm3 = abs(np.linalg.det(session.synthetic.label_map.affine[:3, :3]))
    return float(_mask(session, target, example).sum() * voxel_mm3)


def _corners_mm(affine: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """World coordinates (mm) of the 8 corners of each voxel: a voxel spans its index +- 0.5."""
    offsets = np.array(list(np.ndindex(2, 2, 2))) - 0.5
    corners = (indices[:, None, :] + offsets[None]).reshape(-1, 3)
    return corners @ affine[:3, :3].T + affine[:3, 3]


def _extents(affine: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """The region's size along x (left-right), y (back-front) and z (bottom-top) in world mm."""
    corners = _corners_mm(affine, np.argwhere(mask))
    size = corners.max(0) - corners.min(0)
    return {"width": float(size[0]), "depth": float(size[1]), "height": float(size[2])}


def _crop(volume, mask: np.ndarray, margin_mm: float) -> dict:
    """The voxels of an axis-aligned grid that reach into the region's bounding box widened by the
    margin (in world mm), as an image, with the world position of its first voxel."""
    affine = volume.affine
    linear = affine[:3, :3]
    assert np.count_nonzero(linear - np.diag(np.diag(linear))) == 0, "an axis-aligned grid"
    corners = _corners_mm(affine, np.argwhere(mask))
    low_mm, high_mm = corners.min(0) - margin_mm, corners.max(0) + margin_mm
    kept = []
    for axis, size in enumerate(mask.shape):
        edges = np.sort(np.stack([linear[axis, axis] * (np.arange(size) + side) + affine[axis, 3]
                                  for side in (-0.5, 0.5)]), axis=0)  # each voxel's low and high edge, mm
        kept.append(np.flatnonzero((edges[1] > low_mm[axis]) & (edges[0] < high_mm[axis])))
    start = np.array([k.min() for k in kept])
    origin = linear @ start + affine[:3, 3]
    return {"image": volume.array[np.ix_(*kept)], "origin_mm": tuple(np.round(origin, 6))}


def test_every_hand_written_target_is_segmented_and_measured_voxel_by_voxel(pool):
    """Each target of the hand-written table through the programs of segment-anatomy (its mask, voxel
    by voxel) and bounding-box (its extents from the voxels' corners), on one subject: a wrong label
    set in the vocabulary, or a wrong lobe or territory, fails here."""
    from voxelprompt.evaluation.scoring import bind_values
    from voxelprompt.tasks.catalogue import task
    from voxelprompt.tasks.sampling import Example

    subject = TaskSubject(pool[0].sessions[:1])
    wrong = []
    for name in HAND_IDS:
        for task_name, key in (("segment-anatomy", "target"), ("bounding-box", "region")):
            chosen = task(task_name)
            bound = bind_values(chosen, {key: name}, subject)
            example = Example(chosen, "", chosen.program_for(bound.program), subject, bound)
            run = execute(example.program, subject)
            if not run.ok or not _same(truth(example), answer(example, run)):
                wrong.append((task_name, name))
    assert not wrong, wrong
