"""A throw-away PostgreSQL server for the test suite and the benchmarks.

The server lives in a temporary directory, listens only on a Unix socket
in that directory (no TCP port), runs with fsync off, and is stopped and
removed by stop() -- callers put that in a finally block.  initdb refuses
to run as root, so as root the server runs as the "postgres" user that
Debian's postgresql package creates.
"""

import glob
import os
import pwd
import shutil
import subprocess
import tempfile


def _bindir():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return os.path.dirname(found[-1])
    path = shutil.which("pg_ctl")
    return os.path.dirname(path) if path else None


def available():
    return _bindir() is not None


class PgServer:
    def __init__(self, settings=None):
        """settings: more server settings (name: value), e.g. libraries
        to preload."""
        self.settings = dict(settings or {})
        self.bindir = _bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found "
                               "(Debian package: postgresql)")
        self.dir = tempfile.mkdtemp(prefix="ade-pg-")
        self.data = os.path.join(self.dir, "data")
        self.socket_dir = self.dir
        self.user = "postgres"
        self._as = []
        self.started = False
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            os.chmod(self.dir, 0o755)
            self._as = ["runuser", "-u", "postgres", "--"]
        else:
            self.user = pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, *argv, **kw):
        return subprocess.run(self._as + list(argv), check=True,
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, **kw)

    def start(self):
        self._run(os.path.join(self.bindir, "initdb"), "-D", self.data,
                  "-A", "trust", "-U", self.user, "-E", "UTF8",
                  "--locale=C.UTF-8")
        self.resume()
        return self

    def resume(self):
        """Starts the server on the cluster it has (after halt)."""
        opts = ("-c listen_addresses='' -c unix_socket_directories=%s "
                "-c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=200"
                % self.socket_dir)
        opts += "".join(" -c %s=%s" % kv for kv in self.settings.items())
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data,
                  "-o", opts, "-l", os.path.join(self.dir, "server.log"),
                  "-w", "-t", "60", "start")
        self.started = True

    def halt(self):
        """Stops the server and keeps its cluster for resume."""
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data,
                  "-m", "fast", "-w", "-t", "60", "stop")

    def restart(self):
        """Stops and starts the server; its log stays server.log (pg_ctl's
        own restart would send it nowhere)."""
        self.halt()
        self.resume()

    def stop(self):
        try:
            if self.started:
                subprocess.run(self._as + [
                    os.path.join(self.bindir, "pg_ctl"), "-D", self.data,
                    "-m", "immediate", "-w", "-t", "30", "stop"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            self.started = False
            shutil.rmtree(self.dir, ignore_errors=True)

    def psql(self, sql, db="postgres"):
        out = subprocess.run(
            ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
             "-h", self.socket_dir, "-U", self.user, "-d", db, "-c", sql],
            check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def create_database(self, name):
        self.psql('CREATE DATABASE "%s"' % name)
        return name

    def conf_lines(self, db):
        """The [database] lines of a worker.conf that point at db."""
        return ("backend = pgsql\nhost = %s\ndatabase = %s\nuser = %s\n"
                % (self.socket_dir, db, self.user))
