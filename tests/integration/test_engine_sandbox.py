"""Engines run configuration code that workspace users upload: confined by
Landlock, a spying engine cannot read the daemon's configuration, its
password file or database, another workspace's documents and outputs, the
worker's memory, nor write outside its run or signal its worker.  The same
spy unconfined (engine_sandbox = off) shows that the attempts are real."""

import ctypes
import grp
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from adetest import (
    ENGINES, FAKE_ENGINE_COMMAND, SAMPLES, SERVICE_USER, SUPERD, clean_env, iso_now,
    pid_alive, venv_dir, write_input,
)

DAY = 86400.0

pytestmark = pytest.mark.backends("sqlite")  # confinement is not about the database

SPY_COMMAND = f"{{python}} {ENGINES / 'spy_engine.py'}"


def landlock_abi() -> int:
    """The Landlock ABI of this kernel, 0 when it has none."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(444, None, 0, 1)     # landlock_create_ruleset, VERSION
    return max(abi, 0)


needs_landlock = pytest.mark.skipif(landlock_abi() == 0,
                                    reason="this kernel offers no Landlock")


def private_to_service(path, mode=0o640):
    """Mode and owners the manual recommends: root (or the tests' user)
    owns the file, the service group may read it."""
    os.chmod(path, mode)
    if SERVICE_USER is not None:
        os.chown(path, 0, grp.getgrnam(SERVICE_USER[1]).gr_gid)


def spied_deployment(deploy, tmp_path, sandbox, **settings):
    """A deployment whose configuration and password file are kept as the
    manual recommends, with one finished run of another workspace."""
    secret = tmp_path / "db-password"
    secret.write_text("not-for-engines\n")
    private_to_service(secret)
    dep = deploy(engine_command=SPY_COMMAND, engine_sandbox=sandbox,
                 **{"database.password_file": str(secret)}, **settings)
    private_to_service(dep.conf_path)
    other = dep.enqueue(write_input(tmp_path / "other.csv"), workspace="other")
    assert dep.run_worker(timeout=120).returncode == 0
    assert dep.run_row(other["run_id"])["status"] == "succeeded"
    other_run = dep.run_dir(other["run_id"])
    document = dep.rows("SELECT stored_uri FROM documents WHERE id = ?",
                        other["document_id"])[0]["stored_uri"]
    targets = {
        "config": dep.conf_path,
        "password": secret,
        "database": dep.db_path,
        "other_document": dep.document_path(other["workspace_id"], document),
        "other_output": next((other_run / "output").glob("*_normalized.xlsx")),
    }
    for path in targets.values():
        assert path.is_file(), path
    return dep, targets, other_run


def spy(dep, tmp_path, targets, other_run):
    """Runs the spy with every attempt; returns {target: record}."""
    other_ws = other_run.parent.parent.name
    mine = [r for r in dep.rows("SELECT workspace_id, configuration_id FROM runs")
            if r["workspace_id"] != other_ws][0]
    ids = (mine["workspace_id"], mine["configuration_id"])
    lines = [("read", targets[k]) for k in targets]
    lines += [("list", other_run / "output"),
              ("write", other_run / "output" / "planted.txt"),
              ("write", dep.data_dir / "planted.txt"),
              ("write", tmp_path / "planted.txt"),
              ("proc", "mem"), ("proc", "environ"),
              ("signal", "parent"),
              # what it must be able to do
              ("read", dep.config_dir(*ids) / "pyproject.toml"),
              ("list", "/usr/lib")]
    head = "".join(f"{what}={target}\n" for what, target in lines)
    answer = dep.enqueue(write_input(tmp_path / "spy.csv", body=head + "\nEmail\na@b.c\n"))
    assert dep.run_worker(timeout=120).returncode == 0
    row = dep.run_row(answer["run_id"])
    assert row["status"] == "succeeded", (row, dep.worker_logs())
    out = dep.run_dir(answer["run_id"]) / "output"
    records = json.loads((out / "spy.json").read_text())
    assert len(records) == len(lines), records
    return {f"{r['what']}:{r['target']}": r for r in records}, out


def outcome(found, what, target):
    return found[f"{what}:{target}"]["ok"]


def assert_spy_reached_nothing(dep, tmp_path, targets, other_run, found, out,
                               signals_blocked):
    """Every attempt failed, and the spy still did its job: the system and
    its configuration package were there, its output written."""
    for name, path in targets.items():
        assert not outcome(found, "read", path), (name, found[f"read:{path}"])
    assert not outcome(found, "list", other_run / "output")
    for path in (other_run / "output" / "planted.txt", dep.data_dir / "planted.txt",
                 tmp_path / "planted.txt"):
        assert not outcome(found, "write", path), found[f"write:{path}"]
        assert not path.exists()
    assert not outcome(found, "proc", "mem")
    assert not outcome(found, "proc", "environ")
    if signals_blocked:
        assert not outcome(found, "signal", "parent"), found["signal:parent"]
    assert all(r["ok"] for k, r in found.items() if k.endswith("pyproject.toml"))
    assert outcome(found, "list", "/usr/lib")
    assert list(out.glob("*_normalized.xlsx"))


@needs_landlock
def test_a_confined_engine_reaches_nothing_of_the_daemon_or_other_workspaces(
        deploy, tmp_path):
    dep, targets, other_run = spied_deployment(deploy, tmp_path, "required")
    found, out = spy(dep, tmp_path, targets, other_run)

    # signals are scoped from Landlock ABI 6 on
    assert_spy_reached_nothing(dep, tmp_path, targets, other_run, found, out,
                               signals_blocked=landlock_abi() >= 6)


def test_the_same_spy_unconfined_reads_what_the_sandbox_hides(deploy, tmp_path):
    dep, targets, other_run = spied_deployment(deploy, tmp_path, "off")
    found, _ = spy(dep, tmp_path, targets, other_run)

    for name, path in targets.items():
        assert outcome(found, "read", path), (name, found[f"read:{path}"])
    assert outcome(found, "write", other_run / "output" / "planted.txt")
    assert outcome(found, "signal", "parent")
    # The worker is not dumpable, sandbox or not: its memory and
    # environment stay closed to an engine of the same user.
    assert not outcome(found, "proc", "mem")
    assert not outcome(found, "proc", "environ")


@needs_landlock
def test_reference_engine_builds_and_runs_confined(deploy):
    """The real build (venv, pip) and the reference engine work inside the
    sandbox, and the build leaves no temporary home behind."""
    dep = deploy(fresh=True, engine_sandbox="required")
    answer = dep.enqueue(SAMPLES / "people_partial.csv")
    result = dep.run_worker(timeout=300)
    assert result.returncode == 0, result.stderr
    row = dep.run_row(answer["run_id"])
    assert row["status"] == "succeeded", (row, dep.worker_logs())
    assert list((dep.run_dir(answer["run_id"]) / "output").glob("*.xlsx"))
    env = dep.environments()[0]
    venvs = list((dep.data_dir / "venvs").glob(f"*/*/*/{env['id']}"))
    assert len(venvs) == 1 and not (venv_dir(venvs[0], env) / "tmp").exists(), venvs


def test_required_sandbox_is_checked_by_dash_n(deploy):
    """-n and a real start agree on engine_sandbox = required."""
    dep = deploy(engine_sandbox="required")
    result = subprocess.run([str(SUPERD), "-n", "-c", str(dep.conf_path)],
                            capture_output=True, text=True, env=clean_env())
    if landlock_abi() > 0:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0
        assert "engine_sandbox" in result.stderr


# A user of Debian's own that is neither root nor the tests' service user.
ENGINE_USER = "daemon"
needs_root = pytest.mark.skipif(
    SERVICE_USER is None, reason="engine_user needs ade-superd started as root")


@needs_root
def test_an_engine_user_reaches_none_of_the_daemons_files(deploy, tmp_path):
    """Without Landlock, a user of its own keeps the spy from the daemon's
    configuration, password, database and memory, from its worker, and
    from other workspaces' documents and finished runs."""
    dep, targets, other_run = spied_deployment(deploy, tmp_path, "off",
                                               engine_user=ENGINE_USER)
    found, out = spy(dep, tmp_path, targets, other_run)

    assert_spy_reached_nothing(dep, tmp_path, targets, other_run, found, out,
                               signals_blocked=True)
    # It ran as the engine user, and the worker read what it wrote.
    assert (out / "spy.json").stat().st_uid == pwd.getpwnam(ENGINE_USER).pw_uid


@needs_root
def test_reference_engine_builds_and_runs_as_the_engine_user(deploy):
    """The real build (venv, pip) and the reference engine run as the
    engine user; the daemon reads the results and the build tidies up."""
    dep = deploy(fresh=True, engine_user=ENGINE_USER)
    answer = dep.enqueue(SAMPLES / "people_partial.csv")
    result = dep.run_worker(timeout=300)
    assert result.returncode == 0, result.stderr
    row = dep.run_row(answer["run_id"])
    assert row["status"] == "succeeded", (row, dep.worker_logs())
    engine_uid = pwd.getpwnam(ENGINE_USER).pw_uid
    outputs = list((dep.run_dir(answer["run_id"]) / "output").glob("*.xlsx"))
    assert outputs and outputs[0].stat().st_uid == engine_uid
    env = dep.environments()[0]
    venvs = list((dep.data_dir / "venvs").glob(f"*/*/*/{env['id']}"))
    venv = venv_dir(venvs[0], env)
    assert len(venvs) == 1 and not (venv / "tmp").exists(), venvs
    assert (venv / ".venv" / "pyvenv.cfg").stat().st_uid == engine_uid


@needs_root
@pytest.mark.parametrize("user, why", [
    ("no-such-user-here", "no user no-such-user-here"),
    (SERVICE_USER[0] if SERVICE_USER else "", "shares the service user"),
    ("root", "root"),
])
def test_a_bad_engine_user_is_refused_at_start(deploy, user, why):
    dep = deploy(engine_user=user)
    result = subprocess.run([str(SUPERD), "-n", "-c", str(dep.conf_path)],
                            capture_output=True, text=True, env=clean_env())
    assert result.returncode == 78, result
    assert "engine_user" in result.stderr and why in result.stderr, result.stderr


@needs_root
def test_an_engine_users_hanging_and_escaped_processes_are_killed(deploy, tmp_path):
    """The worker cannot signal another user's processes by itself: it
    takes the engine user's ids to end a hanging engine, the group it
    started and a process that left it."""
    drop = tmp_path / "drop"
    drop.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(drop, 0o1777)
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, engine_user=ENGINE_USER, run_timeout=2)
    doc = write_input(tmp_path / "doc.csv", mode="hang", ignore_term=1,
                      pidfile=drop / "engine.pid", escape=drop / "escaped.pid")
    run_id = dep.enqueue(doc, max_attempts=1)["run_id"]
    assert dep.run_worker(timeout=90).returncode == 0
    row = dep.run_row(run_id)
    assert row["status"] == "failed" and row["exit_code"] == 124, (row, dep.worker_logs())
    engine_uid = pwd.getpwnam(ENGINE_USER).pw_uid
    pids = [int((drop / name).read_text())
            for name in ("engine.pid", "engine.pid.child", "escaped.pid")]
    assert all((drop / name).stat().st_uid == engine_uid
               for name in ("engine.pid", "escaped.pid"))
    for pid in pids:
        assert not pid_alive(pid), pid


@needs_root
def test_what_the_engine_user_wrote_is_collected(deploy, tmp_path):
    """Garbage collection, by ade-ctl as by the daemon, removes the runs
    and the environments that the engine user wrote into."""
    dep = deploy(fresh=True, engine_user=ENGINE_USER, engine_command=FAKE_ENGINE_COMMAND)
    run = dep.enqueue(write_input(tmp_path / "old.csv"))["run_id"]
    assert dep.run_worker(timeout=300).returncode == 0
    assert dep.run_row(run)["status"] == "succeeded", dep.worker_logs()
    (env,) = dep.environments()
    venvs = list((dep.data_dir / "venvs").glob(f"*/*/*/{env['id']}"))
    assert len(venvs) == 1 and venvs[0].is_dir()
    db = dep.db()
    db.execute("UPDATE runs SET completed_at = ? WHERE id = ?", (iso_now(-40 * DAY), run))
    db.execute("UPDATE environments SET last_used_at = ?, updated_at = ?",
               (iso_now(-45 * DAY), iso_now(-45 * DAY)))
    db.execute("UPDATE configurations SET status = 'archived'")
    report = json.loads(dep.ctl("gc", "--now", json_out=True).stdout)
    assert report["runs"]["deleted"] == 1 and report["environments"]["deleted"] == 1, report
    assert not dep.run_dir(run).exists() and not venvs[0].exists()


@needs_landlock
@pytest.mark.skipif(os.geteuid() != 0, reason="writes a daemon file into /etc")
def test_a_secret_under_etc_stays_hidden_while_etc_changes(deploy, tmp_path):
    """The password file where an operator keeps it, in a directory of /etc:
    /etc is then granted entry by entry, and that grant follows /etc as it
    changes under a running worker (a file added, one replaced)."""
    etc_dir = Path(tempfile.mkdtemp(prefix="ade-test-", dir="/etc"))
    late = Path(f"{etc_dir}.late")
    replaced = Path(f"{etc_dir}.replaced")
    try:
        os.chmod(etc_dir, 0o755)
        secret = etc_dir / "db-password"
        secret.write_text("not-for-engines\n")
        private_to_service(secret)
        replaced.write_text("old\n")
        dep = deploy(engine_command=SPY_COMMAND, engine_sandbox="required",
                     **{"database.password_file": str(secret),
                        "supervisor.workers": 1})
        worker = dep.start_worker()

        def spied(targets):
            head = "".join(f"read={t}\n" for t in targets)
            run = dep.enqueue(write_input(tmp_path / f"spy{len(targets)}.csv",
                                          body=head + "\nEmail\na@b.c\n"))["run_id"]
            row = dep.wait_run(run, timeout=120)
            assert row["status"] == "succeeded", (row, dep.worker_logs())
            records = json.loads((dep.run_dir(run) / "output" / "spy.json").read_text())
            return {r["target"]: r for r in records}

        first = spied([secret, "/etc/passwd", replaced])
        assert not first[str(secret)]["ok"], first
        assert first["/etc/passwd"]["ok"] and first[str(replaced)]["ok"], first
        # The same worker, after /etc changed under it.
        late.write_text("late\n")
        swap = Path(f"{replaced}.new")
        swap.write_text("new\n")
        os.rename(swap, replaced)
        second = spied([secret, late, replaced, "/etc/passwd"])
        assert not second[str(secret)]["ok"], second
        assert second[str(late)]["ok"] and second[str(replaced)]["ok"], second
        assert second["/etc/passwd"]["ok"], second
        assert worker.poll() is None
    finally:
        shutil.rmtree(etc_dir, ignore_errors=True)
        for path in (late, replaced, Path(f"{replaced}.new")):
            path.unlink(missing_ok=True)


@needs_landlock
def test_a_grant_that_leads_around_the_daemons_files_is_refused(deploy, tmp_path):
    """engine_command names a path through a link to the directory that
    holds the data directory: the grant it asks for is where the link
    leads, and the run fails before any engine starts."""
    link = tmp_path / "looks-harmless"
    dep = deploy(engine_command=f"{FAKE_ENGINE_COMMAND} {link}/tool", engine_sandbox="required")
    link.symlink_to(dep.data_dir.parent)
    answer = dep.enqueue(write_input(tmp_path / "a.csv"))
    result = dep.run_worker(timeout=90)
    assert result.returncode == 0, result.stderr
    row = dep.run_row(answer["run_id"])
    # Another attempt would be refused the same way: it fails at once,
    # and says which word of engine_command and why.
    assert row["status"] == "failed" and row["attempt_count"] == 1, row
    assert f"{link}/tool" in row["error_message"], row
    assert "holds the daemon's own files" in row["error_message"], row
    assert not (dep.run_dir(answer["run_id"]) / "output" / "normalized.xlsx").exists()
