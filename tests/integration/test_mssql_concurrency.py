"""ade-superd on SQL Server under concurrency and faults: many workers on one
queue, sessions killed under load, and row locks held by other sessions.

They run against the server of ADE_TEST_MSSQL_* (see conftest.py), and are
reported as skipped when none is named.  The engine is the ledger engine of
ledger.py.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from adetest import assert_sample_results, wait_until, write_input
from ledger import executions, jobs_done, ledger_engine, max_concurrent, read_ledger
import tdsserver  # tests/lib, on the path through adetest

pytestmark = pytest.mark.backends("mssql")


def enqueue_bulk(dep, n: int, max_attempts: int = 3) -> list[str]:
    """n queued runs of the template's configuration, each with a document row
    of its own (as the API creates them), inserted in batches of 500.  The ids
    are made here: no table variable or OUTPUT clause, which Babelfish 4.2
    gets wrong on tables with triggers."""
    (first,) = dep.rows("SELECT TOP 1 input_document_id, configuration_id, engine_spec,"
                        " deps_digest FROM runs ORDER BY created_at")
    ids = [(str(uuid.uuid4()), str(uuid.uuid4())) for _ in range(n)]
    for start in range(0, n, 500):
        chunk = ids[start:start + 500]
        docs = ", ".join(f"('{d}')" for _, d in chunk)
        pairs = ", ".join(f"('{r}', '{d}')" for r, d in chunk)
        dep.db().execute(
            "INSERT INTO documents (id, workspace_id, original_filename, byte_size, sha256,"
            " stored_uri, expires_at)"
            " SELECT CAST(v.id AS UNIQUEIDENTIFIER), d.workspace_id, d.original_filename,"
            " d.byte_size, d.sha256, d.stored_uri, d.expires_at"
            f" FROM documents d CROSS JOIN (VALUES {docs}) AS v (id) WHERE d.id = ?",
            (first["input_document_id"],))
        dep.db().execute(
            "INSERT INTO runs (id, configuration_id, workspace_id, input_document_id,"
            " engine_spec, deps_digest, max_attempts)"
            " SELECT CAST(v.rid AS UNIQUEIDENTIFIER), ?, d.workspace_id,"
            " CAST(v.did AS UNIQUEIDENTIFIER), ?, ?, ?"
            f" FROM documents d CROSS JOIN (VALUES {pairs}) AS v (rid, did) WHERE d.id = ?",
            (first["configuration_id"], first["engine_spec"], first["deps_digest"],
             max_attempts, first["input_document_id"]))
    return [r for r, _ in ids]


def status_counts(dep, run_ids) -> dict[str, int]:
    wanted = set(run_ids)
    counts = defaultdict(int)
    for row in dep.rows("SELECT id, status FROM runs"):
        if row["id"] in wanted:
            counts[row["status"]] += 1
    return dict(counts)


def test_four_workers_execute_1000_runs_exactly_once(deploy, tmp_path):
    command, ledger = ledger_engine(tmp_path)
    dep = deploy(engine_command=command, lease_seconds=60, **{"supervisor.workers": 4})
    run_ids = enqueue_bulk(dep, 1000)

    supervisor = dep.start_worker(exit_when_idle=True)    # four worker processes
    assert dep.wait_worker(supervisor, timeout=600) == 0, dep.worker_logs()

    # the engines' own ledger: every run started once and ended once, by one process
    entries = read_ledger(ledger)
    assert set(entries) == set(run_ids), (len(entries), len(run_ids))
    for run in run_ids:
        assert [what for _, what, _, _ in entries[run]] == ["start", "end"], entries[run]
        assert len(executions(entries[run])) == 1
    assert max_concurrent(entries) <= 4

    # the database agrees
    assert status_counts(dep, run_ids) == {"succeeded": 1000}
    assert dep.rows("SELECT id FROM runs WHERE status IN ('queued', 'running')") == []
    attempts = {r["id"]: r["attempt_count"] for r in dep.rows("SELECT id, attempt_count FROM runs")}
    assert {attempts[r] for r in run_ids} == {1}
    # every bulk run has its metrics (they have no run_options; the template's has)
    (metrics,) = dep.rows("SELECT COUNT(*) AS n FROM run_metrics m JOIN runs r"
                          " ON r.id = m.run_id WHERE r.run_options IS NULL")
    assert metrics["n"] == 1000
    assert_sample_results(dep, run_ids[0])
    assert_sample_results(dep, run_ids[-1])
    # the triggers of runs saw the changes
    (events,) = dep.rows("SELECT COUNT(*) AS n FROM document_events")
    assert events["n"] > 0
    done = jobs_done(Path(supervisor.log_path).read_text())
    assert len(done) == 4 and sum(done) == 1000 and all(n > 0 for n in done), done


def test_killed_sessions_under_load(deploy, tmp_path, ms_server):
    """The server ends every session of the workers while engines run (as a
    restart or failover does): the workers reconnect, and every run ends
    succeeded, none executed twice at once."""
    command, ledger = ledger_engine(tmp_path, seconds=1)
    dep = deploy(engine_command=command, lease_seconds=15, backoff_base_seconds=1,
                 backoff_max_seconds=2, cleanup_interval=1, **{"supervisor.workers": 3})
    runs = enqueue_bulk(dep, 12)
    supervisor = dep.start_worker()
    log_text = Path(supervisor.log_path).read_text

    def busy():
        counts = status_counts(dep, runs)
        return counts.get("running", 0) >= 2 and counts.get("queued", 0) >= 3
    wait_until(busy, 60, "runs to be under way")
    admin = ms_server.connect()
    try:
        cur = admin.cursor()
        cur.execute("SELECT session_id FROM sys.dm_exec_sessions"
                    " WHERE program_name = 'ade-superd' AND database_id = DB_ID(%s)",
                    (dep.db_name,))
        sessions = [r[0] for r in cur.fetchall()]
        assert sessions, "no session of the workers found"
        for session in sessions:
            cur.execute(f"KILL {int(session)}")
    finally:
        admin.close()

    def settled():
        return status_counts(dep, runs).get("succeeded", 0) == len(runs)
    wait_until(settled, 120, "every run to succeed after the sessions were killed",
               interval=0.2)
    assert supervisor.poll() is None, dep.worker_logs()
    assert "mssql: reconnected" in log_text(), dep.worker_logs()
    entries = read_ledger(ledger)
    for run in runs:
        intervals = executions(entries[run])
        (row,) = dep.rows("SELECT attempt_count FROM runs WHERE id = ?", run)
        assert 1 <= len(intervals) <= row["attempt_count"], (run, intervals, row)
    supervisor.send_signal(signal.SIGTERM)
    assert dep.wait_worker(supervisor, timeout=60) == 0


@pytest.fixture
def tds_server(ms_server):
    """The test suite's own Babelfish, which a test may stop and start; skipped
    for a server that the suite did not start (ADE_TEST_MSSQL_SERVER_DIR)."""
    directory = os.environ.get("ADE_TEST_MSSQL_SERVER_DIR")
    if not directory:
        pytest.skip("the TDS server was not started by the suite "
                    "(tests/with-tds-server.sh sets ADE_TEST_MSSQL_SERVER_DIR)")
    server = tdsserver.TdsServer(directory)
    yield server
    if not server.running():
        server.start_server()


def test_server_restart_under_load(deploy, tmp_path, tds_server):
    """The TDS server stops while engines run and runs wait in the queue, and
    comes back a few seconds later: the workers reconnect with backoff, every
    run ends succeeded, none executed twice at once, none lost."""
    command, ledger = ledger_engine(tmp_path, seconds=1)
    dep = deploy(engine_command=command, lease_seconds=20, backoff_base_seconds=1,
                 backoff_max_seconds=2, cleanup_interval=1, **{"supervisor.workers": 3})
    first = enqueue_bulk(dep, 12)
    supervisor = dep.start_worker()
    log_text = Path(supervisor.log_path).read_text
    wait_until(lambda: len(re.findall(r"worker \d started", log_text())) == 3, 30,
               "three workers")
    pids = set(re.findall(r"worker \d started \(pid (\d+)\)", log_text()))

    def busy():
        counts = status_counts(dep, first)
        return counts.get("running", 0) >= 2 and counts.get("queued", 0) >= 3
    wait_until(busy, 60, "runs to be under way")
    dep.close_db()
    tds_server.stop_server()
    # down long enough for every worker to notice and back off at least once
    wait_until(lambda: log_text().count("connection lost") + log_text().count(
        "cannot connect") >= 1, 60, "a worker to notice the server is gone")
    time.sleep(2)
    tds_server.start_server()
    restarted = time.monotonic()

    def settled():
        counts = status_counts(dep, first)
        return counts if counts.get("succeeded", 0) == len(first) else None
    try:
        wait_until(settled, 180, "every run to succeed after the restart", interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {status_counts(dep, first)}\n{dep.worker_logs()}") \
            from None
    assert supervisor.poll() is None, dep.worker_logs()
    wait_until(lambda: "mssql: reconnected" in log_text(), 60, "a worker to reconnect")

    # no run executed twice at once; each execution within the attempts it used
    entries = read_ledger(ledger)
    assert set(entries) == set(first)
    for run in first:
        intervals = executions(entries[run])
        (row,) = dep.rows("SELECT attempt_count, status FROM runs WHERE id = ?", run)
        assert 1 <= len(intervals) <= row["attempt_count"], (run, intervals, row)
    assert dep.rows("SELECT id FROM runs WHERE status IN ('queued', 'running')") == []

    # the same processes go on working
    second = enqueue_bulk(dep, 6)
    wait_until(lambda: status_counts(dep, second) == {"succeeded": 6}, 90,
               "the second batch to succeed")
    entries = read_ledger(ledger)
    for run in second:
        assert len(executions(entries[run])) == 1, entries[run]
    # no worker died on the way: the same three processes
    assert set(re.findall(r"worker \d started \(pid (\d+)\)", log_text())) == pids, \
        dep.worker_logs()
    supervisor.send_signal(signal.SIGTERM)
    assert dep.wait_worker(supervisor, timeout=60) == 0
    assert time.monotonic() - restarted < 300


@pytest.mark.parametrize("lock", [
    "SELECT id FROM runs WITH (UPDLOCK, ROWLOCK) WHERE id = %s",
    "UPDATE runs SET max_attempts = max_attempts WHERE id = %s",
], ids=["updlock", "exclusive"])
def test_a_row_lock_on_one_run_does_not_block_claims_of_others(deploy, tmp_path, ms_server,
                                                               lock):
    if "UPDLOCK" in lock and ms_server.is_babelfish():
        pytest.skip("Babelfish ignores UPDLOCK: that SELECT locks nothing")
    command, ledger = ledger_engine(tmp_path)
    dep = deploy(engine_command=command)
    (run_a,) = enqueue_bulk(dep, 1)

    # another session locks run A and keeps its transaction open
    locker = ms_server.connect(dep.db_name, autocommit=False)
    try:
        cur = locker.cursor()
        cur.execute(lock, (run_a,))
        if cur.description:
            cur.fetchall()
        worker = dep.start_worker()
        run_b = dep.enqueue(write_input(tmp_path / "b.csv"))["run_id"]
        started = time.monotonic()
        row = dep.wait_run(run_b, timeout=30)
        assert row["status"] == "succeeded", (row, dep.worker_logs())
        assert row["attempt_count"] == 1
        # well within the query timeout: the claim skipped the locked row
        assert time.monotonic() - started < 20, dep.worker_logs()
        assert run_a not in read_ledger(ledger)
        assert worker.poll() is None
    finally:
        locker.rollback()  # releases the lock
        locker.close()
    # once free, run A is claimed too, exactly once
    row_a = dep.wait_run(run_a, timeout=30)
    assert row_a["status"] == "succeeded" and row_a["attempt_count"] == 1, row_a
    assert len(executions(read_ledger(ledger)[run_a])) == 1
    assert not re.search(r"error 1205", dep.worker_logs())
