"""The study's tables: what every prompt answered about every subject, as three long-form Parquet tables.

- `metrics.parquet`: one row per number a program reported, with the code of the step that reported it;
- `responses.parquet`: one row per subject and prompt: the answer, the whole program, ok or error and why;
- `masks.parquet`: one row per mask file written for a subject and prompt, with its size.

Each subject's job turns its runs into tables (`subject_tables`) and writes them as its part
(`write_part`); `gather` concatenates the parts of the whole study into `results/*.parquet`, with
the schema version and provenance in the Parquet metadata. A subject or prompt that failed still has
its responses rows (status "error" and the message), so one bad scan never stops a cohort and is
never silently missing from it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import voxelprompt
from voxelprompt.core.errors import InputError
from voxelprompt.core.io import atomic_output
from voxelprompt.core.volume import Volume

if TYPE_CHECKING:  # the agent imports torch: seconds that writing and gathering tables do not need
    from voxelprompt.model.agent import Result

SCHEMA_VERSION = 2  # 2: masks gained `image`
METADATA_KEY = b"voxelprompt"  # Parquet schema metadata: JSON with the schema version and provenance
DESCRIPTION_KEY = b"description"  # field and schema metadata: one line for docs/tables.md and for readers
OK, ERROR = "ok", "error"
SORT_KEYS = [("subject", "ascending"), ("session", "ascending"), ("prompt_id", "ascending")]


def _schema(description: str, *fields: tuple[str, pa.DataType, str]) -> pa.Schema:
    return pa.schema([pa.field(name, kind, metadata={DESCRIPTION_KEY: text.encode()}) for name, kind, text in fields],
                     metadata={DESCRIPTION_KEY: description.encode()})


_KEYS = (("subject", pa.string(), "subject label, without `sub-`"),
         ("session", pa.string(), "session label the prompt was run for, without `ses-`; empty for all sessions"),
         ("prompt_id", pa.string(), "identifier of the prompt in `config/prompts.csv`"))

METRICS = _schema(
    "One row per number a program reported with `report(metric, value, unit)`.",
    *_KEYS,
    ("prompt", pa.string(), "the prompt text the agent answered"),
    ("metric", pa.string(), "what was measured, as the program named it"),
    ("value", pa.float64(), "the measured value"),
    ("unit", pa.string(), "unit of the value (e.g. `mm3`, `mm`, `%`); empty when it has none"),
    ("step", pa.int64(), "number of the program step that reported it, counting from 1"),
    ("code", pa.string(), "the code of that step, as run"),
)
RESPONSES = _schema(
    "One row per subject and prompt, also when it failed: the answer, the program and its status.",
    *_KEYS,
    ("prompt", pa.string(), "the prompt text the agent answered"),
    ("response", pa.string(), "the answer for the user: one line per `report`, `respond` or `choose`"),
    ("program", pa.string(), "the whole program the agent wrote, its steps joined by newlines"),
    ("steps", pa.int64(), "number of program steps run; 0 when the prompt could not run"),
    ("status", pa.string(), f"`{OK}` when the program finished with `stop()`, else `{ERROR}`"),
    ("error", pa.string(), "why it failed (bad input, a failing step, no `stop()`); empty when ok"),
    ("warning", pa.string(), "why an answer may be unfounded although it ran (an image of unknown orientation "
                             "accepted by configuration: left and right may be swapped); empty when none"),
    ("seconds", pa.float64(), "wall time of the agent on this prompt, in seconds"),
    ("model_id", pa.string(), "the model that wrote the program"),
)
MASKS = _schema(
    "One row per mask file written for a finished prompt, on the grid of one input image.",
    *_KEYS,
    ("output", pa.string(), "the name the program gave the output with `output(mask, name)`"),
    ("path", pa.string(), "where the mask file was written"),
    ("image", pa.string(), "the input image whose grid the mask lies on, its path as given in the study"),
    ("voxels", pa.int64(), "number of voxels in the mask"),
    ("volume_mm3", pa.float64(), "volume of the mask in mm³ (voxels times the voxel volume)"),
)
SCHEMAS = {"metrics": METRICS, "responses": RESPONSES, "masks": MASKS}


@dataclass(frozen=True)
class MaskFile:
    """A mask written to disk for one output of a prompt."""

    output: str
    path: str
    image: str  # the input image whose grid the mask was written on, so a reader can overlay the two
    voxels: int
    volume_mm3: float

    @classmethod
    def of(cls, output: str, path: str | Path, image: str | Path, mask: Volume) -> MaskFile:
        """The row for `mask` as written to `path` on the grid of the input `image`, measured on
        the grid it was written on."""
        voxels = int(np.count_nonzero(mask.array))
        return cls(output, str(path), str(image), voxels, voxels * mask.voxel_volume_mm3)


@dataclass
class PromptRun:
    """One prompt for one subject: the agent's `Result`, or the `error` that kept the prompt from
    running at all (a bad input image, no image of the modality it needs), never both."""

    prompt_id: str
    prompt: str
    result: Result | None = None
    error: str = ""
    masks: list[MaskFile] = field(default_factory=list)
    session: str = ""  # the one session of the images the prompt used; "" for several (or the subject's default)

    def __post_init__(self) -> None:
        if (self.result is None) != bool(self.error):
            raise ValueError(f"prompt {self.prompt_id!r}: give either a Result or the error that kept it from running")
        if self.masks and self.status != OK:
            raise ValueError(f"prompt {self.prompt_id!r}: masks are written only for programs that finished")

    @property
    def status(self) -> str:
        return OK if self.result is not None and self.result.ok else ERROR

    @property
    def error_message(self) -> str:
        if self.result is None:
            return self.error
        return "" if self.result.ok else self.result.error or "the program did not finish"


def subject_tables(subject: str, session: str, runs: Sequence[PromptRun], model_id: str,
                   warning: str = "") -> dict[str, pa.Table]:
    """The three tables for one subject's prompts; `warning` goes on every responses row.

    Every run gives a responses row. Metrics and masks come only from runs that finished: a number
    from a program that failed half-way is not an answer, and its program and error stay readable
    in the responses row.
    """
    metrics, responses, masks = _rows(METRICS), _rows(RESPONSES), _rows(MASKS)
    for run in runs:
        keys = {"subject": subject, "session": run.session or session, "prompt_id": run.prompt_id}
        result = run.result
        _append(responses, keys, prompt=run.prompt, response="\n".join(result.responses) if result else "",
                program=result.program if result else "", steps=len(result.steps) if result else 0,
                status=run.status, error=run.error_message, warning=warning,
                seconds=float(result.seconds) if result else 0.0,
                model_id=model_id)
        if run.status != OK:
            continue
        for metric in result.metrics:
            code = result.steps[metric.step] if 0 <= metric.step < len(result.steps) else ""
            _append(metrics, keys, prompt=run.prompt, metric=metric.name, value=float(metric.value), unit=metric.unit,
                    step=metric.step + 1, code=code)
        for mask in run.masks:
            _append(masks, keys, output=mask.output, path=mask.path, image=mask.image, voxels=int(mask.voxels),
                    volume_mm3=float(mask.volume_mm3))
    return {"metrics": pa.table(metrics, schema=METRICS), "responses": pa.table(responses, schema=RESPONSES),
            "masks": pa.table(masks, schema=MASKS)}


def failed_subject_tables(subject: str, session: str, prompts: Mapping[str, str], error_message: str,
                          model_id: str) -> dict[str, pa.Table]:
    """Error rows for every prompt (prompt_id -> prompt) of a subject whose images could not be loaded."""
    runs = [PromptRun(prompt_id, prompt, error=error_message) for prompt_id, prompt in prompts.items()]
    return subject_tables(subject, session, runs, model_id)


def write_part(tables: Mapping[str, pa.Table], folder: str | Path) -> Path:
    """Write one subject's tables as `metrics.parquet`, `masks.parquet` and `responses.parquet` in
    `folder`, each atomically. Responses come last, so a part with a responses file is whole."""
    folder = Path(folder)
    # A rewritten part drops its old responses first, or a writer dying half-way would pair them with new metrics.
    (folder / "responses.parquet").unlink(missing_ok=True)
    for name in ("metrics", "masks", "responses"):
        table = tables[name]
        if not table.schema.equals(SCHEMAS[name]):
            raise ValueError(f"the {name} table does not have the {name} schema:\n{table.schema}")
        _write(table, folder / f"{name}.parquet")
    return folder


def gather(parts: Sequence[str | Path], out_dir: str | Path, provenance: Mapping[str, Any]) -> dict[str, Path]:
    """Concatenate the parts (folders written by `write_part`) into the study's three tables in
    `out_dir`, sorted by subject, session and prompt_id (rows of one prompt keep their order), with
    the schema version and `provenance` as JSON under the `voxelprompt` schema metadata key."""
    out_dir = Path(out_dir)
    files = {name: [Path(part) / f"{name}.parquet" for part in parts] for name in SCHEMAS}
    missing = next((path for paths in files.values() for path in paths if not path.is_file()), None)
    if missing is not None:
        raise InputError(missing, "is missing: the subject's part was not written completely")
    # Every part is read and checked before anything is written, so that a bad part never leaves
    # some of the study's tables new and the others old.
    tables = {}
    for name, schema in SCHEMAS.items():
        read = [_read_part(path, schema) for path in files[name]]
        table = pa.concat_tables(read) if read else schema.empty_table()
        document = {"schema_version": SCHEMA_VERSION, "table": name, **provenance}
        tables[name] = table.sort_by(SORT_KEYS).replace_schema_metadata(  # Arrow's sort is stable
            schema.metadata | {METADATA_KEY: json.dumps(document).encode()})
    return {name: _write(table, out_dir / f"{name}.parquet") for name, table in tables.items()}


def provenance(model_dir: str | Path | None, configuration: str | None) -> dict[str, Any]:
    """What produced the tables: package version, sha256 of the model weights and of the workflow's
    configuration (its text, e.g. the merged config as JSON; hex, None when not given), the anatomy
    whose label definitions the masks follow (the model's spatial prior carries it and its synthetic
    training subjects are drawn on it; docs/anatomy-volumes.md), and the time in UTC (ISO 8601)."""
    from voxelprompt.synth.atlas import ATLAS_SOURCE  # SimpleITK: loaded only by the job that gathers

    model_hash = None
    if model_dir is not None:
        weights = Path(model_dir) / "model.safetensors"
        if not weights.is_file():
            raise InputError(model_dir, "has no model.safetensors")
        model_hash = file_sha256(weights)
    return {"package_version": voxelprompt.__version__, "model_sha256": model_hash,
            "config_sha256": None if configuration is None else hashlib.sha256(configuration.encode()).hexdigest(),
            "anatomy": ATLAS_SOURCE,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def read_provenance(path: str | Path) -> dict[str, Any]:
    """The JSON `gather` stored in a table: schema_version, table name and the provenance fields."""
    metadata = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in metadata:
        raise InputError(path, "has no voxelprompt metadata; was it written by `gather`?")
    return json.loads(metadata[METADATA_KEY])


def schema_markdown() -> str:
    """The three schemas as markdown tables, for docs/tables.md."""
    lines = []
    for name, schema in SCHEMAS.items():
        lines += [f"### `results/{name}.parquet`", "", schema.metadata[DESCRIPTION_KEY].decode(), "",
                  "| column | type | description |", "|---|---|---|"]
        for column in schema:  # Arrow calls float64 "double"; docs/tables.md says what pandas and numpy say
            kind = str(column.type).replace("double", "float64")
            lines.append(f"| `{column.name}` | {kind} | {column.metadata[DESCRIPTION_KEY].decode()} |")
        lines.append("")
    return "\n".join(lines)


def _rows(schema: pa.Schema) -> dict[str, list]:
    return {name: [] for name in schema.names}


def _append(columns: dict[str, list], keys: Mapping[str, str], **values: Any) -> None:
    for name, value in (keys | values).items():
        columns[name].append(value)


def _read_part(path: Path, schema: pa.Schema) -> pa.Table:
    # ParquetFile.read is several times faster than read_table for thousands of small files: it
    # skips the dataset machinery. One thread per file: a part is a single small row group.
    table = pq.ParquetFile(path).read(use_threads=False)
    if not table.schema.equals(schema):
        raise InputError(path, f"does not have the schema of {path.name} (schema version {SCHEMA_VERSION})")
    return table


def _write(table: pa.Table, path: Path) -> Path:
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp)
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
