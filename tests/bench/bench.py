#!/usr/bin/env python3
"""make bench: throughput, pickup latency and idle load of ade-superd.

Figures are printed next to what they compare with, from the same run;
nothing here asserts a timing.  The engine is build/noop-engine, which
prints a valid engine.run.completed and exits, so the figures measure the
worker and not Python's start-up.  PostgreSQL runs on a private server
started for the benchmark, with fsync and synchronous commits on.  SQL Server (backend mssql) is measured too
when ADE_TEST_MSSQL_* name one (see tests/lib/mssqlserver.py); its idle
load only when it is the suite's own Babelfish (ADE_TEST_MSSQL_SERVER_DIR,
tests/lib/tdsserver.py), whose PostgreSQL side counts the transactions.
"""

import argparse
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

try:
    import psycopg2
except ImportError:     # python3-psycopg2; without it, pgsql pickup is n/a
    psycopg2 = None

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(TOP, "tests", "lib"))
import mssqlserver  # noqa: E402
import peers  # noqa: E402
import pgserver  # noqa: E402
import tdsserver  # noqa: E402

BUILD = os.environ.get("ADE_BUILD_DIR", os.path.join(TOP, "build"))
SUPERD = os.path.join(BUILD, "ade-superd")
CTL = os.path.join(BUILD, "ade-ctl")
NOOP = os.path.join(BUILD, "noop-engine")
PYTHON = "/usr/bin/python3"


ROOT = os.geteuid() == 0

# Rows per multi-row INSERT on SQL Server (whose VALUES takes 1000 at most).
MSSQL_CHUNK = 900

# Seconds from the first claim to the last completion of the bulk runs
# (those without run_options), on the database's clock.
BUSY_SQL = {
    "sqlite": "SELECT (julianday(max(completed_at)) -"
              " julianday(min(started_at))) * 86400 FROM runs"
              " WHERE run_options IS NULL",
    "pgsql": "SELECT extract(epoch FROM max(completed_at)"
             " - min(started_at)) FROM runs WHERE run_options IS NULL",
    "mssql": "SELECT DATEDIFF_BIG(millisecond, MIN(started_at),"
             " MAX(completed_at)) / 1000.0 FROM runs"
             " WHERE run_options IS NULL",
}

# Milliseconds from each bulk run's insertion to its claim.
PICKUP_SQL = {
    "sqlite": "SELECT (julianday(started_at) - julianday(created_at))"
              " * 86400000 FROM runs WHERE run_options IS NULL",
    "pgsql": "SELECT extract(epoch FROM started_at - created_at) * 1000"
             " FROM runs WHERE run_options IS NULL",
    "mssql": "SELECT DATEDIFF_BIG(millisecond, created_at, started_at)"
             " FROM runs WHERE run_options IS NULL",
}


class Deployment:
    """A data directory, worker.conf and database with one built run.

    server is the PgServer for pgsql, the MssqlServer for mssql, None for
    sqlite; close() drops a SQL Server database."""

    def __init__(self, root, backend, server=None, extra=""):
        self.root = root
        self.http = ""      # an [http] section for write_conf
        self.extra = extra
        if ROOT:
            # ade-superd never runs workers as root: the service user is
            # nobody, and it owns the benchmark's tree.
            os.chmod(root, 0o755)
            subprocess.run(["chown", "nobody:nogroup", root], check=True)
        engine = os.path.join(root, "engine-src")
        shutil.copytree(os.path.join(TOP, "contrib", "ade_engine"), engine,
                        ignore=shutil.ignore_patterns("*.egg-info",
                                                      "__pycache__"))
        if ROOT:
            subprocess.run(["chown", "-R", "nobody:nogroup", engine],
                           check=True)
        self.backend = backend
        self.pg = server if backend == "pgsql" else None
        self.ms = server if backend == "mssql" else None
        self.data = os.path.join(root, "data")
        self.conf = os.path.join(root, "worker.conf")
        self.dbname = None
        db = ""
        if backend == "pgsql":
            self.dbname = "bench_" + uuid.uuid4().hex[:8]
            server.create_database(self.dbname)
            db = server.conf_lines(self.dbname)
        elif backend == "mssql":
            self.dbname = "bench_" + uuid.uuid4().hex[:8]
            db = self.mssql_conf_lines()
            server.create_database(self.dbname)
        else:
            db = "backend = sqlite\n"
        try:
            self.prepare(engine, db, extra)
        except BaseException:
            self.close()
            raise

    def prepare(self, engine, db, extra):
        """worker.conf, the schema, one enqueued run and its environment."""
        self.base = ("[database]\n%s\n[worker]\ndata_dir = %s\n"
                     "engine_spec = %s\npython = %s\n"
                     "venv_args = --system-site-packages\n"
                     "pip_args = --no-index --no-build-isolation\n"
                     "engine_command = %s\nlog_level = info\n"
                     "poll_interval = 0.5\npoll_interval_max = 2\n%s"
                     % (db, self.data, engine, PYTHON, NOOP, extra))
        self.write_conf(1)
        self.ctl("db", "init")
        out = self.ctl("--json", "enqueue", "--workspace", "bench",
                       "--configuration", "noop", "--config-package",
                       os.path.join(TOP, "contrib", "sample-config"),
                       "--input", os.path.join(TOP, "contrib", "samples",
                                               "contacts.csv"),
                       "--option", "dry_run=true")
        self.first = __import__("json").loads(out)
        # Build the environment once; every run below reuses it.
        self.workers(1, exit_when_idle=True).wait()

    def mssql_conf_lines(self):
        """The [database] lines for this deployment's SQL Server database,
        with the password in a file only the service user can read."""
        secret = os.path.join(self.root, "mssql-password")
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.ms.password + "\n")
        if ROOT:
            subprocess.run(["chown", "nobody:nogroup", secret], check=True)
        return "".join("%s = %s\n" % kv for kv in
                       self.ms.settings(self.dbname, secret).items())

    def close(self):
        """Drops the SQL Server database (the workers must be gone)."""
        for con in ("pgcon", "mscon"):
            if getattr(self, con, None) is not None:
                getattr(self, con).close()
                setattr(self, con, None)
        if self.ms is None or self.dbname is None:
            return
        try:
            self.ms.drop_database(self.dbname)
        except mssqlserver.pymssql.Error as exc:
            print("  warning: cannot drop database %s: %s"
                  % (self.dbname, exc))

    def ctl(self, *args):
        return subprocess.run([CTL, "-c", self.conf] + list(args),
                              check=True, capture_output=True,
                              text=True).stdout

    def write_conf(self, workers):
        with open(self.conf, "w") as f:
            f.write(self.base + "\n[supervisor]\nworkers = %d\n%s%s"
                    % (workers, "user = nobody\ngroup = nogroup\n"
                       if ROOT else "", self.http))

    def workers(self, n, exit_when_idle, log=None):
        """One supervisor with n worker processes; its log goes to the
        file log when one is named."""
        self.write_conf(n)
        argv = [SUPERD, "-c", self.conf, "-f", "-d"]
        if exit_when_idle:
            argv.append("--exit-when-idle")
        err = open(log, "w") if log else subprocess.DEVNULL
        try:
            return Group([subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                           stderr=err)])
        finally:
            if log:
                err.close()

    def echo_statements(self):
        """From now on, workers log every statement they send (debug)."""
        self.base = self.base.replace("log_level = info",
                                      "log_level = debug")
        self.base = self.base.replace("[database]\n",
                                      "[database]\necho = yes\n", 1)

    def sql(self, statement, params=()):
        """The rows of one statement (or, on SQL Server, one batch)."""
        if self.backend == "mssql":
            return self.mssql(statement, params)
        if self.backend == "sqlite":
            con = sqlite3.connect(os.path.join(self.data, "db",
                                               "ade.sqlite"), timeout=30)
            try:
                cur = con.execute(statement, params)
                rows = cur.fetchall()
                con.commit()
                return rows
            finally:
                con.close()
        out = self.pg.psql(statement, self.dbname)
        return [tuple(line.split("|")) for line in out.splitlines()]

    def mssql(self, batch, params=()):
        """The rows of a T-SQL batch's last result set, through pymssql."""
        con = self.ms.connect(self.dbname)
        try:
            cur = con.cursor()
            if params:
                cur.execute(batch, params)
            else:
                cur.execute(batch)
            return cur.fetchall() if cur.description else []
        finally:
            con.close()

    def enqueue_bulk(self, n):
        """n queued runs for the configuration that is already built."""
        f = self.first
        if self.backend == "pgsql":
            self.sql(self.pg_enqueue_sql(n))
            return
        if self.backend == "mssql":
            self.enqueue_bulk_mssql(n)
            return
        con = sqlite3.connect(os.path.join(self.data, "db", "ade.sqlite"))
        doc = con.execute("SELECT workspace_id, original_filename,"
                          " byte_size, sha256, stored_uri, expires_at"
                          " FROM documents WHERE id = ?",
                          (f["document_id"],)).fetchone()
        run = con.execute("SELECT engine_spec, deps_digest FROM runs"
                          " WHERE id = ?", (f["run_id"],)).fetchone()
        with con:
            for _ in range(n):
                d = str(uuid.uuid4())
                con.execute("INSERT INTO documents (id, workspace_id,"
                            " original_filename, byte_size, sha256,"
                            " stored_uri, expires_at)"
                            " VALUES (?, ?, ?, ?, ?, ?, ?)", (d,) + doc)
                con.execute("INSERT INTO runs (id, configuration_id,"
                            " workspace_id, input_document_id,"
                            " engine_spec, deps_digest)"
                            " VALUES (?, ?, ?, ?, ?, ?)",
                            (str(uuid.uuid4()), f["configuration_id"],
                             doc[0], d) + run)
        con.close()

    def pg_enqueue_sql(self, n):
        """enqueue_bulk's statement on PostgreSQL."""
        f = self.first
        return ("WITH d AS (INSERT INTO documents (id, workspace_id,"
                " original_filename, byte_size, sha256, stored_uri,"
                " expires_at) SELECT gen_random_uuid(), workspace_id,"
                " original_filename, byte_size, sha256, stored_uri,"
                " expires_at FROM documents, generate_series(1, %d)"
                " WHERE id = '%s' RETURNING id, workspace_id)"
                " INSERT INTO runs (id, configuration_id, workspace_id,"
                " input_document_id, engine_spec, deps_digest)"
                " SELECT gen_random_uuid(), '%s', d.workspace_id, d.id,"
                " r.engine_spec, r.deps_digest FROM d, runs r"
                " WHERE r.id = '%s'" % (n, f["document_id"],
                                        f["configuration_id"],
                                        f["run_id"]))

    def enqueue_timed(self):
        """One queued run, and the wall-clock time at which the enqueuer
        saw it committed.  On PostgreSQL and SQL Server through a
        connection kept open, so that no login is counted."""
        if self.backend == "mssql":
            if getattr(self, "mscon", None) is None:
                self.mscon = self.ms.connect(self.dbname)
            self.mscon.cursor().execute(self.mssql_enqueue_batch(1))
            return time.time()
        if self.backend == "pgsql":
            if psycopg2 is None:
                self.enqueue_bulk(1)
                return None
            if getattr(self, "pgcon", None) is None:
                self.pgcon = psycopg2.connect(host=self.pg.socket_dir,
                                              dbname=self.dbname,
                                              user=self.pg.user)
                self.pgcon.autocommit = True
            with self.pgcon.cursor() as cur:
                cur.execute(self.pg_enqueue_sql(1))
            return time.time()
        self.enqueue_bulk(1)
        return time.time() if self.backend == "sqlite" else None

    def enqueue_bulk_mssql(self, n):
        """enqueue_bulk on SQL Server."""
        self.sql(self.mssql_enqueue_batch(n))

    def mssql_enqueue_batch(self, n):
        """n queued runs on SQL Server: one batch, one transaction, of
        multi-row INSERTs whose ids are made here.  No table variable or
        OUTPUT clause: Babelfish 4.2 mishandles them in a batch whose
        statements fire triggers (runs has one)."""
        f = self.first
        ids = [(str(uuid.uuid4()), str(uuid.uuid4())) for _ in range(n)]
        batch = ["SET XACT_ABORT ON; BEGIN TRANSACTION;"]
        for i in range(0, n, MSSQL_CHUNK):
            chunk = ids[i:i + MSSQL_CHUNK]
            batch.append(
                "INSERT INTO documents (id, workspace_id, original_filename,"
                " byte_size, sha256, stored_uri, expires_at)"
                " SELECT v.id, d.workspace_id, d.original_filename,"
                " d.byte_size, d.sha256, d.stored_uri, d.expires_at"
                " FROM (VALUES %s) AS v (id) CROSS JOIN documents d"
                " WHERE d.id = '%s';"
                % (", ".join("('%s')" % d for d, _ in chunk),
                   f["document_id"]))
            batch.append(
                "INSERT INTO runs (id, configuration_id, workspace_id,"
                " input_document_id, engine_spec, deps_digest)"
                " SELECT v.id, '%s', r.workspace_id, v.document_id,"
                " r.engine_spec, r.deps_digest"
                " FROM (VALUES %s) AS v (document_id, id) CROSS JOIN runs r"
                " WHERE r.id = '%s';"
                % (f["configuration_id"],
                   ", ".join("('%s', '%s')" % pair for pair in chunk),
                   f["run_id"]))
        batch.append("COMMIT TRANSACTION;")
        return " ".join(batch)

    def count(self, status):
        return int(self.sql("SELECT count(*) FROM runs WHERE status = '%s'"
                            % status)[0][0])


class Group:
    def __init__(self, procs):
        self.procs = procs

    def wait(self, timeout=600):
        for p in self.procs:
            p.wait(timeout=timeout)

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        self.wait(60)


def spawn_floor(n):
    """Seconds to spawn the engine n times with its stderr on a pipe."""
    start = time.monotonic()
    for _ in range(n):
        subprocess.run([NOOP, "--output-dir", "/nonexistent"],
                       stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


# The trees of finished measures, removed when the bench ends (see discard).
LEFT_TREES = []


def discard(dep, root):
    """Drops a deployment's SQL Server database; its tree goes at the end.

    Removing a tree of thousands of run directories just before the next
    measure would make that one pay for it on a file system that keeps
    freed inodes aside for a while: ext4 without a journal passes over
    every inode freed in the last minutes each time it allocates one, and
    a run allocates several."""
    try:
        if dep is not None:
            dep.close()
    finally:
        LEFT_TREES.append(root)


def remove_trees():
    for root in LEFT_TREES:
        shutil.rmtree(root, ignore_errors=True)
    del LEFT_TREES[:]


def throughput(backend, server, n, workers):
    root = tempfile.mkdtemp(prefix="ade-bench-")
    dep = None
    try:
        dep = Deployment(root, backend, server)
        dep.enqueue_bulk(n)
        dep.workers(workers, exit_when_idle=True).wait()
        done = dep.count("succeeded") - 1
        if done != n:
            print("  warning: %d of %d runs succeeded (%s)"
                  % (done, n, backend))
        # From the first claim to the last completion, on the database's
        # clock: the processes' start-up and idle exit are not counted.
        took = float(dep.sql(BUSY_SQL[backend])[0][0])
        return n / took
    finally:
        discard(dep, root)


PHASES = ("claim", "prepare", "spawn", "engine", "reap", "finalize")


def phases(backend, server, n):
    """Median milliseconds of each phase of a run, from the lines a worker
    logs at debug level for each run that succeeded, over n runs."""
    root = tempfile.mkdtemp(prefix="ade-bench-")
    dep = None
    try:
        dep = Deployment(root, backend, server)
        dep.base = dep.base.replace("log_level = info", "log_level = debug")
        dep.enqueue_bulk(n)
        log = os.path.join(root, "superd.log")
        dep.workers(1, exit_when_idle=True, log=log).wait()
        seen = {p: [] for p in PHASES}
        with open(log) as f:
            for line in f:
                if ": ms claim " not in line:
                    continue
                words = line.split(": ms ", 1)[1].split()
                for name, value in zip(words[::2], words[1::2]):
                    if name in seen:
                        seen[name].append(float(value))
        return {p: statistics.median(v) if v else None
                for p, v in seen.items()}
    finally:
        discard(dep, root)


def pg_statement_calls(pg, dbname):
    """Top-level statements PostgreSQL ran in one database since the last
    reset, BEGIN and COMMIT included, as pg_stat_statements counts them;
    None without the module."""
    try:
        return int(pg.psql(
            "SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s"
            " JOIN pg_database d ON d.oid = s.dbid"
            " WHERE d.datname = '%s'" % dbname))
    except subprocess.CalledProcessError:
        return None


def pg_statements_reset(pg):
    """Starts pg_stat_statements' count afresh; False without it."""
    try:
        pg.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        pg.psql("SELECT pg_stat_statements_reset()")
        return True
    except subprocess.CalledProcessError:
        return False


def statements_per_run(backend, server, n):
    """Statements (or SQL Server batches) and round trips one worker
    sends per run while it works through n queued runs, counted from its
    echo; the environment pass and the final idle looks are included.
    Third, on PostgreSQL, the statements the server ran for it per run
    (pg_stat_statements), or None."""
    root = tempfile.mkdtemp(prefix="ade-bench-")
    dep = None
    try:
        dep = Deployment(root, backend, server)
        dep.echo_statements()
        dep.enqueue_bulk(n)
        log = os.path.join(root, "superd.log")
        counted = backend == "pgsql" and pg_statements_reset(server)
        dep.workers(1, exit_when_idle=True, log=log).wait()
        calls = pg_statement_calls(server, dep.dbname) if counted else None
        return (sent_statements(log, "", "~", pipelined=True) / n,
                sent_statements(log, "", "~") / n,
                calls / n if calls is not None else None)
    finally:
        discard(dep, root)


def spawn_times(log):
    """Each run's engine spawn (seconds since 1970), from the debug line
    the worker logs when the run has succeeded."""
    spawned = {}
    with open(log) as f:
        for line in f:
            if ": ms claim " in line and " at " in line:
                run = line.split(" run ", 1)[1].split(":", 1)[0]
                spawned[run.lower()] = float(line.rsplit(" at ", 1)[1])
    return spawned


def percentiles(values):
    """p50 and p99 of values, or (None, None)."""
    if not values:
        return None, None
    values = sorted(values)
    return (statistics.median(values),
            values[min(len(values) - 1, int(len(values) * 0.99))])


def pickup(backend, server, samples, notify):
    """Milliseconds from a run's insertion to its claim (database clock),
    p50 and p99; then from its commit, as the enqueuer saw it, to the
    spawn of its engine (None where the commit time cannot be had)."""
    root = tempfile.mkdtemp(prefix="ade-bench-")
    extra = "notify = %s\n" % ("yes" if notify else "no")
    dep = None
    try:
        dep = Deployment(root, backend, server, extra)
        dep.base = dep.base.replace("log_level = info", "log_level = debug")
        log = os.path.join(root, "superd.log")
        group = dep.workers(1, exit_when_idle=False, log=log)
        time.sleep(3)   # let it become idle and its poll interval grow
        committed = []
        for _ in range(samples):
            committed.append(dep.enqueue_timed())
            time.sleep(0.3 + (uuid.uuid4().int % 400) / 1000.0)
        deadline = time.monotonic() + 60
        while dep.count("succeeded") < samples + 1 and \
                time.monotonic() < deadline:
            time.sleep(0.2)
        group.stop()
        lat = [float(r[0]) for r in dep.sql(PICKUP_SQL[backend])
               if r[0] not in (None, "")]
        # The runs in the order they were enqueued, one at a time.
        order = [str(r[0]).lower() for r in dep.sql(
            "SELECT id FROM runs WHERE run_options IS NULL"
            " ORDER BY created_at")]
        spawned = spawn_times(log)
        to_spawn = [(spawned[run] - at) * 1000.0
                    for run, at in zip(order, committed)
                    if at is not None and run in spawned]
        return percentiles(lat) + percentiles(to_spawn)
    finally:
        discard(dep, root)


def pg_transactions(pg, dbname):
    """Transactions committed or rolled back in one PostgreSQL database,
    as its statistics say (pg is a PgServer or a TdsServer)."""
    return int(pg.psql("SELECT xact_commit + xact_rollback"
                       " FROM pg_stat_database WHERE datname = '%s'"
                       % dbname))


def sent_statements(log, since, until, pipelined=False):
    """Statements (batches or RPCs) the workers sent between two wall-clock
    times, counted from their echo lines in the supervisor's log: each
    round trip's first ("sql:"), and with pipelined those that went in
    the same round trip ("sql+:") too."""
    n = 0
    with open(log) as f:
        for line in f:
            parts = line.split(" ", 4)
            if len(parts) < 5 or "] worker " not in line or not (
                    " sql: " in line or pipelined and " sql+: " in line):
                continue
            if since <= parts[0] < until:
                n += 1
    return n


def utc_stamp():
    """Now as the log writes it (ISO 8601, UTC, milliseconds)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + \
        ".%03dZ" % int((t % 1) * 1000)


def idle_statements(backend, server, n, seconds, notify, transactions):
    """Per second, the statements n idle workers send (counted from their
    own echo of each one) and, when transactions(dep) can read the
    server's count for the deployment, the transactions the server
    records; None where there is no such count."""
    root = tempfile.mkdtemp(prefix="ade-bench-")
    extra = "notify = %s\n" % ("yes" if notify else "no")
    dep = None
    try:
        dep = Deployment(root, backend, server, extra)
        dep.echo_statements()
        # The HTTP endpoint is on and nobody asks it: it adds nothing.
        dep.http = "[http]\nlisten = 127.0.0.1:%d\n" % free_port()
        log = os.path.join(root, "superd.log")
        group = dep.workers(n, exit_when_idle=False, log=log)
        # An idle backend reports its counters only after ten idle
        # seconds, so start-up statements are flushed before the window
        # opens; stopping the workers flushes the window's.
        time.sleep(12)
        before = transactions(dep) if transactions else None
        since = utc_stamp()
        time.sleep(seconds)
        until = utc_stamp()
        group.stop()
        time.sleep(1.5)
        sent = sent_statements(log, since, until) / seconds
        if before is None:
            return sent, None
        return sent, (transactions(dep) - before) / seconds
    finally:
        discard(dep, root)


def rss_kib(pid, field="Rss"):
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_by_title(pid):
    """(pid, process title) of each child of pid."""
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(pid)],
                         capture_output=True, text=True).stdout
    return [(int(p), t) for p, _, t in
            (line.strip().partition(" ") for line in out.splitlines())]


def supervisor_figures():
    """RSS of the supervisor and of idle workers; death-to-claim time."""
    root = tempfile.mkdtemp(prefix="ade-bench-")
    try:
        dep = Deployment(root, "sqlite", None)
        dep.write_conf(2)
        # As in production: a daemon (the pidfile says which process).
        pidfile = os.path.join(root, "superd.pid")
        port = free_port()
        with open(dep.conf, "a") as f:
            f.write("pidfile = %s\n[http]\nlisten = 127.0.0.1:%d\n"
                    % (pidfile, port))
        dep.base += ""
        subprocess.run([SUPERD, "-c", dep.conf], check=True)
        pid = int(open(pidfile).read())
        time.sleep(3)
        kids = children_by_title(pid)
        sup_rss = (rss_kib(pid), rss_kib(pid, "Pss"))
        workers = [p for p, title in kids if ": worker " in title]
        worker_rss = max((rss_kib(p), rss_kib(p, "Pss")) for p in workers) \
            if workers else (0, 0)
        http = [p for p, title in kids if title.endswith(": http")]
        http_rss = {}
        if http:
            http_rss["idle"] = (rss_kib(http[0]), rss_kib(http[0], "Pss"))
            for _ in range(200):
                for path in ("/metrics", "/ready", "/health"):
                    with urllib.request.urlopen("http://127.0.0.1:%d%s"
                                                % (port, path)) as r:
                        r.read()
            http_rss["scraped"] = (rss_kib(http[0]),
                                   rss_kib(http[0], "Pss"))

        class Sup:
            def __init__(self, pid):
                self.pid = pid

            def stop(self):
                os.kill(self.pid, signal.SIGTERM)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    try:
                        os.kill(self.pid, 0)
                    except ProcessLookupError:
                        return
                    time.sleep(0.1)
        sup = Sup(pid)
        group = sup
        # A backlog of work, one worker killed: how long until its
        # replacement claims a run?
        # In a directory of its own: the engine's sandbox opens the
        # directory of the program engine_command names, and root holds
        # the daemon's own files.
        os.mkdir(os.path.join(root, "bin"), 0o755)
        slow = os.path.join(root, "bin", "slow-engine")
        with open(slow, "w") as f:
            f.write("#!/bin/sh\nsleep 5\n")
        os.chmod(slow, 0o755)
        dep.base = dep.base.replace("engine_command = %s" % NOOP,
                                    "engine_command = %s" % slow)
        dep.write_conf(2)
        with open(dep.conf, "a") as f:
            f.write("pidfile = %s\n" % pidfile)
        os.kill(sup.pid, signal.SIGHUP)
        time.sleep(2)
        dep.enqueue_bulk(20)
        time.sleep(1.5)
        kids = [int(p) for p in subprocess.run(
            ["pgrep", "-P", str(sup.pid)], capture_output=True,
            text=True).stdout.split()]
        busy = [p for p in kids if subprocess.run(
            ["pgrep", "-P", str(p)], capture_output=True).returncode == 0]
        victim = busy[0]
        killed = time.time()
        os.kill(victim, signal.SIGKILL)
        claim = None
        deadline = time.monotonic() + 30
        while claim is None and time.monotonic() < deadline:
            rows = dep.sql("SELECT min(julianday(started_at)) FROM runs"
                           " WHERE started_at > strftime('%Y-%m-%dT%H:%M:%fZ',"
                           " ?, 'unixepoch')", (killed,))
            if rows and rows[0][0] is not None:
                claim = (rows[0][0] - 2440587.5) * 86400.0
            time.sleep(0.05)
        group.stop()
        return sup_rss, worker_rss, http_rss, \
            (claim - killed) if claim else None
    finally:
        shutil.rmtree(root, ignore_errors=True)


def mssql_server():
    """The SQL Server that ADE_TEST_MSSQL_* name and the first line of its
    @@VERSION, or None and why there is none."""
    why = mssqlserver.unavailable()
    if why:
        return None, why
    ms = mssqlserver.MssqlServer()
    con = ms.connect()     # a wrong setting fails here, in the server's words
    try:
        cur = con.cursor()
        cur.execute("SELECT @@VERSION")
        return ms, cur.fetchone()[0].strip().splitlines()[0]
    finally:
        con.close()


def babelfish_transactions():
    """transactions(dep) for idle_statements on the suite's own Babelfish
    (ADE_TEST_MSSQL_SERVER_DIR), or None.  Its T-SQL databases all live in
    one PostgreSQL database, whose statistics are read from another (the
    reading is not counted)."""
    directory = os.environ.get("ADE_TEST_MSSQL_SERVER_DIR")
    if not directory:
        return None
    tds = tdsserver.TdsServer(directory)
    return lambda dep: pg_transactions(tds, tdsserver.PG_DATABASE)


def fmt(spec, value):
    """value formatted by spec, or n/a when there is none."""
    return "n/a" if value is None else spec % value


BACKENDS = ("sqlite", "pgsql", "mssql")
SECTIONS = ("supervisor", "throughput", "statements", "phases", "pickup",
            "idle")


def names(allowed):
    """An argparse type: a comma-separated list of some of allowed."""
    def parse(text):
        got = [w.strip() for w in text.split(",") if w.strip()]
        bad = [w for w in got if w not in allowed]
        if bad or not got:
            raise argparse.ArgumentTypeError(
                "%s: choose from %s" % (",".join(bad) or "(none)",
                                        ",".join(allowed)))
        return got
    return parse


def counts(text):
    """An argparse type: a comma-separated list of positive integers."""
    try:
        got = [int(w) for w in text.split(",")]
    except ValueError:
        got = []
    if not got or min(got) < 1:
        raise argparse.ArgumentTypeError("%s: not a list of counts" % text)
    return got


def print_supervisor():
    sup_rss, worker_rss, http_rss, replaced = supervisor_figures()
    print("== supervisor (SQLite, 2 workers)")
    print("%-34s %6d KiB (PSS %d)   target: under 4096" % (
        "supervisor RSS", sup_rss[0], sup_rss[1]))
    print("%-34s %6d KiB (PSS %d)   target: under 8192" % (
        "idle worker RSS", worker_rss[0], worker_rss[1]))
    for when, label in (("idle", "http endpoint, never asked"),
                        ("scraped", "http endpoint, 600 requests")):
        if when in http_rss:
            print("%-34s %6d KiB (PSS %d)   target: PSS under 2048" % (
                label, http_rss[when][0], http_rss[when][1]))
    print("%-34s %8s       (restart floor: 1.0 s)" % (
        "worker death to its next claim",
        "%.2f s" % replaced if replaced is not None else "n/a"))
    print()


def print_throughput(args, servers):
    floor = args.runs / spawn_floor(args.runs)
    print("== throughput: %d runs with the no-op engine (runs/s)"
          % args.runs)
    no_celery = peers.missing()
    print("%-10s %10s %10s %10s %10s   %s" % (
        "workers", "sqlite", "pgsql", "mssql", "celery", "spawn floor"))
    for w in args.workers:
        got = {b: throughput(b, servers[b], args.runs, w)
               for b in BACKENDS if b in servers}
        c = None if no_celery else peers.celery_throughput(
            NOOP, args.runs, w, PYTHON)
        print("%-10d %10s %10s %10s %10s   %.0f spawns/s"
              % (w, *(fmt("%.0f", got.get(b)) for b in BACKENDS),
                 fmt("%.0f", c), floor))
    print("(celery: Celery's prefork pool with a Redis broker running the"
          " same engine once a job%s)" % (
              "" if not no_celery else "; n/a: " + no_celery))
    print()


def print_statements(args, servers):
    print("== statements per run, 1 worker, %d runs" % args.samples)
    per = {b: statements_per_run(b, servers[b], args.samples)
           if b in servers else (None,) * 3 for b in BACKENDS}
    print("%-12s %10s %10s %10s" % ("", *BACKENDS))
    for i, label in enumerate(("statements", "round trips",
                               "server count")):
        print("%-12s %10s %10s %10s" % (
            label, *(fmt("%.1f", per[b][i]) for b in BACKENDS)))
    print("(statements and round trips from the worker's echo; SQLite's"
          " are calls into the\n library; server count: what"
          " PostgreSQL's pg_stat_statements saw, BEGIN and\n COMMIT"
          " included, the first connection's set-up spread over the"
          " runs)")
    print()


def print_phases(args, servers):
    print("== where a run's time goes, 1 worker, median of %d runs (ms)"
          % args.samples)
    cols = {b: phases(b, servers[b], args.samples) if b in servers else {}
            for b in BACKENDS}
    print("%-12s %10s %10s %10s" % ("", *BACKENDS))
    for p in PHASES:
        print("%-12s %10s %10s %10s" % (p, *(
            fmt("%.2f", cols[b].get(p)) for b in BACKENDS)))
    print()


def print_pickup(args, servers):
    print("== pickup latency of a new run on an idle worker (ms)")
    print("%-22s %10s %10s %10s %10s" % ("", "claim p50", "p99",
                                         "spawn p50", "p99"))
    for label, backend, notify in (("pgsql NOTIFY", "pgsql", True),
                                   ("pgsql polling", "pgsql", False),
                                   ("mssql wait", "mssql", True),
                                   ("mssql polling", "mssql", False),
                                   ("sqlite watch", "sqlite", True),
                                   ("sqlite polling", "sqlite", False)):
        got = (None,) * 4
        if backend in servers:
            got = pickup(backend, servers[backend], args.samples, notify)
        print("%-22s %10s %10s %10s %10s" % (
            label, *(fmt("%.1f", v) for v in got)))
    print("(claim: from the INSERT to the claim, on the database's"
          " clock; spawn: from the\n commit, as the enqueuer saw it,"
          " to the engine's spawn)")
    print()


def print_idle(servers):
    print("== statements per second of 4 idle workers"
          " (HTTP endpoint on, not asked)")
    print("%-22s %10s %12s" % ("", "sent", "server xacts"))
    rows = []
    if "pgsql" in servers:
        pg = servers["pgsql"]
        count = lambda dep: pg_transactions(pg, dep.dbname)  # noqa: E731
        rows.append(("pgsql NOTIFY", "pgsql", True, count))
        rows.append(("pgsql polling", "pgsql", False, count))
    if "mssql" in servers:
        rows.append(("mssql wait", "mssql", True, babelfish_transactions()))
        rows.append(("mssql polling", "mssql", False,
                     babelfish_transactions()))
    if "sqlite" in servers:
        rows.append(("sqlite watch", "sqlite", True, None))
        rows.append(("sqlite polling", "sqlite", False, None))
    for label, backend, notify, count in rows:
        sent, xacts = idle_statements(backend, servers[backend], 4, 20,
                                      notify, count)
        print("%-22s %10.1f %12s" % (label, sent, fmt("%.1f", xacts)))
    if "mssql" in servers:
        print("(sent: statements the workers send, from their echo;"
              " server xacts on Babelfish:\n one sp_executesql call"
              " counts as about six PostgreSQL transactions)")
    print()


def main():
    ap = argparse.ArgumentParser(
        description="Figures side by side; make bench BENCH_ARGS=...")
    ap.add_argument("--runs", type=int, default=2000,
                    help="queued runs per throughput measure")
    ap.add_argument("--samples", type=int, default=40,
                    help="runs per statement, phase and pickup measure")
    ap.add_argument("--backends", type=names(BACKENDS),
                    default=list(BACKENDS),
                    help="comma-separated, of: " + ",".join(BACKENDS))
    ap.add_argument("--workers", type=counts, default=[1, 2, 4],
                    help="comma-separated worker counts for throughput")
    ap.add_argument("--only", type=names(SECTIONS), default=list(SECTIONS),
                    help="comma-separated, of: " + ",".join(SECTIONS))
    args = ap.parse_args()
    for exe in (SUPERD, CTL, NOOP):
        if not os.access(exe, os.X_OK):
            sys.exit("missing %s: run make first" % exe)
    servers = {}
    if "sqlite" in args.backends:
        servers["sqlite"] = None
    ms = None
    if "mssql" in args.backends:
        ms, version = mssql_server()
        if ms is not None:
            servers["mssql"] = ms
            print("== mssql: %s at %s:%d" % (version, ms.host, ms.port))
        else:
            print("== mssql: n/a (%s)" % version)
        print()
    pg = None
    if "pgsql" in args.backends:
        # Durable as a production server is (the suite's server is not):
        # each commit waits for its WAL to reach the disk.
        pg = pgserver.PgServer(settings={
            "fsync": "on", "synchronous_commit": "on",
            "full_page_writes": "on",
            "shared_preload_libraries": "pg_stat_statements",
            "pg_stat_statements.track": "top"}).start()
        servers["pgsql"] = pg
    try:
        if "supervisor" in args.only:
            print_supervisor()
        if "throughput" in args.only:
            print_throughput(args, servers)
        if "statements" in args.only:
            print_statements(args, servers)
        if "phases" in args.only:
            print_phases(args, servers)
        if "pickup" in args.only:
            print_pickup(args, servers)
        if "idle" in args.only:
            print_idle(servers)
    finally:
        if pg is not None:
            pg.stop()
        if ms is not None:
            ms.drop_all()
        remove_trees()


if __name__ == "__main__":
    main()
