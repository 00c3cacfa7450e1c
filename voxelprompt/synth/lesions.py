"""Lesion synthesis (paper Appendix A.3) with attributes that are true by construction.

A lesion grows in a named region (a vocabulary target or base label): a sphere of a drawn radius
around a point of that region holds a union of random ellipsoids, which is randomly dilated or
eroded, warped by a smooth field and clipped to where the class may lie. Secondary geometry splits
or surrounds it (tumours: enhancing rim, necrotic core, oedema). Each component becomes a new label
(10000 + 10 * lesion + component) in the subject's label map, and gets, per contrast, a signal
relative to the tissue around it: hyper, hypo or iso (ADC: low = restricted, high, iso).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
from scipy import ndimage

from voxelprompt.core.morphology import grown_mm
from voxelprompt.core.volume import Volume
from voxelprompt.synth import labels
from voxelprompt.synth.spatial import upsample

LESION_LABEL_BASE = 10000
SHELL_MM = 6.0  # "surrounding tissue": this far around a lesion
# Intensity factors relative to the surrounding tissue's mean (MRI) and offsets in HU (CT).
_FACTORS = {"hyper": (1.35, 1.8), "hypo": (0.45, 0.7), "iso": (0.98, 1.02), "low": (0.35, 0.6), "high": (1.5, 2.5)}
_CT_OFFSETS_HU = {"hyper": (25.0, 50.0), "hypo": (-20.0, -8.0), "iso": (-1.0, 1.0)}
COMPONENT_ORDER = ("core", "rim", "necrosis", "oedema")


@dataclass(frozen=True)
class Component:
    name: str  # core, rim, necrosis, oedema
    label_id: int
    signals: dict[str, str]  # contrast (T1w, T1w+ce, T2w, FLAIR, PDw, ADC, CT) -> hyper/hypo/iso/low/high
    enhancing: bool


@dataclass
class Lesion:
    index: int
    lesion_class: str
    stage: str
    components: list[Component]
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def label_ids(self) -> list[int]:
        return [c.label_id for c in self.components]

    @property
    def restricts_diffusion(self) -> bool:
        return any(c.signals.get("ADC") == "low" for c in self.components)

    @property
    def enhances(self) -> bool:
        return any(c.enhancing for c in self.components)


@cache
def lesion_classes() -> dict[str, Any]:
    return json.loads((resources.files("voxelprompt") / "data" / "synth" / "lesion_classes.json").read_text())["classes"]


def add_lesions(label_map: Volume, rng: np.random.Generator, classes: list[str]) -> tuple[Volume, list[Lesion]]:
    """`label_map` with one or more lesions of each class in `classes`, and their records."""
    data = label_map.array.astype(np.uint16).copy()
    lesions: list[Lesion] = []
    for lesion_class in classes:
        spec = lesion_classes()[lesion_class]
        for _ in range(int(rng.integers(spec["count"][0], spec["count"][1] + 1))):
            lesion = _grow(data, label_map, lesion_class, spec, len(lesions) + 1, rng)
            if lesion is not None:
                lesions.append(lesion)
    result = label_map.with_array(data)
    for lesion in lesions:
        lesion.attributes = measure(lesion, label_map, result)
    describe(lesions)
    return result, lesions


def describe(lesions: list[Lesion]) -> None:
    """Store in each lesion's attributes the phrases that pick it out among the subject's lesions
    ("the largest lesion", "the left infarct", "the most anterior lesion", "the tumour in the frontal
    lobe"): only phrases true of that lesion alone, from its measured attributes."""
    def unique(lesion: Lesion, group: list[Lesion], key) -> bool:
        return sum(key(other) == key(lesion) for other in group) == 1

    for lesion in lesions:
        a = lesion.attributes
        same_class = [other for other in lesions if other.lesion_class == lesion.lesion_class]
        phrases = []
        if len(same_class) == 1:
            phrases.append(f"the {lesion.lesion_class}")
        for group, noun in ((lesions, "lesion"), (same_class, lesion.lesion_class)):
            if len(group) < 2:
                continue
            volumes = [other.attributes["volume_mm3"] for other in group]
            if a["volume_mm3"] == max(volumes) and volumes.count(max(volumes)) == 1:
                phrases.append(f"the largest {noun}")
            if a["volume_mm3"] == min(volumes) and volumes.count(min(volumes)) == 1:
                phrases.append(f"the smallest {noun}")
            if a["hemisphere"] in labels.SIDES and unique(lesion, group, lambda o: o.attributes["hemisphere"]):
                phrases.append(f"the {a['hemisphere']} {noun}")
            if a["lobe"] and unique(lesion, group, lambda o: o.attributes["lobe"]):
                phrases.append(f"the {noun} in the {a['lobe']} lobe")
            if a["territory"] and unique(lesion, group, lambda o: o.attributes["territory"]):
                phrases.append(f"the {noun} in the {a['territory']} territory")
        if len(lesions) >= 2:  # left/right is said by hemisphere; RAS axes 1 and 2 give the rest
            for axis, (low, high) in ((1, ("most posterior", "most anterior")), (2, ("most inferior", "most superior"))):
                positions = [other.attributes["centroid_ras_mm"][axis] for other in lesions]
                here = a["centroid_ras_mm"][axis]
                if here == max(positions) and positions.count(here) == 1:
                    phrases.append(f"the {high} lesion")
                if here == min(positions) and positions.count(here) == 1:
                    phrases.append(f"the {low} lesion")
        a["descriptors"] = phrases


def _grow(data: np.ndarray, label_map: Volume, lesion_class: str, spec: dict[str, Any], index: int,
          rng: np.random.Generator) -> Lesion | None:
    spacing = label_map.spacing_mm
    region_name = spec["grows_in"][rng.integers(len(spec["grows_in"]))]
    allowed = _allowed(data, spec["within"])
    region = np.isin(data, sorted(_region_ids(region_name))) & allowed
    if not region.any():
        return None
    radius_mm = float(rng.uniform(*spec["radius_mm"]))
    core = _blob(region, allowed, radius_mm, spacing, rng)
    if core.sum() < 8:
        return None
    stage = str(rng.choice(spec["stages"])) if "stages" in spec else ""
    geometry = _components(core, data, allowed, spec, spacing, rng)
    components = []
    for number, name in enumerate(COMPONENT_ORDER):
        if name not in geometry or not geometry[name].any():
            continue
        profile = spec["components"][name]
        profile = profile[stage] if stage else profile
        signals = {contrast: (value if isinstance(value, str) else str(rng.choice(value)))
                   for contrast, value in profile.items() if contrast != "enhancing"}
        # Contrast agent changes enhancing tissue only: the rest looks as it did before it.
        signals.setdefault("T1w+ce", signals["T1w"])
        label_id = LESION_LABEL_BASE + 10 * index + number
        data[geometry[name]] = label_id
        components.append(Component(name, label_id, signals, bool(profile.get("enhancing", False))))
    return Lesion(index, lesion_class, stage, components)


def _allowed(data: np.ndarray, within: str) -> np.ndarray:
    if within == "brain":
        return np.isin(data, parenchyma_ids())
    if within == "white matter":
        return np.isin(data, [label.id for label in labels.base_labels() if label.tissue == "white_matter"])
    if within != "surface":
        raise ValueError(f"unknown lesion extent {within!r}")
    # Extra-axial: the CSF around the brain and the cortex it presses on, never deeper tissue.
    surface = [label.id for label in labels.base_labels() if label.tissue in ("cortex",)
               or label.name == "extracerebral CSF"]
    return np.isin(data, surface)


def _region_ids(name: str) -> frozenset[int]:
    try:
        return labels.target(name).label_ids
    except KeyError:
        return frozenset({labels.label_by_name(name).id})


def _blob(region: np.ndarray, allowed: np.ndarray, radius_mm: float, spacing: np.ndarray,
          rng: np.random.Generator) -> np.ndarray:
    """Union of random ellipsoids within a sphere around a point of `region`, roughened and warped."""
    candidates = np.argwhere(region)
    centre = candidates[rng.integers(len(candidates))]
    radius_vox = np.ceil(radius_mm / spacing).astype(int) + 2
    low = np.maximum(centre - radius_vox, 0)
    high = np.minimum(centre + radius_vox + 1, region.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high))
    grid_mm = [(np.arange(a, b) - c) * s for a, b, c, s in zip(low, high, centre, spacing)]
    x, y, z = np.meshgrid(*grid_mm, indexing="ij")
    points = np.stack([x, y, z], axis=-1)
    blob = np.zeros(x.shape, bool)
    for _ in range(int(rng.integers(2, 6))):
        offset = rng.normal(0, radius_mm / 4, 3)
        axes = rng.uniform(0.35, 0.8, 3) * radius_mm
        rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
        local = (points - offset) @ rotation
        blob |= ((local / axes) ** 2).sum(axis=-1) <= 1
    blob &= (points**2).sum(axis=-1) <= radius_mm**2
    if rng.random() < 0.5:
        blob = ndimage.binary_dilation(blob) if rng.random() < 0.5 else ndimage.binary_erosion(blob)
    warped = _warp(blob, radius_mm / 6 / spacing.min(), rng)
    core = np.zeros(region.shape, bool)
    core[box] = warped
    return core & allowed


def _warp(mask: np.ndarray, amplitude_voxels: float, rng: np.random.Generator) -> np.ndarray:
    if amplitude_voxels <= 0 or min(mask.shape) < 4:
        return mask
    field = np.stack([upsample(rng.normal(0, amplitude_voxels, (4, 4, 4)), mask.shape) for _ in range(3)])
    coordinates = np.indices(mask.shape, dtype=np.float32) + field
    return ndimage.map_coordinates(mask.astype(np.float32), coordinates, order=1) > 0.5


def _components(core: np.ndarray, data: np.ndarray, allowed: np.ndarray, spec: dict[str, Any], spacing: np.ndarray,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    names = spec["components"]
    if "rim" not in names:
        return {"core": core}
    # Tumour: an enhancing rim around a necrotic centre (when large enough), oedema in the white matter.
    rim_mm = rng.uniform(2.0, 4.0)
    inner = grown_mm(core, spacing, -rim_mm)
    geometry = {"rim": core & ~inner, "necrosis": inner}
    oedema_mm = rng.uniform(4.0, 12.0)
    around = grown_mm(core, spacing, oedema_mm)
    white = np.isin(data, [label.id for label in labels.base_labels() if label.tissue == "white_matter"])
    geometry["oedema"] = around & ~core & white & allowed
    return geometry


def measure(lesion: Lesion, before: Volume, after: Volume) -> dict[str, Any]:
    """Location and size read off the label maps: what the lesion replaced, where, how big."""
    mask = np.isin(after.array, lesion.label_ids)
    replaced = before.array[mask]
    base = {label.id: label for label in labels.base_labels()}
    lesion_labels = [base[int(i)] for i in replaced if int(i) in base]

    def majority(values: list[str]) -> str:
        values = [v for v in values if v]
        return max(set(values), key=values.count) if values else ""

    indices = np.argwhere(mask)
    centroid_mm = after.grid.world_coordinates_mm(indices.mean(axis=0)[None])[0]
    infratentorial = {label.id for label in base.values() if label.tissue in ("cerebellum", "brainstem")}
    infra = np.isin(replaced, sorted(infratentorial)).mean() > 0.5
    core_ids = [c.label_id for c in lesion.components if c.name != "oedema"]
    return {
        "hemisphere": majority([label.hemisphere for label in lesion_labels]) or "midline",
        "lobe": majority([label.lobe for label in lesion_labels]),
        "territory": majority([label.territory for label in lesion_labels]),
        "compartment": "infratentorial" if infra else "supratentorial",
        "volume_mm3": round(float(mask.sum() * after.voxel_volume_mm3), 3),
        "core_volume_mm3": round(float(np.isin(after.array, core_ids).sum() * after.voxel_volume_mm3), 3),
        "centroid_ras_mm": [round(float(v), 2) for v in centroid_mm],
    }


def surrounding_shell(label_map: Volume, lesion: Lesion) -> np.ndarray:
    """Normal tissue within 6 mm of the whole lesion: what its signals are relative to. That is the
    brain parenchyma (CSF, bone and scalp left out, so that a lesion near the skull is not compared
    with bone), or the tissue its class names in "relative_to" (a meningioma: the cortex)."""
    mask = np.isin(label_map.array, lesion.label_ids)
    grown = grown_mm(mask, label_map.spacing_mm, SHELL_MM)
    reference = lesion_classes()[lesion.lesion_class].get("relative_to")
    tissue = sorted(_region_ids(reference)) if reference else parenchyma_ids()
    shell = grown & np.isin(label_map.array, tissue)
    return shell if shell.any() else grown & (label_map.array < LESION_LABEL_BASE)


@cache
def parenchyma_ids() -> list[int]:
    tissues = ("cortex", "white_matter", "deep_grey", "grey", "cerebellum", "brainstem")
    return [label.id for label in labels.base_labels() if label.tissue in tissues]


def lesion_means(label_map: Volume, lesions: list[Lesion], signal_key: str, base_means: dict[int, float],
                 rng: np.random.Generator, ct: bool = False) -> dict[int, float]:
    """Mean intensity of every lesion component in one channel, relative to the lesion's surroundings.

    `signal_key` names the component signal that drives the channel (e.g. "T2w" drives DWI's S0).
    """
    means: dict[int, float] = {}
    for lesion in lesions:
        around = label_map.array[surrounding_shell(label_map, lesion)]
        ids, counts = np.unique(around, return_counts=True)
        surround = float(np.average([base_means[int(i)] for i in ids], weights=counts)) if around.size else 0.0
        for component in lesion.components:
            signal = component.signals[signal_key]
            if ct:
                means[component.label_id] = surround + float(rng.uniform(*_CT_OFFSETS_HU[signal]))
            else:
                means[component.label_id] = surround * float(rng.uniform(*_FACTORS[signal]))
    return means
