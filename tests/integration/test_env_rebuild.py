"""Rebuilding an environment never takes the live venv away: a rebuild is
a new generation, built aside and put in place only when it succeeded,
while its claim is still held, and an engine keeps the generation it runs
from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from adetest import (FAKE_ENGINE_COMMAND, PYTHON, SAMPLE_CONFIG, share, venv_dir,
                     wait_until, write_input)


def env_root(dep, env):
    (root,) = (dep.data_dir / "venvs").glob(f"*/*/*/{env['id']}")
    return root


def build_dirs(root):
    return list(root.parent.glob(".build-*"))


def test_failed_rebuild_keeps_the_ready_venv(deploy, tmp_path):
    dep = deploy()
    (env,) = dep.environments()
    root = env_root(dep, env)
    venv = venv_dir(root, env)
    python = venv / ".venv" / "bin" / "python"
    assert python.exists()
    dep.ctl("envs", "rebuild", env["id"])
    dep.configure(python="/bin/false")          # the rebuild's venv step fails
    assert dep.run_worker(timeout=120).returncode == 0
    (after,) = dep.environments()
    assert after["status"] == "failed", after
    assert "environment.venv failed" in after["error_message"]
    # the venv that was ready is still there, whole
    assert python.exists() and (venv / ".venv" / "pyvenv.cfg").exists()
    assert [p.name for p in root.glob("g-*")] == [venv.name]
    # the failed build's log is where the environment's log is
    log = [json.loads(line) for line in
           (root / "logs" / "events.ndjson").read_text().splitlines()]
    assert log[-1]["event"] == "environment.failed"
    assert build_dirs(root) == []


def test_build_that_lost_its_claim_is_not_put_in_place(deploy, tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    wrapper = gate / "python"
    wrapper.write_text(f"#!/bin/sh\n: > {gate}/started\n"
                       f"while [ ! -e {gate}/go ]; do sleep 0.05; done\n"
                       f"exec {PYTHON} \"$@\"\n")
    wrapper.chmod(0o755)
    share(gate)
    dep = deploy(python=wrapper, lease_seconds=3)
    (env,) = dep.environments()
    root = env_root(dep, env)
    venv = venv_dir(root, env)
    python = venv / ".venv" / "bin" / "python"
    dep.ctl("envs", "rebuild", env["id"])
    dep.start_worker()
    wait_until((gate / "started").exists, 60, "the rebuild to start")
    # another holder takes the environment over, for longer than the test
    db = dep.db()
    db.execute("UPDATE environments SET claimed_by = 'elsewhere#1',"
               " claim_expires_at = ? WHERE id = ?", ("2999-01-01T00:00:00.000Z", env["id"]))
    (gate / "go").write_text("1")
    # the worker notices at its next heartbeat and cleans its build up
    wait_until(lambda: build_dirs(root) == [], 60, "the abandoned build to be removed")
    assert python.exists() and (venv / ".venv" / "pyvenv.cfg").exists()
    assert [p.name for p in root.glob("g-*")] == [venv.name]
    (after,) = dep.environments()
    assert after["claimed_by"] == "elsewhere#1" and after["status"] == "building"


def test_enqueue_leaves_a_package_alone_while_its_environment_builds(deploy, tmp_path):
    # The package's setup waits at a gate, so the build is known to be
    # working in the package's directory when the next run is enqueued.
    gate = tmp_path / "gate"
    gate.mkdir()
    share(gate)
    pkg = tmp_path / "gated-config"
    shutil.copytree(SAMPLE_CONFIG, pkg)
    (pkg / "setup.py").write_text(
        "import os, time\n"
        f"open({str(gate / 'reached')!r}, 'w').close()\n"
        f"while not os.path.exists({str(gate / 'go')!r}):\n"
        "    time.sleep(0.05)\n"
        "from setuptools import setup\n"
        "setup()\n")
    share(pkg)
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, engine_sandbox="off")
    first = dep.enqueue(write_input(tmp_path / "a.csv"), configuration="gated",
                        config_package=pkg)
    dep.start_worker()
    wait_until((gate / "reached").exists, 120, "the build to run the package's setup")
    second = dep.enqueue(write_input(tmp_path / "b.csv"), configuration="gated",
                         config_package=pkg)
    (gate / "go").write_text("1")
    for run in (first, second):
        row = dep.wait_run(run["run_id"], timeout=120)
        assert (row["status"], row["attempt_count"]) == ("succeeded", 1), row
    assert "build failed" not in dep.worker_logs(tail=100000)

    # A package that changed is copied again.
    (pkg / "added.txt").write_text("new\n")
    share(pkg)
    dep.enqueue(write_input(tmp_path / "c.csv"), configuration="gated", config_package=pkg)
    (copy,) = dep.data_dir.glob(f"workspaces/*/config_packages/{first['configuration_id']}")
    assert (copy / "added.txt").read_text() == "new\n"


def test_environments_live_in_venvs_dir_outside_the_data_directory(deploy, tmp_path):
    # As on a host whose venvs are on a local disk: the template's
    # environment is not there, so this host builds its own copy.
    local = tmp_path / "local-venvs"
    local.mkdir()
    share(local)
    dep = deploy(venvs_dir=str(local))
    run = dep.enqueue(write_input(tmp_path / "a.csv"))["run_id"]
    assert dep.run_worker(timeout=180).returncode == 0
    assert dep.rows("SELECT status FROM runs WHERE id = ?", run)[0]["status"] == "succeeded"
    (env,) = dep.environments()
    (root,) = local.glob(f"*/*/*/{env['id']}")
    assert (venv_dir(root, env) / ".venv" / "bin" / "python").exists()
    assert (root / "logs" / "events.ndjson").exists()
    log = dep.ctl("envs", "log", env["id"]).stdout
    assert "environment.complete" in log


def test_a_rebuild_is_a_new_generation_and_a_running_engine_keeps_its_own(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, **{"supervisor.workers": 2})
    (env,) = dep.environments()
    root = env_root(dep, env)
    old = venv_dir(root, env)
    go = tmp_path / "go"
    run = dep.enqueue(write_input(tmp_path / "long.csv", mode="paced", steps=1, go=go))["run_id"]
    dep.start_worker()
    wait_until(lambda: "run.engine.start" in dep.event_names(run), 60, "the engine to start")
    (start,) = [e for e in dep.events(run) if e["event"] == "run.engine.start"]
    assert str(old / ".venv") in json.dumps(start["data"]), start

    # The rebuild goes into a directory of its own; the row records it.
    dep.ctl("envs", "rebuild", env["id"])

    def rebuilt():
        (now,) = dep.environments()
        return now if now["status"] == "ready" and \
            now["python_interpreter"] != env["python_interpreter"] else None
    after = wait_until(rebuilt, 180, "the rebuild to be ready")
    new = venv_dir(root, after)
    assert new != old and new.parent == old.parent == root, (old, new)
    assert (new / ".venv" / "bin" / "python").exists()

    # Collection leaves the old generation alone while the engine runs from it.
    report = json.loads(dep.ctl("gc", "--now", json_out=True).stdout)
    assert str(old) not in [r["path"] for r in report["removed"]], report
    assert (old / ".venv" / "bin" / "python").exists()
    Path(f"{go}.1").write_text("1")
    assert dep.wait_run(run)["status"] == "succeeded"

    # Once the run is over nothing holds it, and it goes.
    def collected():
        report = json.loads(dep.ctl("gc", "--now", json_out=True).stdout)
        return report if not old.exists() else None
    report = wait_until(collected, 60, "the old generation to be collected", interval=0.5)
    assert report["local_venvs"] >= 1 and [p.name for p in root.glob("g-*")] == [new.name]

    # The next run takes the new generation.
    following = dep.enqueue(write_input(tmp_path / "next.csv"))["run_id"]
    assert dep.wait_run(following)["status"] == "succeeded"
    (start,) = [e for e in dep.events(following) if e["event"] == "run.engine.start"]
    assert str(new / ".venv") in json.dumps(start["data"]), start
