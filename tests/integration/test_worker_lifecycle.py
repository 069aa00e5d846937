"""How a worker's waits and processes end: stop signals, crashes between a
claim and its record, and what an engine leaves behind."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from adetest import (
    FAKE_ENGINE_COMMAND, PYTHON, SAMPLES, iso_now, pid_alive, psycopg2, wait_until,
    write_input,
)

# Every wait of an idle worker (the notification wait, the idle poll and
# the lease sweep timer) lasts five minutes in these deployments.
LONG_WAITS = {"poll_interval": 300, "poll_interval_max": 300,
              "cleanup_interval": 300, "listen_timeout": 300}


@contextlib.contextmanager
def runs_table_locked(dep):
    """Holds a lock that makes any worker statement on runs wait for it."""
    if dep.backend == "pgsql":
        conn = psycopg2.connect(host=dep.pg.socket_dir, dbname=dep.db_name,
                                user=dep.pg.user, application_name="adetest-lock")
        try:
            with conn.cursor() as cur:
                cur.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
            yield conn
        finally:
            conn.rollback()
            conn.close()
    else:
        conn = sqlite3.connect(dep.db_path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
        finally:
            conn.execute("ROLLBACK")
            conn.close()


def workers_waiting_for_lock(dep) -> int:
    """How many sessions of the deployment wait for a lock (PostgreSQL)."""
    return dep.db().execute(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock'").fetchone()["n"]


def workers_started(dep, count: int) -> bool:
    """Whether count workers have connected and begun their loop."""
    return dep.worker_logs(tail=1 << 20).count("backend, data in") >= count


def test_term_ends_the_idle_wait_that_follows_a_database_call(deploy, backend):
    # The TERM arrives while the worker waits for the database, so it only
    # sets a flag; the idle wait that follows must see it rather than sleep
    # its five minutes.
    dep = deploy(**LONG_WAITS)
    with runs_table_locked(dep):
        superd = dep.start_worker()
        wait_until(lambda: workers_started(dep, 1), 60, "the worker to start")
        if backend == "pgsql":
            wait_until(lambda: workers_waiting_for_lock(dep) >= 1, 60,
                       "the worker to wait for the lock on runs")
        superd.send_signal(signal.SIGTERM)
        wait_until(lambda: "draining" in dep.worker_logs(), 30,
                   "the supervisor to pass the TERM on")
    released = time.monotonic()
    assert dep.wait_worker(superd, timeout=150) == 0
    assert time.monotonic() - released < 20, dep.worker_logs()


def test_term_stops_an_idle_supervisor_at_once(deploy, backend):
    dep = deploy(**LONG_WAITS, **{"supervisor.workers": 2})
    superd = dep.start_worker()
    wait_until(lambda: workers_started(dep, 2), 60, "the workers to start")
    started = time.monotonic()
    superd.send_signal(signal.SIGTERM)
    assert dep.wait_worker(superd, timeout=150) == 0
    assert time.monotonic() - started < 20, dep.worker_logs()


# -- what an engine leaves behind -------------------------------------------------------

@contextlib.contextmanager
def escaped_sleeper(pidfile: Path):
    """The pid of the process an engine detaches (once it is written); the
    process is killed at the end whatever the test found."""
    holder = {}
    try:
        def pid():
            if not pidfile.exists():
                return None
            holder["pid"] = int(pidfile.read_text())
            return holder["pid"]
        yield pid
    finally:
        if "pid" in holder and pid_alive(holder["pid"]):
            os.kill(holder["pid"], signal.SIGKILL)


CANCEL = ("UPDATE runs SET status = 'cancelled', claimed_by = NULL, claim_expires_at = NULL,"
          " completed_at = ? WHERE id = ?")


@pytest.mark.parametrize("ending", ["succeeded", "failed", "timed-out", "cancelled",
                                    "stopped"])
def test_nothing_an_engine_detaches_outlives_its_run(deploy, tmp_path, ending):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, run_timeout=4, lease_seconds=6)
    escape = tmp_path / "escaped.pid"
    pidfile = tmp_path / "engine.pid"
    mode = {"succeeded": "success", "failed": "exit1", "timed-out": "hang"}.get(ending, "slow")
    run_id = dep.enqueue(write_input(tmp_path / "doc.csv", mode=mode, seconds=600,
                                     pidfile=pidfile, escape=escape),
                         max_attempts=1)["run_id"]
    superd = dep.start_worker()
    with escaped_sleeper(escape) as sleeper:
        pid = wait_until(sleeper, 60, "the engine to detach a process")
        if ending in ("succeeded", "failed", "timed-out"):
            row = dep.wait_run(run_id, timeout=60)
            expected = {"succeeded": ("succeeded", 0), "failed": ("failed", 1),
                        "timed-out": ("failed", 124)}[ending]
            assert (row["status"], row["exit_code"]) == expected, row
        else:
            wait_until(pidfile.exists, 60, "the engine to start")
            assert pid_alive(pid)
            if ending == "cancelled":
                dep.db().execute(CANCEL, (iso_now(), run_id))
                wait_until(lambda: "run.cancelled" in dep.event_names(run_id), 30,
                           "the worker to stop the engine of the cancelled run")
            else:
                superd.send_signal(signal.SIGQUIT)
                assert dep.wait_worker(superd, timeout=60) == 0
                assert dep.run_row(run_id)["status"] == "queued"
        # the detached process ended with the run, before the row said so
        assert not pid_alive(pid), f"process {pid} outlived run {run_id} ({ending})"
        assert superd.poll() is None or ending == "stopped"


def test_nothing_a_build_step_detaches_outlives_the_build(deploy, tmp_path):
    # The interpreter that creates the venv leaves a detached process behind.
    escape = tmp_path / "escaped.pid"
    python = tmp_path / "python-that-escapes"
    python.write_text(
        "#!/bin/sh\n"
        f"setsid sh -c 'echo $$ > \"{escape}.tmp\" && mv \"{escape}.tmp\" \"{escape}\";"
        " exec sleep 3600' </dev/null >/dev/null 2>&1 &\n"
        f"while [ ! -s \"{escape}\" ]; do sleep 0.01; done\n"
        f"exec {PYTHON} \"$@\"\n")
    python.chmod(0o755)
    dep = deploy(fresh=True, python=python)
    run_id = dep.enqueue(SAMPLES / "contacts.csv")["run_id"]
    with escaped_sleeper(escape) as sleeper:
        assert dep.run_worker(timeout=240).returncode == 0, dep.worker_logs()
        (env,) = dep.environments()
        assert env["status"] == "ready", env
        assert dep.run_row(run_id)["status"] == "succeeded"
        pid = sleeper()
        assert pid, "the build step did not run the interpreter"
        assert not pid_alive(pid), f"process {pid} outlived the environment build"


# -- a worker that dies between its claim and its scoreboard record ------------------

@pytest.mark.parametrize("claim", ["run", "environment"])
def test_claim_of_a_worker_dead_before_recording_it_is_released_at_once(deploy, tmp_path,
                                                                        claim):
    # The lease is the default fifteen minutes: only an immediate release
    # lets the run finish within the test's deadline.
    fresh = claim == "environment"
    dep = deploy(fresh=fresh, lease_seconds=900)
    die = tmp_path / "die-after-claim"
    die.write_text("")
    run_id = dep.enqueue(SAMPLES / "contacts.csv")["run_id"]
    superd = dep.start_worker(exit_when_idle=True,
                              env={"ADE_TEST_DIE_AFTER_CLAIM": str(die)})
    assert dep.wait_worker(superd, timeout=240) == 0, dep.worker_logs()
    assert not die.exists(), "no worker died after its claim"

    row = dep.run_row(run_id)
    assert row["status"] == "succeeded", (row, dep.worker_logs())
    # a claim that was never acted on costs the run no attempt
    assert row["attempt_count"] == 1, row
    starts = [r for r in dep.events(run_id) if r["event"] == "run.start"]
    assert [r["data"]["attempt"] for r in starts] == [1]
    (env,) = dep.environments()
    assert env["status"] == "ready" and env["claimed_by"] is None, env


def test_what_a_killed_workers_engine_detached_is_killed(deploy, tmp_path):
    """A worker killed outright cannot end its engine: the supervisor, the
    reaper of what it leaves, kills the engine's group and the process
    that left it."""
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, **{"supervisor.workers": 1})
    escape = tmp_path / "escaped.pid"
    pidfile = tmp_path / "engine.pid"
    dep.enqueue(write_input(tmp_path / "doc.csv", mode="slow", seconds=600,
                            pidfile=pidfile, escape=escape), max_attempts=1)
    superd = dep.start_worker()
    with escaped_sleeper(escape) as sleeper:
        detached = wait_until(sleeper, 60, "the engine to detach a process")
        wait_until(pidfile.exists, 60, "the engine to start")
        engine = int(pidfile.read_text())
        with open(f"/proc/{engine}/stat") as f:
            worker = int(f.read().rsplit(")", 1)[1].split()[1])
        os.kill(worker, signal.SIGKILL)
        wait_until(lambda: not pid_alive(engine) and not pid_alive(detached), 30,
                   "the dead worker's engine and what it detached to be killed")
    assert superd.poll() is None
