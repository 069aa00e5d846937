"""Rebuilding an environment never takes the live venv away: a rebuild is
built aside and put in place only when it succeeded, while its claim is
still held."""

from __future__ import annotations

import json

from adetest import PYTHON, share, wait_until


def env_root(dep, env):
    (root,) = (dep.data_dir / "venvs").glob(f"*/*/*/{env['id']}")
    return root


def build_dirs(root):
    return list(root.parent.glob(".build-*"))


def test_failed_rebuild_keeps_the_ready_venv(deploy, tmp_path):
    dep = deploy()
    (env,) = dep.environments()
    root = env_root(dep, env)
    python = root / ".venv" / "bin" / "python"
    assert python.exists()
    dep.ctl("envs", "rebuild", env["id"])
    dep.configure(python="/bin/false")          # the rebuild's venv step fails
    assert dep.run_worker(timeout=120).returncode == 0
    (after,) = dep.environments()
    assert after["status"] == "failed", after
    assert "environment.venv failed" in after["error_message"]
    # the venv that was ready is still there, whole
    assert python.exists() and (root / ".venv" / "pyvenv.cfg").exists()
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
    python = root / ".venv" / "bin" / "python"
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
    assert python.exists() and (root / ".venv" / "pyvenv.cfg").exists()
    (after,) = dep.environments()
    assert after["claimed_by"] == "elsewhere#1" and after["status"] == "building"
