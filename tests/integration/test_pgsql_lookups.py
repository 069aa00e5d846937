"""PostgreSQL specifics: lookups by id use the primary key, and the
connection is watched for a server that went silent."""

from __future__ import annotations

import random
import re
import socket
import subprocess
import threading

import pytest

from adetest import share, wait_until

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
