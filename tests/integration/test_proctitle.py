"""Process titles: what ps shows for the supervisor, each worker and the
maintenance process, and for a worker while it runs a run."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from adetest import FAKE_ENGINE_COMMAND, wait_until, write_input


def title(pid: int) -> str | None:
    """The command line ps shows for pid (its NULs as spaces), or None once
    the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")


def short_name(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().rstrip("\n")
    except (FileNotFoundError, ProcessLookupError):
        return None


def children(pid: int) -> dict[int, tuple[str | None, str | None]]:
    """The title and the short name of each child of pid, by pid."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            child = int(entry)
            found[child] = (title(child), short_name(child))
    return found


def slots(dep) -> list[dict]:
    """The supervisor's scoreboard slots, once its control socket answers."""
    def ask():
        result = dep.ctl("status", json_out=True, check=False)
        return json.loads(result.stdout)["slots"] if result.returncode == 0 else None
    return wait_until(ask, 20, "the supervisor's control socket")


def test_ps_shows_the_role_of_each_process_and_the_run_a_worker_runs(deploy):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, **{"supervisor.workers": 2})
    sup = dep.start_worker()

    wait_until(lambda: title(sup.pid) == "ade-superd: supervisor", 20,
               "the supervisor's title")
    assert short_name(sup.pid) == "ade-superd"   # what pgrep and pidof look for
    idle = {("ade-superd: worker 0 idle", "ade-worker"),
            ("ade-superd: worker 1 idle", "ade-worker")}
    wait_until(lambda: idle <= set(children(sup.pid).values()), 30, "two idle workers")
    for slot in slots(dep):
        assert title(slot["pid"]) == f"ade-superd: worker {slot['slot']} idle"

    # A maintenance pass starts every cleanup_interval (a second here) and
    # lasts a moment: look often.
    wait_until(lambda: ("ade-superd: maintenance", "ade-maint")
               in children(sup.pid).values(), 30, "a maintenance pass", interval=0.005)

    # The engine waits for the file "go": the run stays running until then.
    flooded, go = dep.root / "flooded", dep.root / "go"
    run = dep.enqueue(write_input(dep.root / "stall.csv", mode="stall", mb=0, after=0,
                                  flooded=flooded, go=go))["run_id"]
    wait_until(flooded.exists, 30, "the engine to start")
    holder = [s for s in slots(dep) if s.get("claim_id") == run]
    assert len(holder) == 1, slots(dep)
    busy, other = holder[0], 1 - holder[0]["slot"]
    assert title(busy["pid"]) == f"ade-superd: worker {busy['slot']} running {run}"
    assert f"ade-superd: worker {other} idle" in [t for t, _ in children(sup.pid).values()]

    go.write_text("1")
    assert dep.wait_run(run)["status"] == "succeeded"
    wait_until(lambda: title(busy["pid"]) == f"ade-superd: worker {busy['slot']} idle", 30,
               "the worker to be idle again")

    sup.send_signal(signal.SIGQUIT)
    assert dep.wait_worker(sup, timeout=20) == 0
