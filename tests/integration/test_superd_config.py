"""Start-up checks of ade-superd: the configuration file and the schema."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
import signal
import subprocess
from pathlib import Path

import pytest

from adetest import CTL, SERVICE_USER, SUPERD, clean_env, pid_alive, share, wait_until

REQUIRED_TABLES = ["workspaces", "configurations", "documents", "runs", "environments",
                   "run_metrics", "run_fields", "run_table_columns", "worker_leases"]


# A data directory that exists, with the SQLite database's directory in it,
# for files that are not about them.
DATA_DIR = Path(tempfile.mkdtemp(prefix="ade-conf-"))
atexit.register(shutil.rmtree, DATA_DIR, True)
(DATA_DIR / "db").mkdir()
EX_CONFIG = 78


def check(path, env=None, service_user=True) -> subprocess.CompletedProcess:
    """ade-superd -n; started as root, it must be told whom to run as (unless
    the file says it)."""
    env = dict(env or {})
    if SERVICE_USER is not None and service_user:
        env.setdefault("ADE_SUPERD_USER", SERVICE_USER[0])
    return subprocess.run([str(SUPERD), "-n", "-c", str(path)], capture_output=True, text=True,
                          env=clean_env(env), timeout=30)


def error_lines(result, path) -> dict[int, str]:
    """{line number: message} of the "FILE:LINE: message" lines on stderr."""
    found = {}
    for line in result.stderr.splitlines():
        m = re.fullmatch(re.escape(str(path)) + r":(\d+): (.+)", line)
        assert m, f"not a FILE:LINE: message line: {line!r}"
        found[int(m.group(1))] = m.group(2)
    return found


def test_missing_tables_exit_78_and_are_named(deploy):
    dep = deploy(fresh=True, init_db=False)  # an empty database, no "db init"
    dep.db_path.parent.mkdir(exist_ok=True)  # (SQLite: where it may be created)
    share(dep.root)
    result = dep.run_worker(timeout=30)
    assert result.returncode == 78, result.stderr
    for table in REQUIRED_TABLES:
        assert re.search(rf"\b{table}\b", result.stderr), (table, result.stderr)

    # only the tables that are really missing are named
    dep.init_db()
    dep.db().execute("DROP TABLE run_table_columns")
    dep.db().execute("DROP TABLE run_fields")
    dep.close()
    result = dep.run_worker(timeout=30)
    assert result.returncode == 78, result.stderr
    assert "run_table_columns" in result.stderr and "run_fields" in result.stderr
    named = [t for t in REQUIRED_TABLES if re.search(rf"\b{t}\b", result.stderr)]
    assert named == ["run_fields", "run_table_columns"], result.stderr


def test_config_check_reports_every_error_with_its_line(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text(
        "early = 1\n"                            # 1  outside of any section
        "[worker]\n"                              # 2
        "lease_seconds = abc\n"                   # 3  not a number
        "poll_interval = 0.1\n"                   # 4
        "no_such_key = 1\n"                       # 5  unknown key
        "\n"                                      # 6
        "[nosuch]\n"                              # 7  unknown section
        "whatever = 1\n"                          # 8  (reported at the section)
        "[worker]\n"                              # 9
        "poll_interval = 0.2\n"                   # 10 set twice
        "max_log_size = 12\n"                     # 11 below the minimum
        "just some words\n"                       # 12 no "="
        "data_dir = relative/dir\n"               # 13 not absolute
        "[database]\n"                            # 14
        "backend = oracle\n"                      # 15 not a choice
        "[worker\n"                               # 16 no "]"
        "ignored = 1\n"                           # 17 (reported at the header)
        "[worker]\n"                              # 18
        "; a comment\n"                           # 19
        "backoff_base_seconds = 10\n"             # 20
        "backoff_max_seconds = 5\n"               # 21 smaller than the base
        "max_event_line = 4k\n"                   # 22 fine: 4096
    )
    result = check(conf)
    assert result.returncode == EX_CONFIG
    assert "configuration OK" not in result.stdout
    errors = error_lines(result, conf)
    assert sorted(errors) == [1, 3, 5, 7, 10, 11, 12, 13, 15, 16, 21], result.stderr
    assert "early" in errors[1]
    assert "lease_seconds" in errors[3]
    assert "no_such_key" in errors[5]
    assert "nosuch" in errors[7]
    assert "poll_interval" in errors[10] and "4" in errors[10]
    assert "max_log_size" in errors[11]
    assert "data_dir" in errors[13]
    assert "backend" in errors[15] and "oracle" in errors[15]
    assert "backoff_max_seconds" in errors[21]
    # ade-ctl reads the same file the same way
    ctl = subprocess.run([str(CTL), "config", "check", str(conf)], capture_output=True,
                         text=True, env=clean_env(), timeout=30)
    assert ctl.returncode == 1
    assert error_lines(ctl, conf) == errors


def test_config_check_accepts_a_good_file(tmp_path):
    conf = tmp_path / "good.conf"
    conf.write_text(
        "[database]\nbackend = sqlite\nsqlite_path = /tmp/x.sqlite\n"
        f"[worker]\ndata_dir = {DATA_DIR}\nlease_seconds = 60\n"
        "poll_interval = 0.1\npoll_interval_max = 0.2\nmax_log_size = 1M\n"
        "max_event_line = 4096\nrun_timeout = 0\n"
        "[gc]\nenable = no\n[supervisor]\nworkers = auto\n")
    result = check(conf)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("mode, ok", [(0o644, False), (0o604, False), (0o600, True),
                                      (0o640, True)], ids=["0644", "0604", "0600", "0640"])
def test_config_with_password_must_not_be_readable_by_others(tmp_path, mode, ok):
    conf = tmp_path / "secret.conf"
    conf.write_text("[database]\nbackend = sqlite\npassword = hunter2\n"
                    f"[worker]\ndata_dir = {DATA_DIR}\n")
    os.chmod(conf, mode)
    result = check(conf)
    assert result.returncode == (0 if ok else EX_CONFIG), (oct(mode), result.stderr)
    if not ok:
        errors = error_lines(result, conf)
        assert list(errors) == [3] and "password" in errors[3], result.stderr
    assert "hunter2" not in result.stdout + result.stderr


def test_password_file_must_not_be_readable_by_others(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("hunter2\n")
    conf = tmp_path / "w.conf"
    conf.write_text(f"[database]\npassword_file = {secret}\n"
                    f"[worker]\ndata_dir = {DATA_DIR}\n")
    os.chmod(secret, 0o644)
    result = check(conf)
    assert result.returncode == EX_CONFIG
    assert list(error_lines(result, conf)) == [2], result.stderr
    os.chmod(secret, 0o600)
    assert check(conf).returncode == 0


@pytest.mark.parametrize("name", ["ADE_WORKER_LEASE_SECONDS", "ade_worker_lease_seconds"])
def test_environment_variable_errors_name_the_environment(tmp_path, name):
    conf = tmp_path / "w.conf"
    conf.write_text(f"[worker]\ndata_dir = {DATA_DIR}\nlease_seconds = 60\n")
    assert check(conf).returncode == 0
    result = check(conf, env={name: "abc"})
    assert result.returncode == EX_CONFIG
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("environment: ") and "ADE_WORKER_LEASE_SECONDS" in lines[0]


def test_environment_wins_over_the_file(tmp_path):
    conf = tmp_path / "w.conf"
    conf.write_text(f"[worker]\ndata_dir = {DATA_DIR}\n"
                    "poll_interval = 5\npoll_interval_max = 1\n")  # max < interval
    result = check(conf)
    assert result.returncode == EX_CONFIG
    assert list(error_lines(result, conf)) == [4], result.stderr
    # the environment's poll_interval replaces the file's, which cures the file
    assert check(conf, env={"ADE_WORKER_POLL_INTERVAL": "0.5"}).returncode == 0
    # and an environment value can break a good file
    result = check(conf, env={"ADE_WORKER_POLL_INTERVAL": "0.5",
                              "ADE_WORKER_POLL_INTERVAL_MAX": "0.1"})
    assert result.returncode == EX_CONFIG
    assert result.stderr.startswith("environment: "), result.stderr


def start_daemon(dep) -> subprocess.CompletedProcess:
    """ade-superd as an init script starts it: a daemon, the command returning
    once it is ready or has failed."""
    return subprocess.run([str(SUPERD), "-c", str(dep.conf_path)], capture_output=True,
                          text=True, env=clean_env(), timeout=120)


def stop_daemon(pidfile) -> None:
    if pidfile.exists():
        pid = int(pidfile.read_text())
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pid_alive(pid), 60, "the daemon to stop")


@pytest.mark.backends("sqlite")      # start-up only: no database in play
def test_daemon_start_reports_ready_and_writes_its_pidfile(deploy):
    dep = deploy(**{"supervisor.workers": 1})
    pidfile = dep.root / "superd.pid"
    dep.configure(**{"supervisor.pidfile": pidfile, "supervisor.log_file": dep.root / "d.log"})
    try:
        result = start_daemon(dep)
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        assert pid_alive(int(pidfile.read_text()))
    finally:
        stop_daemon(pidfile)
    assert not pidfile.exists()


@pytest.mark.backends("sqlite")      # start-up only: no database in play
def test_daemon_start_with_a_live_pidfile_fails_with_78_and_says_why(deploy):
    dep = deploy(**{"supervisor.workers": 1})
    pidfile = dep.root / "superd.pid"
    pidfile.write_text(f"{os.getpid()}\n")       # a live process: this one
    dep.configure(**{"supervisor.pidfile": pidfile, "supervisor.log_file": dep.root / "d.log"})
    result = start_daemon(dep)
    assert result.returncode == 78, result.stderr
    assert str(pidfile) in result.stderr and str(os.getpid()) in result.stderr
    assert pidfile.read_text() == f"{os.getpid()}\n"
    assert not (dep.data_dir / "run" / "control.sock").exists()


@pytest.mark.backends("sqlite")      # start-up only: no database in play
def test_daemon_that_fails_after_forking_passes_its_error_and_status_back(deploy):
    dep = deploy(**{"supervisor.workers": 1})
    first = dep.start_worker()
    wait_until(lambda: dep.ctl("status", check=False).returncode == 0, 30,
               "the first supervisor's control socket")
    # A second one on the same control socket fails once it is a daemon.
    pidfile = dep.root / "second.pid"
    dep.configure(**{"supervisor.pidfile": pidfile, "supervisor.log_file": dep.root / "d.log"})
    try:
        result = start_daemon(dep)
    finally:
        stop_daemon(pidfile)
    assert result.returncode == 78, result.stderr
    assert "control.sock" in result.stderr
    assert not pidfile.exists()
    assert first.poll() is None


@pytest.mark.backends("sqlite")      # start-up only: no database in play
@pytest.mark.parametrize("fault", ["root", "no_such_user", "no_data_dir", "no_sqlite_dir"])
def test_config_check_and_a_real_start_refuse_the_same_hosts(deploy, tmp_path, fault):
    dep = deploy(**{"supervisor.workers": 1})
    key = {"root": "user", "no_such_user": "user", "no_data_dir": "data_dir",
           "no_sqlite_dir": "sqlite_path"}[fault]
    if fault == "root":
        dep.configure(**{"supervisor.user": "root"})
    elif fault == "no_such_user":
        dep.configure(**{"supervisor.user": "no-such-ade-user"})
    elif fault == "no_data_dir":
        dep.configure(data_dir=tmp_path / "nowhere")
    else:
        dep.configure(**{"database.sqlite_path": tmp_path / "nowhere" / "ade.sqlite"})
    result = check(dep.conf_path, service_user=False)
    assert result.returncode == EX_CONFIG, result.stderr
    errors = error_lines(result, dep.conf_path)
    assert len(errors) == 1 and key in list(errors.values())[0], result.stderr
    started = dep.run_worker(timeout=60)
    assert started.returncode == EX_CONFIG, started.stderr
    assert list(errors.values())[0] in started.stderr
    assert "worker 0 started" not in started.stderr
    assert not (tmp_path / "nowhere").exists()
