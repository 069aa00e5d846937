"""ade-superd on PostgreSQL under concurrency and faults: many workers on one
queue, a server restart under load, row locks held by other sessions, and
LISTEN/NOTIFY wake-ups.

The engine is the ledger engine of ledger.py.
"""

from __future__ import annotations

import re
import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest

from adetest import assert_sample_results, psycopg2, wait_until, write_input
from ledger import executions, jobs_done, ledger_engine, max_concurrent, read_ledger

pytestmark = pytest.mark.backends("pgsql")


def enqueue_bulk(dep, n: int, max_attempts: int = 3) -> list[str]:
    """n queued runs of the template's configuration, inserted with one statement
    (each with a document row of its own, as the API creates them)."""
    (first,) = dep.rows("SELECT input_document_id, configuration_id, engine_spec, deps_digest"
                        " FROM runs ORDER BY created_at LIMIT 1")
    rows = dep.rows(
        "WITH d AS (INSERT INTO documents (id, workspace_id, original_filename, byte_size,"
        "  sha256, stored_uri, expires_at)"
        " SELECT gen_random_uuid(), workspace_id, original_filename, byte_size, sha256,"
        "  stored_uri, expires_at FROM documents, generate_series(1, ?) WHERE id = ?"
        " RETURNING id, workspace_id)"
        " INSERT INTO runs (id, configuration_id, workspace_id, input_document_id,"
        "  engine_spec, deps_digest, max_attempts)"
        " SELECT gen_random_uuid(), ?::uuid, d.workspace_id, d.id, ?, ?, ? FROM d RETURNING id",
        n, first["input_document_id"], first["configuration_id"], first["engine_spec"],
        first["deps_digest"], max_attempts)
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == n
    return ids


def status_counts(dep, run_ids) -> dict[str, int]:
    counts = defaultdict(int)
    for row in dep.rows("SELECT status FROM runs WHERE id = ANY(?::uuid[])", list(run_ids)):
        counts[row["status"]] += 1
    return dict(counts)


def test_four_workers_execute_2000_runs_exactly_once(deploy, tmp_path):
    command, ledger = ledger_engine(tmp_path)
    dep = deploy(engine_command=command, lease_seconds=60, **{"supervisor.workers": 4})
    run_ids = enqueue_bulk(dep, 2000)

    started = time.monotonic()
    supervisor = dep.start_worker(exit_when_idle=True)    # four worker processes
    assert dep.wait_worker(supervisor, timeout=120) == 0, dep.worker_logs()
    elapsed = time.monotonic() - started

    # the engines' own ledger: every run started once and ended once, by one process
    entries = read_ledger(ledger)
    assert set(entries) == set(run_ids), (len(entries), len(run_ids))
    for run in run_ids:
        assert [what for _, what, _, _ in entries[run]] == ["start", "end"], entries[run]
        assert len(executions(entries[run])) == 1
    # four workers, one engine each at a time
    assert max_concurrent(entries) <= 4

    # the database agrees
    assert status_counts(dep, run_ids) == {"succeeded": 2000}
    assert dep.rows("SELECT id FROM runs WHERE status IN ('queued', 'running')") == []
    assert dep.rows("SELECT DISTINCT attempt_count FROM runs WHERE id = ANY(?::uuid[])",
                    run_ids) == [{"attempt_count": 1}]
    assert dep.rows("SELECT count(*) AS n FROM run_metrics WHERE run_id = ANY(?::uuid[])",
                    run_ids) == [{"n": 2000}]
    assert_sample_results(dep, run_ids[0])
    assert_sample_results(dep, run_ids[-1])
    # every worker took part, and together they did exactly the 2000 jobs
    done = jobs_done(Path(supervisor.log_path).read_text())
    assert len(done) == 4 and sum(done) == 2000 and all(n > 0 for n in done), done
    assert elapsed < 90, elapsed


def test_server_restart_under_load(deploy, tmp_path, pg_server):
    command, ledger = ledger_engine(tmp_path, seconds=1)
    dep = deploy(engine_command=command, lease_seconds=15, backoff_base_seconds=1,
                 backoff_max_seconds=2, cleanup_interval=1, **{"supervisor.workers": 3})
    first = enqueue_bulk(dep, 12)
    supervisor = dep.start_worker()                      # three worker processes
    wait_until(lambda: len(re.findall(r"worker \d started", Path(
        supervisor.log_path).read_text())) == 3, 20, "three workers")
    log_text = Path(supervisor.log_path).read_text
    pids = set(re.findall(r"worker \d started \(pid (\d+)\)", log_text()))

    # the restart comes while engines run and runs wait in the queue
    def busy():
        counts = status_counts(dep, first)
        return counts.get("running", 0) >= 2 and counts.get("queued", 0) >= 3
    wait_until(busy, 30, "runs to be under way")
    dep.close_db()
    pg_server.restart()
    restarted = time.monotonic()

    # every run ends, succeeded (after a retry if an attempt was lost); the workers
    # reconnect before their next statement with a growing delay (1, 2, 4 ... s)
    def settled():
        counts = status_counts(dep, first)
        return counts if counts.get("succeeded", 0) == len(first) else None
    try:
        wait_until(settled, 75, "every run to succeed after the restart", interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {status_counts(dep, first)}\n{dep.worker_logs()}") from None
    assert supervisor.poll() is None, dep.worker_logs()
    wait_until(lambda: log_text().count("worker") and
               len({line.split("]")[0] for line in log_text().splitlines()
                    if "pgsql: reconnected" in line and "worker" in line}) == 3,
               40, "every worker to reconnect")
    # no worker died: the same three processes
    assert set(re.findall(r"worker \d started \(pid (\d+)\)", log_text())) == pids

    # no run was ever executed twice at once: each run's ledger intervals follow
    # one another (executions() fails on an overlap or an execution that never ended)
    entries = read_ledger(ledger)
    assert set(entries) == set(first)
    for run in first:
        intervals = executions(entries[run])
        rows = dep.rows("SELECT attempt_count, status FROM runs WHERE id = ?", run)
        assert 1 <= len(intervals) <= rows[0]["attempt_count"], (run, intervals, rows)
    assert dep.rows("SELECT id FROM runs WHERE status IN ('queued', 'running')") == []

    # the same worker processes go on working: a second batch, shared by all three
    second = enqueue_bulk(dep, 6)
    wait_until(lambda: status_counts(dep, second) == {"succeeded": 6}, 30,
               "the second batch to succeed")
    entries = read_ledger(ledger)
    for run in second:
        assert len(executions(entries[run])) == 1, entries[run]
    by_worker = defaultdict(int)
    for run in second:
        (start,) = [r for r in dep.events(run) if r["event"] == "run.start"]
        by_worker[start["data"]["worker"].split("#")[0].rsplit(":", 1)[1]] += 1
    assert set(by_worker) == pids, (by_worker, pids)
    supervisor.send_signal(signal.SIGTERM)
    assert dep.wait_worker(supervisor, timeout=30) == 0
    assert time.monotonic() - restarted < 120


def test_a_row_lock_on_one_run_does_not_block_claims_of_others(deploy, tmp_path, pg_server):
    command, ledger = ledger_engine(tmp_path)
    dep = deploy(engine_command=command)
    (run_a,) = enqueue_bulk(dep, 1)

    # another session locks run A and keeps its transaction open
    locker = psycopg2.connect(host=pg_server.socket_dir, dbname=dep.db_name, user=pg_server.user)
    try:
        cur = locker.cursor()  # psycopg2 opens the transaction (BEGIN) itself
        cur.execute("SELECT id, status FROM runs WHERE id = %s FOR UPDATE", (run_a,))
        assert cur.fetchone() == (run_a, "queued")

        worker = dep.start_worker()
        run_b = dep.enqueue(write_input(tmp_path / "b.csv"))["run_id"]
        started = time.monotonic()
        row = dep.wait_run(run_b, timeout=10)
        assert row["status"] == "succeeded", (row, dep.worker_logs())
        assert time.monotonic() - started < 5, dep.worker_logs()
        assert row["attempt_count"] == 1
        # A is still locked, and untouched
        assert locker.status == psycopg2.extensions.STATUS_IN_TRANSACTION
        row_a = dep.run_row(run_a)
        assert row_a["status"] == "queued" and row_a["attempt_count"] == 0, row_a
        assert row_a["claimed_by"] is None
        assert run_a not in read_ledger(ledger)
        assert worker.poll() is None
    finally:
        locker.rollback()  # releases the lock
        locker.close()

    row_a = dep.wait_run(run_a, timeout=10)
    assert row_a["status"] == "succeeded" and row_a["attempt_count"] == 1, row_a
    entries = read_ledger(ledger)
    assert len(executions(entries[run_a])) == 1
    assert len(executions(entries[run_b])) == 1


QUIET_POLLING = {"poll_interval": 30, "poll_interval_max": 30, "cleanup_interval": 300,
                 "listen_timeout": 300}


def idle_worker(dep):
    """Starts a worker and returns once it has found nothing to do and waits."""
    worker = dep.start_worker()
    wait_until(lambda: "started (pgsql backend" in Path(worker.log_path).read_text(), 15,
               "the worker to start")
    time.sleep(1.0)  # its first rounds find the queue empty; then it waits
    assert worker.poll() is None, dep.worker_logs()
    return worker


def pickup_seconds(dep, run_id) -> float:
    """started_at - created_at on the database's clock."""
    (row,) = dep.rows("SELECT extract(epoch FROM started_at - created_at) AS s FROM runs"
                      " WHERE id = ?", run_id)
    return row["s"]


def test_notification_wakes_an_idle_worker(deploy, tmp_path):
    command, _ = ledger_engine(tmp_path)
    dep = deploy(engine_command=command, **QUIET_POLLING)  # notify = yes by default
    idle_worker(dep)
    for name in ("a", "b", "c"):
        run_id = dep.enqueue(write_input(tmp_path / f"{name}.csv"))["run_id"]
        assert dep.wait_run(run_id, timeout=10)["status"] == "succeeded"
        took = pickup_seconds(dep, run_id)
        assert 0 <= took < 2, (took, dep.worker_logs())
        time.sleep(0.5)  # idle again


def test_without_notification_the_same_worker_waits_for_its_poll(deploy, tmp_path):
    # the control of the test above: the same settings with notify = no leave a
    # new run waiting, so only the notification explains the quick pickup there
    command, _ = ledger_engine(tmp_path)
    dep = deploy(engine_command=command, notify="no", **QUIET_POLLING)
    idle_worker(dep)
    run_id = dep.enqueue(write_input(tmp_path / "a.csv"))["run_id"]
    time.sleep(3)
    row = dep.run_row(run_id)
    assert row["status"] == "queued" and row["started_at"] is None, row


def restart_and_wait_reconnect(dep, pg_server, worker, timeout: float = 40) -> None:
    """Restarts the server under an idle worker; returns once the worker is back."""
    log = Path(worker.log_path)
    before = log.read_text().count("pgsql: reconnected")
    dep.close_db()
    pg_server.restart()
    wait_until(lambda: log.read_text().count("pgsql: reconnected") > before, timeout,
               "the worker to reconnect")
    assert worker.poll() is None, dep.worker_logs()


def test_an_idle_worker_listens_again_after_a_restart(deploy, tmp_path, pg_server):
    # polling is rare (cleanup and listen timeouts of 300 s); poll_interval only
    # paces the retries after an error here
    command, _ = ledger_engine(tmp_path)
    dep = deploy(engine_command=command, poll_interval=0.5, poll_interval_max=1,
                 cleanup_interval=300, listen_timeout=300)
    worker = idle_worker(dep)
    restart_and_wait_reconnect(dep, pg_server, worker)
    time.sleep(1.0)  # idle again, waiting for a notification
    run_id = dep.enqueue(write_input(tmp_path / "a.csv"))["run_id"]
    assert dep.wait_run(run_id, timeout=10)["status"] == "succeeded"
    took = pickup_seconds(dep, run_id)
    assert 0 <= took < 2, (took, dep.worker_logs())


def test_statement_timeout_holds_after_a_reconnect(deploy, tmp_path, pg_server):
    """query_timeout (statement_timeout) bounds every statement, also on the
    connection a worker opens again after losing the first one."""
    dep = deploy(query_timeout=2, poll_interval=0.5, poll_interval_max=1)
    worker = idle_worker(dep)
    log = Path(worker.log_path)

    def blocked_statement_times_out(what):
        # another session holds every row of runs; the worker's next statement on
        # runs waits for it, at most query_timeout seconds
        before = log.read_text().count("statement timeout")
        locker = psycopg2.connect(host=pg_server.socket_dir, dbname=dep.db_name,
                                  user=pg_server.user)
        try:
            cur = locker.cursor()
            cur.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
            try:
                wait_until(lambda: log.read_text().count("statement timeout") > before, 8,
                           f"a statement to time out ({what})")
            except AssertionError as exc:
                cur.execute("SELECT state, wait_event_type,"
                            " round(extract(epoch FROM clock_timestamp() - query_start)),"
                            " left(query, 40) FROM pg_stat_activity"
                            " WHERE datname = current_database()"
                            " AND application_name = 'ade-superd'")
                raise AssertionError(
                    f"{exc}: the worker's session (state, wait, seconds, statement) is"
                    f" {cur.fetchall()} with query_timeout = 2\n{dep.worker_logs()}") from None
        finally:
            locker.rollback()
            locker.close()

    blocked_statement_times_out("first connection")
    restart_and_wait_reconnect(dep, pg_server, worker)
    blocked_statement_times_out("connection opened again after the restart")
    assert worker.poll() is None


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.parametrize("notify", ["yes", "no"])
def test_notifications_do_not_pile_up_in_a_worker(deploy, notify):
    """Notifications must not accumulate in a worker, whether it waits for them
    (notify = yes) or polls (notify = no; it still LISTENs, and libpq keeps every
    notification it reads until someone takes it with PQnotifies).  Three bursts
    of 2000 distinct notifications of 7 kB (14 MB a burst; the ade_run_queued
    trigger sends one per queued run) may grow it once, not three times."""
    dep = deploy(notify=notify, poll_interval=0.2, poll_interval_max=0.2)
    worker = idle_worker(dep)
    sizes = []
    for _ in range(3):
        dep.db().execute("SELECT count(pg_notify('ade_run_queued', g || repeat('x', 7000)))"
                         " FROM generate_series(1, 2000) AS g")
        time.sleep(1.0)  # several idle rounds: the worker reads what the server sent
        assert worker.poll() is None, dep.worker_logs()
        sizes.append(rss_kib(worker.pid))
    assert sizes[2] - sizes[0] < 5 * 1024, f"RSS after each burst (KiB): {sizes}"
