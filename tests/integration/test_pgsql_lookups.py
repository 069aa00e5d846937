"""PostgreSQL specifics: lookups by id use the primary key, and the
connection is watched for a server that went silent."""

from __future__ import annotations

import json
import random
import re
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from adetest import FAKE_ENGINE_COMMAND, share, wait_until, write_input

pytestmark = pytest.mark.backends("pgsql")


def bulk_runs(dep, n: int) -> list[str]:
    """n finished runs (with a document each) inserted with one statement."""
    (first,) = dep.rows("SELECT input_document_id, configuration_id, engine_spec, deps_digest"
                        " FROM runs ORDER BY created_at LIMIT 1")
    rows = dep.rows(
        "WITH d AS (INSERT INTO documents (id, workspace_id, original_filename, byte_size,"
        "  sha256, stored_uri, expires_at)"
        " SELECT gen_random_uuid(), workspace_id, original_filename, byte_size, sha256,"
        "  stored_uri, expires_at FROM documents, generate_series(1, ?) WHERE id = ?"
        " RETURNING id, workspace_id)"
        " INSERT INTO runs (id, configuration_id, workspace_id, input_document_id,"
        "  engine_spec, deps_digest, status, completed_at)"
        " SELECT gen_random_uuid(), ?::uuid, d.workspace_id, d.id, ?, ?, 'succeeded', now()"
        " FROM d RETURNING id, workspace_id",
        n, first["input_document_id"], first["configuration_id"], first["engine_spec"],
        first["deps_digest"])
    dep.db().execute("ANALYZE runs")
    return rows


def scans(dep) -> tuple[int, int]:
    (row,) = dep.rows("SELECT seq_scan, idx_scan FROM pg_stat_user_tables"
                      " WHERE relname = 'runs'")
    return row["seq_scan"], row["idx_scan"] or 0


def test_gc_looks_runs_up_by_primary_key(deploy):
    dep = deploy()
    rows = bulk_runs(dep, 5000)
    picked = random.sample(rows, 40)
    for row in picked:
        (dep.data_dir / "workspaces" / row["workspace_id"] / "runs" / row["id"]).mkdir(
            parents=True)
    share(dep.data_dir / "workspaces")
    seq0, idx0 = scans(dep)
    dep.ctl("gc", "--now", json_out=True)
    # the statistics of the ade-ctl session arrive when it has ended
    wait_until(lambda: scans(dep)[1] >= idx0 + len(picked), 30,
               "the index scans of the run lookups")
    seq1, _ = scans(dep)
    assert seq1 - seq0 < len(picked) // 2, (seq0, seq1)


def test_run_ids_in_any_case_and_junk_ids(deploy):
    dep = deploy()
    (run,) = dep.rows("SELECT id FROM runs")
    shown = dep.ctl("runs", "show", run["id"].upper(), json_out=True)
    assert run["id"] in shown.stdout
    junk = dep.ctl("runs", "show", "not-a-uuid", check=False)
    assert "invalid input syntax" not in junk.stderr
    cancel = dep.ctl("runs", "cancel", "not-a-uuid'; --", check=False)
    assert "invalid input syntax" not in cancel.stderr


class Relay:
    """A TCP port that relays to the server's Unix socket, so that the
    worker's connection is a TCP one whose socket options can be seen."""

    def __init__(self, unix_path: str):
        self.unix_path = unix_path
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.socket(socket.AF_UNIX)
            server.connect(self.unix_path)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.closed = True
        self.listener.close()


def test_connection_has_keepalives(deploy, pg_server):
    dep = deploy()
    relay = Relay(f"{pg_server.socket_dir}/.s.PGSQL.5432")
    try:
        dep.configure(**{"database.host": "127.0.0.1", "database.port": relay.port,
                         "database.query_timeout": 8})
        worker = dep.start_worker()

        def keepalive_sockets():
            out = subprocess.run(["ss", "-tnoH", "state", "established",
                                  f"( dport = :{relay.port} )"],
                                 capture_output=True, text=True).stdout
            return [line for line in out.splitlines() if "keepalive" in line]
        lines = wait_until(keepalive_sockets, 30, "the worker's connection")
        # probes after 2 s idle (query_timeout / 4), not the system's two hours
        timers = [re.search(r"timer:\(keepalive,([0-9.]+)(ms|sec),", line)
                  for line in lines]
        assert all(timers), lines
        assert all(float(t.group(1)) <= 2.0 for t in timers), lines
        assert worker.poll() is None
    finally:
        relay.close()


def plan_nodes(node):
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def test_a_claim_reads_the_run_it_claims_not_the_queue(deploy, tmp_path):
    # The worker's own claim statement, as its echo shows it.
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND,
                 **{"worker.log_level": "debug", "database.echo": "yes"})
    dep.enqueue(write_input(tmp_path / "first.csv"))
    result = dep.run_worker(timeout=90)
    assert result.returncode == 0, result.stderr
    claims = [line.split(" sql: ", 1)[1] for line in result.stderr.splitlines()
              if " sql: WITH c AS MATERIALIZED (SELECT q.id" in line]
    assert claims, result.stderr[-2000:]
    # A busy queue that the server's statistics have not seen yet, as
    # they never have on a queue that fills and drains all day.
    (first,) = dep.rows("SELECT input_document_id, configuration_id, engine_spec,"
                        " deps_digest FROM runs ORDER BY created_at LIMIT 1")
    dep.rows(
        "WITH d AS (INSERT INTO documents (id, workspace_id, original_filename, byte_size,"
        "  sha256, stored_uri, expires_at)"
        " SELECT gen_random_uuid(), workspace_id, original_filename, byte_size, sha256,"
        "  stored_uri, expires_at FROM documents, generate_series(1, 2000) WHERE id = ?"
        " RETURNING id, workspace_id)"
        " INSERT INTO runs (id, configuration_id, workspace_id, input_document_id,"
        "  engine_spec, deps_digest)"
        " SELECT gen_random_uuid(), ?::uuid, d.workspace_id, d.id, ?, ? FROM d",
        first["input_document_id"], first["configuration_id"], first["engine_spec"],
        first["deps_digest"])
    con = dep.db().conn
    con.autocommit = False
    try:
        with con.cursor() as cur:
            cur.execute("PREPARE claim (text, float8) AS " + claims[-1])
            cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE claim ('test', 60)")
            (plan,) = cur.fetchone()
    finally:
        con.rollback()      # the claim was real: undo it
        con.autocommit = True
    if isinstance(plan, str):
        plan = json.loads(plan)
    top = plan[0]["Plan"]
    assert top["Node Type"] == "ModifyTable" and top["Actual Rows"] == 1, top   # claimed
    read = [(n["Node Type"], n.get("Index Name"), n["Actual Rows"] * n["Actual Loops"],
             n.get("Rows Removed by Filter", 0) + n.get("Rows Removed by Join Filter", 0))
            for n in plan_nodes(top)
            if n.get("Relation Name") == "runs" and n.get("Alias") == "r"]
    # The row to update is found by its key: one row read, not 2,000.
    assert read and all(rows <= 1 and removed == 0 for _, _, rows, removed in read), read


def test_claims_and_successes_are_planned_once_a_session_not_at_every_run(deploy, pg_server, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    (db,) = dep.rows("SELECT current_database() AS name")
    dep.db().execute(f'ALTER DATABASE "{db["name"]}" SET log_statement = \'all\'')
    server_log = Path(pg_server.dir) / "server.log"
    start = server_log.stat().st_size
    runs = [dep.enqueue(write_input(tmp_path / f"r{i}.csv"))["run_id"] for i in range(3)]
    result = dep.run_worker(timeout=90)
    assert result.returncode == 0, result.stderr
    for run in runs:
        assert dep.run_row(run)["status"] == "succeeded"
    with open(server_log, errors="replace") as f:
        f.seek(start)
        logged = f.read()
    claim = "WITH c AS MATERIALIZED (SELECT q.id"
    executed = re.findall(r"execute (\S+): " + re.escape(claim), logged)
    # Every look for a run (three that found one, at least one that did
    # not) ran the statement the session prepared, by its name.
    assert len(executed) >= 4, logged[-3000:]
    assert len(set(executed)) == 1 and executed[0] != "<unnamed>", executed
    # So was each success with its result rows, whatever their number.
    success = "WITH u AS (UPDATE runs SET status = 'succeeded'"
    stored = re.findall(r"execute (\S+): " + re.escape(success), logged)
    assert len(stored) == len(runs), logged[-3000:]
    assert len(set(stored)) == 1 and stored[0] != "<unnamed>", stored
    for run in runs:
        assert dep.rows("SELECT count(*) AS n FROM run_fields WHERE run_id = ?", run)[0]["n"] > 0


def test_the_queue_trigger_runs_only_when_a_run_becomes_queued(deploy, tmp_path):
    """Claims and successes change a run's status at every run: the trigger
    that tells the workers of new work must not be called for them."""
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    run = dep.enqueue(write_input(tmp_path / "a.csv"))["run_id"]
    conn = dep.db().conn
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            def calls() -> int:
                # This transaction's calls so far, as the server counts them.
                cur.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions"
                            " WHERE funcname = 'fn_runs_notify_queued'")
                return cur.fetchone()[0]

            cur.execute("SET LOCAL track_functions = 'pl'")
            cur.execute("UPDATE runs SET status = 'running' WHERE id = %s", (run,))
            assert calls() == 0
            cur.execute("UPDATE runs SET status = 'succeeded' WHERE id = %s", (run,))
            assert calls() == 0
            cur.execute("UPDATE runs SET status = 'queued' WHERE id = %s", (run,))
            assert calls() == 1
            cur.execute("UPDATE runs SET status = 'queued', attempt_count = 0 WHERE id = %s",
                        (run,))
            assert calls() == 1
    finally:
        conn.rollback()
        conn.autocommit = True


def test_a_session_that_forgets_its_prepared_statements_goes_on_as_text(deploy, tmp_path):
    """What a pooler that shares sessions does, done by the server itself:
    a trigger drops every prepared statement of the session while it
    writes a success.  The worker resends that statement as text at once
    and sends text from then on, without a failed call or a retry."""
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    db = dep.db()
    db.execute("CREATE FUNCTION test_forget() RETURNS trigger LANGUAGE plpgsql"
               " AS $$ BEGIN EXECUTE 'DEALLOCATE ALL'; RETURN NULL; END $$")
    db.execute("CREATE TRIGGER test_forget AFTER UPDATE OF status ON runs FOR EACH ROW"
               " WHEN (NEW.status = 'succeeded') EXECUTE FUNCTION test_forget()")
    runs = [dep.enqueue(write_input(tmp_path / f"r{i}.csv"))["run_id"] for i in range(3)]
    result = dep.run_worker(timeout=90)
    assert result.returncode == 0, result.stderr
    for run in runs:
        row = dep.run_row(run)
        assert row["status"] == "succeeded" and row["attempt_count"] == 1, row
    logs = dep.worker_logs(tail=100000)
    assert "unusable (26000); sending statements as text from now on" in logs, logs
    assert logs.count("unusable (26000)") == 1, logs
    assert " warning: " not in logs and "claim run:" not in logs, logs
