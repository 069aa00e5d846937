"""Garbage collection: what goes, and what a queued or running run keeps."""

from __future__ import annotations

import json

from adetest import FAKE_ENGINE_COMMAND, iso_now, write_input

DAY = 86400.0


def env_dirs(dep):
    return sorted(p.name for p in (dep.data_dir / "venvs").glob("*/*/*/*")
                  if p.is_dir() and not p.name.startswith("."))


def make_cold(dep, days=45):
    """Every environment unused for days, its configuration no longer active."""
    db = dep.db()
    db.execute("UPDATE environments SET last_used_at = ?, updated_at = ?",
               (iso_now(-days * DAY), iso_now(-days * DAY)))
    db.execute("UPDATE configurations SET status = 'archived'")


def gc(dep, *flag):
    return json.loads(dep.ctl("gc", *(flag or ("--now",)), json_out=True).stdout)


def test_cold_environment_of_an_archived_configuration_is_collected(deploy):
    dep = deploy()
    (env,) = dep.environments()
    assert env_dirs(dep) == [env["id"]]
    make_cold(dep)
    dry = gc(dep, "--dry-run")
    assert [r["kind"] for r in dry["removed"]] == ["environment"]
    assert dep.environments() and env_dirs(dep) == [env["id"]]   # a dry run changes nothing
    report = gc(dep)
    assert report["environments"]["deleted"] == 1
    assert dep.environments() == [] and env_dirs(dep) == []
    assert gc(dep)["environments"]["deleted"] == 0                # idempotent


def test_environment_needed_by_a_queued_run_is_kept(deploy):
    dep = deploy()
    (env,) = dep.environments()
    run = dep.enqueue(write_input(dep.root / "q.csv"))["run_id"]
    make_cold(dep)
    assert gc(dep)["environments"]["deleted"] == 0
    assert [e["id"] for e in dep.environments()] == [env["id"]]
    assert env_dirs(dep) == [env["id"]]
    # and the run still executes in it
    dep.run_worker(timeout=60)
    assert dep.run_row(run)["status"] == "succeeded"


def test_environment_of_the_active_configuration_is_kept(deploy):
    dep = deploy()
    dep.db().execute("UPDATE environments SET last_used_at = ?, updated_at = ?",
                     (iso_now(-45 * DAY), iso_now(-45 * DAY)))
    assert gc(dep)["environments"]["deleted"] == 0
    assert len(dep.environments()) == 1


def test_old_finished_run_directories_go_and_recent_ones_stay(deploy):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    old = dep.enqueue(write_input(dep.root / "old.csv"))["run_id"]
    new = dep.enqueue(write_input(dep.root / "new.csv"))["run_id"]
    dep.run_worker(timeout=60)
    assert dep.run_dir(old).is_dir() and dep.run_dir(new).is_dir()
    dep.db().execute("UPDATE runs SET completed_at = ? WHERE id = ?", (iso_now(-40 * DAY), old))
    report = gc(dep)
    assert report["runs"]["deleted"] == 1
    assert not dep.run_dir(old).exists()
    assert dep.run_dir(new).is_dir()
    assert dep.run_row(old)["status"] == "succeeded"          # the row itself stays


def test_running_run_directory_is_kept(deploy):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    run = dep.enqueue(write_input(dep.root / "r.csv"))["run_id"]
    dep.run_worker(timeout=60)
    dep.db().execute("UPDATE runs SET status = 'running', completed_at = ? WHERE id = ?",
                     (iso_now(-40 * DAY), run))
    assert gc(dep)["runs"]["deleted"] == 0
    assert dep.run_dir(run).is_dir()
