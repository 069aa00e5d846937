"""How a worker's waits and processes end."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import time

from adetest import psycopg2, wait_until

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

