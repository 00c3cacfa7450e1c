"""The study's prompts (config/prompts.csv): what to ask, of which subjects, about which of their images.

One row per prompt, checked against voxelprompt/data/schemas/prompts.schema.yaml:

    prompt_id,prompt,inputs,subjects
    hippocampus-volume,How voluminous is the left and right hippocampus?,,
    ventricle-growth,Relative volume change of the ventricles over time,T1w@first;T1w@last,01

`inputs` lists selectors separated by ";", each MODALITY, MODALITY@SESSION or @SESSION; SESSION is
a session label (with or without "ses-") or the word `first` / `last`, the subject's earliest /
latest session (write `ses-first` for a session that is really labelled "first"). An image is
selected if any selector matches it; no selectors = all of the subject's images.
`subjects` lists subject labels (with or without "sub-") or shell-style globs such as `0*`,
separated by ";"; none = every subject.

Unlike a bad image in the samples table, a bad prompt stops the study before it starts: every bad
row of the file is reported at once, by its spreadsheet row number (the header is row 1).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import yaml

from voxelprompt.core.errors import InputError, excerpt
from voxelprompt.study.cohort import normalise_modality, validate_label

# Package data, so that an installed package (not only a checkout) checks prompts.
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "data" / "schemas" / "prompts.schema.yaml"
SESSION_POSITIONS = ("first", "last")
SEPARATOR = ";"
# Subject labels are letters and digits; a filter may add the glob characters * ? [ ] ! and - (ranges).
_SUBJECT_PATTERN = re.compile(r"^[A-Za-z0-9*?\[\]!-]+$")
_FIRST_DATA_ROW = 2  # spreadsheet numbering: the header is row 1


def max_prompt_chars() -> int:
    """The longest prompt accepted, from the schema (`prompt.maxLength`)."""
    return _schema()["properties"]["prompt"]["maxLength"]


def check_prompt_length(prompt: str) -> str | None:
    """Why a prompt is too long, naming only its start; None when it is not."""
    limit = max_prompt_chars()
    if len(prompt) <= limit:
        return None
    return f"prompt {excerpt(prompt)!r} is {len(prompt):,} characters; the limit is {limit:,}"


@dataclass(frozen=True)
class Selector:
    """Images of `modality` ("" = any) in session `session` (a label; "" = any), or in the subject's
    first or last session when `session_position` is "first" or "last"."""

    modality: str = ""
    session: str = ""
    session_position: str = ""

    def matches(self, image: Mapping[str, Any], sessions_in_order: list[str]) -> bool:
        if self.modality and image["modality"] != self.modality:
            return False
        if self.session_position == "first":
            return image["session"] == sessions_in_order[0]
        if self.session_position == "last":
            return image["session"] == sessions_in_order[-1]
        return not self.session or image["session"] == self.session

    def __str__(self) -> str:
        # Labels keep their "ses-" prefix so that a session labelled "first" never reads as the keyword.
        session = self.session_position or (f"ses-{self.session}" if self.session else "")
        return f"{self.modality}@{session}" if session else self.modality


@dataclass(frozen=True)
class StudyPrompt:
    prompt_id: str
    prompt: str
    inputs: tuple[Selector, ...] = ()  # empty: all of the subject's images
    subjects: tuple[str, ...] = ()  # labels without "sub-", or globs; empty: every subject

    def applies_to(self, subject: str) -> bool:
        label = subject.removeprefix("sub-")
        return not self.subjects or any(fnmatch.fnmatchcase(label, pattern) for pattern in self.subjects)

    def select(self, images: pd.DataFrame) -> list[dict[str, Any]]:
        """The images this prompt gives the agent, from one subject's images (`Cohort.subject_images`),
        as records in the order of `images`.

        Raises InputError naming the subject, the prompt and its selectors when none matches, so
        that the caller can record it as this prompt's error for this subject and go on.
        """
        records = images.to_dict("records")
        if not self.inputs:
            chosen = records
        else:
            sessions = sessions_in_order(records)
            chosen = [image for image in records if any(s.matches(image, sessions) for s in self.inputs)]
        if not chosen:
            subject = records[0]["subject"] if records else "?"
            available = ", ".join(str(Selector(image["modality"], image["session"])) for image in records)
            raise InputError(
                f"sub-{subject}",
                f'prompt "{self.prompt_id}": inputs "{SEPARATOR.join(map(str, self.inputs))}" select none '
                f"of the subject's images ({available or 'it has none'})",
            )
        return chosen


def sessions_in_order(images: Iterable[Mapping[str, Any]]) -> list[str]:
    """A subject's sessions by their earliest acquisition date, then label: the order
    `Cohort.reference_image` uses, so undated sessions come first. A subject without sessions has
    one, labelled ""."""
    first_date: dict[str, str] = {}
    for image in images:
        session, date = image["session"], image["acquisition_date"]
        first_date[session] = min(first_date.get(session, date), date)
    return sorted(first_date, key=lambda session: (first_date[session], session))


def load_prompts(path: str | Path) -> list[StudyPrompt]:
    path = Path(path)
    table = _read_table(path)
    schema = _schema()
    _check_columns(list(table.columns), schema, path)
    validator = jsonschema.validators.validator_for(schema)(schema)
    prompts, problems = [], []
    first_row_of_id: dict[str, int] = {}
    for number, raw in enumerate(table.to_dict("records"), start=_FIRST_DATA_ROW):
        row = {column: value.strip() for column, value in raw.items()}
        if not any(row.values()):
            continue  # an empty spreadsheet row
        too_long = check_prompt_length(row["prompt"])
        # The validator's messages repeat a value whole: it sees a long prompt's start only.
        checked = row | {"prompt": row["prompt"][:max_prompt_chars()]} if too_long else row
        row_problems = [f"{error.path[0] if error.path else 'row'}: {error.message}"
                        for error in validator.iter_errors(checked)] + ([too_long] if too_long else [])
        prompt_id = row["prompt_id"]
        if prompt_id in first_row_of_id:
            row_problems.append(f"duplicate prompt_id (first used in row {first_row_of_id[prompt_id]})")
        elif prompt_id:
            first_row_of_id[prompt_id] = number
        try:
            inputs = parse_inputs(row.get("inputs", ""))
        except InputError as error:
            row_problems.append(str(error))
        try:
            subjects = parse_subjects(row.get("subjects", ""))
        except InputError as error:
            row_problems.append(str(error))
        name = f'row {number} (prompt_id "{prompt_id}")' if prompt_id else f"row {number} (no prompt_id)"
        problems += [f"{name}: {problem}" for problem in row_problems]
        if not row_problems:
            prompts.append(StudyPrompt(prompt_id, row["prompt"], inputs, subjects))
    if problems:
        listing = problems[0] if len(problems) == 1 else f"{len(problems)} problems:\n  " + "\n  ".join(problems)
        raise InputError(path, listing)
    if not prompts:
        raise InputError(path, "has no prompts, only a header row")
    return prompts


def parse_inputs(text: str) -> tuple[Selector, ...]:
    """The selectors of an `inputs` cell; errors name the offending selector (source "inputs")."""
    selectors = []
    for part in (piece.strip() for piece in text.split(SEPARATOR)):
        if not part:
            continue  # a stray or trailing ";"
        modality_text, at, session_text = (piece.strip() for piece in part.partition("@"))
        if at and not session_text:
            raise InputError("inputs", f"selector {part!r} has '@' but no session; e.g. T1w@first or T1w@01")
        modality = normalise_modality(modality_text, "inputs") if modality_text else ""
        if session_text in SESSION_POSITIONS:
            selectors.append(Selector(modality, session_position=session_text))
        elif session_text:
            selectors.append(Selector(modality, validate_label(session_text.removeprefix("ses-"), "session", "inputs")))
        else:
            selectors.append(Selector(modality))
    return tuple(selectors)


def parse_subjects(text: str) -> tuple[str, ...]:
    """The subject labels or globs of a `subjects` cell, without "sub-" (source "subjects")."""
    patterns = []
    for part in (piece.strip() for piece in text.split(SEPARATOR)):
        if not part:
            continue
        pattern = part.removeprefix("sub-")
        if not _SUBJECT_PATTERN.match(pattern):
            raise InputError("subjects", f"{part!r} is not a subject label or glob (letters and digits, "
                                         "with * ? [ ] for globs, separated by ';')")
        patterns.append(pattern)
    return tuple(patterns)


@cache
def _schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(path, "prompts table does not exist")
    try:
        # Blank lines are kept so that row numbers stay those of the spreadsheet.
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise InputError(path, "is empty; expected a header row (prompt_id,prompt,inputs,subjects) "
                               "and one row per prompt") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(path, f"is not a comma-separated table ({error})") from error
    table.columns = [str(column).strip() for column in table.columns]
    # Spreadsheets often save an empty trailing column, which pandas names "Unnamed: N".
    empty_unnamed = [c for c in table.columns if c.startswith("Unnamed: ") and not table[c].str.strip().any()]
    return table.drop(columns=empty_unnamed)


def _check_columns(columns: list[str], schema: dict[str, Any], path: Path) -> None:
    missing = [column for column in schema["required"] if column not in columns]
    unknown = [column for column in columns if column not in schema["properties"]]
    problems = [f"missing required column(s) {', '.join(missing)}"] * bool(missing)
    problems += [f"unknown column(s) {', '.join(unknown)}; expected {', '.join(schema['properties'])}"] * bool(unknown)
    if problems:
        raise InputError(path, f"row 1 (header): {'; '.join(problems)}")
