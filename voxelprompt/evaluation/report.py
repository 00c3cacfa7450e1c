"""The evaluation's results written as one folder: the Parquet tables with their tests, the two
figures and `summary.md` (`write_evaluation`), all of them or, when anything fails, none."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from voxelprompt.core.io import atomic_output, write_text
from voxelprompt.evaluation import figures
from voxelprompt.evaluation.statistics import (CHARACTERISATION_TESTS, INPUT_COLUMNS, SEGMENTATION_TESTS,
                                               all_characterisation_tests, all_segmentation_tests, checked_table)
from voxelprompt.evaluation.summary import summary_markdown
from voxelprompt.study.report import METADATA_KEY

SEGMENTATION_FIGURE, CHARACTERISATION_FIGURE, SUMMARY = "segmentation.png", "characterisation.png", "summary.md"
OUTPUT_FILES = (*(f"{name}.parquet" for name in (*INPUT_COLUMNS, SEGMENTATION_TESTS, CHARACTERISATION_TESTS)),
                SEGMENTATION_FIGURE, CHARACTERISATION_FIGURE, SUMMARY)


# --- writing -------------------------------------------------------------------------------------

def _write_parquet(frame: pd.DataFrame, path: Path, document: Mapping[str, Any]) -> Path:
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise ValueError(f"the {path.stem} table cannot be written as Parquet: {error}") from error
    metadata = (table.schema.metadata or {}) | {METADATA_KEY: json.dumps(document, default=str).encode()}
    with atomic_output(path) as tmp:
        pq.write_table(table.replace_schema_metadata(metadata), tmp)
    return path


def write_evaluation(out_dir: str | Path, tables: Mapping[str, pd.DataFrame], provenance: Mapping[str, str],
                     settings: Mapping[str, Any]) -> dict[str, Path]:
    """Write the evaluation into `out_dir`, returning the files written by name:

    - `<table>.parquet` for each non-empty input table (segmentation, characterisation, examples,
      metrics), and `segmentation_tests.parquet` and `characterisation_tests.parquet` (every
      comparison, see `all_segmentation_tests`), each with {"table", "provenance", "settings"} as
      JSON under the `voxelprompt` schema metadata key;
    - `segmentation.png` and `characterisation.png`, when there is data to plot;
    - `summary.md` (`summary_markdown`).

    All of it is made in a hidden folder inside `out_dir` first, then moved into place: an error on
    the way leaves `out_dir` as it was. A part with no data this time also loses its files from an
    earlier run, so the folder never mixes two evaluations; `summary.md` goes last and is removed
    first, so a folder with one is whole.
    """
    unknown = sorted(set(tables) - set(INPUT_COLUMNS))
    if unknown:
        raise ValueError(f"unknown evaluation tables {', '.join(unknown)}; expected {', '.join(INPUT_COLUMNS)}")
    frames = {name: checked_table(tables.get(name), name) for name in INPUT_COLUMNS}
    results = {**frames, SEGMENTATION_TESTS: all_segmentation_tests(frames["segmentation"]),
               CHARACTERISATION_TESTS: all_characterisation_tests(frames["characterisation"])}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".evaluation.", dir=out_dir))  # same file system: renames are atomic
    try:
        staged = {}
        for name, frame in results.items():
            if len(frame):
                document = {"table": name, "provenance": dict(provenance), "settings": dict(settings)}
                staged[f"{name}.parquet"] = _write_parquet(frame, staging / f"{name}.parquet", document)
        if len(frames["segmentation"]):
            staged[SEGMENTATION_FIGURE] = figures.figure_segmentation(frames["segmentation"], results[SEGMENTATION_TESTS],
                                                              staging / SEGMENTATION_FIGURE)
        if len(frames["characterisation"]):
            staged[CHARACTERISATION_FIGURE] = figures.figure_characterisation(frames["characterisation"],
                                                                      staging / CHARACTERISATION_FIGURE)
        staged[SUMMARY] = write_text(staging / SUMMARY, summary_markdown(frames, settings))
        return _publish(staged, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staged: Mapping[str, Path], out_dir: Path) -> dict[str, Path]:
    """Move the staged files (name -> path) into `out_dir`, and remove the outputs of an earlier
    evaluation that this one did not make; the summary goes out first and comes back last."""
    (out_dir / SUMMARY).unlink(missing_ok=True)
    written = {}
    for name in staged:
        if name != SUMMARY:
            written[name] = out_dir / name
            os.replace(staged[name], written[name])
    for name in OUTPUT_FILES:
        if name not in staged:
            (out_dir / name).unlink(missing_ok=True)
    written[SUMMARY] = out_dir / SUMMARY
    os.replace(staged[SUMMARY], written[SUMMARY])
    return written
