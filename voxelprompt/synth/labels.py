"""The label vocabulary: base labels of the synthetic label maps, and the prompt-able targets.

Base labels (data/labels/) are the voxel values of every label map the project synthesises from:
non-cortical structures, the 34 Desikan-Killiany cortical parcels per hemisphere (1000 + n, 2000 + n)
and the cerebral white matter nearest to each parcel (3000 + n, 4000 + n), which lets lobes and
vascular territories include their white matter. Targets are named sets of base labels: single
structures, "left and right" pairs, and derived groups (lobes, territories, brain, cranial cavity).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import numpy as np

SIDES = ("left", "right")
LEFT_CORTEX, RIGHT_CORTEX, LEFT_WHITE_MATTER, RIGHT_WHITE_MATTER = 1000, 2000, 3000, 4000
LOBES = ("frontal", "parietal", "temporal", "occipital", "cingulate", "insular")
# The ten large structures: the evaluation's set against the registration baseline, and the page of
# what each anatomy measures.
LARGE_STRUCTURES = ("left and right cerebral white matter", "left and right cerebral cortex",
                    "left and right cerebellum", "left and right lateral ventricle", "brainstem",
                    "left and right thalamus", "left and right putamen", "left and right caudate",
                    "left and right hippocampus", "left and right pallidum")
TERRITORIES = {"ACA": "anterior cerebral artery", "MCA": "middle cerebral artery", "PCA": "posterior cerebral artery"}


@dataclass(frozen=True)
class BaseLabel:
    id: int
    name: str
    tissue: str  # intensity class: background, soft_tissue, bone, csf, white_matter, cortex, grey, deep_grey, ...
    hemisphere: str  # "left", "right" or ""
    lobe: str = ""
    territory: str = ""  # approximate: ACA, MCA, PCA or ""


@dataclass(frozen=True)
class Target:
    name: str  # canonical prompt name, e.g. "left and right hippocampus"
    label_ids: frozenset[int]
    kind: str  # structure, cortical parcel, group, lobe, territory
    aliases: tuple[str, ...] = field(default=())

    def mask(self, label_map: np.ndarray) -> np.ndarray:
        return np.isin(label_map, sorted(self.label_ids))


@cache
def base_labels() -> tuple[BaseLabel, ...]:
    labels = [
        BaseLabel(int(row["id"]), row["name"], row["tissue"], row["hemisphere"], territory=row["territory"])
        for row in data_table("structures.tsv")
    ]
    for number, row in enumerate(data_table("cortical_parcels.tsv"), start=1):
        for side, cortex, white in (("left", LEFT_CORTEX, LEFT_WHITE_MATTER), ("right", RIGHT_CORTEX, RIGHT_WHITE_MATTER)):
            labels.append(BaseLabel(cortex + number, f"{side} {row['name']}", "cortex", side, row["lobe"], row["territory"]))
            labels.append(BaseLabel(white + number, f"{side} white matter of the {row['name']}", "white_matter", side,
                                    row["lobe"], row["territory"]))
    return tuple(labels)


@cache
def mirror_lookup() -> np.ndarray:
    """Array mapping each base label id to the id of its other-side counterpart (unsided labels map to
    themselves): what a left-right flip of a label map must do to its values."""
    by_name = {label.name: label.id for label in base_labels()}
    lookup = np.arange(max(by_name.values()) + 1, dtype=np.uint16)
    other_side = {"left": "right", "right": "left"}
    for label in base_labels():
        if label.hemisphere:
            lookup[label.id] = by_name[other_side[label.hemisphere] + label.name[len(label.hemisphere):]]
    return lookup


@cache
def parcel_names() -> tuple[str, ...]:
    """Desikan-Killiany parcel keys (e.g. "superiorfrontal") in base-label order (n = index + 1)."""
    return tuple(row["parcel"] for row in data_table("cortical_parcels.tsv"))


def label_by_name(name: str) -> BaseLabel:
    for label in base_labels():
        if label.name == name:
            return label
    raise KeyError(f"no base label named {name!r}")


@cache
def targets() -> tuple[Target, ...]:
    labels = base_labels()
    found: list[Target] = []

    def ids(predicate) -> frozenset[int]:
        return frozenset(label.id for label in labels if predicate(label))

    def lateral(name: str, predicate, kind: str, aliases: tuple[str, ...] = ()) -> None:
        """left X, right X, and left and right X for a predicate over base labels."""
        for side in SIDES:
            found.append(Target(f"{side} {name}", ids(lambda l, s=side: l.hemisphere == s and predicate(l)), kind))
        found.append(Target(f"left and right {name}", ids(predicate), kind, aliases))

    # Single structures and their pairs.
    lateral_structures = sorted({_unsided(l) for l in labels if l.id < LEFT_CORTEX and l.hemisphere})
    for structure in lateral_structures:
        lateral(structure, lambda l, s=structure: l.id < LEFT_CORTEX and _unsided(l) == s, "structure")
    for name in ("third ventricle", "fourth ventricle", "brainstem"):
        found.append(Target(name, ids(lambda l, n=name: l.name == n), "structure"))
    # Cortical parcels (cortex only; their white matter joins lobes and territories).
    for number, parcel in enumerate(_parcel_display_names(), start=1):
        lateral(parcel, lambda l, n=number: l.id in (LEFT_CORTEX + n, RIGHT_CORTEX + n), "cortical parcel")

    # Derived groups.
    is_cortex = lambda l: l.tissue == "cortex"  # noqa: E731 - small predicates read best inline
    is_white = lambda l: l.tissue == "white_matter"  # noqa: E731
    deep = ("thalamus", "caudate", "putamen", "pallidum", "accumbens")
    is_deep = lambda l: l.id < LEFT_CORTEX and _unsided(l) in deep  # noqa: E731
    is_cerebral = lambda l: l.hemisphere and (l.tissue in ("cortex", "white_matter", "deep_grey", "grey"))  # noqa: E731
    lateral("cerebral cortex", is_cortex, "group", ("cerebral cortex", "cortex", "cortical grey matter"))
    lateral("cerebral white matter", is_white, "group", ("cerebral white matter", "white matter"))
    lateral("deep grey matter", is_deep, "group", ("deep grey matter", "deep gray matter"))
    lateral("basal ganglia", lambda l: is_deep(l) and "thalamus" not in l.name, "group", ("basal ganglia",))
    lateral("cerebral hemisphere", is_cerebral, "group", ("cerebrum",))
    found.append(Target("ventricular system", ids(lambda l: l.tissue == "csf" and ("ventricle" in l.name)), "group",
                        ("ventricles",)))
    brain_tissues = ("cortex", "white_matter", "deep_grey", "grey", "cerebellum", "brainstem")
    found.append(Target("brain", ids(lambda l: l.tissue in brain_tissues), "group", ("whole brain", "brain parenchyma")))
    found.append(Target("cranial cavity", ids(lambda l: l.tissue in brain_tissues + ("csf",)), "group",
                        ("intracranial volume", "intracranial cavity")))
    infratentorial = lambda l: l.tissue in ("cerebellum", "brainstem") or l.name == "fourth ventricle"  # noqa: E731
    found.append(Target("infratentorial brain", ids(infratentorial), "group", ("posterior fossa",)))
    found.append(Target("supratentorial brain", ids(lambda l: is_cerebral(l) or (l.tissue == "csf" and "ventricle" in l.name
                                                                              and l.name != "fourth ventricle")), "group"))
    for lobe in LOBES:
        lateral(f"{lobe} lobe", lambda l, b=lobe: l.lobe == b, "lobe", (f"{lobe} lobe",))
    for short, artery in TERRITORIES.items():
        lateral(f"{short} territory", lambda l, t=short: l.territory == t, "territory",
                (f"{artery} territory", f"{short} territory"))
    return tuple(found)


def target(name: str) -> Target:
    for candidate in targets():
        if candidate.name == name or name in candidate.aliases:
            return candidate
    raise KeyError(f"no target named {name!r}")


def reference_markdown() -> str:
    """The reference page of every target (docs/labels.md), generated from the data files."""
    lines = [
        "# Label vocabulary",
        "",
        "Generated by `voxelprompt label-reference`; do not edit by hand. Every target can be named in a",
        "prompt. Vascular territories are approximate (see `voxelprompt/data/labels/README.md`). Which",
        "labelling protocol defines each target in each anatomy, and the volume it measures against",
        "FreeSurfer's: [anatomy-volumes.md](anatomy-volumes.md).",
        "",
        f"{len(targets())} targets over {len(base_labels())} base labels.",
        "",
        "| target | kind | base labels | also called |",
        "|---|---|---|---|",
    ]
    for entry in targets():
        lines.append(f"| {entry.name} | {entry.kind} | {len(entry.label_ids)} | {', '.join(entry.aliases)} |")
    return "\n".join(lines) + "\n"


def _unsided(label: BaseLabel) -> str:
    """"left hippocampus" -> "hippocampus"; labels without a side keep their name."""
    return label.name.split(" ", 1)[1] if label.hemisphere else label.name


def _parcel_display_names() -> tuple[str, ...]:
    return tuple(row["name"] for row in data_table("cortical_parcels.tsv"))


def data_table(relative: str) -> list[dict[str, str]]:
    """Rows of a TSV under voxelprompt/data/labels/ (e.g. "sources/fsaverage_aseg.tsv")."""
    with (resources.files("voxelprompt") / "data" / "labels" / relative).open() as handle:
        return list(csv.DictReader(handle, delimiter="\t"))
