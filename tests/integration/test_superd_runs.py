"""ade-superd executes runs end to end: results, run options, environments.

Every assertion is on the database or on files under the data directory.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import time

import pytest

from adetest import (
    ENGINE_SPEC, FAKE_ENGINE_COMMAND, SAMPLE_CONFIG, SAMPLES, assert_results_match,
    assert_sample_results, completed_payload, parse_ts, venv_dir, wait_until, write_input,
)

TS_DB = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def engine_version() -> str:
    text = (ENGINE_SPEC / "src" / "ade_engine" / "__init__.py").read_text()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


def csv_shape(path):
    """Rows and columns of the one table in a CSV file, worked out without the engine."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    while body and not any(c.strip() for c in body[-1]):
        body.pop()
    width = len(header)
    body = [r + [""] * (width - len(r)) for r in body]
    return {
        "header": header,
        "rows_total": len(body),
        "rows_empty": sum(1 for r in body if not any(c.strip() for c in r)),
        "columns": width,
        "non_empty": [sum(1 for r in body if r[j].strip()) for j in range(width)],
        "cells": len(body) * width,
        "cells_non_empty": sum(1 for r in body for c in r if c.strip()),
    }


def test_successful_run_with_reference_engine(deploy):
    dep = deploy(fresh=True)  # builds its environment for real
    source = SAMPLES / "people_partial.csv"
    answer = dep.enqueue(source)
    run_id = answer["run_id"]
    result = dep.run_worker(timeout=240)
    assert result.returncode == 0, result.stderr

    # the run row
    row = dep.run_row(run_id)
    assert row["status"] == "succeeded", row
    assert row["exit_code"] == 0
    assert row["attempt_count"] == 1
    assert row["error_message"] is None
    assert row["claimed_by"] is None and row["claim_expires_at"] is None
    assert TS_DB.fullmatch(row["started_at"]) and TS_DB.fullmatch(row["completed_at"])
    assert parse_ts(row["created_at"]) <= parse_ts(row["started_at"]) <= parse_ts(
        row["completed_at"])
    run_dir = dep.run_dir(run_id)
    assert row["output_path"] == "output/people_partial_normalized.xlsx"
    output = run_dir / row["output_path"]
    assert output.is_file() and output.stat().st_size > 0
    assert output.resolve().is_relative_to(run_dir.resolve())
    # the engine got an exact copy of the document under its original name
    assert (run_dir / "input" / "people_partial.csv").read_bytes() == source.read_bytes()

    # the environment
    envs = dep.environments()
    assert len(envs) == 1
    env = envs[0]
    assert env["status"] == "ready" and env["error_message"] is None
    assert env["claimed_by"] is None and env["claim_expires_at"] is None
    assert env["last_used_at"] is not None
    assert env["engine_spec"] == str(ENGINE_SPEC)
    assert env["deps_digest"] == answer["deps_digest"] == row["deps_digest"]
    digest_hex = answer["deps_digest"].split(":", 1)[1]
    env_root = (dep.data_dir / "venvs" / answer["workspace_id"] / answer["configuration_id"]
                / f"deps-{digest_hex}" / env["id"])
    # each build is a generation of its own below the environment's root
    venv = venv_dir(env_root, env)
    assert venv.parent == env_root and venv.name.startswith("g-"), env
    assert (venv / ".venv").is_dir()
    assert env["python_interpreter"] == str(venv / ".venv" / "bin" / "python")
    assert (venv / ".venv" / "bin" / "python").exists()
    assert re.fullmatch(r"Python 3\.\d+\.\d+\S*", env["python_version"]), env
    assert env["engine_version"] == engine_version()
    build_log = [json.loads(line) for line in
                 (env_root / "logs" / "events.ndjson").read_text().splitlines()]
    assert "environment.complete" in [r["event"] for r in build_log]
    # no build leftovers next to the environment
    assert sorted(p.name for p in env_root.parent.iterdir()) == [env["id"]]

    # the event log
    records = dep.events(run_id)  # every line is a JSON object
    names = [r["event"] for r in records]
    for name in ("run.start", "run.engine.start", "run.engine.complete", "run.complete"):
        assert names.count(name) == 1, (name, names)
    assert names.index("run.start") < names.index("run.engine.start") < names.index(
        "run.engine.complete") < names.index("run.complete")
    engine_records = [r for r in records if r["event"].startswith("engine.")]
    assert len(engine_records) >= 3
    for record in records:
        context = record.get("context")
        assert isinstance(context, dict), record
        assert context["job_id"] == run_id
        assert context["workspace_id"] == answer["workspace_id"]
        assert context["configuration_id"] == answer["configuration_id"]
        assert context["environment_id"] == env["id"]
    start = records[names.index("run.engine.start")]["data"]
    cfg_dir = dep.config_dir(answer["workspace_id"], answer["configuration_id"])
    assert start["cmd"] == [
        env["python_interpreter"], "-m", "ade_engine", "process", "file",
        "--input", str(run_dir / "input" / "people_partial.csv"),
        "--output-dir", str(run_dir / "output"), "--config-package", str(cfg_dir),
        "--log-format", "ndjson", "--log-level", "INFO"]
    complete = records[names.index("run.complete")]["data"]
    assert complete["status"] == "succeeded" and complete["exit_code"] == 0
    assert complete["output_path"] == row["output_path"]
    assert complete["execution"]["started_at"] == row["started_at"]
    assert records[names.index("run.engine.complete")]["data"]["exit_code"] == 0

    # the results: every column against the payload the engine reported ...
    payload = completed_payload(records)
    assert payload["execution"]["status"] == "succeeded"
    assert_results_match(dep, run_id, payload)

    # ... and against the CSV itself
    shape = csv_shape(source)
    metrics = dep.rows("SELECT * FROM run_metrics WHERE run_id = ?", run_id)[0]
    assert (metrics["workbook_count"], metrics["sheet_count"], metrics["table_count"]) == (1, 1, 1)
    assert metrics["row_count_total"] == shape["rows_total"] == 5
    assert metrics["row_count_empty"] == shape["rows_empty"] == 1
    assert metrics["column_count_total"] == shape["columns"] == 6
    assert metrics["column_count_empty"] == sum(1 for n in shape["non_empty"] if n == 0)
    assert metrics["cell_count_total"] == shape["cells"]
    assert metrics["cell_count_non_empty"] == shape["cells_non_empty"]
    assert metrics["column_count_mapped"] == 3 and metrics["column_count_unmapped"] == 3
    assert (metrics["field_count_expected"], metrics["field_count_detected"],
            metrics["field_count_not_detected"]) == (5, 3, 2)
    columns = dep.rows("SELECT * FROM run_table_columns WHERE run_id = ? ORDER BY column_index",
                       run_id)
    assert [c["header_raw"] for c in columns] == [h or None for h in shape["header"]]
    assert [c["non_empty_cells"] for c in columns] == shape["non_empty"]
    assert {c["header_raw"]: c["mapped_field"] for c in columns if c["mapped_field"]} == {
        "Given Name": "first_name", "Surname": "last_name", "Contact": "email"}
    assert all(c["workbook_name"] == "people_partial.csv" for c in columns)
    fields = {f["field"]: f for f in
              dep.rows("SELECT * FROM run_fields WHERE run_id = ?", run_id)}
    assert set(fields) == {"email", "first_name", "middle_name", "last_name", "full_name"}
    assert {f for f, r in fields.items() if r["detected"]} == {"email", "first_name", "last_name"}
    # "D4n" is the one invalid first name
    assert fields["first_name"]["valid_cells"] == shape["non_empty"][0] - 1


def test_dry_run_succeeds_without_engine(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    argv_file = tmp_path / "argv.json"
    doc = write_input(tmp_path / "doc.csv", argv_file=argv_file)
    run_id = dep.enqueue(doc, options={"dry_run": True})["run_id"]
    before = time.time()
    assert dep.run_worker(timeout=60).returncode == 0
    row = dep.run_row(run_id)
    assert row["status"] == "succeeded", row
    assert row["exit_code"] == 0 and row["error_message"] is None
    assert row["output_path"] is None and row["attempt_count"] == 1
    assert row["claimed_by"] is None and row["completed_at"] is not None
    assert not argv_file.exists(), "the engine ran for a dry run"
    run_dir = dep.run_dir(run_id)
    assert not (run_dir / "output").exists() or not any((run_dir / "output").iterdir())
    names = dep.event_names(run_id)
    assert "run.complete" in names and "run.engine.start" not in names
    assert dep.rows("SELECT * FROM run_metrics WHERE run_id = ?", run_id) == []
    # a dry run still uses (touches) its environment
    (env,) = dep.environments()
    assert parse_ts(env["last_used_at"]) >= before - 1


def test_validate_only_runs_config_validate(deploy):
    dep = deploy()  # the reference engine
    answer = dep.enqueue(SAMPLES / "contacts.csv", options={"validate_only": True})
    run_id = answer["run_id"]
    assert dep.run_worker(timeout=60).returncode == 0
    row = dep.run_row(run_id)
    assert row["status"] == "succeeded", row
    assert row["exit_code"] == 0 and row["error_message"] is None
    assert row["output_path"] is None and row["attempt_count"] == 1
    records = dep.events(run_id)
    names = [r["event"] for r in records]
    assert "run.validate.start" in names and "run.engine.start" not in names
    cmd = records[names.index("run.validate.start")]["data"]["cmd"]
    cfg_dir = dep.config_dir(answer["workspace_id"], answer["configuration_id"])
    assert cmd[1:] == ["-m", "ade_engine", "config", "validate", "--config-package",
                       str(cfg_dir), "--log-format", "ndjson", "--log-level", "INFO"]
    assert records[names.index("run.validate.complete")]["data"]["exit_code"] == 0
    stdout = [r["message"] for r in records if r["event"] == "run.validate.stdout"]
    assert "Config package OK" in stdout
    assert not (dep.run_dir(run_id) / "output").exists()
    assert dep.rows("SELECT * FROM run_metrics WHERE run_id = ?", run_id) == []


def test_validate_only_with_broken_config_fails_at_once(deploy, tmp_path):
    dep = deploy()
    # same manifest (so the same deps digest and environment) but no register()
    broken = tmp_path / "broken-config"
    (broken / "src" / "ade_config" / "columns").mkdir(parents=True)
    shutil.copy(SAMPLE_CONFIG / "pyproject.toml", broken / "pyproject.toml")
    (broken / "src" / "ade_config" / "__init__.py").write_text("")
    (broken / "src" / "ade_config" / "columns" / "fields.py").write_text("FIELDS = ['email']\n")
    run_id = dep.enqueue(SAMPLES / "contacts.csv", config_package=broken,
                         options={"validate_only": True}, max_attempts=3)["run_id"]
    assert dep.run_worker(timeout=60).returncode == 0
    row = dep.run_row(run_id)
    assert row["status"] == "failed", row
    assert row["attempt_count"] == 1, "an invalid package must not be retried"
    assert row["exit_code"] == 1
    assert "Validation failed" in row["error_message"]
    assert row["claimed_by"] is None and row["completed_at"] is not None
    names = dep.event_names(run_id)
    assert "run.validate.start" in names and "run.retry" not in names


def test_missing_venv_releases_run_and_the_host_builds_its_copy(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    (env,) = dep.environments()
    root = next((dep.data_dir / "venvs").glob(f"*/*/*/{env['id']}"))
    venv = venv_dir(root, env) / ".venv"
    shutil.rmtree(venv)
    run_id = dep.enqueue(write_input(tmp_path / "doc.csv"))["run_id"]
    worker = dep.start_worker(exit_when_idle=True)

    # released: back in the queue without having used an attempt
    def released():
        row = dep.run_row(run_id)
        return row if row["status"] == "queued" and row["error_message"] else None
    row = wait_until(released, 30, "the run to be released")
    assert row["attempt_count"] == 0, row
    assert row["claimed_by"] is None and row["claim_expires_at"] is None
    assert "run.released" in dep.event_names(run_id)

    # this host builds its own copy, and the run then succeeds with its first
    # attempt; the environment's row was neither requeued nor rebuilt
    assert dep.wait_worker(worker, timeout=120) == 0
    row = dep.run_row(run_id)
    assert row["status"] == "succeeded", (row, dep.worker_logs())
    assert row["attempt_count"] == 1
    assert row["error_message"] is None
    (env_after,) = dep.environments()
    assert env_after["id"] == env["id"] and env_after["status"] == "ready"
    assert (venv / "bin" / "python").exists()
    log = dep.ctl("envs", "log", env["id"]).stdout
    assert "this host's copy" in log and "environment.complete" in log, log
    assert_sample_results(dep, run_id)


@pytest.mark.parametrize("variant", ["none", "dupes", "scope", "outside"])
def test_payload_variants(deploy, tmp_path, variant):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    run_id = dep.enqueue(write_input(tmp_path / "doc.csv", payload=variant))["run_id"]
    assert dep.run_worker(timeout=60).returncode == 0
    row = dep.run_row(run_id)
    assert row["status"] == "succeeded", row
    assert row["exit_code"] == 0 and row["error_message"] is None
    names = dep.event_names(run_id)
    results = [dep.rows(f"SELECT * FROM {t} WHERE run_id = ?", run_id)
               for t in ("run_metrics", "run_fields", "run_table_columns")]
    if variant == "none":
        # no engine.run.completed: no result rows, a warning, and the first output file
        assert results == [[], [], []]
        assert "run.results.missing_payload" in names
        assert row["output_path"] == "output/other.bin"
    elif variant == "dupes":
        # a repeated key keeps its first row instead of losing every result
        assert_sample_results(dep, run_id)
        dupes = [r for r in dep.events(run_id) if r["event"] == "run.results.duplicates"]
        assert len(dupes) == 1 and dupes[0]["data"]["dropped"] == 2
    elif variant == "scope":
        # a payload about something else than the run is not stored
        assert results == [[], [], []]
        assert row["output_path"] == "output/doc_normalized.xlsx"
    else:
        # the reported path lies outside the run directory: output/normalized.xlsx instead
        assert_sample_results(dep, run_id)
        assert row["output_path"] == "output/normalized.xlsx"


def test_ctl_shows_what_the_database_holds(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    done = dep.enqueue(write_input(tmp_path / "a.csv"))["run_id"]
    assert dep.run_worker(timeout=60).returncode == 0
    waiting = dep.enqueue(write_input(tmp_path / "b.csv"))["run_id"]

    shown = json.loads(dep.ctl("runs", "show", done, json_out=True).stdout)
    metrics = dep.rows("SELECT * FROM run_metrics WHERE run_id = ?", done)[0]
    del metrics["run_id"]
    assert shown["metrics"] == metrics
    assert len(shown["fields"]) == 2 and len(shown["table_columns"]) == 3
    assert json.loads(dep.ctl("runs", "show", waiting, json_out=True).stdout)["metrics"] is None
    missing = dep.ctl("runs", "show", "00000000-0000-4000-8000-000000000000", check=False)
    assert missing.returncode == 3

    listed = json.loads(dep.ctl("runs", "list", json_out=True).stdout)
    assert {r["id"]: r["status"] for r in listed} == {
        r["id"]: r["status"] for r in dep.rows("SELECT id, status FROM runs")}
    queued = json.loads(dep.ctl("runs", "list", "--status", "queued", json_out=True).stdout)
    assert [r["id"] for r in queued] == [waiting]
    assert len(json.loads(dep.ctl("runs", "list", "--limit", "1", json_out=True).stdout)) == 1
    # last, so that a difference here leaves the checks above their say: every
    # column of the row, shown as the database holds it, and beside them the
    # names and paths an operator knows a run by
    row = dep.run_row(done)
    assert {k: shown["run"][k] for k in row if k in shown["run"]} == row
    assert set(row) <= set(shown["run"])
    extra = {k: shown["run"][k] for k in set(shown["run"]) - set(row)}
    run_dir = dep.run_dir(done)
    assert extra == {
        "workspace_slug": "ws", "configuration_name": "cfg", "document_name": "a.csv",
        "run_directory": str(run_dir),
        "output_file": str(run_dir / row["output_path"])}


def test_output_path_never_leads_outside_the_run_directory(deploy, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the API to serve\n")
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    run_id = dep.enqueue(write_input(tmp_path / "doc.csv", payload=f"symlink:{secret}"))["run_id"]
    assert dep.run_worker(timeout=60).returncode == 0
    row = dep.run_row(run_id)
    assert row["status"] == "succeeded", row
    # the API serves <run dir>/<output_path>: it must stay inside the run directory
    if row["output_path"] is not None:
        run_dir = dep.run_dir(run_id).resolve()
        served = (run_dir / row["output_path"]).resolve()
        assert served.is_relative_to(run_dir), (row["output_path"], served)
