"""The study a workflow run works on, as named by its config: the demo, a BIDS dataset or a table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from voxelprompt.core.errors import InputError
from voxelprompt.study import cohort, demo

INPUT_KINDS = ("demo", "bids", "samples")


def load(kind: str, path: str | Path) -> cohort.Cohort:
    if kind == "demo":
        return cohort.from_table(demo.samples(), source="demo study", base_dir=path)
    if kind == "bids":
        return cohort.from_bids(path)
    if kind == "samples":
        return cohort.from_table(read_samples_table(path), source=path)
    raise ValueError(f"unknown input kind {kind!r}; expected one of {', '.join(INPUT_KINDS)}")


def read_samples_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "samples table does not exist")
    try:
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise InputError(path, f"is not a tab-separated table ({error})") from error
