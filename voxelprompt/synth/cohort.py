"""Write synthetic subjects as a BIDS dataset with their ground truth under derivatives/.

Raw data: sub-*/ses-*/anat (T1w, post-contrast T1w as ce-gadolinium, T2w, FLAIR, PDw), dwi (a
b = 1000 trace with its .bval/.bvec) and ct (CT is not yet part of the BIDS standard: listed in
.bidsignore), with sessions.tsv and scans.tsv carrying acquisition dates. Ground truth in
derivatives/synth/: the label map of every session (dseg, on the subject grid), ADC maps, and
lesions.tsv with every recorded attribute. Subjects are independent and seeded by (seed, subject),
so a cohort is the same whatever the number of parallel jobs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from voxelprompt import __version__
from voxelprompt.core.io import atomic_output, save_volume, write_json, write_text
from voxelprompt.core.volume import Volume
from voxelprompt.synth import labels
from voxelprompt.synth.longitudinal import follow_up
from voxelprompt.synth.subject import SyntheticSubject, synthesize_subject

_RAW_PLACE = {  # contrast -> (datatype folder, entities before the suffix, BIDS suffix)
    "T1w": ("anat", "", "T1w"),
    "T1w+ce": ("anat", "_ce-gadolinium", "T1w"),
    "T2w": ("anat", "", "T2w"),
    "FLAIR": ("anat", "", "FLAIR"),
    "PDw": ("anat", "", "PDw"),
    "DWI": ("dwi", "", "dwi"),
    "CT": ("ct", "", "CT"),
}


@dataclass(frozen=True)
class CohortSettings:
    subjects: int = 4
    seed: int = 0
    contrasts: tuple[str, ...] = ("T1w", "T2w", "FLAIR")
    sessions: int = 1
    lesion_classes: tuple[str, ...] = ("tumour",)
    spacing_mm: float | None = None  # None: the anatomy's 1 mm
    anatomy: str = "oasis-dk"
    first_date: str = "2024-01-08"
    days_between_sessions: tuple[int, int] = (60, 240)


def write_cohort(root: str | Path, settings: CohortSettings, jobs: int = 1) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    labels_list = [f"{n:03d}" for n in range(1, settings.subjects + 1)]
    arguments = [(root, settings, label) for label in labels_list]
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            rows = list(pool.map(_write_subject_star, arguments))
    else:
        rows = [_write_subject(*a) for a in arguments]
    _write_dataset_files(root, settings, labels_list)
    lesion_rows = [row for subject_rows in rows for row in subject_rows]
    columns = ["participant_id", "session_id", "lesion", "lesion_class", "stage", "component", "label_id",
               "enhancing", "restricts_diffusion", "hemisphere", "lobe", "territory", "compartment",
               "volume_mm3", "core_volume_mm3", "component_volume_mm3", "centroid_ras_mm", "descriptors"]
    signal_columns = sorted({key for row in lesion_rows for key in row if key.startswith("signal_")})
    table = pd.DataFrame(lesion_rows, columns=columns + signal_columns)
    with atomic_output(root / "derivatives" / "synth" / "lesions.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
    return root


def _write_subject_star(arguments: tuple) -> list[dict]:
    return _write_subject(*arguments)


def _write_subject(root: Path, settings: CohortSettings, subject: str) -> list[dict]:
    rng = np.random.default_rng([settings.seed, int(subject)])
    first = synthesize_subject(rng, settings.contrasts, settings.lesion_classes, settings.spacing_mm, settings.anatomy)
    date = dt.date.fromisoformat(settings.first_date) + dt.timedelta(days=int(rng.integers(0, 365)))
    sessions: list[tuple[str, dt.date, SyntheticSubject]] = [("01", date, first)]
    for number in range(2, settings.sessions + 1):
        date = date + dt.timedelta(days=int(rng.integers(*settings.days_between_sessions)))
        sessions.append((f"{number:02d}", date, follow_up(sessions[-1][2], rng)))
    rows = []
    for session, day, synthetic in sessions:
        rows += _write_session(root, subject, session, day, synthetic)
    with atomic_output(root / f"sub-{subject}" / f"sub-{subject}_sessions.tsv") as tmp:
        pd.DataFrame({"session_id": [f"ses-{s}" for s, _, _ in sessions],
                      "acq_time": [f"{d.isoformat()}T09:00:00" for _, d, _ in sessions]}).to_csv(tmp, sep="\t", index=False)
    return rows


def _write_session(root: Path, subject: str, session: str, day: dt.date, synthetic: SyntheticSubject) -> list[dict]:
    prefix = f"sub-{subject}_ses-{session}"
    folder = root / f"sub-{subject}" / f"ses-{session}"
    scans = []
    for name, image in synthetic.images.items():
        if name == "ADC":
            continue
        datatype, entities, suffix = _RAW_PLACE[name]
        path = folder / datatype / f"{prefix}{entities}_{suffix}.nii.gz"
        save_volume(_as_stored(name, image), path, dtype=np.int16)
        write_json(path.with_name(path.name.replace(".nii.gz", ".json")), _sidecar(name))
        if name == "DWI":
            write_text(path.parent / f"{prefix}_dwi.bval", "1000\n")
            write_text(path.parent / f"{prefix}_dwi.bvec", "0\n0\n0\n")  # a trace image has no direction
        scans.append({"filename": f"{datatype}/{path.name}", "acq_time": f"{day.isoformat()}T09:00:00"})
    with atomic_output(folder / f"{prefix}_scans.tsv") as tmp:
        pd.DataFrame(scans).to_csv(tmp, sep="\t", index=False)

    truth = root / "derivatives" / "synth" / f"sub-{subject}" / f"ses-{session}" / "anat"
    save_volume(synthetic.label_map, truth / f"{prefix}_desc-synth_dseg.nii.gz", dtype=np.uint16)
    write_json(truth / f"{prefix}_desc-synth_dseg.json", {
        "Description": "Ground-truth label map of the synthetic subject in its own space (images share its "
                       "world coordinates); labels below 10000 are base labels (desc-synth_dseg.tsv), "
                       "10000 + 10 * lesion + component are lesion components (lesions.tsv).",
    })
    if "ADC" in synthetic.images:
        adc_path = truth.parent / "dwi" / f"{prefix}_desc-ADC_dwimap.nii.gz"
        save_volume(synthetic.images["ADC"], adc_path)
        write_json(adc_path.with_name(adc_path.name.replace(".nii.gz", ".json")), {"Units": "1e-3 mm^2/s"})
    return [_lesion_row(subject, session, lesion, component, synthetic)
            for lesion in synthetic.lesions for component in lesion.components]


def _as_stored(contrast_name: str, image: Volume) -> Volume:
    """Scanner-like integers: CT in whole HU; MRI scaled so that bright tissue is near 1000. Noisy
    float32 barely compresses, and int16 is what scanners write."""
    if contrast_name == "CT":
        return image.with_array(np.clip(np.rint(image.array), -1024, 3071))
    scale = 1000.0 / max(float(np.percentile(image.array, 99.5)), 1e-6)
    return image.with_array(np.clip(np.rint(image.array * scale), 0, 32767))


def _lesion_row(subject: str, session: str, lesion, component, synthetic: SyntheticSubject) -> dict:
    volume = float((synthetic.label_map.array == component.label_id).sum() * synthetic.label_map.voxel_volume_mm3)
    row = {
        "participant_id": f"sub-{subject}", "session_id": f"ses-{session}", "lesion": lesion.index,
        "lesion_class": lesion.lesion_class, "stage": lesion.stage or "n/a", "component": component.name,
        "label_id": component.label_id, "enhancing": component.enhancing,
        "restricts_diffusion": component.signals.get("ADC") == "low",
        "component_volume_mm3": round(volume, 3),
    }
    row |= {key: value for key, value in lesion.attributes.items()}
    row["centroid_ras_mm"] = json.dumps(lesion.attributes["centroid_ras_mm"])
    row["descriptors"] = json.dumps(lesion.attributes["descriptors"])
    row |= {f"signal_{contrast}": signal for contrast, signal in component.signals.items()}
    return row


def _sidecar(contrast: str) -> dict:
    sidecar = {"Manufacturer": "VoxelPrompt synthetic", "GeneratedBy": f"voxelprompt {__version__}"}
    if contrast == "T1w+ce":
        sidecar["ContrastBolusIngredient"] = "GADOLINIUM"
    if contrast == "CT":
        sidecar["Units"] = "HU"
    return sidecar


def _write_dataset_files(root: Path, settings: CohortSettings, subjects: Sequence[str]) -> None:
    write_json(root / "dataset_description.json", {
        "Name": f"VoxelPrompt synthetic cohort (seed {settings.seed})",
        "BIDSVersion": "1.10.0",
        "DatasetType": "raw",
        "License": "CC0 (synthetic images); anatomy derived from packages listed in requirements/data.txt",
        "GeneratedBy": [{"Name": "voxelprompt synth-cohort", "Version": __version__}],
    })
    with atomic_output(root / "participants.tsv") as tmp:
        pd.DataFrame({"participant_id": [f"sub-{s}" for s in subjects]}).to_csv(tmp, sep="\t", index=False)
    write_text(root / "README", "Synthetic brain MRI/CT cohort written by `voxelprompt synth-cohort`. Ground truth\n"
                                "(label maps, ADC maps, lesion attributes) is in derivatives/synth/.\n")
    write_text(root / ".bidsignore", "**/ct\n**/ct/*\n")  # CT is not yet in the BIDS standard
    derivatives = root / "derivatives" / "synth"
    write_json(derivatives / "dataset_description.json", {
        "Name": "VoxelPrompt synthetic ground truth", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "voxelprompt synth-cohort", "Version": __version__}],
    })
    table = pd.DataFrame([(label.id, label.name) for label in labels.base_labels()], columns=["index", "name"])
    with atomic_output(derivatives / "desc-synth_dseg.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False)
