"""Every output path of the workflow, in BIDS-derivative form, built in one place.

Rules never format paths themselves: they ask `DerivativePaths` for a pattern (with Snakemake
wildcards) and for concrete paths of a cohort row. An image is identified by four wildcards:
`subject_path` (sub-01 or sub-01/ses-01), `datatype` (anat, dwi, ct), `entities` (sub-01_ses-01
plus any acq/ce/run) and `suffix` (T1w, FLAIR, ...), so datasets with and without sessions share
the same rules.

Names:
  <entities>_desc-preproc_<suffix>.nii.gz           preprocessed (RAS, cropped, [0, 1]), native space
  <entities>_desc-preproc_<suffix>.json             its record: how to map back, raw intensity range
  <entities>_space-<suffix>_desc-cranialcavity_mask.nii.gz   cranial cavity on that grid (and .json sidecar)
  <entities>_space-subject_desc-preproc_<suffix>.nii.gz      co-registered to the subject reference (and .json)
  <entities>_from-<suffix>_to-subject_mode-image_xfm.txt     ITK rigid transform (and .json record)
  <entities>_space-<suffix>_label-<Output>_desc-<Prompt>_mask.nii.gz   a prompt's mask on that image's grid
  <entities>_space-<suffix>_label-<Output>_desc-<Prompt>_<suffix>.nii.gz  a prompt's image output (masked, cropped)
  metrics.parquet, responses.parquet, masks.parquet          the study tables (output folder root)
  qc/report.html                                             the visual QC report
  evaluation/                                                the model's scores (`snakemake evaluate`)
Workflow state that is not a derivative lives under `work/` (listed in the folder's .bidsignore):
  work/checks/sub-<subject>.json                            the check of the subject's raw images
  work/parts/sub-<subject>/{metrics,responses,masks}.parquet  each subject's rows of the tables
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from voxelprompt.core.errors import InputError
from voxelprompt.study.cohort import MODALITY_NAMING

WILDCARD_CONSTRAINTS = {
    "subject_path": r"sub-[A-Za-z0-9]+(/ses-[A-Za-z0-9]+)?",
    "datatype": "|".join(sorted({datatype for _, datatype in MODALITY_NAMING.values()})),
    # Only source entities, so that derivative names (space-, desc-) never parse as an image.
    "entities": r"sub-[A-Za-z0-9]+(_ses-[A-Za-z0-9]+)?(_acq-[A-Za-z0-9]+)?(_ce-[A-Za-z0-9]+)?(_run-[A-Za-z0-9]+)?",
    "suffix": "|".join(suffix for suffix, _ in MODALITY_NAMING.values()),
}
# BIDS orders derivative entities this way after the source entities.
_DERIVATIVE_ENTITY_ORDER = ("from", "to", "mode", "space", "label", "desc")
_IMAGE_KEYS = tuple(WILDCARD_CONSTRAINTS)


class DerivativePaths:
    def __init__(self, output_dir: str | Path = "results", log_dir: str | Path = "logs"):
        self.output_dir = str(output_dir)
        self.log_dir = str(log_dir)

    # --- the one path builder -------------------------------------------------------------
    def bids(self, image: Mapping[str, str] | None, suffix: str, extension: str, **entities: str) -> str:
        ids = _image_ids(image)
        unknown = set(entities) - set(_DERIVATIVE_ENTITY_ORDER)
        if unknown:
            raise ValueError(f"unknown derivative entities {sorted(unknown)}")
        parts = [ids["entities"]] + [f"{key}-{entities[key]}" for key in _DERIVATIVE_ENTITY_ORDER if key in entities]
        name = "_".join(parts + [suffix.format(**ids)]) + extension
        return f"{self.output_dir}/{ids['subject_path']}/{ids['datatype']}/{name}"

    # --- preprocessing ---------------------------------------------------------------------
    def preprocessed_image(self, image: Mapping[str, str] | None = None) -> str:
        return self.bids(image, "{suffix}", ".nii.gz", desc="preproc")

    def preprocess_record(self, image: Mapping[str, str] | None = None) -> str:
        return self.bids(image, "{suffix}", ".json", desc="preproc")

    def cranial_cavity_mask(self, image: Mapping[str, str] | None = None) -> str:
        return self.bids(image, "mask", ".nii.gz", space=_image_ids(image)["suffix"], desc="cranialcavity")

    def cranial_cavity_sidecar(self, image: Mapping[str, str] | None = None) -> str:
        return sidecar(self.cranial_cavity_mask(image))

    # --- co-registration ---------------------------------------------------------------------
    def coregistered_image(self, image: Mapping[str, str] | None = None) -> str:
        return self.bids(image, "{suffix}", ".nii.gz", space="subject", desc="preproc")

    def coregistered_sidecar(self, image: Mapping[str, str] | None = None) -> str:
        return sidecar(self.coregistered_image(image))

    def transform(self, image: Mapping[str, str] | None = None) -> str:
        suffix = _image_ids(image)["suffix"]
        return self.bids(image, "xfm", ".txt", **{"from": suffix, "to": "subject", "mode": "image"})

    def registration_record(self, image: Mapping[str, str] | None = None) -> str:
        return self.transform(image)[: -len(".txt")] + ".json"

    # --- the agent ------------------------------------------------------------------------------
    def subject_check(self, subject: str = "{subject}") -> str:
        return f"{self.output_dir}/work/checks/sub-{subject}.json"

    def part_folder(self, subject: str = "{subject}") -> str:
        return f"{self.output_dir}/work/parts/sub-{subject}"

    def part(self, table: str, subject: str = "{subject}") -> str:
        return f"{self.part_folder(subject)}/{table}.parquet"

    def prompt_output(self, image: Mapping[str, str], prompt_id: str, output: str, is_mask: bool) -> str:
        suffix = "mask" if is_mask else "{suffix}"
        return self.bids(image, suffix, ".nii.gz", space=_image_ids(image)["suffix"], label=entity_value(output),
                         desc=entity_value(prompt_id))

    # --- the study ------------------------------------------------------------------------------
    def table(self, name: str) -> str:
        return f"{self.output_dir}/{name}.parquet"

    def evaluation_folder(self) -> str:
        return f"{self.output_dir}/evaluation"

    def qc_folder(self) -> str:
        return f"{self.output_dir}/qc"

    def qc_report(self) -> str:
        return f"{self.qc_folder()}/report.html"

    def dataset_description(self) -> str:
        return f"{self.output_dir}/dataset_description.json"

    def bidsignore(self) -> str:
        return f"{self.output_dir}/.bidsignore"

    # --- logs and benchmarks (outside the BIDS tree) ------------------------------------------
    def log(self, stage: str, image: Mapping[str, str] | None = None) -> str:
        return f"{self.log_dir}/{stage}/{_image_file_stem(image)}.log"

    def benchmark(self, stage: str, image: Mapping[str, str] | None = None) -> str:
        return f"{self.log_dir}/benchmarks/{stage}/{_image_file_stem(image)}.tsv"

    def subject_log(self, stage: str, subject: str = "{subject}") -> str:
        return f"{self.log_dir}/{stage}/sub-{subject}.log"

    def subject_benchmark(self, stage: str, subject: str = "{subject}") -> str:
        return f"{self.log_dir}/benchmarks/{stage}/sub-{subject}.tsv"

    def study_log(self, stage: str) -> str:
        return f"{self.log_dir}/{stage}.log"


def reference_entities_constraint(references: Iterable[Mapping[str, str]]) -> str:
    """The `entities` wildcard constraint under which a rule matches the derivatives of these images
    (each subject's reference) and of no other image: the image's entities, followed somewhere in
    the file name by its own suffix (`_desc-preproc_T1w.`, `_space-T1w_`, `_from-T1w_`). A rule
    that only declined other images in its input function would still match their files, and a
    cluster job, which resolves its one rule again on the node, finds two rules for one file."""
    alternatives = sorted({rf"{re.escape(row['entities'])}(?=_[^/]*[_-]{re.escape(row['suffix'])}[._])"
                           for row in references})
    return "|".join(alternatives) if alternatives else "(?!)"  # no image: a pattern that never matches


def _image_file_stem(image: Mapping[str, str] | None) -> str:
    ids = _image_ids(image)
    return f"{ids['subject_path']}/{ids['datatype']}/{ids['entities']}_{ids['suffix']}"


def _image_ids(image: Mapping[str, str] | None) -> dict[str, str]:
    """Concrete identifiers of a cohort row, or Snakemake wildcards when `image` is None."""
    if image is None:
        return {key: "{" + key + "}" for key in _IMAGE_KEYS}
    return {key: str(image[key]) for key in _IMAGE_KEYS}


def sidecar(image_path: str | Path) -> str:
    """The JSON sidecar of a NIfTI file: the same name, `.json` instead of `.nii.gz` or `.nii`."""
    text = str(image_path)
    for extension in (".nii.gz", ".nii"):
        if text.endswith(extension):
            return text[: -len(extension)] + ".json"
    raise InputError(text, "not a NIfTI file name (.nii or .nii.gz)")


def dataset_relative(path: str | Path) -> str:
    """A file's path inside its BIDS dataset (from its `sub-` folder on), as BIDS sidecars name
    other files of the same dataset."""
    parts = Path(path).parts
    for index, part in enumerate(parts):
        if part.startswith("sub-") and index < len(parts) - 1:
            return "/".join(parts[index:])
    raise InputError(path, "not inside a subject folder (sub-*) of a BIDS dataset")


def entity_value(text: str) -> str:
    """A BIDS entity value from free text: its letters and digits in CamelCase ("left hippocampus"
    -> "LeftHippocampus", "hippo-volume" -> "HippoVolume")."""
    return "".join(w[:1].upper() + w[1:] for w in re.split(r"[^A-Za-z0-9]+", text) if w) or "Output"
