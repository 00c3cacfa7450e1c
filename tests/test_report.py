"""The study's tables (voxelprompt/study/report.py): rows from real `Result`s, error rows for prompts and
subjects that failed, parts written atomically, the gathered tables read back with pandas and duckdb,
and provenance in the Parquet metadata."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import voxelprompt
from voxelprompt.core.errors import InputError
from voxelprompt.core.scan import Scan
from voxelprompt.core.volume import Volume
from voxelprompt.model.agent import Agent, Result
from voxelprompt.runtime.library import Metric
from voxelprompt.study import report
from voxelprompt.study.report import (MASKS, METRICS, RESPONSES, MaskFile, PromptRun, failed_subject_tables, gather,
                                      provenance, read_provenance, subject_tables, write_part)

STEPS = ['a = 2\nreport("volume of the lesion", 144.0, "mm3")',
         'respond("no change")',
         'report("ratio", 0.5, "")\nreport("width of the lesion", 12.5, "mm")\nstop()']
MODEL = "cpu-500"


def finished(prompt: str = "how large is the lesion?") -> Result:
    return Result(prompt, steps=list(STEPS), responses=["volume of the lesion: 144 mm3", "no change"],
                  metrics=[Metric("volume of the lesion", 144.0, "mm3", 0), Metric("ratio", 0.5, "", 2),
                           Metric("width of the lesion", 12.5, "mm", 2)], ok=True, seconds=2.5)


def mask_volume() -> Volume:
    array = np.zeros((6, 5, 4), np.uint8)
    array[1:3, 1:4, 2] = 1  # 6 voxels of 2 x 2 x 3 mm
    return Volume(array, np.diag([2.0, 2.0, 3.0, 1.0]))


def ok_run(prompt_id: str = "p1", path: str = "sub-01_desc-lesion_mask.nii.gz") -> PromptRun:
    mask = MaskFile.of("lesion", path, "sub-01_FLAIR.nii.gz", mask_volume())
    return PromptRun(prompt_id, "how large is the lesion?", finished(), masks=[mask])


def rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


# --- one subject -----------------------------------------------------------------------------------

def test_tables_of_a_finished_run():
    tables = subject_tables("01", "02", [ok_run()], MODEL)
    assert [tables[name].schema for name in ("metrics", "responses", "masks")] == [METRICS, RESPONSES, MASKS]

    metrics = rows(tables["metrics"])
    assert [(m["metric"], m["value"], m["unit"], m["step"]) for m in metrics] == [
        ("volume of the lesion", 144.0, "mm3", 1), ("ratio", 0.5, "", 3), ("width of the lesion", 12.5, "mm", 3)]
    assert metrics[0]["code"] == STEPS[0] and metrics[2]["code"] == STEPS[2]
    assert {(m["subject"], m["session"], m["prompt_id"], m["prompt"]) for m in metrics} == {
        ("01", "02", "p1", "how large is the lesion?")}

    (response,) = rows(tables["responses"])
    assert response["status"] == "ok" and response["error"] == ""
    assert response["response"] == "volume of the lesion: 144 mm3\nno change"
    assert response["program"] == "\n".join(STEPS) and response["steps"] == 3
    assert response["seconds"] == 2.5 and response["model_id"] == MODEL

    (mask,) = rows(tables["masks"])
    assert mask == {"subject": "01", "session": "02", "prompt_id": "p1", "output": "lesion",
                    "path": "sub-01_desc-lesion_mask.nii.gz", "image": "sub-01_FLAIR.nii.gz", "voxels": 6,
                    "volume_mm3": 72.0}


def test_metric_steps_from_the_agent_loop(monkeypatch):
    """The agent records which step reported each metric, so its row shows the code behind it.
    The decoder is scripted: what matters here is the loop's bookkeeping, not a model."""
    scripted = list(STEPS)
    monkeypatch.setattr(Agent, "_feed", lambda self, pieces, read=(): None)
    monkeypatch.setattr(Agent, "_write_step", lambda self: (scripted.pop(0), [], ""))
    agent = Agent.__new__(Agent)
    agent.model, agent.max_steps, agent.max_step_tokens, agent.constrained = None, 8, 64, False
    agent.decoder = SimpleNamespace(reset=lambda: None)
    scan = Scan(Volume(np.random.default_rng(0).uniform(size=(8, 8, 8)).astype(np.float32), np.eye(4)),
                "T1w", "01", "2024-01-01")
    result = agent.run("how large is the lesion?", [scan])
    assert result.ok and result.steps == STEPS
    assert [m.step for m in result.metrics] == [0, 2, 2]
    metrics = rows(subject_tables("01", "", [PromptRun("p1", result.prompt, result)], MODEL)["metrics"])
    assert [m["code"] for m in metrics] == [STEPS[0], STEPS[2], STEPS[2]]


def test_error_rows():
    """A prompt that could not run and a program that failed each give one error row with the
    message; numbers of a program that did not finish are not answers, so no metrics rows."""
    failed = Result("how large?", steps=STEPS[:1], metrics=[Metric("volume of the lesion", 144.0, "mm3", 0)],
                    ok=False, error="MeasureError: the region is empty", seconds=1.0)
    silent = Result("and now?", steps=["x = 1"], ok=False)
    runs = [ok_run("p1"), PromptRun("p2", "how large?", failed), PromptRun("p3", "and now?", silent),
            PromptRun("p4", "is it restricting?", error="no DWI image for this subject")]
    tables = subject_tables("01", "", runs, MODEL)
    responses = {r["prompt_id"]: r for r in rows(tables["responses"])}
    assert [responses[p]["status"] for p in ("p1", "p2", "p3", "p4")] == ["ok", "error", "error", "error"]
    assert responses["p2"]["error"] == "MeasureError: the region is empty" and responses["p2"]["steps"] == 1
    assert responses["p2"]["program"] == STEPS[0] and responses["p2"]["seconds"] == 1.0
    assert responses["p3"]["error"]  # a failure always says something
    assert responses["p4"]["error"] == "no DWI image for this subject"
    assert (responses["p4"]["steps"], responses["p4"]["program"], responses["p4"]["response"]) == (0, "", "")
    assert {m["prompt_id"] for m in rows(tables["metrics"])} == {"p1"}
    assert {m["prompt_id"] for m in rows(tables["masks"])} == {"p1"}


def test_prompt_run_holds_a_result_or_an_error():
    with pytest.raises(ValueError):
        PromptRun("p1", "volume?")
    with pytest.raises(ValueError):
        PromptRun("p1", "volume?", finished(), error="bad image")
    with pytest.raises(ValueError, match="finished"):
        PromptRun("p1", "volume?", error="bad image", masks=[MaskFile("lesion", "m.nii.gz", "t1.nii.gz", 1, 1.0)])


def test_failed_subject_has_an_error_row_per_prompt():
    prompts = {"p1": "volume of the brain?", "p2": "is the lesion enhancing?"}
    tables = failed_subject_tables("07", "01", prompts, "sub-07_T1w.nii.gz: file does not exist", MODEL)
    assert rows(tables["responses"]) == [
        {"subject": "07", "session": "01", "prompt_id": pid, "prompt": prompt, "response": "", "program": "",
         "steps": 0, "status": "error", "error": "sub-07_T1w.nii.gz: file does not exist", "warning": "",
         "seconds": 0.0, "model_id": MODEL} for pid, prompt in prompts.items()]
    assert tables["metrics"].num_rows == 0 and tables["metrics"].schema == METRICS
    assert tables["masks"].num_rows == 0 and tables["masks"].schema == MASKS


def test_a_subjects_warning_is_on_every_responses_row():
    """An image accepted with an unknown orientation: every answer about the subject says so."""
    runs = [PromptRun("p1", "volume?", error="no T2w"), PromptRun("p2", "size?", error="no FLAIR")]
    warning = "t1.nii.gz: orientation unknown (qform_code and sform_code are both 0), accepted by configuration"
    tables = subject_tables("07", "", runs, MODEL, warning)
    assert tables["responses"].column("warning").to_pylist() == [warning, warning]
    assert subject_tables("07", "", runs, MODEL)["responses"].column("warning").to_pylist() == ["", ""]


# --- parts and gathering ---------------------------------------------------------------------------

def test_write_part_leaves_nothing_half_written(tmp_path, monkeypatch):
    """Rewriting a part, the writer dies half-way through the last file: no temporary file is left,
    the old responses are gone with it, and gather refuses the incomplete part by name."""
    tables = subject_tables("01", "", [ok_run()], MODEL)
    folder = tmp_path / "sub-01"
    write_table = pq.write_table

    def dying(table, where, **kwargs):
        if table.schema.equals(RESPONSES):
            with open(where, "wb") as file:
                file.write(b"PAR1 half a file")
            raise OSError("disk full")
        write_table(table, where, **kwargs)

    write_part(tables, folder)  # an earlier, complete run of this subject
    monkeypatch.setattr(pq, "write_table", dying)
    with pytest.raises(OSError, match="disk full"):
        write_part(tables, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["masks.parquet", "metrics.parquet"]
    with pytest.raises(InputError, match="responses.parquet"):
        gather([folder], tmp_path / "results", {})
    assert not (tmp_path / "results").exists()


def test_write_part_refuses_a_foreign_table(tmp_path):
    tables = subject_tables("01", "", [ok_run()], MODEL)
    tables["masks"] = tables["masks"].drop_columns(["volume_mm3"])
    with pytest.raises(ValueError, match="masks"):
        write_part(tables, tmp_path)


def test_gather_reads_back_with_pandas_and_duckdb(tmp_path):
    parts = [  # deliberately out of order; 02 failed to load
        write_part(subject_tables("03", "", [ok_run("p2", "m3b"), ok_run("p1", "m3a")], MODEL), tmp_path / "sub-03"),
        write_part(failed_subject_tables("02", "", {"p1": "a?", "p2": "b?"}, "bad image", MODEL), tmp_path / "sub-02"),
        write_part(subject_tables("01", "", [ok_run("p1", "m1")], MODEL), tmp_path / "sub-01"),
    ]
    written = gather(parts, tmp_path / "results", provenance(None, None))
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "masks.parquet", "metrics.parquet", "responses.parquet"]

    metrics = pd.read_parquet(written["metrics"])
    assert list(metrics.columns) == METRICS.names
    assert metrics["value"].dtype == np.float64 and metrics["step"].dtype == np.int64
    # sorted by subject then prompt; a prompt's numbers stay in the order the program reported them
    assert list(zip(metrics["subject"], metrics["prompt_id"], metrics["metric"])) == [
        (s, p, m) for s, p in (("01", "p1"), ("03", "p1"), ("03", "p2"))
        for m in ("volume of the lesion", "ratio", "width of the lesion")]
    responses = pd.read_parquet(written["responses"])
    assert list(zip(responses["subject"], responses["prompt_id"], responses["status"])) == [
        ("01", "p1", "ok"), ("02", "p1", "error"), ("02", "p2", "error"), ("03", "p1", "ok"), ("03", "p2", "ok")]
    masks = pd.read_parquet(written["masks"])
    assert list(masks["path"]) == ["m1", "m3a", "m3b"] and masks["voxels"].dtype == np.int64

    paths = {name: str(path) for name, path in written.items()}
    per_status = duckdb.sql(f"SELECT status, count(*) FROM read_parquet('{paths['responses']}') "
                            "GROUP BY status ORDER BY status").fetchall()
    assert per_status == [("error", 2), ("ok", 3)]
    joined = duckdb.sql(
        f"SELECT m.subject, sum(m.value), min(r.model_id) FROM read_parquet('{paths['metrics']}') m "
        f"JOIN read_parquet('{paths['responses']}') r USING (subject, session, prompt_id) "
        "WHERE m.unit = 'mm3' GROUP BY m.subject ORDER BY m.subject").fetchall()
    assert joined == [("01", 144.0, MODEL), ("03", 288.0, MODEL)]
    assert duckdb.sql(f"SELECT sum(volume_mm3) FROM read_parquet('{paths['masks']}')").fetchall() == [(216.0,)]

    # the column descriptions travel with the gathered files
    schema = pq.read_schema(written["metrics"])
    assert schema.field("value").metadata[report.DESCRIPTION_KEY] == METRICS.field("value").metadata[
        report.DESCRIPTION_KEY]


def test_gather_refuses_a_part_with_another_schema(tmp_path):
    part = write_part(subject_tables("01", "", [ok_run()], MODEL), tmp_path / "sub-01")
    pq.write_table(pa.table({"subject": ["01"], "status": [1]}), part / "responses.parquet")
    with pytest.raises(InputError, match="responses.parquet"):
        gather([part], tmp_path / "results", {})
    assert not (tmp_path / "results").exists()  # not even the tables read before the bad part


def test_empty_tables_keep_their_schema(tmp_path):
    """A study where no program reported a number, and one with no subject at all, still give
    tables of the documented types."""
    quiet = Result("is it enhancing?", steps=['choose("enhancing", ["enhancing", "non-enhancing"])\nstop()'],
                   responses=["enhancing"], ok=True)
    part = write_part(subject_tables("01", "", [PromptRun("p1", quiet.prompt, quiet)], MODEL), tmp_path / "sub-01")
    for parts, out in (([part], tmp_path / "one"), ([], tmp_path / "none")):
        written = gather(parts, out, {})
        for name, schema in report.SCHEMAS.items():
            assert pq.read_schema(written[name]).equals(schema)
        metrics = pd.read_parquet(written["metrics"])
        assert len(metrics) == 0 and list(metrics.columns) == METRICS.names
        assert metrics["value"].dtype == np.float64 and metrics["step"].dtype == np.int64
        assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{written['metrics']}')").fetchall() == [(0,)]
    assert len(pd.read_parquet(tmp_path / "one" / "responses.parquet")) == 1


# --- provenance and documentation ------------------------------------------------------------------

def test_provenance_is_stored_and_read_back(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"weights" * 1000)
    stored = provenance(model_dir, "input: demo\n")
    assert stored["package_version"] == voxelprompt.__version__
    assert stored["model_sha256"] == hashlib.sha256(b"weights" * 1000).hexdigest()
    assert stored["config_sha256"] == hashlib.sha256(b"input: demo\n").hexdigest()
    assert stored["anatomy"] == "oasis-dk"  # the definitions behind every volume (docs/anatomy-volumes.md)
    created = datetime.fromisoformat(stored["created_utc"])
    assert created.utcoffset().total_seconds() == 0
    assert abs((datetime.now(timezone.utc) - created).total_seconds()) < 600

    part = write_part(subject_tables("01", "", [ok_run()], MODEL), tmp_path / "sub-01")
    written = gather([part], tmp_path / "results", stored)
    for name, path in written.items():
        assert read_provenance(path) == {"schema_version": report.SCHEMA_VERSION, "table": name, **stored}
        # plain pyarrow sees the same JSON, for readers without this package
        assert json.loads(pq.read_schema(path).metadata[b"voxelprompt"])["model_sha256"] == stored["model_sha256"]
    with pytest.raises(InputError, match="voxelprompt metadata"):
        read_provenance(part / "metrics.parquet")


def test_provenance_without_model_or_config(tmp_path):
    stored = provenance(None, None)
    assert stored["model_sha256"] is None and stored["config_sha256"] is None
    with pytest.raises(InputError, match="model.safetensors"):
        provenance(tmp_path, None)


def test_schema_markdown_documents_every_column():
    text = report.schema_markdown()
    for name, schema in report.SCHEMAS.items():
        assert f"`results/{name}.parquet`" in text
        for column in schema:
            description = column.metadata[report.DESCRIPTION_KEY].decode()
            assert description and f"| `{column.name}` |" in text and description in text
    assert "| `value` | float64 |" in text and "| `voxels` | int64 |" in text


def test_the_tables_page_documents_the_current_schema():
    page = (Path(__file__).resolve().parents[1] / "docs" / "tables.md").read_text()
    assert report.schema_markdown().replace("### ", "## ") in page
