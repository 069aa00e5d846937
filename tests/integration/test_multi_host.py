"""Several hosts on one database and one shared data directory, each with
venvs of its own (venvs_dir on a local disk).  Every host here is a
supervisor of its own, with its own worker id, control socket and
venvs_dir, as on separate machines."""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path

import pytest

from adetest import FAKE_ENGINE_COMMAND, share, venv_dir, wait_until, write_input
from ledger import executions, ledger_engine, read_ledger

CAST = {"sqlite": "?", "pgsql": "CAST(? AS uuid)", "mssql": "CAST(? AS UNIQUEIDENTIFIER)"}


def enqueue_bulk(dep, n: int, like: str | None = None) -> list[str]:
    """n queued runs of the template's configuration (or like run like's),
    each with a document row of its own, as the API makes them."""
    db = dep.db()
    cast = CAST[db.backend]
    (first,) = [r for r in dep.rows("SELECT id, input_document_id, configuration_id,"
                                    " engine_spec, deps_digest FROM runs ORDER BY created_at")
                if like is None or r["id"] == like][:1]
    ids = []
    for _ in range(n):
        run, doc = str(uuid.uuid4()), str(uuid.uuid4())
        db.execute("INSERT INTO documents (id, workspace_id, original_filename, byte_size,"
                   " sha256, stored_uri, expires_at)"
                   f" SELECT {cast}, workspace_id, original_filename, byte_size, sha256,"
                   " stored_uri, expires_at FROM documents WHERE id = ?",
                   (doc, first["input_document_id"]))
        db.execute("INSERT INTO runs (id, configuration_id, workspace_id, input_document_id,"
                   " engine_spec, deps_digest, max_attempts)"
                   f" SELECT {cast}, ?, workspace_id, {cast}, ?, ?, 3"
                   " FROM documents WHERE id = ?",
                   (run, first["configuration_id"], doc, first["engine_spec"],
                    first["deps_digest"], first["input_document_id"]))
        ids.append(run)
    return ids


def host(dep, name: str, workers: int, venvs: Path | None = None, engine: str | None = None):
    env = {"ADE_WORKER_ID": name, "ADE_WORKER_CONCURRENCY": str(workers),
           "ADE_SUPERD_CONTROL_SOCKET": str(dep.data_dir / "run" / f"{name}.sock")}
    if venvs is not None:
        env["ADE_VENVS_DIR"] = str(venvs)
    if engine is not None:
        env["ADE_WORKER_ENGINE_COMMAND"] = engine
    return dep.start_worker(env=env)


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def worker_host(dep, run_id: str) -> str:
    """The host whose worker started the run's (last) attempt."""
    starts = [e for e in dep.events(run_id) if e.get("event") == "run.start"]
    return starts[-1]["data"]["worker"].split(":", 1)[0]


@pytest.mark.backends("pgsql", "mssql")
def test_a_host_without_the_venv_builds_its_own_while_the_others_run_on(deploy, tmp_path):
    command, ledger = ledger_engine(tmp_path, seconds=0.05)
    dep = deploy(engine_command=command, lease_seconds=60)
    (env,) = dep.environments()
    run_ids = enqueue_bulk(dep, 2000)
    host(dep, "host-a", 2)
    wait_until(lambda: len(read_ledger(ledger)) >= 20, 120, "host-a to run some")

    # host-b joins with an empty venvs_dir: it builds its own copy.
    local = tmp_path / "venvs-b"
    local.mkdir()
    share(local)
    host(dep, "host-b", 2, local)
    seen = set()

    def row_untouched():
        (now,) = [e for e in dep.environments() if e["id"] == env["id"]]
        seen.add((now["status"], now["claimed_by"], now["python_version"]))
        return now

    def building():
        row_untouched()
        return list(local.glob(f"*/*/*/.build-*")) or None
    wait_until(building, 120, "host-b to begin its copy of the environment")
    began = uptime()
    python = None

    def built():
        nonlocal python
        row_untouched()
        root = next(local.glob(f"*/*/*/{env['id']}"), None)
        python = venv_dir(root, env) / ".venv" / "bin" / "python" if root else None
        return python if python and python.exists() else None
    wait_until(built, 300, "host-b's copy of the environment")
    ended = uptime()
    # The row was never requeued or rebuilt: other hosts kept its runs going.
    assert seen == {(env["status"], env["claimed_by"], env["python_version"])}, seen
    during = [t for run in read_ledger(ledger).values() for _, what, _, t in run
              if what == "start" and began <= t <= ended]
    assert during, "host-a ran nothing while host-b built its copy"
    print(f"figures: host-b's copy took {ended - began:.1f} s (or less); host-a "
          f"ran {len(during)} runs meanwhile")
    log = (python.parents[3] / "logs" / "events.ndjson").read_text()
    assert '"local_copy":true' in log.replace(" ", "") and "environment.complete" in log
    # More work, should host-a have run out of it meanwhile on a slow machine.
    run_ids += enqueue_bulk(dep, 200)

    for run in run_ids:
        dep.wait_run(run, timeout=600)
    # Every run executed once, none used an attempt for the copy, both hosts worked.
    entries = read_ledger(ledger)
    assert set(run_ids) <= set(entries)
    for run in run_ids:
        assert len(executions(entries[run])) == 1, entries[run]
    rows = {r["id"]: r for r in dep.rows("SELECT id, status, attempt_count FROM runs")}
    assert {(rows[r]["status"], rows[r]["attempt_count"]) for r in run_ids} == {("succeeded", 1)}
    hosts = {worker_host(dep, r) for r in run_ids}
    assert hosts == {"host-a", "host-b"}, hosts


def test_every_host_takes_up_a_rebuild_and_collects_its_own_old_copy(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    (env,) = dep.environments()
    local = tmp_path / "venvs-b"
    local.mkdir()
    share(local)
    at_b = {"ADE_WORKER_ID": "host-b", "ADE_VENVS_DIR": str(local)}
    doc = write_input(tmp_path / "a.csv")

    # host-b makes its copy of the generation the row records
    first = dep.enqueue(doc)["run_id"]
    assert dep.run_worker(timeout=300, env=at_b).returncode == 0
    assert dep.run_row(first)["status"] == "succeeded"
    (root_b,) = local.glob(f"*/*/*/{env['id']}")
    gen1 = venv_dir(root_b, env)
    assert gen1.name.startswith("g-") and (gen1 / ".venv" / "bin" / "python").exists()

    # another host rebuilds it: a new generation in the row
    dep.ctl("envs", "rebuild", env["id"])
    assert dep.run_worker(timeout=300).returncode == 0
    (after,) = dep.environments()
    assert after["status"] == "ready" and after["python_interpreter"] != env["python_interpreter"]
    gen2 = venv_dir(root_b, after)
    assert gen2 != gen1 and not gen2.exists()

    # host-b's next run is on the new generation, which it copies first
    second = dep.enqueue(doc)["run_id"]
    assert dep.run_worker(timeout=300, env=at_b).returncode == 0
    assert dep.run_row(second)["status"] == "succeeded"
    assert dep.run_row(second)["attempt_count"] == 1
    (start,) = [e for e in dep.events(second) if e["event"] == "run.engine.start"]
    assert str(gen2 / ".venv") in json.dumps(start["data"]), start

    # host-b's collection removes its old copy, and only that
    report = json.loads(dep.ctl("gc", "--now", json_out=True, env=at_b).stdout)
    assert [r["path"] for r in report["removed"]] == [str(gen1)], report
    assert sorted(p.name for p in root_b.iterdir() if p.name.startswith("g-")) == [gen2.name]


def session_pids(leader: int) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[3]) == leader:
            pids.append(int(p.name))
    return pids


def kill_host(proc) -> None:
    """Everything of a host dies at once: its supervisor, the workers and the
    engines (process groups of their own, in its session).  All are stopped
    first, so that none sees another die and reacts (a worker whose
    supervisor dies releases its run), then killed."""
    stopped: set[int] = set()
    for _ in range(50):
        new = [pid for pid in session_pids(proc.pid) if pid not in stopped]
        if not new:
            break
        for pid in new:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass
            stopped.add(pid)
    for pid in stopped:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=10)


@pytest.mark.backends("pgsql", "mssql")
def test_a_host_that_dies_whole_has_its_runs_taken_over_and_none_lost(deploy, tmp_path):
    command, ledger = ledger_engine(tmp_path, seconds=0.05)
    dep = deploy(engine_command=command, lease_seconds=5)
    run_ids = enqueue_bulk(dep, 300)
    # host-b's engines keep the same ledger but take a minute: both are
    # surely under way when the host dies.  It starts first, so that its
    # workers have runs whatever the time it takes to start.
    script = Path(command.split()[-1])
    slow = script.with_name("ledger-engine-slow.sh")
    slow.write_text(script.read_text().replace("seconds='0.05'", "seconds='60'"))
    b = host(dep, "host-b", 2, engine=f"/bin/sh {slow}")
    at_b = {"ADE_SUPERD_CONTROL_SOCKET": str(dep.data_dir / "run" / "host-b.sock")}

    def b_running():
        result = dep.ctl("status", json_out=True, check=False, env=at_b)
        if result.returncode != 0:
            return None
        held = [s["claim_id"] for s in json.loads(result.stdout)["slots"]
                if s.get("claim_kind") == "run" and s.get("engine_pgid")]
        return held if len(held) == 2 else None
    held = wait_until(b_running, 120, "both of host-b's workers to run an engine")
    wait_until(lambda: all(read_ledger(ledger).get(r) for r in held), 60,
               "host-b's engines to begin")
    host(dep, "host-a", 2)
    wait_until(lambda: sum(1 for e in read_ledger(ledger).values() for x in e
                           if x[1] == "end") >= 10, 120, "host-a to run some")
    killed_at = uptime()
    kill_host(b)

    for run in run_ids:
        dep.wait_run(run, timeout=600)
    rows = {r["id"]: r for r in dep.rows("SELECT id, status, attempt_count FROM runs")}
    assert {rows[r]["status"] for r in run_ids} == {"succeeded"}
    # What the dead host was running went to the other one after its
    # lease; no run ran twice at once: at most one execution of each began
    # before the kill (on either host) and at most one after it.
    entries = read_ledger(ledger)
    for run in run_ids:
        starts = [t for _, what, _, t in entries[run] if what == "start"]
        ends = [t for _, what, _, t in entries[run] if what == "end"]
        assert ends and sum(t < killed_at for t in starts) <= 1 and \
            sum(t >= killed_at for t in starts) <= 1, (run, entries[run])
    for run in held:
        (killed, again, end) = entries[run]
        assert (killed[1], again[1], end[1]) == ("start", "start", "end"), entries[run]
        assert killed[3] < killed_at <= again[3] and again[2] == end[2], entries[run]
        assert rows[run]["attempt_count"] == 2, rows[run]
    print("figures: host-b's runs began again on host-a "
          + ", ".join(f"{entries[r][1][3] - killed_at:.1f}" for r in held)
          + " s after the kill")


@pytest.mark.backends("pgsql", "mssql")
def test_a_rebuild_under_load_leaves_every_engine_its_venv(deploy, tmp_path):
    # Engines of the venv's own Python, each a fifth of a second.
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    (env,) = dep.environments()
    ledger = tmp_path / "ledger.txt"
    model = dep.enqueue(write_input(tmp_path / "l.csv", mode="ledger", ledger=ledger,
                                    seconds=0.2))["run_id"]
    run_ids = [model] + enqueue_bulk(dep, 299, like=model)
    local = tmp_path / "venvs-b"
    local.mkdir()
    share(local)
    host(dep, "host-a", 2)
    host(dep, "host-b", 2, local)
    wait_until(lambda: ledger.exists() and len(ledger.read_text().splitlines()) >= 40, 300,
               "both hosts to run some")
    dep.ctl("envs", "rebuild", env["id"])

    def rebuilt():
        (now,) = dep.environments()
        return now if now["status"] == "ready" and \
            now["python_interpreter"] != env["python_interpreter"] else None
    after = wait_until(rebuilt, 300, "the rebuild to be ready")
    for run in run_ids:
        dep.wait_run(run, timeout=600)
    # No engine failed for want of its venv: each run ran once, first time.
    rows = {r["id"]: r for r in dep.rows("SELECT id, status, attempt_count FROM runs")}
    assert {(rows[r]["status"], rows[r]["attempt_count"]) for r in run_ids} == {("succeeded", 1)}
    lines = [line.split() for line in ledger.read_text().splitlines()]
    starts = [run for run, _, what in lines if what == "start"]
    ends = [run for run, _, what in lines if what == "end"]
    assert sorted(starts) == sorted(ends) == sorted(run_ids)
    # Runs after the rebuild were on the new generation.
    gen = venv_dir(Path("/"), after).name
    late = [e for r in run_ids for e in dep.events(r) if e["event"] == "run.engine.start"
            and f"/{gen}/.venv/" in json.dumps(e["data"])]
    assert late, "no run used the new generation"
