"""An idle worker makes the next run's directory ahead (workspaces/.spare/),
and the run it claims takes it with one rename.  A directory made so must
look the same as one made on the way, for every kind of run and for an
engine user; trees of dead workers go, a lost one is made again, and a
worker takes its own along when it stops."""

import json
import os
import stat
import subprocess

import pytest

from adetest import FAKE_ENGINE_COMMAND, share, wait_until, write_input

pytestmark = pytest.mark.backends("sqlite")  # file-system work, not the database's

ENGINE_USER = "daemon"

KINDS = {
    "process": None,
    "validate": {"validate_only": True},
    "dry_run": {"dry_run": True},
}


def spare_root(dep):
    return dep.data_dir / "workspaces" / ".spare"


def spares(dep, host=None):
    """The trees waiting under .spare, by name; with host, only that host's."""
    root = spare_root(dep)
    if not root.is_dir():
        return {}
    return {p.name: p for p in root.iterdir()
            if host is None or p.name.startswith(host + ":")}


def layout(run_dir):
    """What a run directory holds: every entry's kind, mode and group, the
    contents of the event log left out (times differ)."""
    seen = {}
    for path in sorted(run_dir.rglob("*")):
        st = path.lstat()
        seen[str(path.relative_to(run_dir))] = (
            stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_gid)
    st = run_dir.lstat()
    seen["."] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_gid)
    return seen


@pytest.mark.parametrize("user", ["service", "engine"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_run_directory_made_ahead_looks_like_one_made_on_the_way(
        deploy, tmp_path, kind, user):
    if user == "engine" and os.geteuid() != 0:
        pytest.skip("engine_user needs ade-superd started as root")
    settings = {"engine_user": ENGINE_USER} if user == "engine" else {}
    # A validator writes down what its run directory holds while it runs.
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND + " --validate=look", **settings)
    doc = write_input(tmp_path / "in.csv")
    # A worker that finds the run waiting makes its directory on the way.
    first = dep.enqueue(doc, options=KINDS[kind])["run_id"]
    assert dep.run_worker(timeout=120).returncode == 0
    assert dep.run_row(first)["status"] == "succeeded", dep.worker_logs()
    assert spares(dep) == {}, "a worker that stopped left its tree"

    # An idle one has made the next run's tree, which the next run takes.
    proc = dep.start_worker()
    (tree,) = wait_until(lambda: list(spares(dep).values()), 60,
                         "a run directory made ahead")
    inode = tree.stat().st_ino
    second = dep.enqueue(doc, options=KINDS[kind])["run_id"]
    row = dep.wait_run(second, timeout=60)
    assert row["status"] == "succeeded", (row, dep.worker_logs())
    made_ahead = dep.run_dir(second)
    assert made_ahead.stat().st_ino == inode, "the run did not take the tree"

    # Same entries, modes and groups, whichever way it was made.
    proc.terminate()
    assert dep.wait_worker(proc) == 0
    assert layout(made_ahead) == layout(dep.run_dir(first))
    if kind == "validate":
        # Neither input nor output while it ran, to read or to write.
        for run in (first, second):
            seen = json.loads((dep.run_dir(run) / "tmp" / "seen.json").read_text())
            assert seen == ["logs", "tmp"], (run, seen)
    events = dep.event_names(second)
    assert events[0] == "run.start" and events[-1] == "run.complete", events


def test_trees_of_dead_workers_go_and_a_lost_one_is_made_again(deploy, tmp_path):
    host = "spare-host"
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, id=host)
    root = spare_root(dep)
    root.mkdir(parents=True)
    # A worker of this host that died with its tree, and one of another host.
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = root / f"{host}:{gone.pid}"
    (dead / "logs").mkdir(parents=True)
    (dead / "logs" / "events.ndjson").write_text("")
    # One that a sweep renamed out of the way and did not finish removing.
    half = root / f"{host}:{gone.pid}.gone.{gone.pid}"
    (half / "input").mkdir(parents=True)
    other = root / f"another-host:{gone.pid}"
    other.mkdir()
    share(root)

    proc = dep.start_worker()
    wait_until(lambda: not dead.exists() and not half.exists() and spares(dep, host), 60,
               "the dead worker's trees removed and a tree made")
    assert other.is_dir(), "another host's tree is that host's to remove"

    # A tree lost from under the worker: the run makes its directory itself,
    # and the worker makes another when it is idle again.
    (mine,) = spares(dep, host).values()
    subprocess.run(["rm", "-rf", str(mine)], check=True)
    run = dep.enqueue(write_input(tmp_path / "in.csv"))["run_id"]
    assert dep.wait_run(run, timeout=60)["status"] == "succeeded", dep.worker_logs()
    assert (dep.run_dir(run) / "output").is_dir()
    wait_until(lambda: spares(dep, host), 60, "a tree made again")

    # Stopping, the worker takes its tree along.
    proc.terminate()
    assert dep.wait_worker(proc) == 0
    assert set(spares(dep)) == {other.name}
