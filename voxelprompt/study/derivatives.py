"""The output folder as a BIDS-derivative dataset: its `dataset_description.json`, the
`.bidsignore` that keeps the study tables, the QC report and the workflow's own state out of the
validator's view (they are for people and tools, not BIDS files), and the BIDS fields of every
image's JSON sidecar.

Sidecars name other files by URI: a file of this dataset as `bids::sub-01/...` (a BIDS URI relative
to the dataset root), a raw input image as a `file://` URI, since a study given as a samples table
has no raw BIDS dataset to name it in.
"""

from __future__ import annotations

from pathlib import Path

import voxelprompt
from voxelprompt.core.io import write_json, write_text
from voxelprompt.study.paths import dataset_relative

# Transforms have no BIDS name yet (the derivatives specification has none for them). Folders are
# anchored at the root and written without a trailing slash: the validator reports a folder
# itself as not included unless a pattern matches its bare name.
IGNORED = ("/work", "/qc", "/evaluation", "*.parquet", "*_xfm.txt", "*_xfm.json")


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


def derivative_uri(path: str | Path) -> str:
    """A file of this derivative dataset, as a BIDS URI."""
    return f"bids::{dataset_relative(path)}"


def raw_uri(path: str | Path) -> str:
    """A raw input image, as an absolute `file://` URI."""
    return Path(path).resolve().as_uri()


def preprocessed_metadata(raw_image: str | Path) -> dict:
    """A preprocessed image's BIDS fields: cropped around the cranial cavity but not skull-stripped,
    in its raw image's space (no `space` entity), made from that image."""
    return {"SkullStripped": False, "Sources": [raw_uri(raw_image)]}


def coregistered_metadata(reference_image: str | Path, moving_image: str | Path, transform: str | Path) -> dict:
    """A co-registered image's BIDS fields: it lies on the subject reference's preprocessed grid,
    resampled from the moving image through the transform."""
    return {"SkullStripped": False, "SpatialReference": derivative_uri(reference_image),
            "Sources": [derivative_uri(moving_image), derivative_uri(transform)]}


def mask_metadata(description: str, spatial_reference: str, sources: list[str], is_mask: bool = True) -> dict:
    """A mask's (or a prompt's image output's) BIDS fields; references are URIs (`derivative_uri`,
    `raw_uri`)."""
    return {"Description": description, **({"Type": "ROI"} if is_mask else {}),
            "SpatialReference": spatial_reference, "Sources": sources}
