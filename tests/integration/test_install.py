"""make install into a DESTDIR: the programs, the sample configuration, the
manual pages and the service files all name the paths of the install, and
the installed init script drives the installed daemon: start, status,
reload, stop."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from adetest import REPO, clean_env, pid_alive, wait_until

# What each install must name: the configuration file, the default
# data_dir and the daemon.  prefix=/usr is a system install (README),
# with the configuration in /etc and the state in /var; any other prefix
# keeps autoconf's $(prefix)/etc and $(prefix)/var.
LAYOUTS = {
    "/usr": {"conf": "/etc/ade/worker.conf", "data": "/var/lib/ade",
             "daemon": "/usr/sbin/ade-superd", "ctl": "/usr/bin/ade-ctl",
             "etc": "/etc", "man": "/usr/share/man",
             "units": "/usr/lib/systemd/system"},
    "/opt/ade": {"conf": "/opt/ade/etc/ade/worker.conf",
                 "data": "/opt/ade/var/lib/ade",
                 "daemon": "/opt/ade/sbin/ade-superd", "ctl": "/opt/ade/bin/ade-ctl",
                 "etc": "/opt/ade/etc", "man": "/opt/ade/share/man",
                 "units": "/opt/ade/lib/systemd/system"},
}

# Every mention of a configuration file, a data directory or the daemon.
MENTIONS = {
    "conf": re.compile(r"/[\w/.-]*/ade/worker\.conf(?![\w.-])"),
    "data": re.compile(r"/[\w/.-]*/lib/ade(?![\w.-])"),
    "daemon": re.compile(r"/[\w/.-]*/ade-superd(?![\w.-])"),
}


@pytest.fixture(scope="module")
def install(tmp_path_factory):
    """install(prefix) runs "make install prefix=PREFIX" into a DESTDIR
    and returns the DESTDIR.  It builds in a copy of the checkout's build
    directory, so that only what names an installation path is compiled
    again and the build the other tests use is left alone."""
    staged = {}

    def run(prefix: str) -> Path:
        if prefix not in staged:
            top = tmp_path_factory.mktemp("install")
            build = top / "build"
            if (REPO / "build").is_dir():
                shutil.copytree(REPO / "build", build, symlinks=True,
                                ignore=shutil.ignore_patterns("tests", "install"))
            stage = top / "stage"
            subprocess.run(["make", "-s", "install", f"B={build}", f"DESTDIR={stage}",
                            f"prefix={prefix}"],
                           cwd=REPO, check=True, capture_output=True, timeout=600)
            staged[prefix] = stage
        return staged[prefix]
    return run


def rooted(stage: Path, path: str) -> Path:
    return stage / path.lstrip("/")


def compiled_in(binary: Path, suffix: bytes) -> set[str]:
    """The strings in a program that end with suffix."""
    data = binary.read_bytes()
    found = re.findall(rb"[^\0]*" + re.escape(suffix) + rb"(?=\0)", data)
    return {s.rsplit(b"\0", 1)[-1].decode() for s in found}


@pytest.mark.parametrize("prefix", sorted(LAYOUTS))
def test_every_installed_file_names_the_paths_of_the_install(install, prefix):
    layout = LAYOUTS[prefix]
    stage = install(prefix)
    daemon, ctl = rooted(stage, layout["daemon"]), rooted(stage, layout["ctl"])
    env = clean_env()

    # The programs: the configuration file ade-superd reads by default,
    # the data_dir default, and the strings compiled into both.
    usage = subprocess.run([daemon, "--help"], env=env, capture_output=True,
                           text=True, timeout=30)
    assert f"(default {layout['conf']})" in usage.stdout
    keys = subprocess.run([ctl, "config", "keys"], env=env, capture_output=True,
                          text=True, timeout=30, check=True).stdout
    defaults = {tuple(line.split("\t")[:2]): line.split("\t")[3]
                for line in keys.splitlines()}
    assert defaults[("worker", "data_dir")] == layout["data"]
    for program in (daemon, ctl):
        assert compiled_in(program, b"/ade/worker.conf") == {layout["conf"]}, program
        assert compiled_in(program, b"/lib/ade") == {layout["data"]}, program

    # The files installed beside them, and what each must name.
    files = {
        rooted(stage, layout["etc"]) / "ade/worker.conf.sample": ("conf", "data"),
        rooted(stage, layout["man"]) / "man5/ade-worker.conf.5": ("conf", "data"),
        rooted(stage, layout["man"]) / "man8/ade-superd.8": ("conf",),
        rooted(stage, layout["man"]) / "man8/ade-ctl.8": ("conf",),
        rooted(stage, layout["etc"]) / "init.d/ade-superd": ("conf", "data", "daemon"),
        rooted(stage, layout["units"]) / "ade-superd.service": ("conf", "data", "daemon"),
    }
    for path, named in files.items():
        text = path.read_text()
        for what, pattern in MENTIONS.items():
            # Other paths that end in ade-superd are the installed files'
            # own names (init.d/ade-superd, /etc/default/ade-superd).
            mentions = {m for m in pattern.findall(text)
                        if what != "daemon" or "sbin" in m}
            if what in named:
                assert mentions == {layout[what]}, (path, what)
            else:
                assert mentions <= {layout[what]}, (path, what)
        assert "LOCALSTATEDIR" not in text, path


@pytest.mark.backends("sqlite")      # about installation, not the database
def test_installed_init_script_starts_reloads_and_stops_the_daemon(deploy, install):
    stage = install("/usr")
    for path in ("usr/sbin/ade-superd", "usr/bin/ade-ctl", "etc/init.d/ade-superd",
                 "etc/ade/worker.conf.sample", "usr/share/man/man8/ade-superd.8",
                 "usr/share/man/man8/ade-ctl.8", "usr/share/man/man5/ade-worker.conf.5",
                 "usr/lib/systemd/system/ade-superd.service",
                 "etc/logrotate.d/ade-superd"):
        assert (stage / path).is_file(), path

    dep = deploy()
    pidfile = dep.root / "run" / "ade-superd.pid"
    log = dep.root / "superd.log"
    dep.configure(**{"supervisor.pidfile": pidfile, "supervisor.log_file": log})
    env = dict(os.environ, DAEMON=str(stage / "usr/sbin/ade-superd"),
               CONFIG=str(dep.conf_path), PIDFILE=str(pidfile),
               RUNDIR=str(pidfile.parent), DEFAULTS="/nonexistent",
               SERVICE_USER="nobody" if os.geteuid() == 0 else str(os.getuid()))
    script = str(stage / "etc/init.d/ade-superd")

    def service(action):
        return subprocess.run(["sh", script, action], env=env, capture_output=True,
                              text=True, timeout=120)

    assert service("status").returncode == 3
    assert service("start").returncode == 0
    pid = int(pidfile.read_text())
    assert pid_alive(pid)
    status = service("status")
    assert status.returncode == 0 and str(pid) in status.stdout
    assert "already running" in service("start").stdout
    assert service("reload").returncode == 0
    wait_until(lambda: "configuration reloaded" in log.read_text(), 20, "the reload")
    assert int(pidfile.read_text()) == pid
    assert service("stop").returncode == 0
    assert not pid_alive(pid) and not pidfile.exists()
    assert service("status").returncode == 3


def test_init_script_says_why_when_the_daemon_is_missing(install, tmp_path):
    script = install("/usr") / "etc/init.d/ade-superd"
    missing = tmp_path / "sbin" / "ade-superd"
    env = dict(os.environ, DAEMON=str(missing), DEFAULTS="/nonexistent")
    for action in ("start", "status"):
        res = subprocess.run(["sh", script, action], env=env, capture_output=True,
                             text=True, timeout=30)
        assert res.returncode == 5      # LSB: program is not installed
        assert res.stdout == ""
        assert res.stderr.splitlines() == [
            f"ade-superd: {missing} is not installed or not executable"]
