"""The study's prompts: the shipped prompt list, its checks with row-numbered errors, and image selection."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from voxelprompt.core.errors import InputError
from voxelprompt.study import cohort, inputs
from voxelprompt.study.prompts import StudyPrompt, load_prompts, parse_inputs, parse_subjects, sessions_in_order

REPO = Path(__file__).resolve().parents[1]
PROMPTS_CSV = REPO / "config" / "prompts.csv"
HEADER = "prompt_id,prompt,inputs,subjects"
GOOD_ROW = "hippocampus-volume,How voluminous is the left and right hippocampus?,,"


def _write(tmp_path: Path, *lines: str, header: str = HEADER) -> Path:
    path = tmp_path / "prompts.csv"
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def _load_error(path: Path) -> InputError:
    with pytest.raises(InputError) as caught:
        load_prompts(path)
    assert caught.value.source == str(path)
    return caught.value


def _ids(images: list[dict]) -> list[str]:
    return [image["image_id"] for image in images]


# ---------------------------------------------------------------------------------------------
# The shipped prompt list and the demo study


@pytest.fixture(scope="module")
def demo_cohort() -> cohort.Cohort:
    # The records the workflow builds for the demo; no image file is read.
    return inputs.load("demo", "resources/demo")


def test_shipped_prompts_load_and_cover_what_the_demo_needs():
    prompts = load_prompts(PROMPTS_CSV)
    assert len(prompts) == 5
    assert any(prompt.inputs for prompt in prompts)
    assert any(prompt.subjects for prompt in prompts)
    assert any("voluminous" in prompt.prompt or "volume" in prompt.prompt.lower() for prompt in prompts)


def test_every_shipped_prompt_selects_images_of_the_subjects_it_applies_to(demo_cohort):
    for prompt in load_prompts(PROMPTS_CSV):
        subjects = [s for s in demo_cohort.subjects() if prompt.applies_to(s)]
        assert subjects, f"{prompt.prompt_id} applies to no demo subject"
        longitudinal = {s.session_position for s in prompt.inputs} == {"first", "last"}
        for subject in subjects:
            images = demo_cohort.subject_images(subject)
            chosen = prompt.select(images)
            assert chosen and all(image["subject"] == subject for image in chosen)
            sessions = {image["session"] for image in chosen}
            # The agent encodes one session at a time; only a before/after prompt spans two.
            assert len(sessions) == (2 if longitudinal else 1), (prompt.prompt_id, subject, sessions)


def test_shipped_csv_passes_the_schema_as_snakemake_validates_it():
    from snakemake.utils import validate

    validate(pd.read_csv(PROMPTS_CSV, dtype=str, keep_default_na=False),
             str(REPO / "voxelprompt" / "data" / "schemas" / "prompts.schema.yaml"))


# ---------------------------------------------------------------------------------------------
# Bad tables: every error names the file and the row as a spreadsheet numbers it (header = row 1)


@pytest.mark.parametrize("bad_row, expected", [
    (GOOD_ROW, ['row 3 (prompt_id "hippocampus-volume")', "duplicate prompt_id (first used in row 2)"]),
    ("Hippo Vol,Volume of the left hippocampus,,", ['row 3 (prompt_id "Hippo Vol")', "prompt_id:", "does not match"]),
    ("-hippo,Volume of the left hippocampus,,", ['row 3 (prompt_id "-hippo")', "prompt_id:"]),
    ("hippo,   ,,", ['row 3 (prompt_id "hippo")', "prompt:", "non-empty"]),
    ("hippo,Volume of the left hippocampus,T3w,", ['row 3 (prompt_id "hippo")', "unknown modality 'T3w'"]),
    ("hippo,Volume of the left hippocampus,T1w@ses-0 1,", ['row 3 (prompt_id "hippo")', "inputs:", "session label '0 1'"]),
    ("hippo,Volume of the left hippocampus,T1w@a/b,", ['row 3 (prompt_id "hippo")', "session label 'a/b'"]),
    ("hippo,Volume of the left hippocampus,T1w@,", ['row 3 (prompt_id "hippo")', "'T1w@' has '@' but no session"]),
    ("hippo,Volume of the left hippocampus,,sub_01", ['row 3 (prompt_id "hippo")', "subjects:", "'sub_01'"]),
    (",Volume of the left hippocampus,,", ["row 3 (no prompt_id)", "prompt_id:"]),
])
def test_a_bad_row_is_named_by_its_row_and_prompt_id(tmp_path, bad_row, expected):
    error = _load_error(_write(tmp_path, GOOD_ROW, bad_row))
    for fragment in expected:
        assert fragment in error.problem
    assert "row 2" not in error.problem.replace("first used in row 2", "")


def test_session_label_with_an_underscore_is_rejected(tmp_path):
    # "ses_01" is not "ses-01": the prefix stays and the underscore makes the label invalid.
    error = _load_error(_write(tmp_path, "hippo,Volume of the left hippocampus,T1w@ses_01,"))
    assert "session label 'ses_01'" in error.problem


@pytest.mark.parametrize("header, expected", [
    (HEADER + ",notes", "unknown column(s) notes"),
    ("prompt_id,inputs,subjects", "missing required column(s) prompt"),
    ("id,prompt", "missing required column(s) prompt_id"),
])
def test_bad_columns_are_reported_on_the_header_row(tmp_path, header, expected):
    row = ",".join(["hippo", "Volume of the left hippocampus", "", "", ""][: header.count(",") + 1])
    error = _load_error(_write(tmp_path, row, header=header))
    assert error.problem.startswith("row 1 (header): ")
    assert expected in error.problem


def test_all_bad_rows_are_reported_at_once(tmp_path):
    path = _write(tmp_path,
                  GOOD_ROW,
                  "Bad Id,Volume of the left hippocampus,,",
                  "amygdala,How big is the right-sided amygdaloid complex relative to ICV?,T1w,",
                  "flair,How bright is the third ventricle on the FLAIR,T3w,sub_01")
    error = _load_error(path)
    assert error.problem.startswith("3 problems:")
    assert 'row 3 (prompt_id "Bad Id")' in error.problem
    assert error.problem.count('row 5 (prompt_id "flair")') == 2
    assert "unknown modality 'T3w'" in error.problem and "'sub_01'" in error.problem
    assert "row 4" not in error.problem and "row 2" not in error.problem
    assert error.problem.count("\n") == 3


def test_bad_file_errors(tmp_path):
    assert "does not exist" in _load_error(tmp_path / "missing.csv").problem
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "is empty" in _load_error(empty).problem
    assert "no prompts" in _load_error(_write(tmp_path)).problem


def test_row_numbers_count_blank_rows_and_spreadsheet_artefacts_are_tolerated(tmp_path):
    # Excel's "CSV UTF-8" starts with a byte-order mark (pandas drops it) and may add an empty
    # trailing column.
    path = tmp_path / "prompts.csv"
    path.write_text("\ufeff" + HEADER + ",\n" + GOOD_ROW + ",\n,,,,\n\nhippo,Volume,T3w,,\n", encoding="utf-8")
    assert 'row 5 (prompt_id "hippo")' in _load_error(path).problem
    path.write_text("\ufeff" + HEADER + ",\n" + GOOD_ROW + ",\n,,,,\n", encoding="utf-8")
    assert [p.prompt_id for p in load_prompts(path)] == ["hippocampus-volume"]


def test_cells_are_parsed(tmp_path):
    path = _write(tmp_path, "growth, Ventricle growth , flair@ses-01 ; T1@last ;,sub-01; 1*")
    [prompt] = load_prompts(path)
    assert prompt.prompt == "Ventricle growth"
    assert [str(s) for s in prompt.inputs] == ["FLAIR@ses-01", "T1w@last"]
    assert prompt.subjects == ("01", "1*")


# ---------------------------------------------------------------------------------------------
# Selection


@pytest.fixture(scope="module")
def images() -> cohort.Cohort:
    rows = [
        # subject, session, modality, date. Subject 02's session labels run against their dates.
        ("01", "01", "T1w", "2024-01-15"),
        ("01", "01", "FLAIR", "2024-01-15"),
        ("01", "02", "T1w", "2024-07-22"),
        ("02", "2", "T1w", "2020-03-01"),
        ("02", "1", "T1w", "2021-03-01"),
        ("02", "1", "FLAIR", "2021-03-01"),
        ("03", "", "T1w", ""),
        ("03", "", "FLAIR", ""),
    ]
    table = pd.DataFrame(
        [{"subject": s, "session": ses, "modality": m, "acquisition_date": d, "path": f"{s}_{ses}_{m}.nii.gz"}
         for s, ses, m, d in rows])
    built = cohort.from_table(table, source="test table", base_dir="/study")
    assert not built.rejected
    return built


def _prompt(inputs: str = "", subjects: str = "") -> StudyPrompt:
    return StudyPrompt("p", "a prompt", parse_inputs(inputs), parse_subjects(subjects))


@pytest.mark.parametrize("subject, inputs, expected", [
    ("01", "", ["sub-01_ses-01_FLAIR", "sub-01_ses-01_T1w", "sub-01_ses-02_T1w"]),
    ("01", "T1w", ["sub-01_ses-01_T1w", "sub-01_ses-02_T1w"]),
    ("01", "t1", ["sub-01_ses-01_T1w", "sub-01_ses-02_T1w"]),
    ("01", "T1w@02", ["sub-01_ses-02_T1w"]),
    ("01", "T1w@ses-01", ["sub-01_ses-01_T1w"]),
    ("01", "@first", ["sub-01_ses-01_FLAIR", "sub-01_ses-01_T1w"]),
    ("01", "@last", ["sub-01_ses-02_T1w"]),
    # Any selector selects; the order is the subject's, not the selectors'.
    ("01", "T1w@last;FLAIR", ["sub-01_ses-01_FLAIR", "sub-01_ses-02_T1w"]),
    ("01", "T1w@first;T1w@last", ["sub-01_ses-01_T1w", "sub-01_ses-02_T1w"]),
    # first/last go by acquisition date, not by label.
    ("02", "T1w@first", ["sub-02_ses-2_T1w"]),
    ("02", "@last", ["sub-02_ses-1_FLAIR", "sub-02_ses-1_T1w"]),
    # Without sessions, first and last are the subject's only time point.
    ("03", "FLAIR@first", ["sub-03_FLAIR"]),
    ("03", "@last", ["sub-03_FLAIR", "sub-03_T1w"]),
])
def test_selection(images, subject, inputs, expected):
    assert _ids(_prompt(inputs).select(images.subject_images(subject))) == expected


def test_sessions_in_order_follow_acquisition_dates(images):
    assert sessions_in_order(images.subject_images("02").to_dict("records")) == ["2", "1"]
    assert sessions_in_order(images.subject_images("03").to_dict("records")) == [""]


@pytest.mark.parametrize("subjects, applies", [
    ("", {"01": True, "02": True, "10": True}),
    ("01", {"01": True, "02": False, "10": False}),
    ("sub-01;02", {"01": True, "02": True, "10": False}),
    ("0*", {"01": True, "02": True, "10": False}),
    ("1?", {"01": False, "10": True, "11": True}),
    ("0[2-3]", {"01": False, "02": True, "03": True}),
])
def test_subject_filters(subjects, applies):
    prompt = _prompt(subjects=subjects)
    assert {subject: prompt.applies_to(subject) for subject in applies} == applies
    assert prompt.applies_to("sub-01") == prompt.applies_to("01")


def test_a_prompt_that_selects_nothing_names_itself_the_subject_and_its_selectors(images):
    prompt = StudyPrompt("flair-at-followup", "How bright is the third ventricle on the FLAIR",
                         parse_inputs("FLAIR@last;CT"))
    with pytest.raises(InputError) as caught:
        prompt.select(images.subject_images("01"))
    assert caught.value.source == "sub-01"
    message = str(caught.value)
    assert 'prompt "flair-at-followup"' in message
    assert 'inputs "FLAIR@last;CT"' in message
    assert "T1w@ses-01, FLAIR@ses-01" in message or "FLAIR@ses-01, T1w@ses-01" in message


def test_prompts_over_the_limit_are_refused_at_load_each_by_row_without_being_repeated(tmp_path):
    """A 1 MB and a 114 KB prompt are named by their rows at once; the message quotes their start only."""
    huge, long = "segment the brain " * 58_000, "how large " * 11_400
    path = _write(tmp_path, GOOD_ROW, f"huge,{huge},,", "fine,What is the volume of the brain?,,", f"long,{long},,")
    error = _load_error(path)
    assert "2 problems" in str(error)
    assert 'row 3 (prompt_id "huge"): prompt' in str(error) and 'row 5 (prompt_id "long"): prompt' in str(error)
    assert f"{len(huge.strip()):,} characters; the limit is 1,000" in str(error)
    assert len(str(error)) < 1_000


def test_a_prompt_at_the_limit_is_accepted(tmp_path):
    prompt = ("x" * 999) + "?"
    assert load_prompts(_write(tmp_path, f"edge,{prompt},,"))[0].prompt == prompt


def test_the_schema_is_package_data():
    """An installed package (not only a checkout with the workflow next to it) can check prompts."""
    import voxelprompt
    from voxelprompt.study import prompts

    package = Path(voxelprompt.__file__).resolve().parent
    assert prompts.SCHEMA_PATH.is_file() and package in prompts.SCHEMA_PATH.parents
    assert (package / "data").as_posix() in prompts.SCHEMA_PATH.as_posix()  # covered by package-data data/**/*
