"""The study's images as one table: BIDS discovery, samples tables, the demo and the samples schema."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from voxelprompt.core.errors import InputError
from voxelprompt.study import cohort, inputs

REPO = Path(__file__).resolve().parents[1]
SAMPLES_SCHEMA = REPO / "workflow" / "schemas" / "samples.schema.yaml"
SAMPLES_TSV = REPO / "config" / "samples.tsv"
DERIVED = ["suffix", "datatype", "entities", "subject_path", "image_id"]


def _tiny_nifti(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    return path


# ---------------------------------------------------------------------------------------------
# BIDS discovery


@pytest.fixture
def bids_root(tmp_path: Path) -> Path:
    root = tmp_path / "bids"
    root.mkdir()
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.10.0"}))
    (root / "participants.tsv").write_text("participant_id\nsub-01\nsub-02\nsub-03\n")
    for ses in ("01", "02"):
        for suffix in ("T1w", "FLAIR"):
            _tiny_nifti(root / f"sub-01/ses-{ses}/anat/sub-01_ses-{ses}_{suffix}.nii.gz")
    # (a) a JSON sidecar with AcquisitionDateTime dates ses-01's T1w ...
    (root / "sub-01/ses-01/anat/sub-01_ses-01_T1w.json").write_text(
        json.dumps({"AcquisitionDateTime": "2024-01-15T09:12:00", "RepetitionTime": 2.3})
    )
    # (b) ... scans.tsv dates ses-01's FLAIR (and also lists the T1w: the sidecar is more specific) ...
    (root / "sub-01/ses-01/sub-01_ses-01_scans.tsv").write_text(
        "filename\tacq_time\n"
        "anat/sub-01_ses-01_FLAIR.nii.gz\t2024-01-16T10:00:00\n"
        "anat/sub-01_ses-01_T1w.nii.gz\t1999-01-01T00:00:00\n"
    )
    # (c) ... and sessions.tsv dates everything in ses-02 (and ses-01, which the files above override).
    (root / "sub-01/sub-01_sessions.tsv").write_text(
        "session_id\tacq_time\nses-01\t2000-01-01T00:00:00\nses-02\t2024-07-22T08:30:00\n"
    )
    _tiny_nifti(root / "sub-02/anat/sub-02_T1w.nii.gz")
    _tiny_nifti(root / "sub-02/anat/sub-02_acq-fast_T1w.nii.gz")
    (root / "sub-02/anat/sub-02_acq-fast_T1w.json").write_text(json.dumps({"RepetitionTime": 1.0}))
    _tiny_nifti(root / "sub-03/ct/sub-03_CT.nii.gz")
    # Not images: skipped without complaint.
    (root / "sub-03/ct/README.txt").write_text("not an image")
    (root / "sub-03/ct/sub-03_CT.json").write_text("{}")
    return root


def test_from_bids_finds_every_image(bids_root):
    found = cohort.from_bids(bids_root)
    assert found.rejected == []
    assert found.images["image_id"].tolist() == [
        "sub-01_ses-01_FLAIR",
        "sub-01_ses-01_T1w",
        "sub-01_ses-02_FLAIR",
        "sub-01_ses-02_T1w",
        "sub-02_T1w",
        "sub-02_acq-fast_T1w",
        "sub-03_CT",
    ]
    assert found.subjects() == ["01", "02", "03"]
    assert list(found.images.columns) == [*cohort.COLUMNS, *DERIVED]


def test_from_bids_columns(bids_root):
    images = cohort.from_bids(bids_root).images.set_index("image_id")
    expected = {
        # image_id: subject, session, modality, acq, suffix, datatype, entities, subject_path
        "sub-01_ses-01_FLAIR": ("01", "01", "FLAIR", "", "FLAIR", "anat", "sub-01_ses-01", "sub-01/ses-01"),
        "sub-01_ses-02_T1w": ("01", "02", "T1w", "", "T1w", "anat", "sub-01_ses-02", "sub-01/ses-02"),
        "sub-02_T1w": ("02", "", "T1w", "", "T1w", "anat", "sub-02", "sub-02"),
        "sub-02_acq-fast_T1w": ("02", "", "T1w", "fast", "T1w", "anat", "sub-02_acq-fast", "sub-02"),
        "sub-03_CT": ("03", "", "CT", "", "CT", "ct", "sub-03", "sub-03"),
    }
    columns = ["subject", "session", "modality", "acq", "suffix", "datatype", "entities", "subject_path"]
    for image_id, values in expected.items():
        assert tuple(images.loc[image_id, columns]) == values, image_id
    assert images.loc["sub-02_acq-fast_T1w", "path"] == str(bids_root / "sub-02/anat/sub-02_acq-fast_T1w.nii.gz")
    assert images.loc["sub-03_CT", "path"] == str(bids_root / "sub-03/ct/sub-03_CT.nii.gz")
    assert (images["ce"] == "").all() and (images["run"] == "").all()


def test_from_bids_acquisition_dates(bids_root):
    dates = cohort.from_bids(bids_root).images.set_index("image_id")["acquisition_date"].to_dict()
    assert dates == {
        "sub-01_ses-01_T1w": "2024-01-15",  # JSON sidecar AcquisitionDateTime
        "sub-01_ses-01_FLAIR": "2024-01-16",  # sub-01_ses-01_scans.tsv acq_time
        "sub-01_ses-02_T1w": "2024-07-22",  # sub-01_sessions.tsv acq_time
        "sub-01_ses-02_FLAIR": "2024-07-22",
        "sub-02_T1w": "",  # no date anywhere: empty, not an error
        "sub-02_acq-fast_T1w": "",
        "sub-03_CT": "",
    }


def test_from_bids_without_dataset_description(bids_root):
    (bids_root / "dataset_description.json").unlink()
    with pytest.raises(InputError) as info:
        cohort.from_bids(bids_root)
    assert str(bids_root) in str(info.value)
    assert "dataset_description.json" in str(info.value)


def test_from_bids_missing_folder(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(InputError) as info:
        cohort.from_bids(root)
    assert str(root) in str(info.value)
    assert "does not exist" in str(info.value)


def test_from_bids_bad_sidecar_date_rejects_only_that_image(bids_root):
    sidecar = bids_root / "sub-02/anat/sub-02_acq-fast_T1w.json"
    sidecar.write_text(json.dumps({"AcquisitionDateTime": "last Tuesday"}))
    found = cohort.from_bids(bids_root)
    assert "sub-02_acq-fast_T1w" not in set(found.images["image_id"])
    assert len(found.images) == 6
    assert len(found.rejected) == 1
    assert str(sidecar) in str(found.rejected[0]) and "last Tuesday" in str(found.rejected[0])


# ---------------------------------------------------------------------------------------------
# Samples tables


def _table(*rows: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), dtype=str)


def _row(subject="01", session="01", modality="T1w", path=None, **extra) -> dict[str, str]:
    path = path if path is not None else f"sub-{subject}_ses-{session}_{modality}.nii.gz"
    return {"subject": subject, "session": session, "modality": modality, "path": path, **extra}


def _messages(found: cohort.Cohort) -> list[str]:
    return [str(error) for error in found.rejected]


def test_from_table_accepts_good_rows(tmp_path):
    table = _table(
        _row("01", "01", "T1w", acquisition_date="2024-01-15"),
        _row("01", "01", "FLAIR", acquisition_date="2024-01-15"),
        _row("02", "", "CT", acquisition_date=""),
    )
    found = cohort.from_table(table, source=tmp_path / "samples.tsv")
    assert found.rejected == []
    assert found.images["image_id"].tolist() == ["sub-01_ses-01_FLAIR", "sub-01_ses-01_T1w", "sub-02_CT"]
    ct = found.image("sub-02_CT")
    assert (ct["session"], ct["datatype"], ct["subject_path"]) == ("", "ct", "sub-02")
    assert found.image("sub-01_ses-01_T1w")["acquisition_date"] == "2024-01-15"


@pytest.mark.parametrize("label", ["../etc", "a/b", "01_x", "..", " "])
def test_from_table_rejects_bad_subject_label_and_keeps_other_rows(tmp_path, label):
    source = tmp_path / "samples.tsv"
    table = _table(_row("01"), _row(label, path="bad.nii.gz"), _row("02"))
    found = cohort.from_table(table, source=source)
    assert found.images["subject"].tolist() == ["01", "02"]
    [message] = _messages(found)
    assert str(source) in message
    assert "row 3" in message  # line 3 of the file: header, then the first row, then this one
    assert f"subject label {label.strip()!r}" in message


@pytest.mark.parametrize("label", ["../etc", "a/b", "01_x", ".."])
def test_from_table_rejects_bad_session_label_and_keeps_other_rows(tmp_path, label):
    source = tmp_path / "samples.tsv"
    table = _table(_row("01", "01"), _row("02", "01"), _row("03", label, path="bad.nii.gz"))
    found = cohort.from_table(table, source=source)
    assert found.images["subject"].tolist() == ["01", "02"]
    [message] = _messages(found)
    assert "row 4" in message
    assert f"session label {label!r}" in message


def test_from_table_blank_session_cell_means_no_session(tmp_path):
    """A cell holding only spaces is read as empty, like a TSV cell left blank."""
    source = tmp_path / "samples.tsv"
    table = _table(_row("01", "01"), _row("02", " ", path="other.nii.gz"))
    found = cohort.from_table(table, source=source)
    assert found.images["subject"].tolist() == ["01", "02"]
    assert found.images["session"].tolist() == ["01", ""]
    assert found.rejected == []


def test_from_table_rejects_unknown_modality(tmp_path):
    table = _table(_row("01", modality="T3w"), _row("02"))
    found = cohort.from_table(table, source=tmp_path / "samples.tsv")
    assert found.images["subject"].tolist() == ["02"]
    [message] = _messages(found)
    assert "row 2" in message and "unknown modality 'T3w'" in message and "T1w" in message


@pytest.mark.parametrize(
    ("spelling", "modality", "suffix", "datatype"),
    [("PD", "PDw", "PDw", "anat"), ("dwi", "DWI", "dwi", "dwi"), ("t1", "T1w", "T1w", "anat"),
     ("flair", "FLAIR", "FLAIR", "anat"), ("adc", "ADC", "ADC", "dwi"), ("ct", "CT", "CT", "ct")],
)
def test_from_table_accepts_modality_aliases(tmp_path, spelling, modality, suffix, datatype):
    found = cohort.from_table(_table(_row("01", modality=spelling, path="x.nii.gz")), source=tmp_path / "s.tsv")
    assert found.rejected == []
    [row] = found.images.to_dict("records")
    assert (row["modality"], row["suffix"], row["datatype"]) == (modality, suffix, datatype)
    assert row["image_id"] == f"sub-01_ses-01_{suffix}"


def test_from_table_strips_bids_prefixes(tmp_path):
    found = cohort.from_table(
        _table(_row("sub-07", "ses-02", path="x.nii.gz", acq="acq-fast", run="run-2")), source=tmp_path / "s.tsv"
    )
    assert found.rejected == []
    [row] = found.images.to_dict("records")
    assert (row["subject"], row["session"], row["acq"], row["run"]) == ("07", "02", "fast", "2")
    assert row["image_id"] == "sub-07_ses-02_acq-fast_run-2_T1w"


@pytest.mark.parametrize("bad_date", ["15/01/2024", "2024-13-01", "yesterday"])
def test_from_table_rejects_bad_date(tmp_path, bad_date):
    table = _table(_row("01", acquisition_date=bad_date), _row("02", acquisition_date="2024-01-15"))
    found = cohort.from_table(table, source=tmp_path / "samples.tsv")
    assert found.images["subject"].tolist() == ["02"]
    [message] = _messages(found)
    assert "row 2" in message and repr(bad_date) in message


@pytest.mark.parametrize(
    ("value", "date"),
    [("2024-01-15T09:30:00", "2024-01-15"), ("2024-01-15 23:59:59", "2024-01-15"),
     ("2024-01-15T09:30:00Z", "2024-01-15"), ("2024-01-15", "2024-01-15"), ("", ""), ("n/a", "")],
)
def test_from_table_reduces_dates_to_iso_date(tmp_path, value, date):
    found = cohort.from_table(_table(_row("01", acquisition_date=value)), source=tmp_path / "samples.tsv")
    assert found.rejected == []
    assert found.images["acquisition_date"].tolist() == [date]


def test_from_table_resolves_relative_paths(tmp_path):
    table = _table(
        _row("01", modality="T1w", path="images/a.nii.gz"),
        _row("01", modality="FLAIR", path=str(tmp_path / "elsewhere" / "b.mgz")),
    )
    found = cohort.from_table(table, source=tmp_path / "config" / "samples.tsv", base_dir=tmp_path / "study")
    paths = found.images.set_index("modality")["path"].to_dict()
    assert paths == {"T1w": str(tmp_path / "study" / "images" / "a.nii.gz"), "FLAIR": str(tmp_path / "elsewhere" / "b.mgz")}
    # Without base_dir, relative paths are relative to the table's folder.
    found = cohort.from_table(table, source=tmp_path / "config" / "samples.tsv")
    assert found.image("sub-01_ses-01_T1w")["path"] == str(tmp_path / "config" / "images" / "a.nii.gz")


def test_from_table_rejects_non_image_path(tmp_path):
    found = cohort.from_table(_table(_row("01", path="scan.png"), _row("02")), source=tmp_path / "s.tsv")
    assert found.images["subject"].tolist() == ["02"]
    [message] = _messages(found)
    assert "row 2" in message and "scan.png" in message


def test_from_table_rejects_both_duplicates(tmp_path):
    source = tmp_path / "samples.tsv"
    table = _table(
        _row("01", "01", "T1w", path="first.nii.gz"),
        _row("01", "01", "T1w", path="second.nii.gz"),
        _row("01", "01", "FLAIR"),
        _row("01", "01", "T1w", path="third.nii.gz", acq="fast"),
    )
    found = cohort.from_table(table, source=source)
    assert found.images["image_id"].tolist() == ["sub-01_ses-01_FLAIR", "sub-01_ses-01_acq-fast_T1w"]
    [message] = _messages(found)
    assert str(source) in message and "sub-01_ses-01_T1w" in message
    assert "acq" in message and "run" in message


def test_from_table_rejects_subject_mixing_sessions_and_no_session(tmp_path):
    table = _table(_row("01", "01", "T1w"), _row("01", "", "FLAIR"), _row("02", "", "T1w"))
    found = cohort.from_table(table, source=tmp_path / "samples.tsv")
    assert found.images["image_id"].tolist() == ["sub-02_T1w"]
    [message] = _messages(found)
    assert "subject 01" in message and "with and without a session" in message


def test_from_table_missing_required_column(tmp_path):
    source = tmp_path / "samples.tsv"
    with pytest.raises(InputError) as info:
        cohort.from_table(_table({"subject": "01", "modality": "T1w"}), source=source)
    assert str(source) in str(info.value) and "path" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Reference image


@pytest.fixture
def dated_cohort(tmp_path) -> cohort.Cohort:
    table = _table(
        # Session 02 was acquired first: the session label does not decide the order, the date does.
        _row("01", "01", "T1w", acquisition_date="2024-07-22"),
        _row("01", "01", "FLAIR", acquisition_date="2024-07-22"),
        _row("01", "02", "FLAIR", acquisition_date="2024-01-15"),
        _row("01", "02", "T1w", acquisition_date="2024-01-15"),
        # No T1w at all: the first image by date.
        _row("02", "01", "FLAIR", acquisition_date="2023-05-01"),
        _row("02", "02", "FLAIR", acquisition_date="2023-03-01"),
        _row("02", "02", "T2w", acquisition_date="2023-03-01"),
    )
    found = cohort.from_table(table, source=tmp_path / "samples.tsv")
    assert found.rejected == []
    return found


def test_reference_image_is_first_t1w_of_first_session_by_date(dated_cohort):
    assert dated_cohort.reference_image("01")["image_id"] == "sub-01_ses-02_T1w"


def test_reference_image_falls_back_to_first_image_without_t1w(dated_cohort):
    assert dated_cohort.reference_image("02")["image_id"] == "sub-02_ses-02_FLAIR"


def test_reference_image_honours_explicit_session(dated_cohort):
    assert dated_cohort.reference_image("01", session="01")["image_id"] == "sub-01_ses-01_T1w"
    assert dated_cohort.reference_image("02", session="01")["image_id"] == "sub-02_ses-01_FLAIR"


def test_reference_image_of_another_modality(dated_cohort):
    assert dated_cohort.reference_image("02", modality="T2w")["image_id"] == "sub-02_ses-02_T2w"


# ---------------------------------------------------------------------------------------------
# inputs.load


def test_study_load_samples_table(tmp_path):
    table = tmp_path / "config" / "samples.tsv"
    table.parent.mkdir()
    table.write_text(
        "subject\tsession\tmodality\tpath\tacquisition_date\n"
        "sub-01\t01\tT1w\t../data/sub-01_T1w.nii.gz\t2024-01-15T10:00:00\n"
        "01\t01\tPD\t/abs/sub-01_PD.nii.gz\t\n"
        "02\t\tt1\tdata/sub-02.nii\tn/a\n"
    )
    found = inputs.load("samples", table)
    assert found.rejected == []
    rows = found.images.set_index("image_id")
    assert rows.index.tolist() == ["sub-01_ses-01_PDw", "sub-01_ses-01_T1w", "sub-02_T1w"]
    assert rows.loc["sub-01_ses-01_T1w", "path"] == str(table.parent / "../data/sub-01_T1w.nii.gz")
    assert rows.loc["sub-01_ses-01_T1w", "acquisition_date"] == "2024-01-15"
    assert rows.loc["sub-01_ses-01_PDw", "path"] == "/abs/sub-01_PD.nii.gz"
    assert rows.loc["sub-02_T1w", "path"] == str(table.parent / "data/sub-02.nii")


def test_study_load_missing_samples_table(tmp_path):
    path = tmp_path / "samples.tsv"
    with pytest.raises(InputError) as info:
        inputs.load("samples", path)
    assert str(path) in str(info.value) and "does not exist" in str(info.value)


def test_study_load_demo_without_touching_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = inputs.load("demo", "some/dir")
    assert found.rejected == []
    assert len(found.images) == 7
    assert found.subjects() == ["01", "02", "03"]
    assert all(p.startswith("some/dir/sub-") and p.endswith(".nii.gz") for p in found.images["path"])
    assert "sub-03_ses-01_acq-lowres_T1w" in set(found.images["image_id"])
    for row in found.images.to_dict("records"):
        assert row["path"] == f"some/dir/{row['subject_path']}/{row['datatype']}/{row['image_id']}.nii.gz"
    assert list(tmp_path.iterdir()) == []


def test_study_load_unknown_kind():
    with pytest.raises(ValueError, match="unknown input kind"):
        inputs.load("dicom", "x")


# ---------------------------------------------------------------------------------------------
# Samples schema


def test_samples_schema_accepts_config_table_and_fills_defaults():
    table = pd.read_csv(SAMPLES_TSV, sep="\t", dtype=str, keep_default_na=False)
    assert "acq" not in table.columns
    validate(table, str(SAMPLES_SCHEMA))
    for column in ("acq", "ce", "run"):
        assert column in table.columns
        assert (table[column] == "").all()
    assert len(table) == 5
    found = cohort.from_table(table, source=SAMPLES_TSV)
    assert found.rejected == [] and len(found.images) == 5


def test_samples_schema_fills_session_and_date_defaults():
    table = pd.DataFrame([{"subject": "01", "modality": "T1w", "path": "a.nii.gz"}], dtype=str)
    validate(table, str(SAMPLES_SCHEMA))
    assert table.loc[0, "session"] == "" and table.loc[0, "acquisition_date"] == ""


def test_samples_schema_rejects_table_without_path():
    table = pd.read_csv(SAMPLES_TSV, sep="\t", dtype=str, keep_default_na=False).drop(columns=["path"])
    with pytest.raises(WorkflowError, match="'path' is a required property"):
        validate(table, str(SAMPLES_SCHEMA))
