"""ade-ctl's operator commands on runs and environments."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

from adetest import (
    CONFIGURATION, CTL, FAKE_ENGINE_COMMAND, SAMPLES, SERVICE_USER, SUPERD, WORKSPACE,
    clean_env, pid_alive, wait_until, write_input,
)


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
    wait_until(lambda: "run.cancelled" in dep.event_names(run), 30,
               "the worker to record the cancel")
    row = dep.run_row(run)
    assert row["status"] == "cancelled" and row["claimed_by"] is None, row
    # a cancel reads as one: no lost claim, no error
    assert "run.lost_claim" not in dep.event_names(run)
    assert not [e for e in dep.events(run) if e["level"] == "error"], dep.events(run)
    wait_until(lambda: f"run {run}: cancelled" in dep.worker_logs(), 30,
               "the worker to log the cancel")


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
    top = f"run-{run}"
    with tarfile.open(tgz) as tar:
        names = tar.getnames()
        summary = json.load(tar.extractfile(f"{top}/summary.json"))
    # one top-level directory, named after the run
    assert {n.split("/")[0] for n in names} == {top}, names
    assert f"{top}/input/b.csv" in names and f"{top}/logs/events.ndjson" in names
    assert any(n.startswith(f"{top}/output/") and not n.endswith("/") for n in names), names
    assert summary["run"]["id"] == run and summary["run"]["status"] == "succeeded"
    assert summary["metrics"] is not None
    with zipfile.ZipFile(zipped) as z:
        # the same entries in both formats
        assert {n.rstrip("/") for n in z.namelist()} == {n.rstrip("/") for n in names}
        assert json.loads(z.read(f"{top}/summary.json"))["run"]["id"] == run
    bad = dep.ctl("runs", "bundle", run, "-o", dep.root / "incident.rar", check=False)
    assert bad.returncode == 1 and not (dep.root / "incident.rar").exists()
    # where it cannot write, it says why, and as whom it wrote
    closed = dep.root / "closed"
    closed.mkdir(mode=0o500)
    bad = dep.ctl("runs", "bundle", run, "-o", closed / "x.tar.gz", check=False)
    assert bad.returncode == 1 and "Permission denied" in bad.stderr, bad.stderr
    if SERVICE_USER is not None:
        assert f"service user {SERVICE_USER[0]}" in bad.stderr, bad.stderr


def test_help_and_version_on_both_programs():
    """--help prints the usage (of every ade-ctl command) on stdout and
    succeeds, also after a command; --version prints the version."""
    def run(*argv):
        return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                              env=clean_env())

    for prog in (SUPERD, CTL):
        for flag in ("--help", "-h"):
            result = run(prog, flag)
            assert result.returncode == 0 and result.stdout.startswith("usage:"), result
        result = run(prog, "--version")
        assert result.returncode == 0, result
        assert re.fullmatch(rf"{prog.name} \d+\.\d+\.\d+\n", result.stdout), result.stdout
    usage = run(CTL, "--help").stdout
    for command in ("db init", "db check", "config check", "config keys", "enqueue",
                    "runs list", "runs show", "requeue", "cancel", "runs bundle",
                    "envs list", "rebuild", "gc", "status", "drain", "reload", "scale"):
        assert command in usage, command
    assert run(CTL, "runs", "--help").stdout == usage
    # a wrong option is still a usage error, on stderr
    result = run(CTL, "--no-such-option")
    assert result.returncode == 2 and "usage:" in result.stderr and not result.stdout


def test_read_commands_create_no_database(deploy):
    """Only db init makes a database: the other commands say which
    database they looked for and what it lacks, and leave nothing behind."""
    dep = deploy(fresh=True, init_db=False)
    for argv in (["runs", "list"], ["envs", "list"], ["runs", "show", "x"],
                 ["gc", "--dry-run"]):
        result = dep.ctl(*argv, check=False)
        assert result.returncode == 1, (argv, result)
        assert "db init" in result.stderr, (argv, result.stderr)
        if dep.backend == "sqlite":
            assert str(dep.db_path) in result.stderr, result.stderr
            assert not dep.db_path.exists() and not dep.db_path.parent.exists()
        else:
            assert "lacks" in result.stderr and "runs" in result.stderr, result.stderr
    if dep.backend == "sqlite":
        assert dep.ctl("db", "check", check=False).returncode == 1
        assert not dep.db_path.exists()
    dep.init_db()
    assert dep.ctl("runs", "list").returncode == 0


def test_runs_list_and_show_name_what_an_operator_knows(deploy, tmp_path):
    """Workspace, configuration and document by name, full paths of the
    run directory and output; a run queued again shows no start of its
    own; an unknown --status is refused."""
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, backoff_base_seconds=30,
                 backoff_max_seconds=60)
    done = dep.enqueue(write_input(tmp_path / "named-input.csv"))
    again = dep.enqueue(write_input(tmp_path / "failing.csv", mode="exit1"), max_attempts=2)
    worker = dep.start_worker()
    wait_until(lambda: dep.run_row(done["run_id"])["status"] == "succeeded", 60,
               "the first run to succeed")
    # the second waits for its retry, its row still holding the first attempt's
    row = wait_until(lambda: (lambda r: r if r["status"] == "queued" and r["attempt_count"] == 1
                              else None)(dep.run_row(again["run_id"])), 60, "a retry")
    assert row["started_at"] and row["error_message"], row
    worker.send_signal(signal.SIGTERM)
    assert dep.wait_worker(worker, timeout=60) == 0

    listing = dep.ctl("runs", "list").stdout
    line = next(ln for ln in listing.splitlines() if ln.startswith(done["run_id"]))
    assert WORKSPACE in line and CONFIGURATION in line and "named-input.csv" in line, line
    line = next(ln for ln in listing.splitlines() if ln.startswith(again["run_id"]))
    assert row["started_at"] not in line and "last attempt: " in line, line

    shown = dep.ctl("runs", "show", done["run_id"]).stdout
    run_dir = dep.run_dir(done["run_id"])
    output = run_dir / dep.run_row(done["run_id"])["output_path"]
    assert output.is_file()
    assert f"run_directory          {run_dir}\n" in shown, shown
    assert f"output_file            {output}\n" in shown, shown
    assert "named-input.csv" in shown
    run = json.loads(dep.ctl("runs", "show", done["run_id"], json_out=True).stdout)["run"]
    assert run["workspace_slug"] == WORKSPACE and run["document_name"] == "named-input.csv"

    result = dep.ctl("runs", "list", "--status", "bogus", check=False)
    assert result.returncode == 2 and "bogus" in result.stderr, result

    # an operator's requeue starts afresh: no start, no error of the last attempt
    dep.ctl("runs", "requeue", done["run_id"])
    row = dep.run_row(done["run_id"])
    assert row["status"] == "queued" and row["started_at"] is None, row
    assert row["error_message"] is None


def test_status_shows_the_step_of_a_long_build_and_its_time(deploy):
    """While an environment builds, status says which step and for how
    long, so that a slow pip is not a silent wait."""
    dep = deploy(fresh=True)
    started = dep.root / "venv-started"
    slow = dep.root / "slow-python"
    slow.write_text(f"#!/bin/sh\n: > {started}\nexec sleep 600\n")
    slow.chmod(0o755)
    dep.configure(python=slow, engine_sandbox="off")
    dep.enqueue(SAMPLES / "contacts.csv")
    dep.start_worker()
    wait_until(started.exists, 60, "the venv step to start")

    def building():
        result = dep.ctl("status", json_out=True, check=False)
        if result.returncode != 0:
            return None
        slots = [s for s in json.loads(result.stdout)["slots"] if s.get("step")]
        return slots[0] if slots else None
    slot = wait_until(building, 30, "the step in the status")
    assert slot["claim_kind"] == "environment" and slot["step"] == "venv", slot
    assert slot["step_seconds"] >= 0
    line = next(ln for ln in dep.ctl("status").stdout.splitlines() if slot["claim_id"] in ln)
    assert re.search(r"\(venv, \d+ s\)", line), line
