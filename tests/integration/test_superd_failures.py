"""How ade-superd ends runs that fail: retries with backoff, timeouts,
deterministic failures and broken environments."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from adetest import (
    FAKE_ENGINE_COMMAND, SAMPLES, parse_ts, pid_alive, wait_until, write_input,
)


def test_engine_exit_1_is_retried_with_backoff_then_fails(deploy, tmp_path):
    base = 1.0
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, backoff_base_seconds=base,
                 backoff_max_seconds=8)
    run_id = dep.enqueue(write_input(tmp_path / "doc.csv", mode="exit1"),
                         max_attempts=3)["run_id"]
    assert dep.run_worker(timeout=60).returncode == 0

    row = dep.run_row(run_id)
    assert row["status"] == "failed", row
    assert row["attempt_count"] == row["max_attempts"] == 3
    assert row["exit_code"] == 1
    assert "exit 1" in row["error_message"], row["error_message"]
    assert row["claimed_by"] is None and row["claim_expires_at"] is None
    assert row["completed_at"] is not None and row["output_path"] is None

    records = dep.events(run_id)
    starts = [r for r in records if r["event"] == "run.start"]
    retries = [r for r in records if r["event"] == "run.retry"]
    assert [r["data"]["attempt"] for r in starts] == [1, 2, 3]
    assert [r["data"]["attempt"] for r in retries] == [1, 2]
    assert [r["data"]["exit_code"] for r in retries] == [1, 1]
    assert [r["event"] for r in records].count("run.complete") == 1
    # the delay doubles: base, then 2 * base, each with at most 10 % jitter
    delays = [r["data"]["retry_in_seconds"] for r in retries]
    assert base <= delays[0] <= base * 1.1 + 0.01, delays
    assert 2 * base <= delays[1] <= 2 * base * 1.1 + 0.01, delays
    # and the next attempt starts no earlier than that, nor much later
    gaps = [parse_ts(starts[i + 1]["timestamp"]) - parse_ts(retries[i]["timestamp"])
            for i in range(2)]
    for gap, delay in zip(gaps, delays):
        assert delay - 0.25 <= gap <= delay + 1.5, (gaps, delays)
    assert gaps[1] > gaps[0]
    starts_at = [parse_ts(r["timestamp"]) for r in starts]
    assert starts_at[2] - starts_at[1] > starts_at[1] - starts_at[0]


@pytest.mark.parametrize("ignore_term", [False, True], ids=["term", "term-ignored"])
def test_hanging_engine_times_out_with_124_and_its_group_is_killed(deploy, tmp_path,
                                                                   ignore_term):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, run_timeout=2)
    pidfile = tmp_path / "engine.pid"
    doc = write_input(tmp_path / "doc.csv", mode="hang", pidfile=pidfile,
                      ignore_term=int(ignore_term))
    run_id = dep.enqueue(doc, max_attempts=1)["run_id"]
    started = time.monotonic()
    result = dep.run_worker(timeout=60)
    assert result.returncode == 0
    row = dep.run_row(run_id)
    assert row["status"] == "failed", row
    assert row["exit_code"] == 124
    assert row["attempt_count"] == 1
    assert row["error_message"] and "timed out" in row["error_message"].lower()
    assert row["claimed_by"] is None
    took = parse_ts(row["completed_at"]) - parse_ts(row["started_at"])
    if ignore_term:  # TERM, then KILL 5 s later
        assert 2 + 5 <= took < 15, took
    else:
        assert 2 <= took < 8, took
    assert time.monotonic() - started < 30
    engine_pid = int(pidfile.read_text())
    grandchild_pid = int((tmp_path / "engine.pid.child").read_text())
    assert not pid_alive(engine_pid)
    # the grandchild ignored SIGTERM; only a KILL of the whole group ends it
    assert not pid_alive(grandchild_pid), "a process started by the engine outlived it"
    complete = [r for r in dep.events(run_id) if r["event"] == "run.engine.complete"]
    assert len(complete) == 1 and complete[0]["data"]["timed_out"] is True
    assert complete[0]["data"]["exit_code"] == 124


def test_environment_build_failure_is_bounded(deploy, tmp_path):
    not_a_project = tmp_path / "not-a-project"
    not_a_project.mkdir()
    (not_a_project / "README").write_text("no setup.py, no pyproject.toml\n")
    dep = deploy(fresh=True, engine_spec=not_a_project, backoff_base_seconds=1,
                 backoff_max_seconds=2)
    first = dep.enqueue(SAMPLES / "contacts.csv", max_attempts=2)["run_id"]
    second = dep.enqueue(SAMPLES / "people_partial.csv", max_attempts=2)["run_id"]

    result = dep.run_worker(timeout=150)  # would hang on an endless rebuild loop
    assert result.returncode == 0
    assert result.duration < 90, result.duration  # two builds of a few seconds each

    (env,) = dep.environments()
    assert env["status"] == "failed", env
    assert env["error_message"], env
    assert env["claimed_by"] is None and env["python_interpreter"] is None
    for run_id in (first, second):
        row = dep.run_row(run_id)
        assert row["status"] == "failed", row
        assert row["attempt_count"] == row["max_attempts"] == 2
        assert row["exit_code"] == 2
        assert row["error_message"].startswith("Environment build failed"), row
        assert row["completed_at"] is not None and row["claimed_by"] is None
    # the failed build's log was kept, but no half-built venv
    env_dirs = list((dep.data_dir / "venvs").glob(f"*/*/*/{env['id']}"))
    assert len(env_dirs) == 1
    assert not (env_dirs[0] / ".venv").exists() and not list(env_dirs[0].glob("g-*"))
    log = (env_dirs[0] / "logs" / "events.ndjson").read_text()
    assert "environment.failed" in log
    leftovers = [p.name for p in env_dirs[0].parent.iterdir() if p.name != env["id"]]
    assert leftovers == []


def _doc_row(dep, answer):
    return dep.rows("SELECT * FROM documents WHERE id = ?", answer["document_id"])[0]


def test_deterministic_failures_fail_at_once_with_exit_2(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    marker = tmp_path / "engine-ran"

    def enqueue(name, **instructions):
        doc = write_input(tmp_path / "docs" / name, argv_file=f"{marker}.{name}", **instructions)
        return dep.enqueue(doc, max_attempts=3)

    cases = {}
    cases["dotdot_uri"] = enqueue("dotdot.csv")
    dep.db().execute("UPDATE documents SET stored_uri = '../../../etc/passwd' WHERE id = ?",
                     (cases["dotdot_uri"]["document_id"],))
    cases["absolute_uri"] = enqueue("absolute.csv")
    dep.db().execute("UPDATE documents SET stored_uri = '/etc/passwd' WHERE id = ?",
                     (cases["absolute_uri"]["document_id"],))
    cases["evil_name"] = enqueue("renamed.csv")
    dep.db().execute("UPDATE documents SET original_filename = '../evil.csv' WHERE id = ?",
                     (cases["evil_name"]["document_id"],))
    cases["deleted_file"] = enqueue("deleted.csv")
    stored = _doc_row(dep, cases["deleted_file"])["stored_uri"]
    dep.document_path(cases["deleted_file"]["workspace_id"], stored).unlink()
    cases["symlinked_file"] = enqueue("symlinked.csv")
    stored = _doc_row(dep, cases["symlinked_file"])["stored_uri"]
    link = dep.document_path(cases["symlinked_file"]["workspace_id"], stored)
    link.unlink()
    link.symlink_to("/etc/passwd")
    cases["no_document_row"] = enqueue("norow.csv")
    with dep.db().foreign_keys_off() as db:  # the run still points at the document
        db.execute("DELETE FROM documents WHERE id = ?",
                   (cases["no_document_row"]["document_id"],))
    cases["usage_error"] = enqueue("usage.csv", mode="exit2")

    assert dep.run_worker(timeout=90).returncode == 0
    for name, answer in cases.items():
        row = dep.run_row(answer["run_id"])
        assert row["status"] == "failed", (name, row)
        assert row["exit_code"] == 2, (name, row)
        assert row["attempt_count"] == 1, (name, row)
        assert row["error_message"], (name, row)
        assert row["claimed_by"] is None and row["output_path"] is None, (name, row)
        assert "run.retry" not in dep.event_names(answer["run_id"]), name
        if name != "usage_error":
            assert not os.path.exists(f"{marker}.{name}"), f"{name}: the engine ran"
            input_dir = dep.run_dir(answer["run_id"]) / "input"
            assert not input_dir.exists() or not any(input_dir.iterdir()), name
    assert os.path.exists(f"{marker}.usage.csv")
    assert "usage error" in dep.run_row(cases["usage_error"]["run_id"])["error_message"]

    # nothing was written outside the data directory, nor beside the run directories
    evil = cases["evil_name"]
    run_dir = dep.run_dir(evil["run_id"])
    for where in (run_dir, run_dir / "input", run_dir.parent, run_dir.parent.parent):
        assert not (where / "evil.csv").exists(), where
    for entry in dep.root.iterdir():
        assert entry.name in ("data", "worker.conf", "mssql-password") \
            or entry.name.startswith("worker-"), entry
    assert not list(dep.data_dir.rglob("evil.csv"))
    assert not list(tmp_path.glob("evil.csv")) and not list(tmp_path.glob("*/evil.csv"))


def test_deleted_config_package_fails_at_once_with_exit_2(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    marker = tmp_path / "engine-ran"
    answer = dep.enqueue(write_input(tmp_path / "doc.csv", argv_file=marker), max_attempts=3)
    cfg_dir = dep.config_dir(answer["workspace_id"], answer["configuration_id"])
    assert cfg_dir.is_dir()
    shutil.rmtree(cfg_dir)
    assert dep.run_worker(timeout=60).returncode == 0
    row = dep.run_row(answer["run_id"])
    assert row["status"] == "failed", row
    assert row["exit_code"] == 2 and row["attempt_count"] == 1
    assert "config" in row["error_message"].lower()
    assert not marker.exists()
    assert not cfg_dir.exists()


def test_signal_death_is_stored_as_128_plus_the_signal(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    run_id = dep.enqueue(write_input(tmp_path / "doc.csv", mode="signal", sig=9),
                         max_attempts=1)["run_id"]
    assert dep.run_worker(timeout=60).returncode == 0
    row = dep.run_row(run_id)
    assert row["status"] == "failed", row
    assert row["exit_code"] == 128 + 9
    assert "137" in row["error_message"]
    assert row["attempt_count"] == 1


def test_a_failed_attempt_is_queued_again_with_its_error(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, backoff_base_seconds=30,
                 backoff_max_seconds=60)
    run_id = dep.enqueue(write_input(tmp_path / "doc.csv", mode="exit1"),
                         max_attempts=2)["run_id"]
    worker = dep.start_worker()
    row = wait_until(lambda: (r := dep.run_row(run_id))["attempt_count"] == 1
                     and r["status"] == "queued" and r, 30, "the first attempt to fail")
    assert row["error_message"].startswith("Engine failed (exit 1)"), row
    assert "deliberate failure" in row["error_message"]  # the payload's failure message
    assert row["exit_code"] is None and row["completed_at"] is None
    assert row["claimed_by"] is None and row["claim_expires_at"] is None
    assert row["output_path"] is None
    assert 25 < parse_ts(row["available_at"]) - time.time() <= 33
    assert worker.poll() is None


def test_stored_uri_with_file_prefix_is_accepted(deploy, tmp_path):
    # the control case of the hostile paths above: a "file:" URI inside the workspace works
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    answer = dep.enqueue(write_input(tmp_path / "doc.csv"))
    dep.db().execute("UPDATE documents SET stored_uri = 'file:' || stored_uri WHERE id = ?",
                     (answer["document_id"],))
    assert dep.run_worker(timeout=60).returncode == 0
    row = dep.run_row(answer["run_id"])
    assert row["status"] == "succeeded", row
    copied = dep.run_dir(answer["run_id"]) / "input" / "doc.csv"
    assert copied.read_bytes() == (tmp_path / "doc.csv").read_bytes()


def test_nothing_of_a_failed_attempt_is_taken_for_the_next(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    counter = tmp_path / "calls"
    run_id = dep.enqueue(write_input(tmp_path / "doc.csv", mode="flaky", counter=counter),
                         max_attempts=2)["run_id"]
    assert dep.run_worker(timeout=60).returncode == 0
    assert counter.read_text() == "2"
    row = dep.run_row(run_id)
    assert row["status"] == "succeeded", row
    assert row["attempt_count"] == 2 and row["error_message"] is None
    # the second attempt wrote nothing: the first one's file is neither kept nor recorded
    assert row["output_path"] is None
    assert not (dep.run_dir(run_id) / "output" / "stale.xlsx").exists()
    assert dep.rows("SELECT * FROM run_metrics WHERE run_id = ?", run_id) == []
    assert "run.results.missing_payload" in dep.event_names(run_id)
