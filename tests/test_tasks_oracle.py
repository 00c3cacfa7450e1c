"""The oracle check: with ground truth standing in for the vision networks, every task's program phi*
reproduces the truth of synthetic subjects, computed here independently of the programs: volumes to
the voxel (lesion volumes as the synthesis measured them), extents, intensities, longitudinal
changes, and every characterisation answer the lesions were built with."""

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
        return {"voxels": int(_mask(first, values[key], example).sum())}
    if name in ("extract-region", "remove-region", "crop-field-of-view"):
        mask = _mask(first, values["target"], example)
        image = scan[values["contrast"]].volume.array
        if name == "extract-region":
            return {"sum": float(image[mask].sum())}
        if name == "remove-region":
            return {"sum": float(image[~mask].sum())}
        margin = np.ceil(float(values["margin_mm"]) / first.synthetic.label_map.spacing_mm).astype(int)
        indices = np.argwhere(mask)
        low = np.maximum(indices.min(0) - margin, 0)
        high = np.minimum(indices.max(0) + 1 + margin, mask.shape)
        return {"shape": tuple(int(v) for v in high - low)}
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
        extents = _extents(first, _mask(first, values["region"], example))
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
        return {"voxels": int(np.count_nonzero(mask.array))}
    if kind == "image":
        (image,) = library.outputs.values()
        if example.task.name == "crop-field-of-view":
            return {"shape": tuple(image.shape)}
        return {"sum": float(image.array.sum())}
    if kind == "choice":
        return {"choice": library.responses[-1]}
    values = [metric.value for metric in library.metrics]
    return {"value": values[0]} if len(values) == 1 and example.task.name not in ("lesion-growth", "ventricular-growth") else {"values": values}


def _same(expected, got) -> bool:
    if expected.keys() != got.keys():
        return False
    for key, value in expected.items():
        if key in ("value", "values", "sum"):
            if not np.allclose(np.atleast_1d(got[key]), np.atleast_1d(value), rtol=1e-4, atol=1e-3):
                return False
        elif got[key] != value:
            return False
    return True


def _mask(session, target, example) -> np.ndarray:
    """The target on the session's label map, from the vocabulary or the lesions' own label ids."""
    synthetic = session.synthetic
    try:
        entry = labels.target(target)
    except KeyError:
        return np.isin(synthetic.label_map.array, _lesion_ids(session, target))
    return entry.mask((synthetic.anatomy if entry.kind in ("lobe", "territory") else synthetic.label_map).array)


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
    return float(_mask(session, target, example).sum() * session.synthetic.label_map.voxel_volume_mm3)


def _extents(session, mask) -> dict[str, float]:
    grid = session.synthetic.label_map.grid
    world = grid.world_coordinates_mm(np.argwhere(mask).astype(float))
    voxel = np.abs(grid.affine[:3, :3]).sum(axis=1)
    size = world.max(0) - world.min(0) + voxel
    return {"width": float(size[0]), "depth": float(size[1]), "height": float(size[2])}
