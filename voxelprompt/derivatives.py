"""The output folder as a BIDS-derivative dataset: its `dataset_description.json` and the
`.bidsignore` that keeps the study tables, the QC report and the workflow's own state out of the
validator's view (they are for people and tools, not BIDS files)."""

from __future__ import annotations

from pathlib import Path

import voxelprompt
from voxelprompt.io import write_json, write_text

# Transforms have no BIDS name yet (the derivatives specification has none for them).
IGNORED = ("work/", "/qc/", "*.parquet", "*_xfm.txt", "*_xfm.json")


def describe(output_dir: str | Path, source: str) -> Path:
    """Write the description (naming `source`, the study's input) and `.bidsignore`; returns the
    description's path."""
    output_dir = Path(output_dir)
    write_text(output_dir / ".bidsignore", "".join(f"{pattern}\n" for pattern in IGNORED))
    return write_json(output_dir / "dataset_description.json", {
        "Name": "VoxelPrompt derivatives",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "VoxelPrompt", "Version": voxelprompt.__version__,
                         "Description": "preprocessing, co-registration and the answers of a vision-language agent"}],
        "SourceDatasets": [{"URL": Path(source).resolve().as_uri()}],
    })
