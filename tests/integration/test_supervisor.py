"""The supervisor: restarts, signals, drain, reload, scaling, logs and the
maintenance role, with real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from adetest import (FAKE_ENGINE_COMMAND, Database, pid_alive, psycopg2, wait_until,
                     write_input)


def status(dep) -> dict:
    """The supervisor's status; waits for its control socket to appear."""
    def ask():
        result = dep.ctl("status", json_out=True, check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None
    return wait_until(ask, 20, "the supervisor's control socket")


def control_socket(dep) -> Path:
    return Path(dep.settings.get("supervisor", {}).get("control_socket")
                or dep.data_dir / "run" / "control.sock")


def worker_pids(dep) -> list[int]:
    return [s["pid"] for s in status(dep)["slots"] if s["pid"]]


def slot_holding(dep, run_id: str) -> dict:
    def find():
        for s in status(dep)["slots"]:
            if s.get("claim_id") == run_id:
                return s
        return None
    return wait_until(find, 30, f"a worker holding run {run_id}")


def children(pid: int) -> list[tuple[int, str]]:
    out = subprocess.run(["ps", "-o", "pid=,stat=", "--ppid", str(pid)],
                         capture_output=True, text=True).stdout
    return [(int(p), s) for p, s in (line.split() for line in out.splitlines())]


def maint_holders(dep) -> list[str]:
    """Who holds the maintenance lease (the hosts' rows are beside it)."""
    return [r["holder"] for r in
            dep.rows("SELECT holder FROM worker_leases WHERE name = 'maintenance'")]


def slow_input(dep, name: str, seconds: float, **extra):
    pidfile = dep.root / f"{name}.pid"
    return write_input(dep.root / f"{name}.csv", mode="slow", seconds=seconds,
                       pidfile=pidfile, **extra), pidfile


def test_killed_worker_is_replaced_and_its_run_executed_again_once(deploy):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, **{"supervisor.workers": 2})
    ledger = dep.root / "ledger.txt"
    doc = write_input(dep.root / "ledger.csv", mode="ledger", ledger=ledger, seconds=4)
    run = dep.enqueue(doc)["run_id"]
    sup = dep.start_worker()
    slot = slot_holding(dep, run)
    # The claim is on the scoreboard before the engine runs: kill the worker
    # only once its engine has begun the run, which the test counts below.
    wait_until(lambda: ledger.exists() and ledger.read_text().endswith(" start\n"), 30,
               "the engine to begin the run")
    os.kill(slot["pid"], signal.SIGKILL)
    # The dead worker's claim is released at once, not after the lease.
    row = dep.wait_run(run, timeout=60)
    assert row["status"] == "succeeded"
    assert row["attempt_count"] == 2
    starts = [line for line in ledger.read_text().splitlines() if line.endswith(" start")]
    assert len(starts) == 2
    assert len(dep.rows("SELECT * FROM run_metrics WHERE run_id = ?", run)) == 1
    assert worker_pids(dep) and slot["pid"] not in worker_pids(dep)
    assert sup.poll() is None


@pytest.mark.backends("sqlite")      # the database is set below, whatever the case
def test_worker_that_cannot_connect_crash_loops_with_growing_delays(deploy, tmp_path):
    # A PostgreSQL server that is not (yet) there: waiting may mend that.
    # (An SQLite path that can never be created is a configuration error
    # instead: test_db_faults.py.)
    nowhere = tmp_path / "no-server"
    nowhere.mkdir()
    dep = deploy(**{"database.backend": "pgsql", "database.host": str(nowhere),
                    "database.database": "ade", "supervisor.workers": 1})
    sup = dep.start_worker()
    time.sleep(30)
    assert sup.poll() is None
    log = open(sup.log_path, encoding="utf-8", errors="replace").read()
    starts = [time.mktime(time.strptime(line[:19], "%Y-%m-%dT%H:%M:%S")) +
              float("0" + line[19:23])
              for line in log.splitlines() if "supervisor info: worker 0 started" in line]
    assert 3 <= len(starts) <= 6, log
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    # Each start waits longer than the one before: never a tight fork loop.
    assert all(later > earlier for earlier, later in zip(gaps, gaps[1:])), gaps
    assert min(gaps) >= 1.0


def test_term_lets_runs_finish_and_the_supervisor_exits_0(deploy):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND,
                 **{"supervisor.workers": 2, "supervisor.drain_timeout": 30})
    runs = [dep.enqueue(slow_input(dep, f"s{i}", 3)[0])["run_id"] for i in range(2)]
    sup = dep.start_worker()
    for run in runs:
        slot_holding(dep, run)
    sup.send_signal(signal.SIGTERM)
    assert dep.wait_worker(sup, timeout=30) == 0
    rows = [dep.run_row(r) for r in runs]
    assert [r["status"] for r in rows] == ["succeeded", "succeeded"]
    assert not dep.rows("SELECT id FROM runs WHERE status = 'running'")


def test_drain_timeout_releases_runs_without_using_an_attempt(deploy):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND,
                 **{"supervisor.workers": 1, "supervisor.drain_timeout": 1})
    doc, pidfile = slow_input(dep, "long", 60)
    run = dep.enqueue(doc)["run_id"]
    sup = dep.start_worker()
    slot_holding(dep, run)
    wait_until(pidfile.exists, 20, "the engine to start")
    started = time.monotonic()
    sup.send_signal(signal.SIGTERM)
    assert dep.wait_worker(sup, timeout=30) == 0
    assert time.monotonic() - started < 15
    row = dep.run_row(run)
    assert row["status"] == "queued" and row["attempt_count"] == 0, row
    assert not pid_alive(int(pidfile.read_text()))


def test_quit_releases_claims_at_once(deploy):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, **{"supervisor.workers": 2})
    runs = [dep.enqueue(slow_input(dep, f"q{i}", 60)[0])["run_id"] for i in range(2)]
    sup = dep.start_worker()
    for run in runs:
        slot_holding(dep, run)
    sup.send_signal(signal.SIGQUIT)
    assert dep.wait_worker(sup, timeout=20) == 0
    for run in runs:
        row = dep.run_row(run)
        assert row["status"] == "queued" and row["claimed_by"] is None, row
        assert row["attempt_count"] == 0


def test_second_term_escalates_to_quit(deploy):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND,
                 **{"supervisor.workers": 1, "supervisor.drain_timeout": 120})
    run = dep.enqueue(slow_input(dep, "esc", 60)[0])["run_id"]
    sup = dep.start_worker()
    slot_holding(dep, run)
    sup.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    sup.send_signal(signal.SIGTERM)
    assert dep.wait_worker(sup, timeout=20) == 0
    assert dep.run_row(run)["status"] == "queued"


def test_hup_with_a_valid_file_replaces_workers_with_the_new_settings(deploy):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, **{"supervisor.workers": 1})
    first = dep.enqueue(write_input(dep.root / "a.csv"))["run_id"]
    sup = dep.start_worker()
    dep.wait_run(first)
    before = worker_pids(dep)
    dep.configure(engine_command="")            # back to the real engine
    sup.send_signal(signal.SIGHUP)
    wait_until(lambda: worker_pids(dep) and worker_pids(dep) != before, 20,
               "the worker to be replaced")
    second = dep.enqueue(write_input(dep.root / "b.csv"))["run_id"]
    dep.wait_run(second)
    cmds = [[r["data"]["cmd"] for r in dep.events(run) if r["event"] == "run.engine.start"][0]
            for run in (first, second)]
    assert cmds[0][1].endswith("fake_engine.py")
    assert cmds[1][1:3] == ["-m", "ade_engine"]
    assert sup.poll() is None


def test_ctl_reaches_the_daemon_while_the_file_is_broken(deploy):
    """A broken key in the file does not lock the operator out of the
    daemon that runs on the old configuration; reload says what is wrong."""
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, **{"supervisor.workers": 1})
    sup = dep.start_worker()
    wait_until(lambda: worker_pids(dep), 20, "a worker")
    good = dep.conf_path.read_text()
    dep.conf_path.write_text(good + "\n[worker]\nlease_seconds = soon\n")
    result = dep.ctl("status", json_out=True)
    assert json.loads(result.stdout)["slots"], result.stdout
    assert "lease_seconds" in result.stderr and "running daemon" in result.stderr
    result = dep.ctl("reload", check=False)
    assert result.returncode == 1, result
    assert "invalid configuration" in result.stdout and "lease_seconds" in result.stdout
    assert dep.ctl("scale", "2").stdout.startswith("ok")
    wait_until(lambda: len(worker_pids(dep)) == 2, 20, "a second worker")
    assert sup.poll() is None
    dep.conf_path.write_text(good)
    assert dep.ctl("drain").stdout.startswith("ok")
    assert dep.wait_worker(sup, timeout=60) == 0


@pytest.mark.backends("sqlite")      # supervisor-only: no database in play
def test_hup_with_an_invalid_file_keeps_the_old_configuration(deploy):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, **{"supervisor.workers": 1})
    sup = dep.start_worker()
    wait_until(lambda: worker_pids(dep), 20, "a worker")
    before = worker_pids(dep)
    good = dep.conf_path.read_text()
    dep.conf_path.write_text(good + "\n[worker]\nlease_seconds = soon\n")
    sup.send_signal(signal.SIGHUP)
    wait_until(lambda: "keeping the old one" in open(sup.log_path, errors="replace").read(),
               20, "the reload to be refused")
    log = open(sup.log_path, encoding="utf-8", errors="replace").read()
    assert "lease_seconds" in log
    dep.conf_path.write_text(good)       # ade-ctl reads the file too
    assert worker_pids(dep) == before and sup.poll() is None
    run = dep.enqueue(write_input(dep.root / "c.csv"))["run_id"]
    assert dep.wait_run(run)["status"] == "succeeded"


@pytest.mark.backends("sqlite")      # supervisor-only: no database in play
def test_usr1_reopens_a_rotated_log_file(deploy):
    dep = deploy(**{"supervisor.workers": 1})
    log = dep.root / "superd.log"
    dep.configure(**{"supervisor.log_file": str(log)})
    proc = subprocess.Popen([str(dep._worker_cmd(False)[0]), "-c", str(dep.conf_path), "-f"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dep._procs.append(proc)
    wait_until(lambda: log.exists() and "supervisor started" in log.read_text(), 20,
               "the log file")
    rotated = dep.root / "superd.log.1"
    log.rename(rotated)
    proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: log.exists() and "log files reopened" in log.read_text(), 20,
               "a new log file")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert "supervisor stopped" in log.read_text()
    assert "supervisor stopped" not in rotated.read_text()


@pytest.mark.backends("sqlite")      # supervisor-only: no database in play
def test_ttin_and_ttou_add_and_remove_a_worker(deploy):
    dep = deploy(**{"supervisor.workers": 1})
    sup = dep.start_worker()
    wait_until(lambda: len(worker_pids(dep)) == 1, 20, "one worker")
    sup.send_signal(signal.SIGTTIN)
    wait_until(lambda: len(worker_pids(dep)) == 2, 20, "two workers")
    sup.send_signal(signal.SIGTTOU)
    wait_until(lambda: len(worker_pids(dep)) == 1 and status(dep)["workers"] == 1, 20,
               "one worker again")
    assert dep.ctl("scale", "3").stdout.startswith("ok")
    wait_until(lambda: len(worker_pids(dep)) == 3, 20, "three workers")


def test_two_supervisors_hold_the_maintenance_lease_one_at_a_time(deploy):
    dep = deploy(cleanup_interval=1, **{"supervisor.workers": 1})
    dep.db().execute("DELETE FROM worker_leases")     # the template's own holder
    first = dep.start_worker()
    wait_until(lambda: maint_holders(dep), 20, "a lease")
    other = dep.root / "other.conf"
    other.write_text(dep.conf_path.read_text() + "\n")
    text = other.read_text().replace("[supervisor]",
                                     f"[supervisor]\ncontrol_socket = {dep.root / 'b.sock'}")
    other.write_text(text)
    second = subprocess.Popen([str(dep._worker_cmd(False)[0]), "-c", str(other), "-f", "-d"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dep._procs.append(second)
    holders = set()
    for _ in range(20):
        holders.update(maint_holders(dep))
        time.sleep(0.25)
    assert len(holders) == 1, holders
    assert holders.pop().endswith(f":{first.pid}")
    # The holder stops renewing: the other supervisor takes over.
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    wait_until(lambda: maint_holders(dep)[0]
               .endswith(f":{second.pid}"), 60, "the second supervisor to take over")


@pytest.mark.backends("sqlite")      # supervisor-only: no database in play
def test_a_hundred_worker_deaths_leave_no_zombie(deploy):
    dep = deploy(**{"supervisor.workers": 8, "supervisor.stable_seconds": 1})
    sup = dep.start_worker()
    deaths = 0
    deadline = time.monotonic() + 120
    while deaths < 100 and time.monotonic() < deadline:
        for s in status(dep)["slots"]:
            # A worker that lived past stable_seconds comes back after the
            # one-second floor; younger ones would back off longer.
            if s["pid"] and s["state"] == "idle" and time.time() - s["since"] > 1.1 \
                    and deaths < 100:
                os.kill(s["pid"], signal.SIGKILL)
                deaths += 1
        time.sleep(0.2)
    assert deaths == 100
    time.sleep(1)
    assert not [p for p, st in children(sup.pid) if st.startswith("Z")]
    wait_until(lambda: len(worker_pids(dep)) == 8, 60, "all eight workers back")


def test_killed_supervisor_stops_its_workers_and_a_new_one_recovers(deploy):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, **{"supervisor.workers": 2})
    docs = [slow_input(dep, f"k{i}", 30) for i in range(2)]
    runs = [dep.enqueue(doc)["run_id"] for doc, _ in docs]
    sup = dep.start_worker()
    workers = [slot_holding(dep, run)["pid"] for run in runs]
    for _, pidfile in docs:
        wait_until(pidfile.exists, 20, "the engine to start")
    sup.send_signal(signal.SIGKILL)
    sup.wait(timeout=10)
    # Parent death reaches the workers: they stop their engines and exit.
    wait_until(lambda: not any(pid_alive(p) for p in workers), 20, "the workers to stop")
    for _, pidfile in docs:
        wait_until(lambda: not pid_alive(int(pidfile.read_text())), 20, "the engine to stop")
    dep.configure(engine_command="")
    dep.start_worker()
    for run in runs:
        assert dep.wait_run(run, timeout=90)["status"] == "succeeded"


@pytest.mark.backends("sqlite")      # supervisor-only: no database in play
@pytest.mark.parametrize("how", ["hup", "ctl"])
def test_term_after_a_reload_exits_0_and_removes_the_pidfile(deploy, how):
    dep = deploy(**{"supervisor.workers": 1})
    pidfile = dep.root / "superd.pid"
    dep.configure(**{"supervisor.pidfile": str(pidfile)})
    sup = dep.start_worker()
    wait_until(lambda: len(worker_pids(dep)) == 1, 20, "a worker")
    assert int(pidfile.read_text()) == sup.pid
    before = worker_pids(dep)
    if how == "hup":
        sup.send_signal(signal.SIGHUP)
    else:
        assert dep.ctl("reload").stdout.startswith("ok")
    wait_until(lambda: worker_pids(dep) and worker_pids(dep) != before, 30,
               "the worker to be replaced")
    sup.send_signal(signal.SIGTERM)
    assert dep.wait_worker(sup, timeout=60) == 0, dep.worker_logs()
    assert not pidfile.exists()


def ledger_run(dep, name: str, seconds: float):
    """A run whose engine writes "start" and, seconds later, "end" to a ledger."""
    ledger = dep.root / f"{name}.ledger"
    doc = write_input(dep.root / f"{name}.csv", mode="ledger", ledger=ledger,
                      seconds=seconds)
    return dep.enqueue(doc)["run_id"], ledger


def engine_started(ledger) -> bool:
    return ledger.exists() and " start\n" in ledger.read_text()


def test_term_after_a_reload_lets_the_busy_worker_finish_its_run(deploy):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND,
                 **{"supervisor.workers": 1, "supervisor.drain_timeout": 120})
    run, ledger = ledger_run(dep, "busy", 8)
    sup = dep.start_worker()
    slot_holding(dep, run)
    wait_until(lambda: engine_started(ledger), 30, "the engine to begin the run")
    assert dep.ctl("reload").stdout.startswith("ok")
    sup.send_signal(signal.SIGTERM)
    # The reload and the drain each asked the worker to stop after its job:
    # neither may cut the job short.
    assert dep.wait_worker(sup, timeout=120) == 0, dep.worker_logs()
    row = dep.run_row(run)
    assert row["status"] == "succeeded" and row["attempt_count"] == 1, row
    assert ledger.read_text().count(" start\n") == 1
    assert ledger.read_text().count(" end\n") == 1


def test_two_reloads_replace_idle_workers_at_once_and_busy_ones_after_their_job(deploy):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, **{"supervisor.workers": 2})
    run, ledger = ledger_run(dep, "busy", 8)
    sup = dep.start_worker()
    busy = slot_holding(dep, run)
    wait_until(lambda: engine_started(ledger), 30, "the engine to begin the run")
    wait_until(lambda: len(worker_pids(dep)) == 2, 30, "two workers")
    idle = [p for p in worker_pids(dep) if p != busy["pid"]]
    for _ in range(2):
        assert dep.ctl("reload").stdout.startswith("ok")
    # The idle worker is replaced at once, the busy one keeps its run.
    wait_until(lambda: len(worker_pids(dep)) == 2 and idle[0] not in worker_pids(dep),
               30, "the idle worker to be replaced")
    assert pid_alive(busy["pid"])
    assert slot_holding(dep, run)["pid"] == busy["pid"]
    row = dep.wait_run(run, timeout=120)
    assert row["status"] == "succeeded" and row["attempt_count"] == 1, row
    assert ledger.read_text().count(" start\n") == 1
    # ... and is replaced once it has finished.
    wait_until(lambda: len(worker_pids(dep)) == 2 and busy["pid"] not in worker_pids(dep),
               30, "the busy worker to be replaced after its run")
    assert sup.poll() is None


def idle_slots(dep, n: int) -> list:
    """Waits for n workers, all idle, and returns their slots in order."""
    wait_until(lambda: len(worker_pids(dep)) == n and
               all(s["state"] == "idle" for s in status(dep)["slots"]), 30,
               f"{n} idle workers")
    return sorted(status(dep)["slots"], key=lambda s: s["slot"])


def test_scaling_down_retires_idle_workers_before_busy_ones(deploy):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, **{"supervisor.workers": 3})
    sup = dep.start_worker()
    slots = idle_slots(dep, 3)
    # Only the worker of the last slot may claim: the others are paused.
    paused = [s["pid"] for s in slots[:2]]
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        run, ledger = ledger_run(dep, "busy", 8)
        busy = slot_holding(dep, run)
        assert busy["slot"] == slots[2]["slot"]
        wait_until(lambda: engine_started(ledger), 30, "the engine to begin the run")
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
    assert dep.ctl("scale", "1").stdout.startswith("ok")
    wait_until(lambda: worker_pids(dep) == [busy["pid"]], 30, "the idle workers to go")
    row = dep.wait_run(run, timeout=120)
    assert row["status"] == "succeeded" and row["attempt_count"] == 1, row
    assert ledger.read_text().count(" start\n") == 1
    assert status(dep)["workers"] == 1
    assert sup.poll() is None


def hold_claims(dep) -> Database:
    """A connection whose open transaction makes every claim wait: SQLite's
    write lock, or on PostgreSQL a lock on runs that conflicts with UPDATE
    (claims skip locked rows, not a locked table)."""
    conn = Database(dep.backend, path=dep.db_path, pg=dep.pg, name=dep.db_name)
    if dep.backend == "sqlite":
        conn.execute("BEGIN IMMEDIATE")
    else:
        conn.execute("BEGIN")
        conn.execute("LOCK TABLE runs IN EXCLUSIVE MODE")
    return conn


# SQL Server offers no lock that a READPAST claim must wait for on every
# server (Babelfish ignores table hints), so this case keeps to the others.
@pytest.mark.backends("sqlite", "pgsql")
def test_scaling_down_retires_a_claiming_worker_before_a_busy_one(deploy):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, **{"supervisor.workers": 2})
    sup = dep.start_worker()
    slots = idle_slots(dep, 2)
    # The run goes to the last slot: a tie between a claiming worker and a
    # busy one would retire the busy one, as the later slot.
    # The claims are held before it goes on: its first step is then a
    # claim, which waits.  Held after, the lock could come between a look
    # that found nothing and the environment pass after it, which waits
    # for the lock too, with the worker idle, not claiming.
    os.kill(slots[0]["pid"], signal.SIGSTOP)
    lock = None
    try:
        run = dep.enqueue(slow_input(dep, "busy", 60)[0])["run_id"]
        busy = slot_holding(dep, run)
        assert busy["slot"] == slots[1]["slot"]
        lock = hold_claims(dep)
    finally:
        os.kill(slots[0]["pid"], signal.SIGCONT)
    try:
        wait_until(lambda: any(s["slot"] == slots[0]["slot"] and s["state"] == "claiming"
                               for s in status(dep)["slots"]), 30,
                   "the idle worker to wait in a claim")
        assert dep.ctl("scale", "1").stdout.startswith("ok")
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    wait_until(lambda: worker_pids(dep) == [busy["pid"]], 30, "the claiming worker to go")
    row = dep.run_row(run)
    assert row["status"] == "running" and row["attempt_count"] == 1, row
    assert sup.poll() is None


def signal_pending(pid: int, sig: int) -> bool:
    """Whether a signal sent to pid waits to be delivered."""
    bit = 1 << (sig - 1)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("SigPnd", "ShdPnd") and int(value, 16) & bit:
            return True
    return False


@pytest.mark.backends("sqlite")      # supervisor-only: no database in play
def test_two_quick_ttou_remove_two_workers(deploy):
    dep = deploy(**{"supervisor.workers": 3})
    sup = dep.start_worker()
    wait_until(lambda: len(worker_pids(dep)) == 3, 30, "three workers")
    # A control client that says nothing keeps the supervisor busy for a
    # while (or not at all): the signals may arrive before its event loop
    # looks at them.  The kernel merges a signal with one still pending,
    # so the second is sent once the first has reached the supervisor.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as quiet:
        quiet.connect(str(status(dep) and control_socket(dep)))
        for _ in range(2):
            sup.send_signal(signal.SIGTTOU)
            wait_until(lambda: not signal_pending(sup.pid, signal.SIGTTOU), 10,
                       "the signal to be delivered", interval=0.001)
    wait_until(lambda: status(dep)["workers"] == 1 and len(worker_pids(dep)) == 1, 30,
               "one worker")
    assert sup.poll() is None


def proc_state(pid: int) -> str | None:
    """A process's state letter (R, S, T, Z...), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def stop_a_maintenance_pass(dep, sup) -> int:
    """Catches a maintenance pass and stops it (SIGSTOP), as a pass stuck on
    the database would be; returns its pid.  Passes are short: the
    supervisor's children are watched directly, not through ade-ctl."""
    workers = set(worker_pids(dep))
    kids = Path(f"/proc/{sup.pid}/task/{sup.pid}/children")

    def catch():
        others = [int(p) for p in kids.read_text().split() if int(p) not in workers]
        if len(others) != 1:
            return None
        pid = others[0]
        try:
            os.kill(pid, signal.SIGSTOP)
            state = wait_until(lambda: proc_state(pid) in ("T", "Z", None) and
                               (proc_state(pid) or "gone"), 10, "the pass to stop")
        except ProcessLookupError:
            return None
        if state != "T":                                # it had ended
            return None
        return pid
    return wait_until(catch, 60, "a maintenance pass", interval=0.002)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGQUIT], ids=["term", "quit"])
def test_a_stuck_maintenance_pass_does_not_keep_the_supervisor_from_exiting(deploy, sig):
    dep = deploy(cleanup_interval=1, **{"supervisor.workers": 1})
    sup = dep.start_worker()
    wait_until(lambda: len(worker_pids(dep)) == 1, 30, "a worker")
    worker = worker_pids(dep)[0]
    maint = stop_a_maintenance_pass(dep, sup)
    assert status(dep)["maintenance_pid"] == maint
    sup.send_signal(sig)
    assert dep.wait_worker(sup, timeout=90) == 0, dep.worker_logs()
    assert not pid_alive(maint) and not pid_alive(worker)


@pytest.mark.backends("pgsql")      # a pass waits on a PostgreSQL table lock
def test_quit_stops_a_waiting_maintenance_pass_without_a_core_dump(deploy, pg_server):
    # The pass would wait for the lock as long as a statement may take.
    dep = deploy(cleanup_interval=1, **{"supervisor.workers": 1,
                                        "database.query_timeout": 600})
    sup = dep.start_worker()
    wait_until(lambda: [s["state"] for s in status(dep)["slots"]] == ["idle"], 30,
               "an idle worker")
    blocker = psycopg2.connect(host=pg_server.socket_dir, dbname=dep.db_name,
                               user=pg_server.user)
    blocker.autocommit = False
    try:
        blocker.cursor().execute("LOCK TABLE worker_leases IN ACCESS EXCLUSIVE MODE")
        # The next pass waits for the lock, and keeps waiting.
        wait_until(lambda: dep.rows("SELECT pid FROM pg_locks WHERE NOT granted"
                                    " AND relation = 'worker_leases'::regclass"), 30,
                   "a maintenance pass waiting for the lock")
        maint = status(dep)["maintenance_pid"]
        assert maint
        sup.send_signal(signal.SIGQUIT)
        assert dep.wait_worker(sup, timeout=60) == 0, dep.worker_logs()
        assert not pid_alive(maint)
    finally:
        blocker.rollback()
        blocker.close()
    log = open(sup.log_path, encoding="utf-8", errors="replace").read()
    assert "maintenance killed" not in log and "core dumped" not in log, log


def ask_raw(path: Path, request: bytes) -> bytes:
    """Sends request on the control socket; returns the answer up to the close."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(60)
        conn.connect(str(path))
        conn.sendall(request)
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def connection_open(conn: socket.socket) -> bool:
    try:
        return conn.recv(1, socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except ConnectionError:
        return False


@pytest.mark.backends("sqlite")      # supervisor-only: no database in play
def test_a_silent_control_client_delays_no_one_and_is_dropped_in_time(deploy):
    dep = deploy(**{"supervisor.workers": 1})
    sup = dep.start_worker()
    wait_until(lambda: len(worker_pids(dep)) == 1, 30, "a worker")
    path = control_socket(dep)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent, \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as halfway:
        silent.connect(str(path))               # says nothing
        halfway.connect(str(path))
        halfway.sendall(b"sta")                 # and never the rest
        answer = json.loads(ask_raw(path, b"status\n"))
        assert answer["pid"] == sup.pid
        # The other client was answered while these two still wait.
        assert connection_open(silent) and connection_open(halfway)
        assert dep.ctl("scale", "2").stdout.startswith("ok")
        assert connection_open(silent) and connection_open(halfway)
        # ... until their time is up.
        wait_until(lambda: not connection_open(silent) and not connection_open(halfway),
                   60, "the silent clients to be dropped")
    # A request that never ends is refused, not stored.
    answer = ask_raw(path, b"x" * 200000)
    assert answer.startswith(b"error:"), answer
    wait_until(lambda: len(worker_pids(dep)) == 2, 30, "two workers")
    assert sup.poll() is None


def statements_by_pid(log: Path, since: int) -> dict[int, int]:
    """Statements each worker sent (their echo lines) after byte since."""
    counts: dict[int, int] = {}
    with open(log, "rb") as f:
        f.seek(since)
        for line in f.read().decode(errors="replace").splitlines():
            if "] worker " in line and " sql: " in line:
                pid = int(line.split("[", 1)[1].split("]", 1)[0])
                counts[pid] = counts.get(pid, 0) + 1
    return counts


def test_one_idle_worker_looks_for_work_and_wakes_the_others_for_a_burst(deploy):
    # The sleepers would look by themselves after cleanup_interval: make
    # that longer than the test.  PostgreSQL polls too (notify = no), so
    # that the looking worker's statements can be counted.
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND,
                 **{"supervisor.workers": 4, "worker.cleanup_interval": "600",
                    "worker.notify": "no",
                    "worker.log_level": "debug", "database.echo": "yes"})
    sup = dep.start_worker()

    def settled():
        slots = status(dep)["slots"]
        # The others asleep, not still on their way there after a look.
        return slots if len(slots) == 4 and all(s["state"] == "idle" for s in slots) \
            and sum(1 for s in slots if s.get("looking")) == 1 \
            and sum(1 for s in slots if s.get("asleep")) == 3 else None
    slots = wait_until(settled, 60, "four idle workers, one looking for work, three asleep")
    looking = next(s["pid"] for s in slots if s.get("looking"))
    text = dep.ctl("status").stdout
    assert sum(1 for line in text.splitlines()[2:] if "looking" in line) == 1, text

    # Over several of the looking worker's polls, the others send nothing.
    mark = sup.log_path.stat().st_size
    wait_until(lambda: statements_by_pid(sup.log_path, mark).get(looking, 0) >= 10, 60,
               "the looking worker to poll a few times")
    assert set(statements_by_pid(sup.log_path, mark)) == {looking}

    # A burst wakes them one after the other until all four hold a run.
    go = dep.root / "go"
    runs = [dep.enqueue(write_input(dep.root / f"burst{i}.csv", mode="paced", steps=1,
                                    go=go))["run_id"] for i in range(4)]
    wait_until(lambda: sorted(s.get("claim_id") or "" for s in status(dep)["slots"])
               == sorted(runs), 60, "all four workers to hold a run of the burst")
    (dep.root / "go.1").write_text("1")
    for run in runs:
        assert dep.wait_run(run)["status"] == "succeeded"
    wait_until(lambda: settled(), 60, "the workers to be idle again, one looking")


def statement_kinds(log: Path, since: int, kinds: dict[str, str]) -> dict[str, int]:
    """How many of the workers' echoed statements after byte since start
    with each of the texts in kinds (name: start of the statement)."""
    counts = {name: 0 for name in kinds}
    with open(log, "rb") as f:
        f.seek(since)
        for line in f.read().decode(errors="replace").splitlines():
            if "] worker " in line and " sql: " in line:
                text = line.split(" sql: ", 1)[1]
                for name, start in kinds.items():
                    counts[name] += text.startswith(start)
    return counts


@pytest.mark.backends("pgsql")      # the statements are told apart by their text
def test_an_idle_look_is_not_repeated_after_an_empty_environment_pass(deploy):
    # Polling, with the environment pass due at every look: a pass that
    # made nothing claimable is not followed by a second look for runs.
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND,
                 **{"worker.notify": "no", "worker.poll_interval": "1.5",
                    "worker.poll_interval_max": "1.5",
                    "worker.log_level": "debug", "database.echo": "yes"})
    sup = dep.start_worker()
    wait_until(lambda: any(s.get("looking") for s in status(dep)["slots"]), 60,
               "an idle worker looking for work")
    kinds = {"claim": "WITH c AS MATERIALIZED (SELECT q.id",
             "pass": "INSERT INTO environments"}
    mark = sup.log_path.stat().st_size
    wait_until(lambda: statement_kinds(sup.log_path, mark, kinds)["pass"] >= 4, 60,
               "a few environment passes")
    counts = statement_kinds(sup.log_path, mark, kinds)
    assert counts["claim"] <= counts["pass"] + 1, counts


@pytest.mark.backends("pgsql")      # NOTIFY wakes the worker; the text tells the claims apart
def test_a_worker_told_of_new_work_looks_for_runs_first(deploy, tmp_path):
    # Its only wake is the notification (no sweep, no timeout meanwhile).
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND,
                 **{"worker.cleanup_interval": "600", "worker.listen_timeout": "600",
                    "worker.log_level": "debug", "database.echo": "yes"})
    sup = dep.start_worker()
    slots = wait_until(lambda: [s for s in status(dep)["slots"] if s.get("looking")],
                       60, "an idle worker looking for work")
    looking = slots[0]["pid"]
    # Longer than the 2 s between looks for environments: one is due.
    time.sleep(2.5)
    mark = sup.log_path.stat().st_size
    run = dep.enqueue(write_input(tmp_path / "doc.csv"))["run_id"]
    assert dep.wait_run(run)["status"] == "succeeded"
    with open(sup.log_path, "rb") as f:
        f.seek(mark)
        sent = [line.split(" sql: ", 1)[1] for line in
                f.read().decode(errors="replace").splitlines()
                if f"[{looking}] worker " in line and " sql: " in line]
    assert sent and sent[0].startswith("WITH c AS MATERIALIZED (SELECT q.id"), sent[:3]


@pytest.mark.backends("sqlite", "mssql")   # PostgreSQL has its notifications
def test_idle_workers_are_woken_by_a_commit_not_a_timer(deploy, tmp_path):
    # Polls and waits so long that only the wait can explain a pickup: the
    # watch of the SQLite files, the look on the SQL Server.
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND,
                 **{"supervisor.workers": 2, "worker.poll_interval": "600",
                    "worker.poll_interval_max": "600", "worker.listen_timeout": "600",
                    "worker.cleanup_interval": "600"})
    dep.start_worker()
    wait_until(lambda: any(s.get("looking") for s in status(dep)["slots"]), 60,
               "an idle worker looking for work")
    for i in range(3):
        run = dep.enqueue(write_input(tmp_path / f"r{i}.csv"))["run_id"]
        assert dep.wait_run(run, timeout=120)["status"] == "succeeded"
        wait_until(lambda: any(s.get("looking") for s in status(dep)["slots"]), 60,
                   "the workers to be idle again")


@pytest.mark.backends("mssql")     # its idle wait looks at the queue itself
def test_a_waiting_look_that_sees_unclaimable_work_does_not_spin(deploy, tmp_path):
    # A queued run whose environment is being built elsewhere is seen by
    # every look, and no claim can take it: the looking worker polls at
    # poll_interval then, instead of looking again at once.
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND,
                 **{"worker.poll_interval": "1", "worker.poll_interval_max": "1",
                    "worker.log_level": "debug", "database.echo": "yes"})
    run = dep.enqueue(write_input(tmp_path / "doc.csv"))["run_id"]
    # Its environment is being built by a worker that is not there (its
    # claim runs for an hour).
    dep.db().execute("UPDATE environments SET status = 'building', claimed_by = 'elsewhere',"
                     " claim_expires_at = DATEADD(hour, 1, SYSUTCDATETIME())")
    sup = dep.start_worker()
    wait_until(lambda: any(s.get("looking") for s in status(dep)["slots"]), 60,
               "an idle worker looking for work")
    looks = {"look": "SET NOCOUNT ON; SET XACT_ABORT ON; DECLARE @i INT = 0, @hit"}
    mark = sup.log_path.stat().st_size
    started = time.monotonic()
    wait_until(lambda: statement_kinds(sup.log_path, mark, looks)["look"] >= 3, 60,
               "a few looks")
    took = time.monotonic() - started
    # At poll_interval (1 s) between them, three looks take two seconds at
    # least; looking again at once would make them hundreds a second.
    assert took >= 1.9, (took, statement_kinds(sup.log_path, mark, looks))
    assert dep.run_row(run)["status"] == "queued"


def test_every_host_on_the_database_is_listed_and_a_dead_one_shown_gone(deploy):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, **{"supervisor.workers": 1})
    hosts = {}
    for name, workers in (("host-a", 1), ("host-b", 2)):
        hosts[name] = dep.start_worker(env={
            "ADE_WORKER_ID": name, "ADE_WORKER_CONCURRENCY": str(workers),
            "ADE_SUPERD_CONTROL_SOCKET": str(dep.data_dir / "run" / f"{name}.sock")})

    def listed():
        result = dep.ctl("hosts", json_out=True, check=False)
        return {h["id"]: h for h in json.loads(result.stdout)} \
            if result.returncode == 0 else {}
    found = wait_until(lambda: (lambda h: h if {"host-a", "host-b"} <= set(h) else None)(
        listed()), 60, "both hosts to be listed")
    assert found["host-a"]["state"] == found["host-b"]["state"] == "up"
    assert (found["host-a"]["workers"], found["host-b"]["workers"]) == (1, 2)
    assert found["host-b"]["pid"] == hosts["host-b"].pid
    text = dep.ctl("hosts").stdout
    assert text.splitlines()[0].split()[:2] == ["HOST", "STATE"]
    also = json.loads(dep.ctl("status", "--hosts", json_out=True).stdout)
    assert {h["id"] for h in also} >= {"host-a", "host-b"}
    assert any(line.split()[:2] == ["host-a", "up"] for line in text.splitlines())

    # A host that dies whole stops renewing its row: shown gone, the other up.
    os.killpg(hosts["host-a"].pid, signal.SIGKILL)
    hosts["host-a"].wait()
    wait_until(lambda: listed().get("host-a", {}).get("state") == "gone", 60,
               "host-a to be shown gone")
    assert listed()["host-b"]["state"] == "up"


@pytest.mark.sqlite_only("the order of the claims is the worker's, whatever the backend")
def test_a_stream_of_runs_costs_one_claim_each(deploy, tmp_path):
    # Before, every run's claim came after an empty claim for an
    # environment to build; now that look comes every few seconds.
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND,
                 **{"supervisor.workers": 1, "worker.log_level": "debug",
                    "database.echo": "yes"})
    runs = [dep.enqueue(write_input(tmp_path / f"r{i}.csv"))["run_id"] for i in range(10)]
    sup = dep.start_worker()
    for run in runs:
        assert dep.wait_run(run)["status"] == "succeeded"
    claims = []
    for line in sup.log_path.read_text(errors="replace").splitlines():
        if " sql: UPDATE environments SET status = 'building'" in line:
            claims.append("env")
        elif " sql: UPDATE runs SET status = 'running'" in line:
            claims.append("run")
    assert claims.count("run") >= 10
    assert ("run", "run") in zip(claims, claims[1:]), claims
