"""The output folder as a BIDS-derivative dataset: sidecar names, the URIs sidecars use, and the
dataset's description."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from voxelprompt.study import derivatives
from voxelprompt.study.paths import DerivativePaths, dataset_relative, reference_entities_constraint, sidecar

ROW = {"subject_path": "sub-01/ses-02", "datatype": "anat", "entities": "sub-01_ses-02_acq-lowres", "suffix": "T1w"}


def test_every_image_output_has_its_sidecar_next_to_it():
    paths = DerivativePaths("out")
    assert paths.cranial_cavity_sidecar(ROW) == "out/sub-01/ses-02/anat/sub-01_ses-02_acq-lowres_space-T1w_desc-cranialcavity_mask.json"
    assert paths.coregistered_sidecar(ROW) == "out/sub-01/ses-02/anat/sub-01_ses-02_acq-lowres_space-subject_desc-preproc_T1w.json"
    assert sidecar("a/b_T1w.nii") == "a/b_T1w.json"
    with pytest.raises(ValueError, match="not a NIfTI"):
        sidecar("a/b_T1w.mgz")


def test_sidecars_name_files_of_the_dataset_from_its_root_whatever_the_output_folder():
    assert dataset_relative("/data/study/derivatives/voxelprompt/sub-01/ses-02/anat/x.nii.gz") == "sub-01/ses-02/anat/x.nii.gz"
    assert derivatives.derivative_uri("results/sub-01/anat/x.nii.gz") == "bids::sub-01/anat/x.nii.gz"
    with pytest.raises(ValueError, match="not inside a subject folder"):
        dataset_relative("results/x.nii.gz")


def test_raw_images_are_named_by_absolute_file_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert derivatives.raw_uri("raw/sub-01/anat/sub-01_T1w.nii.gz") == (tmp_path / "raw/sub-01/anat/sub-01_T1w.nii.gz").as_uri()


def test_coregistered_sidecar_names_the_reference_grid_and_its_sources():
    metadata = derivatives.coregistered_metadata("r/sub-01/anat/sub-01_desc-preproc_T1w.nii.gz",
                                                 "r/sub-01/anat/sub-01_desc-preproc_FLAIR.nii.gz",
                                                 "r/sub-01/anat/sub-01_from-FLAIR_to-subject_mode-image_xfm.txt")
    assert metadata == {"SkullStripped": False, "SpatialReference": "bids::sub-01/anat/sub-01_desc-preproc_T1w.nii.gz",
                        "Sources": ["bids::sub-01/anat/sub-01_desc-preproc_FLAIR.nii.gz",
                                    "bids::sub-01/anat/sub-01_from-FLAIR_to-subject_mode-image_xfm.txt"]}


def test_description_and_bidsignore(tmp_path):
    written = derivatives.describe(tmp_path / "results", "resources/demo")
    description = json.loads(Path(written).read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "VoxelPrompt"
    ignored = (tmp_path / "results/.bidsignore").read_text().splitlines()
    assert "/work" in ignored and "/qc" in ignored and "*.parquet" in ignored


def test_the_reference_constraint_matches_every_derivative_of_a_reference_and_nothing_else():
    references = [{"entities": "sub-01_ses-01", "suffix": "T1w"}, {"entities": "sub-02", "suffix": "FLAIR"}]
    entities = reference_entities_constraint(references)
    paths = DerivativePaths("results")
    patterns = [paths.preprocessed_image(), paths.preprocess_record(), paths.cranial_cavity_mask(),
                paths.coregistered_image(), paths.transform(), paths.registration_record()]

    def matches(row: dict) -> list[bool]:
        image = {"subject_path": row["entities"].replace("_", "/"), "datatype": "anat", **row}
        found = []
        for pattern in patterns:
            regex = re.escape(pattern).replace(r"\{entities\}", f"(?:{entities})")
            for key, value in (("subject_path", r"[^/]+(?:/[^/]+)?"), ("datatype", "anat"), ("suffix", "T1w|FLAIR")):
                regex = regex.replace(rf"\{{{key}\}}", f"(?:{value})")
            found.append(re.fullmatch(regex, pattern.format(**image)) is not None)
        return found

    assert all(matches({"entities": "sub-01_ses-01", "suffix": "T1w"}))
    assert all(matches({"entities": "sub-02", "suffix": "FLAIR"}))
    for other in ({"entities": "sub-01_ses-01", "suffix": "FLAIR"}, {"entities": "sub-01_ses-01_acq-lowres", "suffix": "T1w"},
                  {"entities": "sub-02", "suffix": "T1w"}, {"entities": "sub-01_ses-02", "suffix": "T1w"}):
        assert not any(matches(other)), other
    assert re.fullmatch(reference_entities_constraint([]), "sub-01") is None
