"""Database faults that no retry can mend are configuration errors: the
workers say so once and exit 78, and the supervisor stops instead of
starting them again forever."""

from __future__ import annotations

import signal
import sqlite3
import time

import pytest

from adetest import FAKE_ENGINE_COMMAND, wait_until, write_input

EX_CONFIG = 78


def break_database(dep, how):
    db_file = dep.db_path
    if how == "not_sqlite":
        db_file.write_bytes(b"this is not an SQLite database\n" * 200)
        for suffix in ("-wal", "-shm"):
            db_file.with_name(db_file.name + suffix).unlink(missing_ok=True)
    elif how == "read_only_file":
        db_file.chmod(0o444)
    elif how == "read_only_directory":
        db_file.parent.chmod(0o555)
    elif how == "missing_directory":
        dep.configure(**{"database.sqlite_path": "/nonexistent-ade/sub/ade.sqlite"})


@pytest.mark.sqlite_only("the faults are SQLite files and directories")
@pytest.mark.parametrize("how", ["not_sqlite", "read_only_file", "read_only_directory",
                                 "missing_directory"])
def test_permanent_database_fault_is_a_configuration_error(deploy, how):
    dep = deploy(**{"supervisor.workers": 2})
    dep.close_db()
    break_database(dep, how)
    try:
        started = time.monotonic()
        result = dep.run_worker(timeout=60)
        assert result.returncode == EX_CONFIG, result.stderr
        if how == "missing_directory":
            # Known before any worker starts, as ade-superd -n knows it.
            assert "/nonexistent-ade/sub" in result.stderr
            assert "worker 0 started" not in result.stderr
            return
        lines = [line for line in result.stderr.splitlines()
                 if "not retrying (a configuration error)" in line]
        # once per worker, never restarted
        assert len(lines) == 2, result.stderr
        assert "restarting in" not in result.stderr
        assert time.monotonic() - started < 30
    finally:
        dep.db_path.parent.chmod(0o750)


@pytest.mark.sqlite_only("a lock held on the SQLite file")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGQUIT], ids=["term", "quit"])
def test_a_stop_does_not_wait_behind_a_locked_sqlite_database(deploy, sig):
    """A worker waiting for another connection's lock (up to half a
    minute) while it looks for work stops at once when told to."""
    dep = deploy(**{"supervisor.workers": 1})
    dep.close_db()
    holder = sqlite3.connect(dep.db_path, timeout=0)
    holder.execute("BEGIN IMMEDIATE")
    try:
        sup = dep.start_worker()
        wait_until(lambda: "started (sqlite backend" in open(
            sup.log_path, errors="replace").read(), 30, "the worker to start")
        sup.send_signal(sig)
        stopped = time.monotonic()
        # The lock is held for minutes: only giving up the wait ends it.
        assert dep.wait_worker(sup, timeout=120) == 0
        assert time.monotonic() - stopped < 15, dep.worker_logs()
    finally:
        holder.rollback()
        holder.close()


@pytest.mark.sqlite_only("a lock held on the SQLite file")
def test_a_quit_still_releases_a_run_behind_a_short_lock(deploy, tmp_path):
    """At a QUIT, a worker with a run in hand waits a little for another
    connection's lock to put the run back, instead of giving up at once."""
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, **{"supervisor.workers": 1})
    pidfile = tmp_path / "engine.pid"
    run = dep.enqueue(write_input(tmp_path / "slow.csv", mode="slow", seconds=60,
                                  pidfile=pidfile))["run_id"]
    sup = dep.start_worker()
    wait_until(pidfile.exists, 60, "the engine to start")
    dep.close_db()
    holder = sqlite3.connect(dep.db_path, timeout=0)
    holder.execute("BEGIN IMMEDIATE")
    try:
        sup.send_signal(signal.SIGQUIT)
        time.sleep(1)
    finally:
        holder.rollback()
        holder.close()
    assert dep.wait_worker(sup, timeout=60) == 0
    row = dep.run_row(run)
    assert row["status"] == "queued" and row["claimed_by"] is None, (row, dep.worker_logs())
    assert row["attempt_count"] == 0
