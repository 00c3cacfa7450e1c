"""The lab's own labelled scans, for training next to synthetic subjects (paper §3.2).

A manifest (CSV) lists one scan set per row:

    subject,images,label_map,label_table
    sub-01,sub-01_T1w.nii.gz;sub-01_FLAIR.nii.gz,sub-01_labels.nii.gz,labels.tsv

- `images`: image files separated by `;`, each `path` (modality from the file name, as in BIDS:
  `..._T1w.nii.gz`) or `MODALITY:path`; all of one session, aligned with the label map in world space.
- `label_map`: integer labels on any grid (images are resampled onto it).
- `label_table`: a TSV with columns `value` and `name`, naming each value of the label map by a base
  label of `docs/labels.md` ("left hippocampus", "right lateral ventricle", ...). Values the table
  does not list count as unlabelled, never as any structure.
Relative paths are relative to the manifest. Only targets made entirely of labelled structures are
ever asked for on such a scan, so a label map of five structures is as usable as a full one.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxelprompt.core.errors import InputError
from voxelprompt.core.io import load_volume
from voxelprompt.core.volume import Volume
from voxelprompt.study.cohort import modality_from_filename, normalise_modality
from voxelprompt.synth import labels
from voxelprompt.synth.subject import SyntheticSubject
from voxelprompt.tasks.subjects import Session, TaskSubject

COLUMNS = ("subject", "images", "label_map", "label_table")
SESSION_DATE = "2024-01-01"  # the scans' date is not needed for the single-session tasks they serve


@dataclass(frozen=True)
class LabelledScans:
    subject: str
    images: tuple[tuple[str, Path], ...]  # (modality, path)
    label_map: Path
    label_table: Path


def load_manifest(path: str | Path) -> list[LabelledScans]:
    """Every row of the manifest, checked: all bad rows are reported at once, each by its row number
    (the header is row 1) and problem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "labelled-scans manifest not found")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(path, f"missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
        rows = list(reader)
    if not rows:
        raise InputError(path, "the manifest lists no scans")
    entries, problems = [], []
    for number, row in enumerate(rows, start=2):
        try:
            entries.append(_entry(row, path.parent))
        except ValueError as error:
            problems.append(f"row {number}: {error}")
    if problems:
        raise InputError(path, "; ".join(problems))
    return entries


def _entry(row: dict[str, str], base: Path) -> LabelledScans:
    subject = (row["subject"] or "").strip()
    if not subject:
        raise ValueError("empty subject")
    images = []
    for item in filter(None, (part.strip() for part in (row["images"] or "").split(";"))):
        modality, given, name = item.partition(":")
        if not given:
            modality, name = "", item
        file = _existing(base, name, "image")
        try:
            modality = normalise_modality(modality, file) if modality else modality_from_filename(file)
        except InputError as error:
            raise ValueError(error.problem) from None
        images.append((modality, file))
    if not images:
        raise ValueError("no images")
    if len({m for m, _ in images}) < len(images):
        raise ValueError("two images of the same modality")
    return LabelledScans(subject, tuple(images), _existing(base, row["label_map"], "label map"),
                         _existing(base, row["label_table"], "label table"))


def _existing(base: Path, name: str | None, what: str) -> Path:
    if not (name or "").strip():
        raise ValueError(f"no {what} given")
    file = Path(name.strip())
    file = file if file.is_absolute() else base / file
    if not file.is_file():
        raise ValueError(f"{what} {file} not found")
    return file


def label_table(path: Path) -> dict[int, int]:
    """Label-map value -> base label id, from a `value`/`name` TSV."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows or not {"value", "name"} <= set(rows[0]):
        raise InputError(path, "a label table needs the tab-separated columns value and name")
    table, problems = {}, []
    for number, row in enumerate(rows, start=2):
        try:
            value = int(row["value"])
            table[value] = labels.label_by_name(row["name"].strip()).id
        except ValueError:
            problems.append(f"row {number}: value {row['value']!r} is not an integer")
        except KeyError:
            problems.append(f"row {number}: {row['name']!r} is not a base label (see docs/labels.md)")
    if problems:
        raise InputError(path, "; ".join(problems))
    return table


def task_subject(entry: LabelledScans, spacing_mm: float | None = None) -> TaskSubject:
    """The scans as a single-session subject whose ground truth is the label map (in base labels, on
    its own grid, or resampled to `spacing_mm`); `labelled` says which base labels it annotates."""
    table = label_table(entry.label_table)
    raw = load_volume(entry.label_map).reoriented("RAS")
    values = np.rint(raw.array).astype(np.int64)
    unknown = sorted(set(np.unique(values).tolist()) - set(table) - {0})
    lookup = np.zeros(max(values.max(initial=0), max(table, default=0)) + 1, np.uint16)
    for value, base_id in table.items():
        if value >= 0:
            lookup[value] = base_id
    label_map = raw.with_array(lookup[np.clip(values, 0, None)])
    if spacing_mm is not None:
        label_map = label_map.resampled_to(label_map.grid.with_spacing(spacing_mm), order=0)
    if not label_map.array.any():
        raise InputError(entry.label_map, f"none of the values of {entry.label_table.name} occur in the label map"
                         + (f" (it holds {unknown[:10]})" if unknown else ""))
    images: dict[str, Volume] = {}
    for modality, path in entry.images:
        image = load_volume(path)
        images[modality] = image.with_array(np.asarray(image.array, np.float32)).resampled_to(label_map.grid, order=1)
        if not images[modality].array.any():
            raise InputError(path, f"does not overlap the label map {entry.label_map.name} in world space")
    return subject_of(label_map, images, frozenset(table.values()))


def subject_of(label_map: Volume, images: dict[str, Volume], annotated: frozenset[int] | None = None) -> TaskSubject:
    """A single-session subject of real images (on the label map's grid) whose ground truth is a label
    map in base labels; `annotated`: the base labels it annotates (None: all of them)."""
    synthetic = SyntheticSubject(anatomy=label_map, label_map=label_map, lesions=[], images=images)
    return TaskSubject([Session("01", SESSION_DATE, synthetic)], labelled=annotated)
