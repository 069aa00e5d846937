"""A throw-away Babelfish for PostgreSQL server: a real TDS endpoint for the
SQL Server cases of the test suite and the benchmarks.

Nothing is built here.  The server must already be installed: a
PostgreSQL with Babelfish's changes and the babelfishpg_common,
babelfishpg_money, babelfishpg_tds and babelfishpg_tsql extensions, under
one prefix (bin/initdb, bin/pg_ctl, share/.../babelfishpg_tds.control).
The prefix is $ADE_TEST_BABELFISH, or /opt/babelfish when that holds one.

    python3 tests/lib/tdsserver.py start DIR    # prints ADE_TEST_MSSQL_* lines
    python3 tests/lib/tdsserver.py restart DIR  # stop and start, same data
    python3 tests/lib/tdsserver.py stop DIR     # stop it and remove DIR

start creates a cluster in DIR (which must not exist yet or be empty),
listens for TDS on 127.0.0.1 at a free port (PostgreSQL itself on
another free loopback port and a Unix socket in DIR), runs in multi-db mode so that tests can CREATE
and DROP databases, and creates a sysadmin login.  It prints
"export NAME=value" lines for a shell's eval, among them
ADE_TEST_MSSQL_SERVER_DIR, which tells the tests how to restart it.
initdb refuses to run as root, so as root the server runs as the
"postgres" user that Debian's postgresql package creates.
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import time

DEFAULT_PREFIX = "/opt/babelfish"
LOGIN = "ade_test"
PASSWORD = "Ade-test-1"
# The PostgreSQL database Babelfish lives in; T-SQL databases are schemas in it.
PG_DATABASE = "babelfish_db"


def prefix() -> str | None:
    """The installed Babelfish to use, or None."""
    candidates = [os.environ["ADE_TEST_BABELFISH"]] if os.environ.get("ADE_TEST_BABELFISH") \
        else [DEFAULT_PREFIX]
    for p in candidates:
        if os.access(os.path.join(p, "bin", "pg_ctl"), os.X_OK) and glob.glob(
                os.path.join(p, "share", "**", "babelfishpg_tds.control"), recursive=True):
            return p
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TdsServer:
    def __init__(self, directory: str, bbf_prefix: str | None = None):
        self.prefix = bbf_prefix or prefix()
        if self.prefix is None:
            raise RuntimeError("no Babelfish installed (set ADE_TEST_BABELFISH to its prefix)")
        self.bindir = os.path.join(self.prefix, "bin")
        self.dir = os.path.abspath(directory)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            self.os_user = "postgres"
        else:
            self.os_user = pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, *argv, capture=False):
        return subprocess.run(self._as + list(argv), check=True, text=True,
                              stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                              stderr=subprocess.PIPE)

    def psql(self, sql: str, db: str = "postgres") -> str:
        out = self._run(os.path.join(self.bindir, "psql"), "-X", "-q", "-t", "-A",
                        "-v", "ON_ERROR_STOP=1", "-h", self.dir, "-p", self._read("pg.port"), "-U", self.os_user,
                        "-d", db, "-c", sql, capture=True)
        return out.stdout.strip()

    def _read(self, name: str) -> str:
        with open(os.path.join(self.dir, name)) as f:
            return f.read().strip()

    def port(self) -> int:
        """The TDS port."""
        return int(self._read("tds.port"))

    def start(self) -> "TdsServer":
        os.makedirs(self.dir, exist_ok=True)
        if os.listdir(self.dir):
            raise RuntimeError(f"{self.dir} is not empty")
        if self._as:
            pw = pwd.getpwnam(self.os_user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            os.chmod(self.dir, 0o755)
        self._run(os.path.join(self.bindir, "initdb"), "-D", self.data,
                  "--auth-local=trust", "--auth-host=md5",
                  "-U", self.os_user, "-E", "UTF8", "--locale=C.UTF-8")
        port, pg_port = _free_port(), _free_port()
        # Babelfish listens for TDS on PostgreSQL's own listen_addresses, so
        # PostgreSQL's port is on loopback too.
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# Written by tests/lib/tdsserver.py\n"
                    "listen_addresses = '127.0.0.1'\n"
                    f"port = {pg_port}\n"
                    f"unix_socket_directories = '{self.dir}'\n"
                    "shared_preload_libraries = 'babelfishpg_tds'\n"
                    "max_connections = 300\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                    f"babelfishpg_tds.port = {port}\n")
        for name, value in (("tds.port", port), ("pg.port", pg_port)):
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(str(value))
        self._pg_ctl("start")
        self.psql(f"CREATE USER {LOGIN} WITH SUPERUSER CREATEDB CREATEROLE "
                  f"PASSWORD '{PASSWORD}' INHERIT")
        self.psql(f"CREATE DATABASE {PG_DATABASE} OWNER {LOGIN}")
        for sql in ("SET allow_system_table_mods = on;"
                    " CREATE EXTENSION IF NOT EXISTS babelfishpg_tds CASCADE",
                    f"GRANT ALL ON SCHEMA sys TO {LOGIN}",
                    f"ALTER SYSTEM SET babelfishpg_tsql.database_name = '{PG_DATABASE}'",
                    "ALTER SYSTEM SET babelfishpg_tsql.migration_mode = 'multi-db'",
                    "SELECT pg_reload_conf()",
                    f"CALL sys.initialize_babelfish('{LOGIN}')"):
            self.psql(sql, db=PG_DATABASE)
        self._pg_ctl("restart")
        self.wait_tds()
        return self

    def _pg_ctl(self, action: str) -> None:
        args = [os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-w", "-t", "120"]
        if action in ("stop", "restart"):
            args += ["-m", "fast"]
        if action in ("start", "restart"):
            args += ["-l", self.log]
        self._run(*args, action)

    def wait_tds(self, timeout: float = 60) -> None:
        """Waits until the TDS port accepts connections."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port()), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the TDS port {self.port()} does not answer; "
                                       f"see {self.log}")
                time.sleep(0.1)

    def running(self) -> bool:
        status = subprocess.run(self._as + [os.path.join(self.bindir, "pg_ctl"), "-D",
                                self.data, "status"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        return status.returncode == 0

    def stop_server(self) -> None:
        """Stops the server, keeping its data (restart_server starts it again)."""
        self._pg_ctl("stop")

    def start_server(self) -> None:
        self._pg_ctl("start")
        self.wait_tds()

    def restart(self) -> None:
        self._pg_ctl("restart")
        self.wait_tds()

    def stop(self) -> None:
        """Stops the server at once and removes its directory."""
        try:
            if os.path.exists(os.path.join(self.data, "postmaster.pid")):
                subprocess.run(self._as + [os.path.join(self.bindir, "pg_ctl"), "-D", self.data,
                               "-m", "immediate", "-w", "-t", "30", "stop"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def environment(self) -> dict[str, str]:
        return {"ADE_TEST_MSSQL_HOST": "127.0.0.1",
                "ADE_TEST_MSSQL_PORT": str(self.port()),
                "ADE_TEST_MSSQL_USER": LOGIN,
                "ADE_TEST_MSSQL_PASSWORD": PASSWORD,
                "ADE_TEST_MSSQL_SERVER_DIR": self.dir}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("start", "stop", "restart", "available"):
        print(f"usage: {argv[0]} start|stop|restart|available DIR", file=sys.stderr)
        return 2
    action, directory = argv[1], argv[2]
    if action == "available":
        return 0 if prefix() is not None else 1
    server = TdsServer(directory)
    try:
        if action == "start":
            try:
                server.start()
            except subprocess.CalledProcessError as exc:
                print(f"tdsserver: {' '.join(exc.cmd)}: {exc.stderr}", file=sys.stderr)
                server.stop()
                return 1
            for name, value in server.environment().items():
                print(f"export {name}={shlex.quote(value)}")
        elif action == "restart":
            server.restart()
        else:
            server.stop()
    except (OSError, RuntimeError) as exc:
        print(f"tdsserver: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
