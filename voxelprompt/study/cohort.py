"""The study's images as one table: discovered from a BIDS dataset or read from a samples table.

One row per 3D image with columns `subject, session, modality, path, acquisition_date, acq, ce,
run` plus derived BIDS naming (`entities`, `suffix`, `datatype`, `subject_path`, `image_id`).
A row that cannot be used (a label with a path separator, an unknown modality, a duplicate) is set
aside with the reason instead of stopping the study: `Cohort.rejected` lists them.
Whether an image file exists or can be read is checked later, by the job that reads it, so that
one broken file fails one job and not the whole workflow.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from voxelprompt.core.errors import InputError
from voxelprompt.core.io import IMAGE_SUFFIXES, image_suffix

# modality -> (BIDS suffix, BIDS datatype folder). PD images are PDw in BIDS; a 3D DWI is a trace.
MODALITY_NAMING = {
    "T1w": ("T1w", "anat"),
    "T2w": ("T2w", "anat"),
    "FLAIR": ("FLAIR", "anat"),
    "PDw": ("PDw", "anat"),
    "DWI": ("dwi", "dwi"),
    "ADC": ("ADC", "dwi"),
    "CT": ("CT", "ct"),
}
# Spellings accepted in samples tables and BIDS file names.
_MODALITY_ALIASES = {"pd": "PDw", "pdw": "PDw", "dwi": "DWI", "adc": "ADC", "ct": "CT", "flair": "FLAIR",
                     "t1w": "T1w", "t1": "T1w", "t2w": "T2w", "t2": "T2w"}
OPTIONAL_ENTITIES = ("acq", "ce", "run")
COLUMNS = ["subject", "session", "modality", "path", "acquisition_date", *OPTIONAL_ENTITIES]
_LABEL = re.compile(r"^[A-Za-z0-9]+$")


@dataclass
class Cohort:
    """The study's images, one row each. Treat it as read-only: row lookups are built once."""

    images: pd.DataFrame
    rejected: list[InputError] = field(default_factory=list)

    def subjects(self) -> list[str]:
        return sorted(self.images["subject"].unique())

    def subject_images(self, subject: str) -> pd.DataFrame:
        return self.images[self.images["subject"] == subject]

    # Snakemake looks rows up once per job input while it plans, thousands of times in a large study,
    # and a pandas filter costs milliseconds: rows are indexed by image and by subject once.
    @cached_property
    def _rows_by_image(self) -> dict[str, dict]:
        return {row["image_id"]: row for row in self.images.to_dict("records")}

    @cached_property
    def _rows_by_subject(self) -> dict[str, list[dict]]:
        rows: dict[str, list[dict]] = {}
        for row in self._rows_by_image.values():
            rows.setdefault(row["subject"], []).append(row)
        return rows

    def subject_rows(self, subject: str) -> list[dict]:
        """The subject's images as rows (dicts), in the table's order."""
        return list(self._rows_by_subject.get(subject, []))

    def image(self, image_id: str) -> dict:
        try:
            return self._rows_by_image[image_id]
        except KeyError:
            raise KeyError(f"no image {image_id!r} in the cohort") from None

    def reference_image(self, subject: str, modality: str = "T1w", session: str = "") -> dict:
        """The co-registration target: the first `modality` image of `session` (default: first session).

        Images are ordered by acquisition date, then session and run. A subject without that
        modality uses its first image, so that every subject can still be co-registered.
        """
        rows = sorted(self.subject_rows(subject),
                      key=lambda row: (row["acquisition_date"], row["session"], row["run"], row["image_id"]))
        if not rows:
            raise KeyError(f"no subject {subject!r} in the cohort")
        if session and any(row["session"] == session for row in rows):
            rows = [row for row in rows if row["session"] == session]
        preferred = [row for row in rows if row["modality"] == modality]
        return (preferred or rows)[0]


def validate_label(value: str, what: str, source: str | Path) -> str:
    """BIDS labels are alphanumeric: this also rules out path separators and '..'."""
    text = str(value).strip()
    if not _LABEL.match(text):
        raise InputError(source, f"{what} label {text!r} must be letters and digits only (no '/', '..', '_' or spaces)")
    return text


def modality_from_filename(path: str | Path) -> str:
    """The agent's modality of a BIDS-named image: its suffix, and T1w+ce for a T1w with a `ce-` entity."""
    name = Path(path).name.split(".")[0]
    parts = name.split("_")
    modality = normalise_modality(parts[-1], path)
    if modality == "T1w" and any(part.startswith("ce-") for part in parts[:-1]):
        return "T1w+ce"
    return modality


def normalise_modality(value: str, source: str | Path) -> str:
    text = str(value).strip()
    modality = text if text in MODALITY_NAMING else _MODALITY_ALIASES.get(text.lower())
    if modality is None:
        raise InputError(source, f"unknown modality {text!r}; expected one of {', '.join(MODALITY_NAMING)}")
    return modality


def from_table(rows: pd.DataFrame, source: str | Path, base_dir: str | Path | None = None) -> Cohort:
    """Build a cohort from a samples table already parsed (and schema-validated) into a DataFrame."""
    base_dir = Path(base_dir) if base_dir is not None else Path(source).parent
    missing = [c for c in ("subject", "modality", "path") if c not in rows.columns]
    if missing:
        raise InputError(source, f"missing required column(s): {', '.join(missing)}")
    accepted, rejected = [], []
    for number, row in enumerate(rows.fillna("").astype(str).to_dict("records"), start=2):
        where = f"{source}, row {number}"
        try:
            accepted.append(_clean_row(row, where, base_dir))
        except InputError as error:
            rejected.append(error)
    return _finish(accepted, rejected, source)


def _clean_row(row: dict[str, str], where: str, base_dir: Path) -> dict[str, str]:
    clean = {"subject": validate_label(_strip_prefix(row["subject"], "sub-"), "subject", where)}
    session = _strip_prefix(row.get("session", ""), "ses-")
    clean["session"] = validate_label(session, "session", where) if session else ""
    clean["modality"] = normalise_modality(row["modality"], where)
    for entity in OPTIONAL_ENTITIES:
        value = _strip_prefix(row.get(entity, ""), f"{entity}-")
        clean[entity] = validate_label(value, entity, where) if value else ""
    path = Path(row["path"].strip())
    if not row["path"].strip():
        raise InputError(where, "empty path")
    if image_suffix(path) is None:
        raise InputError(where, f"{path} is not a NIfTI or MGZ file ({', '.join(IMAGE_SUFFIXES)})")
    clean["path"] = str(path if path.is_absolute() else (base_dir / path))
    clean["acquisition_date"] = _parse_date(row.get("acquisition_date", ""), where)
    return clean


def _finish(accepted: list[dict[str, str]], rejected: list[InputError], source: str | Path) -> Cohort:
    table = pd.DataFrame(accepted, columns=COLUMNS)
    if table.empty:
        return Cohort(_with_naming(table), rejected)
    table = _with_naming(table)
    # Sessions are optional, but a subject cannot mix images with and without one.
    sessions = table.groupby("subject")["session"].agg(lambda s: (s == "").any() and (s != "").any())
    for subject in sessions[sessions].index:
        rejected.append(InputError(source, f"subject {subject} has images both with and without a session"))
    table = table[~table["subject"].isin(sessions[sessions].index)]
    duplicated = table["image_id"].duplicated(keep=False)
    for image_id in sorted(table.loc[duplicated, "image_id"].unique()):
        rejected.append(InputError(source, f"two images map to {image_id}; add an acq or run label to tell them apart"))
    table = table[~duplicated].sort_values(["subject", "session", "modality", "acq", "ce", "run"])
    return Cohort(table.reset_index(drop=True), rejected)


def _with_naming(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    table["suffix"] = [MODALITY_NAMING[m][0] for m in table["modality"]]
    table["datatype"] = [MODALITY_NAMING[m][1] for m in table["modality"]]
    table["entities"] = [_entities(row) for row in table.to_dict("records")]
    table["subject_path"] = [
        f"sub-{s}/ses-{ses}" if ses else f"sub-{s}" for s, ses in zip(table["subject"], table["session"])
    ]
    table["image_id"] = table["entities"] + "_" + table["suffix"]
    return table


def _entities(row: dict[str, str]) -> str:
    parts = [f"sub-{row['subject']}"] + [f"ses-{row['session']}"] * bool(row["session"])
    parts += [f"{e}-{row[e]}" for e in OPTIONAL_ENTITIES if row[e]]
    return "_".join(parts)


def from_bids(root: str | Path) -> Cohort:
    """Discover 3D images in a BIDS dataset: sub-*/[ses-*/]{anat,dwi,ct}/*.nii[.gz].

    Acquisition dates come from `acq_time` in sessions.tsv / scans.tsv, or `AcquisitionDateTime`
    in the image's JSON sidecar.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "BIDS dataset folder does not exist")
    if not (root / "dataset_description.json").is_file():
        raise InputError(root, "not a BIDS dataset (no dataset_description.json)")
    accepted, rejected = [], []
    for subject_dir in sorted(root.glob("sub-*")):
        if not subject_dir.is_dir():
            continue
        session_dirs = sorted(d for d in subject_dir.glob("ses-*") if d.is_dir()) or [subject_dir]
        for session_dir in session_dirs:
            for path in sorted(session_dir.glob("*/*")):
                if path.parent.name not in ("anat", "dwi", "ct") or image_suffix(path) is None:
                    continue
                try:
                    accepted.append(_bids_row(path, root, subject_dir, session_dir))
                except InputError as error:
                    rejected.append(error)
    return _finish(accepted, rejected, root)


def _bids_row(path: Path, root: Path, subject_dir: Path, session_dir: Path) -> dict[str, str]:
    stem = path.name[: -len(image_suffix(path))]
    *entity_parts, suffix = stem.split("_")
    entities = dict(part.split("-", 1) for part in entity_parts if "-" in part)
    row = {
        "subject": validate_label(_strip_prefix(subject_dir.name, "sub-"), "subject", path),
        "session": validate_label(_strip_prefix(session_dir.name, "ses-"), "session", path)
        if session_dir != subject_dir else "",
        "modality": normalise_modality(suffix, path),
        "path": str(path),
    }
    for entity in OPTIONAL_ENTITIES:
        row[entity] = validate_label(entities[entity], entity, path) if entity in entities else ""
    row["acquisition_date"] = _bids_date(path, root, subject_dir, session_dir, row["session"])
    return row


def _bids_date(path: Path, root: Path, subject_dir: Path, session_dir: Path, session: str) -> str:
    sidecar = path.with_name(path.name[: -len(image_suffix(path))] + ".json")
    if sidecar.is_file():
        try:
            value = json.loads(sidecar.read_text()).get("AcquisitionDateTime", "")
        except json.JSONDecodeError as error:
            raise InputError(sidecar, f"is not valid JSON ({error})") from error
        if value:
            return _parse_date(value, sidecar)
    prefix = f"{subject_dir.name}_{session_dir.name}" if session else subject_dir.name
    scans = session_dir / f"{prefix}_scans.tsv"  # session_dir is subject_dir when there are no sessions
    if scans.is_file():
        table = pd.read_csv(scans, sep="\t", dtype=str)
        relative = str(path.relative_to(session_dir))
        match = table[table.get("filename", pd.Series(dtype=str)) == relative]
        if not match.empty and "acq_time" in match:
            return _parse_date(match.iloc[0]["acq_time"], scans)
    sessions = subject_dir / f"{subject_dir.name}_sessions.tsv"
    if session and sessions.is_file():
        table = pd.read_csv(sessions, sep="\t", dtype=str)
        match = table[table.get("session_id", pd.Series(dtype=str)) == f"ses-{session}"]
        if not match.empty and "acq_time" in match:
            return _parse_date(match.iloc[0]["acq_time"], sessions)
    return ""


def _parse_date(value: str, where: str | Path) -> str:
    """ISO date (YYYY-MM-DD) from a date or date-time; empty stays empty."""
    text = str(value).strip()
    if not text or text.lower() in ("n/a", "nan"):
        return ""
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).date().isoformat()
    except ValueError as error:
        raise InputError(where, f"acquisition date {text!r} is not an ISO date (YYYY-MM-DD)") from error


def _strip_prefix(value: str, prefix: str) -> str:
    text = str(value).strip()
    return text[len(prefix):] if text.startswith(prefix) else text
