"""The values a task is sampled with, each of a kind: what it may be (its domain), which value a
given subject allows, the text the program uses, and the names a prompt may call it by.

Kinds:
  anatomy              any target of the label vocabulary ("left hippocampus", "brain", "MCA territory")
  ventricle            the ventricular system or a lateral ventricle
  lateral_structure    a structure with a left and a right ("hippocampus"); programs add the side
  region               an anatomy target or one of the subject's lesions; gives {name_text} for reports
  lesion               one of the subject's lesions, by a description true of it alone (in every
                       session, when there are several); gives {reference}, the tissue its signal is
                       described against
  single_lesion        a lesion of one component (no rim/necrosis/oedema), named by its class
  lesion_in_lobe       a lesion named by its class that lies mostly in a cerebral lobe
  lesion_in_territory  a lesion named by its class that lies mostly in an arterial territory
  lesion_class         every lesion of one class ("all infarcts"), or every lesion
  tumour_part          a part of the subject's tumour (distinct from any other tumour_part value)
  contrast             any of the subject's images
  mri_contrast         an MRI image with intensities in arbitrary units (not CT, not the ADC map)
  signal_contrast      an image whose lesion signal is described; gives {signal_words}
  extent               width, depth or height
  margin_mm            a margin in mm
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from voxelprompt.runtime.answers import SIGNAL_WORDS
from voxelprompt.synth import labels
from voxelprompt.synth.lesions import Lesion, lesion_classes

if TYPE_CHECKING:  # annotations only: the agent reads the vocabulary without loading subject synthesis
    from voxelprompt.tasks.subjects import TaskSubject

LESION_KINDS = ("lesion", "single_lesion", "lesion_in_lobe", "lesion_in_territory")
KINDS = ("anatomy", "ventricle", "lateral_structure", "region", *LESION_KINDS, "lesion_class", "tumour_part",
         "contrast", "mri_contrast", "signal_contrast", "extent", "margin_mm")
VENTRICLES = ("ventricular system", "left lateral ventricle", "right lateral ventricle", "left and right lateral ventricle")
MRI_CONTRASTS = ("T1w", "T1w+ce", "T2w", "FLAIR", "PDw", "DWI")
SIGNAL_CONTRASTS = ("T1w", "T1w+ce", "T2w", "FLAIR", "PDw", "ADC", "CT")
CONTRAST_KINDS = ("contrast", "mri_contrast", "signal_contrast")
EXTENTS = ("width", "depth", "height")
MARGINS_MM = (0, 2, 5, 10, 15, 20)
ALL_LESIONS = "all lesions"


class NoValue(LookupError):
    """The subject has nothing this kind of value can be (e.g. no lesion in a lobe)."""


@dataclass
class Bound:
    program: dict[str, str] = field(default_factory=dict)  # {name} in programs -> text
    prompt: dict[str, tuple[str, ...]] = field(default_factory=dict)  # <name> in prompts -> alternatives
    lesions: dict[str, Lesion] = field(default_factory=dict)  # value name -> the lesion it names (first session)


@cache
def vocabulary() -> dict[str, Any]:
    return yaml.safe_load((resources.files("voxelprompt") / "data" / "tasks" / "vocabulary.yaml").read_text())


def provides(name: str, kind: str) -> tuple[str, ...]:
    """The {names} a value of this kind fills in programs."""
    extra = {"region": (f"{name}_text",), "signal_contrast": ("signal_words",)}.get(kind, ())
    if kind in LESION_KINDS:
        extra = ("reference",)
    return (name, *extra)


def lesion_noun_bindings() -> dict[str, tuple[str, ...]]:
    """<noun_CLASS> and <plural_CLASS> for every lesion class: lesion descriptions refer to them."""
    found = {}
    for name, forms in vocabulary()["lesions"].items():
        found[f"noun_{_key(name)}"] = tuple(forms["names"])
        found[f"plural_{_key(name)}"] = tuple(forms["plural"])
    return found


def bind(values: Mapping[str, str], subject: TaskSubject | None, rng: np.random.Generator) -> Bound:
    """One value per name, drawn among those the subject allows (or, without a subject, among every
    value of the kind, e.g. for examples in the documentation); raises NoValue if there is none."""
    bound = Bound()
    for name, kind in values.items():
        taken = {bound.program[other] for other, other_kind in values.items() if other in bound.program
                 and other_kind == kind}
        candidates = allowed(kind, subject) if subject is not None else domain(kind)
        choices = [c for c in candidates if c not in taken]
        if not choices:
            raise NoValue(f"the subject has no {kind} for {name!r}")
        value = choices[int(rng.integers(len(choices)))]
        bound.program[name] = value
        bound.prompt[name] = forms(kind, value)
        if kind == "region":
            bound.program[f"{name}_text"] = value if value.startswith("the ") or value == ALL_LESIONS else f"the {value}"
        if kind == "signal_contrast":
            words = SIGNAL_WORDS["CT" if value == "CT" else "MRI"]
            bound.program["signal_words"] = "[" + ", ".join(f'"{w}"' for w in words) + "]"
        if kind in LESION_KINDS or (kind == "region" and value.startswith("the ")):
            if subject is not None:
                bound.lesions[name] = _lesion_described(subject, value)
            lesion_class = bound.lesions[name].lesion_class if name in bound.lesions else _class_named(value)
            relative_to = lesion_classes().get(lesion_class, {}).get("relative_to")
            bound.program.setdefault("reference", relative_to or "brain")
    return bound


def _class_named(description: str) -> str:
    """The lesion class a description names ("" for "the largest lesion")."""
    return next((c for c in sorted(lesion_classes(), key=len, reverse=True) if c in description), "")


def allowed(kind: str, subject: TaskSubject) -> list[str]:
    """The values of a kind this subject allows, in a fixed order."""
    if kind == "anatomy":
        return _annotated(subject, [t.name for t in labels.targets()])
    if kind == "ventricle":
        return _annotated(subject, list(VENTRICLES))
    if kind == "lateral_structure":
        return [s for s in _lateral_structures() if _annotated(subject, [f"left {s}", f"right {s}"]) == [f"left {s}", f"right {s}"]]
    if kind == "region":
        lesions = allowed("lesion", subject)
        anatomy = allowed("anatomy", subject)
        # Half the time a lesion, when there is one: otherwise the anatomical targets would drown them out.
        return lesions * max(1, len(anatomy) // max(len(lesions), 1)) + anatomy if lesions else anatomy
    if kind in LESION_KINDS:
        return _descriptions(kind, subject)
    if kind == "lesion_class":
        present = sorted({lesion.lesion_class for lesion in subject.sessions[0].synthetic.lesions})
        return [f"all {vocabulary()['lesions'][c]['plural'][0]}" for c in present] + ([ALL_LESIONS] if present else [])
    if kind == "tumour_part":
        lesions = subject.sessions[0].synthetic.lesions
        components = {c.name for l in lesions if l.lesion_class == "tumour" for c in l.components}
        return [part for part in vocabulary()["tumour_parts"] if _part_present(part, components)]
    if kind == "contrast":
        return list(subject.contrasts)
    if kind == "mri_contrast":
        return [c for c in subject.contrasts if c in MRI_CONTRASTS]
    if kind == "signal_contrast":
        return [c for c in subject.contrasts if c in SIGNAL_CONTRASTS]
    if kind == "extent":
        return list(EXTENTS)
    if kind == "margin_mm":
        return [str(m) for m in MARGINS_MM]
    raise ValueError(f"unknown kind of value {kind!r}; known: {', '.join(KINDS)}")


def _annotated(subject: TaskSubject | None, targets: list[str]) -> list[str]:
    """The targets whose every label the subject's label maps annotate (all, for synthetic subjects)."""
    if subject is None or subject.labelled is None:
        return targets
    return [t for t in targets if subject.annotates(labels.target(t).label_ids)]


@cache
def segment_targets() -> frozenset[str]:
    """Every name `segment` can be asked for: the label vocabulary's targets, and every lesion
    description, lesion class and tumour part a program can name."""
    found = {target.name for target in labels.targets()}
    for kind in (*LESION_KINDS, "lesion_class", "tumour_part"):
        found.update(domain(kind))
    return frozenset(found)


def domain(kind: str) -> list[str]:
    """Every value a kind can take over all subjects (for counting prompts and listing tasks)."""
    if kind in ("anatomy", "ventricle", "lateral_structure", "extent", "margin_mm"):
        return allowed(kind, None)  # type: ignore[arg-type] - these do not look at the subject
    if kind in LESION_KINDS:
        return _all_descriptions(kind)
    if kind == "region":
        return domain("lesion") + domain("anatomy")
    if kind == "lesion_class":
        return [f"all {forms['plural'][0]}" for forms in vocabulary()["lesions"].values()] + [ALL_LESIONS]
    if kind == "tumour_part":
        return list(vocabulary()["tumour_parts"])
    return list({"contrast": (*MRI_CONTRASTS, "ADC", "CT"), "mri_contrast": MRI_CONTRASTS,
                 "signal_contrast": SIGNAL_CONTRASTS}[kind])


def forms(kind: str, value: str) -> tuple[str, ...]:
    """The names a prompt may use for a value (templates: they may hold grammar placeholders)."""
    if kind in ("anatomy", "ventricle"):
        return anatomy_forms(value)
    if kind == "lateral_structure":
        return _names(value)
    if kind == "region":
        if value.startswith("the ") or value == ALL_LESIONS:
            return forms("lesion", value)
        return tuple(f"the {f}" for f in anatomy_forms(value))
    if kind in LESION_KINDS:
        return (_lesion_template(value),)
    if kind == "lesion_class":
        if value == ALL_LESIONS:
            return ("all <lesions_noun>", "every <lesion_noun>", "all the <lesions_noun>")
        key = next(_key(c) for c, f in vocabulary()["lesions"].items() if value == f"all {f['plural'][0]}")
        return (f"all <plural_{key}>", f"every <noun_{key}>", f"all the <plural_{key}>")
    if kind == "tumour_part":
        return tuple(vocabulary()["tumour_parts"][value])
    if kind in ("contrast", "mri_contrast", "signal_contrast"):
        return tuple(vocabulary()["contrasts"][value])
    if kind == "extent":
        return (f"<{value}>",)
    if kind == "margin_mm":
        return (f"{value} mm", f"{value} millimetres", f"{value}mm")
    raise ValueError(f"unknown kind of value {kind!r}")


def anatomy_forms(target: str) -> tuple[str, ...]:
    """Names of a vocabulary target with its side said in several ways."""
    if target.startswith("left and right "):
        names = _names(target.removeprefix("left and right "))
        found = [f"<both> {n}" for n in names] + [f"{n} on both sides" for n in names]
        found += [alias for alias in labels.target(target).aliases if alias not in found]
        return tuple(dict.fromkeys(found))
    for side in labels.SIDES:
        if target.startswith(f"{side} "):
            names = _names(target.removeprefix(f"{side} "))
            return tuple([f"<{side}> {n}" for n in names] + [f"{n} <on_{side}>" for n in names])
    return tuple(dict.fromkeys(_names(target) + labels.target(target).aliases))


def _names(structure: str) -> tuple[str, ...]:
    return (structure, *vocabulary()["structures"].get(structure, ()))


@cache
def _lateral_structures() -> list[str]:
    names = {t.name for t in labels.targets()}
    return sorted(n.removeprefix("left ") for n in names if n.startswith("left ") and not n.startswith("left and right ")
                  and f"right {n.removeprefix('left ')}" in names)


def _descriptions(kind: str, subject: TaskSubject) -> list[str]:
    """Descriptions of the subject's lesions usable for this kind, true in every session."""
    first, *later = subject.sessions
    found = []
    for lesion in first.synthetic.lesions:
        if not _fits(kind, lesion):
            continue
        phrases = list(lesion.attributes["descriptors"])
        for session in later:
            same = [l for l in session.synthetic.lesions if l.index == lesion.index]
            phrases = [p for p in phrases if same and p in same[0].attributes["descriptors"]]
        if kind != "lesion":  # characterisation: name the class, so the tissue it is judged against is known
            phrases = [p for p in phrases if lesion.lesion_class in p and not _gives_away(kind, p)]
        found += phrases
    return found


def _fits(kind: str, lesion: Lesion) -> bool:
    if kind == "single_lesion":
        return len(lesion.components) == 1
    if kind == "lesion_in_lobe":
        return bool(lesion.attributes["lobe"])
    if kind == "lesion_in_territory":
        return bool(lesion.attributes["territory"])
    return True


def _lesion_described(subject: TaskSubject, description: str) -> Lesion:
    for lesion in subject.sessions[0].synthetic.lesions:
        if description in lesion.attributes["descriptors"]:
            return lesion
    raise NoValue(f"no lesion is {description!r}")


@cache
def _all_descriptions(kind: str) -> list[str]:
    """Every description `lesions.describe` can give, for every class (what the prompts can name)."""
    classes = list(lesion_classes())
    nouns = classes if kind != "lesion" else [*classes, "lesion"]
    found = [f"the {c}" for c in classes]
    for noun in nouns:
        found += [f"the largest {noun}", f"the smallest {noun}"] + [f"the {side} {noun}" for side in labels.SIDES]
        found += [f"the {noun} in the {lobe} lobe" for lobe in labels.LOBES]
        found += [f"the {noun} in the {t} territory" for t in labels.TERRITORIES]
    found = [f for f in found if not _gives_away(kind, f)]
    if kind == "lesion":
        found += [f"the {p} lesion" for p in ("most anterior", "most posterior", "most superior", "most inferior")]
    return list(dict.fromkeys(found))


def _lesion_template(description: str) -> str:
    """A description with its words open to synonyms: "the largest infarct" -> "the <largest> <noun_infarct>"."""
    text = description
    for name in sorted(lesion_classes(), key=len, reverse=True):
        text = re.sub(rf"\b{re.escape(name)}\b", f"<noun_{_key(name)}>", text)
    text = re.sub(r"\blesion\b", "<lesion_noun>", text)
    for phrase in ("largest", "smallest", "most anterior", "most posterior", "most superior", "most inferior"):
        text = text.replace(phrase, f"<{_key(phrase)}>")
    return re.sub(r"^the (left|right) ", r"the <\1> ", text)


def _gives_away(kind: str, description: str) -> bool:
    """A description that already says the answer ("which lobe is the infarct in the frontal lobe in?")."""
    return ((kind == "lesion_in_lobe" and description.endswith(" lobe"))
            or (kind == "lesion_in_territory" and description.endswith(" territory")))


def _part_present(part: str, component_names: set[str]) -> bool:
    needs = {"the enhancing part of the tumour": "rim", "the necrotic core of the tumour": "necrosis",
             "the oedema around the tumour": "oedema", "the core of the tumour": "rim"}[part]
    return needs in component_names


def _key(name: str) -> str:
    return name.replace(" ", "_")
