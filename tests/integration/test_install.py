"""make install into a DESTDIR, then the installed init script drives the
installed daemon: start, status, reload, stop."""

from __future__ import annotations

import os
import subprocess

import pytest

from adetest import REPO, pid_alive, wait_until


@pytest.mark.backends("sqlite")      # about installation, not the database
def test_installed_init_script_starts_reloads_and_stops_the_daemon(deploy, tmp_path):
    stage = tmp_path / "stage"
    subprocess.run(["make", "-s", "install", f"DESTDIR={stage}", "prefix=/usr",
                    "sysconfdir=/etc", "mandir=/usr/share/man"],
                   cwd=REPO, check=True, capture_output=True)
    for path in ("usr/sbin/ade-superd", "usr/bin/ade-ctl", "etc/init.d/ade-superd",
                 "etc/ade/worker.conf.sample", "usr/share/man/man8/ade-superd.8",
                 "usr/share/man/man5/ade-worker.conf.5",
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
