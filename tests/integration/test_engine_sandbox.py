"""Engines run configuration code that workspace users upload: confined by
Landlock, a spying engine cannot read the daemon's configuration, its
password file or database, another workspace's documents and outputs, the
worker's memory, nor write outside its run or signal its worker.  The same
spy unconfined (engine_sandbox = off) shows that the attempts are real."""

import ctypes
import grp
import json
import os
import subprocess

import pytest

from adetest import ENGINES, SAMPLES, SERVICE_USER, SUPERD, clean_env, write_input

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


def spied_deployment(deploy, tmp_path, sandbox):
    """A deployment whose configuration and password file are kept as the
    manual recommends, with one finished run of another workspace."""
    secret = tmp_path / "db-password"
    secret.write_text("not-for-engines\n")
    private_to_service(secret)
    dep = deploy(engine_command=SPY_COMMAND, engine_sandbox=sandbox,
                 **{"database.password_file": str(secret)})
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


@needs_landlock
def test_a_confined_engine_reaches_nothing_of_the_daemon_or_other_workspaces(
        deploy, tmp_path):
    dep, targets, other_run = spied_deployment(deploy, tmp_path, "required")
    found, out = spy(dep, tmp_path, targets, other_run)

    for name, path in targets.items():
        assert not outcome(found, "read", path), (name, found[f"read:{path}"])
    assert not outcome(found, "list", other_run / "output")
    for path in (other_run / "output" / "planted.txt", dep.data_dir / "planted.txt",
                 tmp_path / "planted.txt"):
        assert not outcome(found, "write", path), found[f"write:{path}"]
        assert not path.exists()
    assert not outcome(found, "proc", "mem")
    assert not outcome(found, "proc", "environ")
    if landlock_abi() >= 6:     # signals are scoped from ABI 6 on
        assert not outcome(found, "signal", "parent"), found["signal:parent"]
    # and it could do its job: the system and its configuration package
    # are there, its output written
    assert all(r["ok"] for k, r in found.items() if k.endswith("pyproject.toml"))
    assert outcome(found, "list", "/usr/lib")
    assert list(out.glob("*_normalized.xlsx"))


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
    assert len(venvs) == 1 and not (venvs[0] / "tmp").exists(), venvs


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
