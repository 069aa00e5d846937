"""ade-ctl's operator commands on runs and environments."""

from __future__ import annotations

import json
import time

from adetest import FAKE_ENGINE_COMMAND, pid_alive, wait_until, write_input


def test_cancel_stops_a_running_engine_within_seconds(deploy):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)      # lease 900 s: no lease help
    pidfile = dep.root / "engine.pid"
    run = dep.enqueue(write_input(dep.root / "slow.csv", mode="slow", seconds=60,
                                  pidfile=pidfile))["run_id"]
    dep.start_worker()
    wait_until(pidfile.exists, 30, "the engine to start")
    engine = int(pidfile.read_text())
    assert dep.ctl("runs", "cancel", run).stdout.strip() == f"{run} cancelled"
    cancelled = time.monotonic()
    wait_until(lambda: not pid_alive(engine), 15, "the engine to stop")
    assert time.monotonic() - cancelled < 12
    time.sleep(1)
    row = dep.run_row(run)
    assert row["status"] == "cancelled" and row["claimed_by"] is None, row
    assert "run.lost_claim" in dep.event_names(run)


def test_cancel_of_a_queued_run_keeps_it_from_running(deploy):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    run = dep.enqueue(write_input(dep.root / "q.csv"))["run_id"]
    dep.ctl("runs", "cancel", run)
    assert dep.run_worker(timeout=60).returncode == 0
    row = dep.run_row(run)
    assert row["status"] == "cancelled" and row["attempt_count"] == 0
    assert not dep.run_dir(run, row["workspace_id"]).exists()
    # a finished run cannot be cancelled
    assert dep.ctl("runs", "cancel", run, check=False).returncode == 3


def test_requeue_gives_a_failed_run_fresh_attempts(deploy):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    doc = write_input(dep.root / "f.csv", mode="exit1")
    run = dep.enqueue(doc, max_attempts=1)["run_id"]
    dep.run_worker(timeout=60)
    assert dep.run_row(run)["status"] == "failed"
    # the stored document is fixed, the run requeued
    dep.document_path(dep.run_row(run)["workspace_id"],
                      dep.rows("SELECT stored_uri FROM documents WHERE id = ?",
                               dep.run_row(run)["input_document_id"])[0]["stored_uri"]
                      ).write_text("Email,Name\na@example.com,A\n")
    assert dep.ctl("runs", "requeue", run).stdout.strip() == f"{run} queued"
    row = dep.run_row(run)
    assert row["status"] == "queued" and row["attempt_count"] == 0
    assert row["error_message"] is None and row["exit_code"] is None
    dep.run_worker(timeout=60)
    row = dep.run_row(run)
    assert row["status"] == "succeeded" and row["attempt_count"] == 1
    # runs show ends with the last events of the run's log
    shown = json.loads(dep.ctl("runs", "show", run, json_out=True).stdout)
    assert shown["events"][-1]["event"] == "run.complete"
    assert shown["events"][-1]["data"]["status"] == "succeeded"
    assert 0 < len(shown["events"]) <= 20


def test_requeue_of_an_unfinished_run_is_refused(deploy):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    run = dep.enqueue(write_input(dep.root / "u.csv"))["run_id"]
    result = dep.ctl("runs", "requeue", run, check=False)
    assert result.returncode == 3 and "not finished" in result.stderr
    assert dep.run_row(run)["status"] == "queued"


def test_envs_list_and_rebuild(deploy):
    dep = deploy()
    (env,) = json.loads(dep.ctl("envs", "list", json_out=True).stdout)
    assert env["status"] == "ready" and env["python_version"].startswith("Python 3")
    assert dep.ctl("envs", "rebuild", env["id"]).returncode == 0
    assert dep.environments()[0]["status"] == "queued"
    run = dep.enqueue(write_input(dep.root / "e.csv"))["run_id"]
    dep.run_worker(timeout=120)
    (after,) = dep.environments()
    assert after["id"] == env["id"] and after["status"] == "ready"
    assert dep.run_row(run)["status"] == "succeeded"
    assert dep.ctl("envs", "rebuild", "no-such-env", check=False).returncode == 3


def test_bundle_holds_input_output_logs_and_a_summary(deploy):
    import tarfile
    import zipfile

    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    run = dep.enqueue(write_input(dep.root / "b.csv"))["run_id"]
    dep.run_worker(timeout=60)
    assert dep.run_row(run)["status"] == "succeeded"
    tgz, zipped = dep.root / "incident.tar.gz", dep.root / "incident.zip"
    dep.ctl("runs", "bundle", run, "-o", tgz)
    dep.ctl("runs", "bundle", run, "-o", zipped)
    with tarfile.open(tgz) as tar:
        names = tar.getnames()
        summary = json.load(tar.extractfile("summary.json"))
    assert "input/b.csv" in names and "logs/events.ndjson" in names
    assert any(n.startswith("output/") and not n.endswith("/") for n in names), names
    assert summary["run"]["id"] == run and summary["run"]["status"] == "succeeded"
    assert summary["metrics"] is not None
    with zipfile.ZipFile(zipped) as z:
        # the same entries in both formats
        assert {n.rstrip("/") for n in z.namelist()} == {n.rstrip("/") for n in names}
        assert json.loads(z.read("summary.json"))["run"]["id"] == run
    bad = dep.ctl("runs", "bundle", run, "-o", dep.root / "incident.rar", check=False)
    assert bad.returncode == 1 and not (dep.root / "incident.rar").exists()
