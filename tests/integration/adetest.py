"""Helpers for the ade-superd / ade-ctl integration tests (fixtures: conftest.py).

Every test gets its own Deployment: a directory with a worker.conf, a data
directory and a database -- a SQLite file in the data directory, a
database of its own on the session's private PostgreSQL server (see
tests/lib/pgserver.py), or a throw-away database on the SQL Server named
by ADE_TEST_MSSQL_* (see tests/lib/mssqlserver.py).  Most start from a copy of a session-wide template
(one per backend) in which the workspace "ws" and the configuration "cfg"
(the sample configuration package) are registered and whose environment is
already built, so that they need no environment build of their own.

Deployment.db() is a backend-neutral connection: it takes SQLite-style SQL
with ? placeholders on every backend and returns rows addressable by column
name, with the servers' values in SQLite's forms (timestamps as
"YYYY-MM-DDTHH:MM:SS.mmmZ" text, ids as lower-case text, JSON as text), so
that one assertion holds for all.

Binaries come from $ADE_BUILD_DIR (default <repo>/build); environments are
built with $ADE_PYTHON (default /usr/bin/python3), offline.
"""

from __future__ import annotations

import atexit
import contextlib
import decimal
import grp
import pwd
import re
import itertools
import json
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import tempfile
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

try:
    import psycopg2
    import psycopg2.extensions
except ImportError:  # pragma: no cover - python3-psycopg2 is expected
    psycopg2 = None

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "lib"))
import mssqlserver  # noqa: E402
import pgserver  # noqa: E402

BUILD_DIR = Path(os.environ.get("ADE_BUILD_DIR") or REPO / "build").resolve()
PYTHON = os.environ.get("ADE_PYTHON") or "/usr/bin/python3"
SUPERD = BUILD_DIR / "ade-superd"
CTL = BUILD_DIR / "ade-ctl"
# The engine is installed editable from a copy, so that pip's egg-info
# never lands in the checkout (which the service user may not write).
_ENGINE_HOME = Path(tempfile.mkdtemp(prefix="ade-assets-"))
atexit.register(shutil.rmtree, _ENGINE_HOME, True)
os.chmod(_ENGINE_HOME, 0o755)
_IGNORE = shutil.ignore_patterns("*.egg-info", "__pycache__")
# What the service user reads (engines, configuration package, inputs)
# lives here too, so the checkout itself may sit where it cannot reach.
for _src, _dst in (("contrib/ade_engine", "ade_engine"),
                   ("contrib/sample-config", "sample-config"),
                   ("contrib/samples", "samples"), ("tests/engines", "engines")):
    shutil.copytree(REPO / _src, _ENGINE_HOME / _dst, ignore=_IGNORE)
ENGINE_SPEC = _ENGINE_HOME / "ade_engine"
SAMPLE_CONFIG = _ENGINE_HOME / "sample-config"
SAMPLES = _ENGINE_HOME / "samples"
ENGINES = _ENGINE_HOME / "engines"
FAKE_ENGINE = ENGINES / "fake_engine.py"
FAKE_ENGINE_COMMAND = f"{{python}} {FAKE_ENGINE}"
SAMPLE_EVENTS = ENGINES / "engine-events.sample.ndjson"
SAMPLE_ROWS = ENGINES / "run-completed.rows.json"

BACKENDS = ("sqlite", "pgsql", "mssql")

WORKSPACE = "ws"
CONFIGURATION = "cfg"

# ade-superd never runs workers as root; run as root, the tests run the
# service as nobody, and ade-ctl acts as that user too.
SERVICE_USER = ("nobody", "nogroup") if os.geteuid() == 0 else None


def give_to_service_user(path: Path) -> None:
    """A file of the tests' that the service user must read (mode kept)."""
    if SERVICE_USER is not None:
        os.chown(path, pwd.getpwnam(SERVICE_USER[0]).pw_uid,
                 grp.getgrnam(SERVICE_USER[1]).gr_gid)


def share(path: Path) -> None:
    """Hands a tree to the service user and lets it reach the tree."""
    if SERVICE_USER is None:
        return
    subprocess.run(["chown", "-R", ":".join(SERVICE_USER), str(path)], check=True)
    tmp = Path(tempfile.gettempdir())
    for parent in Path(path).parents:
        if parent == tmp or tmp not in parent.parents:
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o755)


share(_ENGINE_HOME)

# Settings every deployment starts from; tests override single keys.
BASE_SETTINGS = {
    "database": {"backend": "sqlite"},
    "worker": {
        "engine_spec": str(ENGINE_SPEC),
        "python": PYTHON,
        "venv_args": "--system-site-packages",
        "pip_args": "--no-index --no-build-isolation",
        "poll_interval": "0.1",
        "poll_interval_max": "0.2",
        "backoff_base_seconds": "1",
        "backoff_max_seconds": "4",
        "cleanup_interval": "1",
        "run_timeout": "120",
        "log_level": "info",
    },
}


def unconfined(worker: dict) -> bool:
    """Whether a deployment's engines run outside the sandbox: the tests'
    stand-in engines and interpreters report through files the test names
    (pidfiles, ledgers, markers) outside any run, which the sandbox rightly
    forbids.  The reference engine, and any deployment that sets
    engine_sandbox itself, keep the default (confined where the kernel
    can)."""
    if "engine_sandbox" in worker:
        return False
    return worker.get("engine_command", "") != "" or worker.get("python", PYTHON) != PYTHON


if SERVICE_USER is not None:
    BASE_SETTINGS["supervisor"] = {"user": SERVICE_USER[0], "group": SERVICE_USER[1]}
WORKER_KEYS = {
    "id", "data_dir", "poll_interval", "poll_interval_max", "cleanup_interval", "log_level",
    "lease_seconds", "backoff_base_seconds", "backoff_max_seconds", "max_attempts_default",
    "engine_spec", "env_build_timeout", "run_timeout", "python", "venv_args", "pip_args",
    "engine_command", "max_event_line", "max_log_size", "notify", "listen_timeout",
    "notify_jitter_ms", "max_completion_size", "max_result_rows", "max_jobs_per_child",
    "max_rss", "engine_sandbox", "engine_user", "venvs_dir",
}


def clean_env(extra: dict | None = None) -> dict:
    """The caller's environment without any ADE_* setting, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ADE_")}
    env.update(extra or {})
    return env


def parse_ts(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 time ("...Z" or "+00:00")."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def iso_ts(moment: datetime) -> str:
    """A time as the database stores it in SQLite: "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC,
    milliseconds cut, not rounded, like PostgreSQL's to_char(... 'MS'))."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def iso_now(offset: float = 0.0) -> str:
    """Now plus offset seconds, as a timestamp parameter both backends accept."""
    return iso_ts(datetime.now(timezone.utc) + timedelta(seconds=offset))


def pgsql_unavailable() -> str | None:
    """Why the PostgreSQL cases cannot run here, or None."""
    if not pgserver.available():
        return "PostgreSQL server binaries not found (Debian package: postgresql)"
    if shutil.which("psql") is None:
        return "psql not found (Debian package: postgresql-client)"
    if psycopg2 is None:
        return "psycopg2 is not installed for this Python (Debian package: python3-psycopg2)"
    return None


def mssql_unavailable() -> str | None:
    """Why the mssql cases cannot run here, or None."""
    return mssqlserver.unavailable()


def write_input(path: Path, body: str = "Email,Name\na@example.com,A\n", **instructions) -> Path:
    """A document for the fake engine: key=value instruction lines, then CSV."""
    head = "".join(f"{k}={v}\n" for k, v in instructions.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(head + ("\n" if head else "") + body)
    return path


def venv_dir(root: Path, env: dict) -> Path:
    """The directory of an environment's current venv below the environment's
    root: the generation its row records (<root>/g-.../.venv/bin/python), or
    the root itself for a build from before generations."""
    parts = Path(env.get("python_interpreter") or "x").parts
    name = parts[-4] if len(parts) >= 4 else ""
    return root / name if name.startswith("g-") else root


def copy_template(template: Path, dest: Path) -> None:
    """Copies a template data directory.  The files of its environments are
    hard links (nothing rewrites them in place: Python replaces files by
    renaming); everything else, the database above all, is copied."""
    venvs = str(template / "venvs") + os.sep

    def link_or_copy(src, dst):
        if str(src).startswith(venvs):
            try:
                os.link(src, dst)
                return dst
            except OSError:
                pass
        return shutil.copy2(src, dst)

    shutil.copytree(template, dest, symlinks=True, copy_function=link_or_copy)


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def crash(proc: subprocess.Popen) -> None:
    """Kills a supervisor and its workers at once, as a host crash would."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


# What AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer print
# (make sanitize-check builds with them): any of it in a process's output
# fails the test, whether or not the process went on.
SANITIZER_REPORT = re.compile(
    r"ERROR: (AddressSanitizer|LeakSanitizer)|SUMMARY: (Address|UndefinedBehavior)Sanitizer"
    r"|: runtime error: ")


def assert_no_sanitizer_report(text: str, what: str) -> None:
    match = SANITIZER_REPORT.search(text)
    if match:
        start = max(0, text.rfind("\n", 0, max(0, match.start() - 2000)))
        raise AssertionError(f"sanitizer report in {what}:\n{text[start:start + 6000]}")


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Polls predicate until it returns a true value; fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class WorkerResult:
    returncode: int
    stderr: str
    duration: float


@dataclass
class Template:
    """A prebuilt deployment that tests copy: its data directory and, on
    PostgreSQL, the database that CREATE DATABASE ... TEMPLATE copies."""
    backend: str
    data_dir: Path
    db_name: str | None = None


class Row(dict):
    """A result row: row["column"] like sqlite3.Row, row[0] by position, dict(row)."""

    def __getitem__(self, key):
        if isinstance(key, int):
            return list(self.values())[key]
        return super().__getitem__(key)


class Result:
    """The rows of one statement, fetched at once."""

    def __init__(self, names: list[str], rows: list[tuple], rowcount: int, normalize):
        self.rows = [Row(zip(names, map(normalize, row))) for row in rows]
        self.rowcount = rowcount

    def fetchone(self) -> Row | None:
        return self.rows.pop(0) if self.rows else None

    def fetchall(self) -> list[Row]:
        rows, self.rows = self.rows, []
        return rows

    def __iter__(self):
        return iter(self.fetchall())


_ISO_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def server_sql(sql: str, backend: str, params=()) -> str:
    """SQLite-style SQL for the servers' drivers: ? outside quotes becomes %s;
    for psycopg2 every % is doubled, for pymssql (which leaves other % alone)
    || becomes +, and a parameter that is an ISO 8601 time is cast to
    DATETIMEOFFSET (pymssql sends it as text, which Babelfish does not
    convert by itself)."""
    out, quote, i, n = [], None, 0, 0
    while i < len(sql):
        ch = sql[i]
        i += 1
        if quote:
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "?":
            ch = "%s"
            if backend == "mssql" and n < len(params) and isinstance(params[n], str) \
                    and _ISO_TS.match(params[n]):
                ch = "CAST(%s AS DATETIMEOFFSET)"
            n += 1
        elif ch == "|" and backend == "mssql" and sql.startswith("|", i):
            ch = "+"
            i += 1
        if ch == "%" and backend == "pgsql":
            ch = "%%"
        out.append(ch)
    return "".join(out)


def pg_value(value):
    """A PostgreSQL value in the form SQLite gives it back (booleans stay booleans:
    True == 1 and False == 0 in any comparison)."""
    if isinstance(value, datetime):
        return iso_ts(value)
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


if psycopg2 is not None:
    # json and jsonb as the text the server prints (SQLite stores JSON as text).
    JSON_AS_TEXT = psycopg2.extensions.new_type((114, 3802), "JSON_AS_TEXT",
                                                lambda value, cursor: value)


# DATETIMEOFFSET as text, should the driver hand it over that way
_DTO_TEXT = re.compile(r"(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(\.\d+)? ?([+-]\d\d:\d\d)$")


def _dbdatetimeall(raw: bytes) -> datetime:
    """A DATETIMEOFFSET as pymssql 2.2 hands it over: FreeTDS's 16-byte
    TDS_DATETIMEALL (the UTC time in 100 ns units since midnight, days since
    1900-01-01, then the offset and flags), little-endian."""
    ticks, days = struct.unpack("<Qi", raw[:12])
    moment = datetime(1900, 1, 1) + timedelta(days=days, microseconds=ticks // 10)
    return moment.replace(tzinfo=timezone.utc)


def mssql_value(value):
    """A SQL Server value in the form SQLite gives it back."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes) and len(value) == 16:
        return iso_ts(_dbdatetimeall(value))
    if isinstance(value, str):
        m = _DTO_TEXT.match(value)
        if m:
            frac = (m.group(3) or ".0")[1:7].ljust(6, "0")
            return iso_ts(datetime.fromisoformat(
                f"{m.group(1)}T{m.group(2)}.{frac}{m.group(4)}"))
        return value
    return pg_value(value)


class Database:
    """A connection to a deployment's database, in autocommit mode.

    execute(sql, params) takes SQLite-style SQL with ? placeholders on every
    backend and returns a Result whose rows are Row dicts; on the servers,
    timestamps come back as "YYYY-MM-DDTHH:MM:SS.mmmZ" text, UUIDs (lower
    case) and JSON as text, numerics as int or float."""

    def __init__(self, backend: str, *, path: Path | None = None,
                 pg: "pgserver.PgServer | None" = None, name: str | None = None,
                 ms: "mssqlserver.MssqlServer | None" = None):
        self.backend = backend
        if backend == "sqlite":
            self.conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        elif backend == "mssql":
            self.conn = ms.connect(name)
        else:
            self.conn = psycopg2.connect(host=pg.socket_dir, dbname=name, user=pg.user,
                                         options="-c TimeZone=UTC",
                                         application_name="adetest")
            self.conn.autocommit = True
            psycopg2.extensions.register_type(JSON_AS_TEXT, self.conn)

    def execute(self, sql: str, params=()) -> Result:
        if self.backend == "sqlite":
            cur = self.conn.execute(sql, tuple(params))
            names = [d[0] for d in cur.description] if cur.description else []
            return Result(names, cur.fetchall() if names else [], cur.rowcount, lambda v: v)
        if self.backend == "mssql":
            cur = self.conn.cursor()
            try:
                if params:
                    cur.execute(server_sql(sql, "mssql", tuple(params)), tuple(params))
                else:
                    cur.execute(server_sql(sql, "mssql"))
                names = [d[0] for d in cur.description] if cur.description else []
                return Result(names, cur.fetchall() if names else [], cur.rowcount,
                              mssql_value)
            finally:
                cur.close()
        with self.conn.cursor() as cur:
            cur.execute(server_sql(sql, "pgsql"), tuple(params))
            names = [d[0] for d in cur.description] if cur.description else []
            return Result(names, cur.fetchall() if names else [], cur.rowcount, pg_value)

    def columns(self, table: str) -> set[str]:
        """The column names of a table."""
        if self.backend == "sqlite":
            return {r["name"] for r in self.execute(f"PRAGMA table_info({table})")}
        if self.backend == "mssql":
            return {r["name"] for r in self.execute(
                "SELECT name FROM sys.columns WHERE object_id = OBJECT_ID(?)", (table,))}
        return {r["column_name"] for r in self.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ?", (table,))}

    @contextlib.contextmanager
    def foreign_keys_off(self):
        """Foreign keys unchecked for this connection's statements in the block."""
        if self.backend == "sqlite":
            self.execute("PRAGMA foreign_keys = OFF")
            yield self
            return
        if self.backend == "mssql":
            # Babelfish cannot switch a constraint off (ALTER TABLE ... NOCHECK),
            # so the foreign keys of this throw-away database are dropped for good.
            for r in self.execute(
                    "SELECT OBJECT_NAME(parent_object_id) AS t, name FROM sys.foreign_keys"):
                self.execute(f"ALTER TABLE {mssqlserver.quote(r['t'])}"
                             f" DROP CONSTRAINT {mssqlserver.quote(r['name'])}")
            yield self
            return
        self.execute("SET session_replication_role = replica")  # no FK triggers
        try:
            yield self
        finally:
            self.execute("SET session_replication_role = DEFAULT")

    def drop_column(self, table: str, column: str) -> None:
        """ALTER TABLE ... DROP COLUMN, on SQL Server with its default first
        (Babelfish lists defaults there but drops them with the column)."""
        if self.backend == "mssql" and not self._babelfish():
            for r in self.execute(
                    "SELECT d.name FROM sys.default_constraints d JOIN sys.columns c"
                    " ON c.object_id = d.parent_object_id AND c.column_id = d.parent_column_id"
                    " WHERE d.parent_object_id = OBJECT_ID(?) AND c.name = ?",
                    (table, column)):
                self.execute(f"ALTER TABLE {table} DROP CONSTRAINT {r['name']}")
        self.execute(f"ALTER TABLE {table} DROP COLUMN {column}")

    def _babelfish(self) -> bool:
        (row,) = self.execute("SELECT @@VERSION AS v").fetchall()
        return "Babelfish" in row["v"]

    def close(self) -> None:
        self.conn.close()


_db_names = itertools.count(1)


def new_db_name(prefix: str = "t") -> str:
    return f"{prefix}{next(_db_names)}_{uuid.uuid4().hex[:8]}"


class Deployment:
    """One data directory, database and worker.conf, and the workers started on it.

    backend is "sqlite" (the database is data/db/ade.sqlite), "pgsql" (a
    database of its own on the server pg, created here, copied from the
    template's database when there is a template) or "mssql" (the same on
    the SQL Server ms: db init, then the template's rows copied)."""

    def __init__(self, root: Path, settings: dict | None = None, *,
                 template: "Template | Path | None" = None, backend: str = "sqlite",
                 pg: "pgserver.PgServer | None" = None, db_name: str | None = None,
                 ms: "mssqlserver.MssqlServer | None" = None):
        if isinstance(template, Path):
            template = Template("sqlite", template)
        if template is not None:
            assert template.backend == backend, (template, backend)
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.backend = backend
        self.pg = pg
        self.ms = ms
        self.data_dir = root / "data"
        if template is not None:
            copy_template(template.data_dir, self.data_dir)
        else:
            self.data_dir.mkdir()       # ade-superd never creates it
        share(self.root)
        self.conf_path = root / "worker.conf"
        self.db_path = self.data_dir / "db" / "ade.sqlite"
        self.db_name = None
        self._conn: Database | None = None
        self._procs: list[subprocess.Popen] = []
        self._logs: list[Path] = []
        self.settings = {s: dict(v) for s, v in BASE_SETTINGS.items()}
        self.settings["worker"]["data_dir"] = str(self.data_dir)
        if backend == "pgsql":
            assert pg is not None, "a pgsql deployment needs the PostgreSQL server"
            self.db_name = db_name or new_db_name()
            sql = f'CREATE DATABASE "{self.db_name}"'
            if template is not None:
                sql += f' TEMPLATE "{template.db_name}"'
            self._psql(sql)
            database = {}
            for line in pg.conf_lines(self.db_name).splitlines():
                key, _, value = line.partition("=")
                database[key.strip()] = value.strip()
            self.settings["database"] = database
        elif backend == "mssql":
            assert ms is not None, "an mssql deployment needs the server"
            self.db_name = db_name or new_db_name("adetest_")
            ms.create_database(self.db_name)
            secret = root / "mssql-password"
            secret.write_text(ms.password + "\n")
            os.chmod(secret, 0o600)
            give_to_service_user(secret)
            self.settings["database"] = ms.settings(self.db_name, secret)
        else:
            assert backend == "sqlite", backend
        self.configure(**(settings or {}))
        if backend == "mssql" and template is not None:
            self.init_db()
            ms.copy_rows(template.db_name, self.db_name)

    # -- configuration -----------------------------------------------------------------

    def configure(self, **overrides) -> None:
        """Sets [worker] keys (or "section.key" keys) and rewrites worker.conf."""
        for key, value in overrides.items():
            section, _, name = key.rpartition(".")
            if not section:
                section = "worker" if key in WORKER_KEYS else "database"
            self.settings.setdefault(section, {})[name] = str(value)
        lines = ["# written by tests/integration/conftest.py"]
        for section, values in self.settings.items():
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {v}" for k, v in values.items())
            if section == "worker" and unconfined(values):
                lines.append("engine_sandbox = off")
            lines.append("")
        self.conf_path.write_text("\n".join(lines))

    # -- database ----------------------------------------------------------------------

    def db(self) -> Database:
        """The deployment's database (one connection, kept until close())."""
        if self._conn is None:
            if self.backend == "sqlite":
                self._conn = Database("sqlite", path=self.db_path)
            elif self.backend == "mssql":
                self._conn = Database("mssql", ms=self.ms, name=self.db_name)
            else:
                self._conn = Database("pgsql", pg=self.pg, name=self.db_name)
        return self._conn

    def close_db(self) -> None:
        """Closes the connection of db(); the next db() opens a new one (after a
        server restart, say)."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def template(self) -> Template:
        """This deployment as a template for others (close() it first)."""
        return Template(self.backend, self.data_dir, self.db_name)

    def run_row(self, run_id: str) -> dict:
        row = self.db().execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        assert row is not None, f"no run {run_id}"
        return dict(row)

    def rows(self, sql: str, *params) -> list[dict]:
        return [dict(r) for r in self.db().execute(sql, params).fetchall()]

    def environments(self) -> list[dict]:
        return self.rows("SELECT * FROM environments ORDER BY created_at")

    def wait_run(self, run_id: str, statuses=("succeeded", "failed"), timeout: float = 60) -> dict:
        def done():
            row = self.run_row(run_id)
            return row if row["status"] in statuses else None
        try:
            return wait_until(done, timeout, f"run {run_id} to be {'/'.join(statuses)}")
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; row={self.run_row(run_id)}\n{self.worker_logs()}") from None

    # -- commands ----------------------------------------------------------------------

    def ctl(self, *args, json_out: bool = False, check: bool = True, env=None,
            timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(CTL), "-c", str(self.conf_path)] + (["--json"] if json_out else [])
        result = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True,
                                env=clean_env(env), timeout=timeout)
        assert_no_sanitizer_report(result.stderr, f"ade-ctl {' '.join(map(str, args))}")
        if check:
            assert result.returncode == 0, (cmd + list(args), result.stdout, result.stderr)
        return result

    def init_db(self) -> None:
        self.ctl("db", "init")

    def enqueue(self, input_file, *, workspace: str = WORKSPACE,
                configuration: str = CONFIGURATION, config_package=SAMPLE_CONFIG,
                options: dict | None = None, sheets=(), max_attempts: int | None = None,
                engine_spec: str | None = None) -> dict:
        """Enqueues a run with ade-ctl; returns its JSON answer (run_id, document_id...)."""
        args = ["enqueue", "--workspace", workspace, "--configuration", configuration,
                "--config-package", config_package, "--input", input_file]
        for key, value in (options or {}).items():
            text = value if isinstance(value, str) else json.dumps(value)
            args += ["--option", f"{key}={text}"]
        for sheet in sheets:
            args += ["--sheet", sheet]
        if max_attempts is not None:
            args += ["--max-attempts", max_attempts]
        if engine_spec is not None:
            args += ["--engine-spec", engine_spec]
        answer = json.loads(self.ctl(*args, json_out=True).stdout)
        assert set(answer) >= {"run_id", "workspace_id", "configuration_id", "document_id"}
        return answer

    def _worker_cmd(self, exit_when_idle: bool) -> list[str]:
        cmd = [str(SUPERD), "-c", str(self.conf_path), "-f", "-d"]
        return cmd + (["--exit-when-idle"] if exit_when_idle else [])

    @staticmethod
    def _child_setup() -> None:
        # as under a service manager: SIGHUP with its default action
        signal.signal(signal.SIGHUP, signal.SIG_DFL)

    def _new_log(self) -> Path:
        log = self.root / f"worker-{len(self._logs) + 1}.log"
        self._logs.append(log)
        return log

    def run_worker(self, exit_when_idle: bool = True, timeout: float = 90,
                   env: dict | None = None) -> WorkerResult:
        """Runs one ade-superd in the foreground until it exits (or fails after timeout)."""
        log = self._new_log()
        start = time.monotonic()
        with open(log, "wb") as handle:
            proc = subprocess.Popen(self._worker_cmd(exit_when_idle), stdout=handle,
                                    stderr=subprocess.STDOUT, env=clean_env(env),
                                    cwd=self.root, start_new_session=True,
                                    preexec_fn=self._child_setup)
            self._procs.append(proc)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._stop(proc)
                raise AssertionError(f"ade-superd did not exit within {timeout} s\n"
                                     f"{self.worker_logs()}") from None
        return WorkerResult(proc.returncode, log.read_text(errors="replace"),
                            time.monotonic() - start)

    def start_worker(self, exit_when_idle: bool = False,
                     env: dict | None = None) -> subprocess.Popen:
        """Starts ade-superd in the background; the fixture stops it at teardown."""
        log = self._new_log()
        with open(log, "wb") as handle:
            proc = subprocess.Popen(self._worker_cmd(exit_when_idle), stdout=handle,
                                    stderr=subprocess.STDOUT, env=clean_env(env),
                                    cwd=self.root, start_new_session=True,
                                    preexec_fn=self._child_setup)
        proc.log_path = log
        self._procs.append(proc)
        return proc

    def wait_worker(self, proc: subprocess.Popen, timeout: float = 90) -> int:
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._stop(proc)
            raise AssertionError(f"ade-superd did not exit within {timeout} s\n"
                                 f"{self.worker_logs()}") from None

    def _stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGQUIT, 5), (signal.SIGKILL, 5)):
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def worker_logs(self, tail: int = 4000) -> str:
        parts = []
        for log in self._logs:
            if log.exists():
                text = log.read_text(errors="replace")
                parts.append(f"--- {log.name} ---\n{text[-tail:]}")
        return "\n".join(parts)

    def close(self) -> None:
        for proc in self._procs:
            self._stop(proc)
        self.close_db()
        for log in self._logs:
            if log.exists():
                assert_no_sanitizer_report(log.read_text(errors="replace"), log.name)

    def drop_database(self) -> None:
        """Drops a server deployment's database (after close())."""
        if self.backend == "mssql" and self.db_name and self.ms is not None:
            self.ms.drop_database(self.db_name)
        if self.backend == "pgsql" and self.db_name and self.pg is not None \
                and self.pg.started:
            self._psql(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    def _psql(self, sql: str) -> str:
        """A statement run with psql on the server's maintenance database."""
        try:
            return self.pg.psql(sql)
        except subprocess.CalledProcessError as exc:
            raise AssertionError(f"psql {sql!r} failed: {exc.stderr}") from None

    # -- files -------------------------------------------------------------------------

    def run_dir(self, run_id: str, workspace_id: str | None = None) -> Path:
        if workspace_id is None:
            workspace_id = self.run_row(run_id)["workspace_id"]
        return self.data_dir / "workspaces" / workspace_id / "runs" / run_id

    def config_dir(self, workspace_id: str, configuration_id: str) -> Path:
        return self.data_dir / "workspaces" / workspace_id / "config_packages" / configuration_id

    def document_path(self, workspace_id: str, stored_uri: str) -> Path:
        return self.data_dir / "workspaces" / workspace_id / "documents" / stored_uri

    def events_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "logs" / "events.ndjson"

    def events(self, run_id: str) -> list[dict]:
        """The records of a run's events.ndjson (every line must be a JSON object)."""
        path = self.events_path(run_id)
        if not path.exists():
            return []
        records = []
        for number, raw in enumerate(path.read_bytes().splitlines(), 1):
            text = raw.decode("utf-8")  # raises on invalid UTF-8
            record = json.loads(text)
            assert isinstance(record, dict), f"{path}:{number} is not an object"
            records.append(record)
        return records

    def event_names(self, run_id: str) -> list[str]:
        return [r.get("event") for r in self.events(run_id)]


# -- the engine.run.completed payload, mapped to rows independently of the C code -------
#
# The mapping of reference §5.7 / protocol §2.5: strings are trimmed and empty
# ones are NULL; integers and floats are taken as they are; a missing
# issues_by_severity key is NULL, not 0; findings are counted per lower-cased
# severity; field integers default to 0; a column's NULL valid_cells becomes
# its non_empty_cells.

METRIC_SOURCES = {
    "evaluation_outcome": ("evaluation", "outcome"),
    "validation_issues_total": ("validation", "issues_total"),
    "validation_issues_info": ("validation", "issues_by_severity", "info"),
    "validation_issues_warning": ("validation", "issues_by_severity", "warning"),
    "validation_issues_error": ("validation", "issues_by_severity", "error"),
    "validation_max_severity": ("validation", "max_severity"),
    "workbook_count": ("counts", "workbooks"),
    "sheet_count": ("counts", "sheets"),
    "table_count": ("counts", "tables"),
    "row_count_total": ("counts", "rows", "total"),
    "row_count_empty": ("counts", "rows", "empty"),
    "column_count_total": ("counts", "columns", "total"),
    "column_count_empty": ("counts", "columns", "empty"),
    "column_count_mapped": ("counts", "columns", "mapped"),
    "column_count_unmapped": ("counts", "columns", "unmapped"),
    "field_count_expected": ("counts", "fields", "expected"),
    "field_count_detected": ("counts", "fields", "detected"),
    "field_count_not_detected": ("counts", "fields", "not_detected"),
    "cell_count_total": ("counts", "cells", "total"),
    "cell_count_non_empty": ("counts", "cells", "non_empty"),
}


def dig(obj, *path):
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def text_or_none(value):
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()


def expected_metrics(payload: dict) -> dict:
    row = {}
    for column, path in METRIC_SOURCES.items():
        value = dig(payload, *path)
        row[column] = text_or_none(value) if column in (
            "evaluation_outcome", "validation_max_severity") else value
    findings = dig(payload, "evaluation", "findings")
    assert isinstance(findings, list)
    row["evaluation_findings_total"] = len(findings)
    for severity in ("info", "warning", "error"):
        row[f"evaluation_findings_{severity}"] = sum(
            1 for f in findings if str(f.get("severity", "")).lower() == severity)
    return row


def expected_fields(payload: dict) -> list[dict]:
    rows = []
    for item in payload["fields"]:
        rows.append({
            "field": item["field"].strip(),
            "label": text_or_none(item.get("label")),
            "detected": 1 if item["detected"] else 0,
            "best_mapping_score": item.get("best_mapping_score"),
            "valid_cells": item.get("valid_cells") or 0,
            "occurrences_tables": dig(item, "occurrences", "tables") or 0,
            "occurrences_columns": dig(item, "occurrences", "columns") or 0,
        })
    return sorted(rows, key=lambda r: r["field"])


def expected_table_columns(payload: dict) -> list[dict]:
    rows = []
    for workbook in payload["workbooks"]:
        wb = workbook["locator"]["workbook"]
        for sheet in workbook["sheets"]:
            sh = sheet["locator"]["sheet"]
            for table in sheet["tables"]:
                ti = table["locator"]["table"]["index"]
                for col in table["structure"]["columns"]:
                    mapping = col["mapping"]
                    non_empty = col.get("non_empty_cells") or 0
                    valid = col.get("valid_cells")
                    rows.append({
                        "workbook_index": wb["index"], "workbook_name": wb["name"],
                        "sheet_index": sh["index"], "sheet_name": sh["name"],
                        "table_index": ti, "column_index": col["index"],
                        "header_raw": text_or_none(dig(col, "header", "raw")),
                        "header_normalized": text_or_none(dig(col, "header", "normalized")),
                        "non_empty_cells": non_empty,
                        "valid_cells": non_empty if valid is None else valid,
                        "mapping_status": mapping["status"].lower(),
                        "mapped_field": text_or_none(mapping.get("field")),
                        "mapping_score": mapping.get("score"),
                        "mapping_method": text_or_none(mapping.get("method")),
                        "unmapped_reason": text_or_none(mapping.get("unmapped_reason")),
                    })
    return sorted(rows, key=lambda r: (r["workbook_index"], r["sheet_index"],
                                       r["table_index"], r["column_index"]))


def table_columns(conn: Database, table: str) -> set[str]:
    return conn.columns(table)


def result_rows(dep: "Deployment", run_id: str) -> tuple[dict | None, list[dict], list[dict]]:
    """(run_metrics row, run_fields rows, run_table_columns rows) without run_id."""
    def strip(rows):
        for r in rows:
            assert r.pop("run_id") == run_id
        return rows
    metrics = strip(dep.rows("SELECT * FROM run_metrics WHERE run_id = ?", run_id))
    fields = strip(dep.rows("SELECT * FROM run_fields WHERE run_id = ? ORDER BY field", run_id))
    columns = strip(dep.rows(
        "SELECT * FROM run_table_columns WHERE run_id = ? ORDER BY workbook_index,"
        " sheet_index, table_index, column_index", run_id))
    assert len(metrics) <= 1
    return (metrics[0] if metrics else None), fields, columns


def assert_results_match(dep: "Deployment", run_id: str, payload: dict) -> None:
    """Every column of the three result tables equals the payload's mapped value."""
    conn = dep.db()
    metrics, fields, columns = result_rows(dep, run_id)
    want = expected_metrics(payload)
    assert table_columns(conn, "run_metrics") == set(want) | {"run_id"}
    assert metrics == want
    want_fields = expected_fields(payload)
    assert table_columns(conn, "run_fields") == set(want_fields[0]) | {"run_id"}
    assert fields == want_fields
    want_columns = expected_table_columns(payload)
    assert table_columns(conn, "run_table_columns") == set(want_columns[0]) | {"run_id"}
    assert columns == want_columns


def completed_payload(records: list[dict]) -> dict:
    """The data of the last engine.run.completed record."""
    done = [r for r in records if r.get("event") == "engine.run.completed"]
    assert done, "no engine.run.completed in the event log"
    return done[-1]["data"]


def sample_rows() -> dict:
    """What the original worker stored for the sample payload (reference data)."""
    return json.loads(SAMPLE_ROWS.read_text())


def assert_sample_results(dep: "Deployment", run_id: str) -> None:
    """The run's result rows are those of the fake engine's (sample) payload."""
    want = sample_rows()
    metrics, fields, columns = result_rows(dep, run_id)
    assert metrics == want["run_metrics"]
    assert fields == sorted(want["run_fields"], key=lambda r: r["field"])
    assert columns == want["run_table_columns"]
