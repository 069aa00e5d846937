"""The SQL Server backend when no server answers properly.

These run everywhere, with FreeTDS for real: a port nobody listens on, a
listener that accepts and never speaks, one that hangs up at once.  Each
gives one clear line naming the server, a bounded wait, retries with
backoff in the workers, and never the password.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import socket
import threading
import time

import pytest

from adetest import SERVICE_USER, Deployment, wait_until

SECRET = "Pw-9f3c1b-never-logged"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Listener:
    """A TCP listener on loopback: "silent" keeps every connection open without
    a word, "hangup" closes each one as soon as it is accepted."""

    def __init__(self, mode: str):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.held: list[socket.socket] = []
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted += 1
            if self.mode == "hangup":
                conn.close()
            else:
                self.held.append(conn)

    def close(self):
        self.stopping = True
        self.thread.join(timeout=5)
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.fixture
def mssql_dep(tmp_path):
    """A deployment whose database is SQL Server at a port given later."""
    dep = Deployment(tmp_path / "dep")
    secret = tmp_path / "dep" / "password"
    secret.write_text(SECRET + "\n")
    os.chmod(secret, 0o600)
    if SERVICE_USER is not None:
        os.chown(secret, pwd.getpwnam(SERVICE_USER[0]).pw_uid,
                 grp.getgrnam(SERVICE_USER[1]).gr_gid)
    dep.settings["database"] = {
        "backend": "mssql", "host": "127.0.0.1", "port": "1", "database": "ade",
        "user": "ade_worker", "password_file": str(secret), "login_timeout": "2",
    }
    dep.configure()
    yield dep
    dep.close()


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_refused_port_is_one_clear_line(mssql_dep):
    port = free_port()
    mssql_dep.configure(port=port)
    result = mssql_dep.ctl("db", "check", check=False)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert f"cannot connect to 127.0.0.1:{port}" in line and "refused" in line, line
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize("mode,words", [("silent", "timed out"), ("hangup", "")])
def test_server_that_does_not_answer(mssql_dep, mode, words):
    listener = Listener(mode)
    try:
        mssql_dep.configure(port=listener.port)
        start = time.monotonic()
        result = mssql_dep.ctl("db", "check", check=False, timeout=60)
        took = time.monotonic() - start
    finally:
        listener.close()
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert f"cannot connect to 127.0.0.1:{listener.port}" in line, line
    assert words in line, line
    assert "in progress" not in line, line  # no leftover errno on a timeout
    assert listener.accepted >= 1
    # login_timeout bounds the wait (a generous margin: this is no speed test)
    assert took < 30, took
    assert SECRET not in result.stdout + result.stderr


def test_workers_retry_with_backoff_and_stop_on_term(mssql_dep):
    port = free_port()
    mssql_dep.configure(port=port)
    proc = mssql_dep.start_worker()
    log = proc.log_path

    def text():
        return log.read_text(errors="replace")

    # a worker tries three times with growing delays, then exits, and the
    # supervisor starts another after its restart delay
    wait_until(lambda: "after 3 attempts" in text(), 30, "a worker to give up")
    wait_until(lambda: len(re.findall(r"worker 0 started", text())) >= 2, 30,
               "the worker to be restarted")
    lines = text().splitlines()
    attempts = [line for line in lines if "cannot connect to the database (attempt" in line]
    assert attempts and all(f"127.0.0.1:{port}" in line and "next attempt in" in line
                            for line in attempts), lines
    delays = [float(m.group(1)) for m in
              (re.search(r"next attempt in ([\d.]+) s", line) for line in attempts[:2])]
    assert delays[1] > delays[0], delays
    assert any("restarting in" in line for line in lines), lines

    proc.terminate()
    assert mssql_dep.wait_worker(proc, timeout=30) == 0, text()
    assert SECRET not in text()


def test_managed_identity_is_refused_with_what_to_use(mssql_dep):
    mssql_dep.configure(auth_mode="managed_identity")
    result = mssql_dep.run_worker(timeout=30)
    assert result.returncode == 78, result.stderr
    assert "managed_identity" in result.stderr and "sql_password" in result.stderr
    assert "Entra ID" in result.stderr
    # the same through the environment, as the ADE deployment sets it
    mssql_dep.configure(auth_mode="sql_password")
    result = mssql_dep.run_worker(timeout=30, env={"ADE_DATABASE_AUTH_MODE": "managed_identity"})
    assert result.returncode == 78 and "managed_identity" in result.stderr, result.stderr


def test_stricter_tls_settings_get_a_warning(mssql_dep):
    mssql_dep.configure(port=free_port(), encrypt="mandatory")
    proc = mssql_dep.start_worker()
    wait_until(lambda: "freetds.conf" in proc.log_path.read_text(errors="replace"), 20,
               "the TLS warning")
    proc.terminate()
    assert mssql_dep.wait_worker(proc, timeout=30) == 0
    assert "encryption = require" in proc.log_path.read_text(errors="replace")
