"""The SQL Server (or Babelfish) the test suite is pointed at, if any.

Nothing is started here: the server is named by the environment,

    ADE_TEST_MSSQL_HOST       host name or address (required)
    ADE_TEST_MSSQL_PORT       TCP port (default 1433)
    ADE_TEST_MSSQL_USER       a login allowed to create databases and to
                              KILL sessions (sa, say)
    ADE_TEST_MSSQL_PASSWORD   its password
    ADE_TEST_MSSQL_DATABASE   a scratch database for the live unit test of
                              tests/unit/test_mssql.c (not used here)

and every test gets a database of its own, created from master and
dropped here.
The connections of the tests themselves go through pymssql (Debian:
python3-pymssql), which speaks TDS through FreeTDS like the daemon.
"""

import os
import time

try:
    import pymssql
except ImportError:  # reported by unavailable()
    pymssql = None

# The tables of a deployment, parents first, so that rows can be copied
# into a new database table by table.
TABLES = ("workspaces", "configurations", "documents", "document_events", "runs",
          "environments", "run_metrics", "run_fields", "run_table_columns",
          "worker_leases")


def unavailable():
    """Why the mssql cases cannot run here, or None."""
    if not os.environ.get("ADE_TEST_MSSQL_HOST"):
        return "no server named (set ADE_TEST_MSSQL_HOST, _PORT, _USER, _PASSWORD)"
    if pymssql is None:
        return "pymssql is not installed for this Python (Debian package: python3-pymssql)"
    return None


def quote(name):
    """A bracket-quoted identifier."""
    return "[" + name.replace("]", "]]") + "]"


class MssqlServer:
    def __init__(self):
        env = os.environ
        self.host = env["ADE_TEST_MSSQL_HOST"]
        self.port = int(env.get("ADE_TEST_MSSQL_PORT") or 1433)
        self.user = env.get("ADE_TEST_MSSQL_USER", "")
        self.password = env.get("ADE_TEST_MSSQL_PASSWORD", "")
        self.admin_db = "master"
        self.created = set()

    def connect(self, database=None, autocommit=True):
        return pymssql.connect(server=self.host, port=str(self.port), user=self.user,
                               password=self.password, database=database or self.admin_db,
                               autocommit=autocommit,
                               # pymssql 2.2 knows TDS up to 7.3, enough for DATETIMEOFFSET
                               tds_version="7.3",
                               appname="adetest", login_timeout=15, timeout=120)

    def admin(self, sql):
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql)
        finally:
            conn.close()

    def is_babelfish(self) -> bool:
        """Whether the server is Babelfish for PostgreSQL, which ignores table
        hints (UPDLOCK, READPAST) among other differences."""
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute("SELECT @@VERSION")
            return "Babelfish" in cur.fetchone()[0]
        finally:
            conn.close()

    def check(self):
        """Logs in once, so that a wrong setting fails with the server's words."""
        conn = self.connect()
        conn.close()

    def create_database(self, name):
        self.admin(f"CREATE DATABASE {quote(name)}")
        self.created.add(name)

    def drop_database(self, name):
        """Drops a database, ending the sessions still on it.  SQL Server
        does that with SINGLE_USER WITH ROLLBACK IMMEDIATE; Babelfish has no
        SINGLE_USER and refuses the drop while any session (a daemon's
        worker the server has not yet seen go, say) still uses the
        database, so those sessions are KILLed until the drop succeeds."""
        try:
            self.admin(f"ALTER DATABASE {quote(name)} SET SINGLE_USER"
                       " WITH ROLLBACK IMMEDIATE")
        except pymssql.Error:
            pass  # not on Babelfish; the loop below ends the sessions
        for attempt in range(60):
            try:
                self.admin(f"DROP DATABASE IF EXISTS {quote(name)}")
                break
            except pymssql.Error:
                if attempt == 59:
                    raise
                self.kill_sessions(name)
                time.sleep(0.5)
        self.created.discard(name)

    def kill_sessions(self, name):
        """KILLs every other session whose current database is name."""
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute("SELECT session_id FROM sys.dm_exec_sessions"
                        " WHERE database_id = DB_ID(%s) AND session_id <> @@SPID",
                        (name,))
            for (spid,) in cur.fetchall():
                try:
                    cur.execute(f"KILL {int(spid)}")
                except pymssql.Error:
                    pass  # gone meanwhile
        finally:
            conn.close()

    def copy_rows(self, source, dest):
        """Copies every row of a deployment's tables from database source to
        dest (whose schema ade-ctl db init made), keeping ids and identity
        values, with dest's triggers off meanwhile.  Tables are copied
        parents first, so foreign keys stay on: Babelfish cannot switch
        them off (ALTER TABLE ... NOCHECK is not supported there, and
        DISABLE TRIGGER ALL reaches its internal foreign key triggers),
        so triggers are switched off one by one, by name."""
        conn = self.connect(dest)
        try:
            cur = conn.cursor()
            for table in TABLES:
                cur.execute("SELECT c.name, c.is_identity FROM sys.columns c"
                            " WHERE c.object_id = OBJECT_ID(%s) ORDER BY c.column_id",
                            (table,))
                cols = cur.fetchall()
                if not cols:
                    continue
                cur.execute("SELECT name FROM sys.triggers WHERE parent_id = OBJECT_ID(%s)",
                            (table,))
                triggers = [quote(r[0]) for r in cur.fetchall()]
                names = ", ".join(quote(c[0]) for c in cols)
                identity = any(c[1] for c in cols)
                t = quote(table)
                batch = [f"DISABLE TRIGGER {name} ON {t};" for name in triggers]
                if identity:
                    batch.append(f"SET IDENTITY_INSERT {t} ON;")
                batch.append(f"INSERT INTO {t} ({names}) SELECT {names}"
                             f" FROM {quote(source)}.dbo.{t};")
                if identity:
                    batch.append(f"SET IDENTITY_INSERT {t} OFF;")
                batch += [f"ENABLE TRIGGER {name} ON {t};" for name in triggers]
                cur.execute(" ".join(batch))
        finally:
            conn.close()

    def settings(self, database, password_file):
        """The [database] section of a worker.conf for one database."""
        return {"backend": "mssql", "host": self.host, "port": str(self.port),
                "database": database, "user": self.user,
                "password_file": str(password_file), "login_timeout": "15",
                "query_timeout": "60"}

    def drop_all(self):
        for name in sorted(self.created):
            try:
                self.drop_database(name)
            except Exception:  # noqa: BLE001 - best effort at the end of a session
                pass
