"""ade-superd against hostile engines, crashes, lost leases and concurrency."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import defaultdict

import pytest

from adetest import (
    FAKE_ENGINE_COMMAND, SAMPLES, assert_sample_results, crash, iso_now,
    parse_ts, pid_alive, wait_until, write_input,
)

MB = 1 << 20


def test_garbage_output_does_not_break_the_worker(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, max_event_line="4M")
    worker = dep.start_worker()
    garbage = dep.enqueue(write_input(tmp_path / "garbage.csv", mode="garbage"))["run_id"]
    row = dep.wait_run(garbage, timeout=60)
    assert row["status"] == "succeeded", (row, dep.worker_logs())
    assert row["exit_code"] == 0 and row["attempt_count"] == 1
    assert_sample_results(dep, garbage)

    raw = dep.events_path(garbage).read_bytes()
    raw.decode("utf-8")  # the whole log is valid UTF-8
    records = dep.events(garbage)  # every line is a JSON object
    assert all(isinstance(r.get("event"), str) for r in records)
    assert all(isinstance(r.get("context"), dict) and r["context"]["job_id"] == garbage
               for r in records)
    # the 10 MB line is recorded cut, with its real length
    cut = [r for r in records if isinstance(r.get("data"), dict) and r["data"].get("truncated")]
    assert len(cut) == 1, [r["event"] for r in records]
    assert cut[0]["event"] == "run.engine.stdout"
    assert cut[0]["data"]["truncated"] is True
    assert cut[0]["data"]["line_bytes"] == 10 * MB
    assert set(cut[0]["message"]) == {"x"} and len(cut[0]["message"]) < 64 * 1024
    assert len(raw) < 2 * MB
    text = [r["message"] for r in records if r["event"] in ("run.engine.stdout",
                                                             "run.engine.stderr")]
    assert "plain text on stdout" in text and "plain text on stderr" in text
    assert any(m.startswith("invalid utf-8: \ufffd") for m in text), text
    for not_an_object in ("[1, 2, 3]", '"just a string"', "42", "null",
                          '{"no_event_key": true}'):
        assert not_an_object in text, not_an_object
    # an engine line that brings its own context gets the worker's
    bogus = [r for r in records if r.get("message") == "bogus context"]
    assert len(bogus) == 1 and bogus[0]["context"]["job_id"] == garbage

    # the same worker process goes on to execute the next run
    assert worker.poll() is None, dep.worker_logs()
    second = dep.enqueue(write_input(tmp_path / "second.csv", mode="success"))["run_id"]
    assert dep.wait_run(second, timeout=60)["status"] == "succeeded"
    assert worker.poll() is None
    tokens = [r["data"]["worker"] for run in (garbage, second)
              for r in dep.events(run) if r["event"] == "run.start"]
    assert len({t.split("#")[0] for t in tokens}) == 1, tokens
    assert pid_alive(int(tokens[0].split("#")[0].rsplit(":", 1)[1]))


def test_flood_is_capped_and_the_run_still_succeeds(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, max_log_size="1M")
    run_id = dep.enqueue(write_input(tmp_path / "flood.csv", mode="flood", mb=200))["run_id"]
    result = dep.run_worker(timeout=120)
    assert result.returncode == 0
    row = dep.run_row(run_id)
    assert row["status"] == "succeeded", row
    assert row["exit_code"] == 0
    size = dep.events_path(run_id).stat().st_size
    assert size < 3 * MB, size
    records = dep.events(run_id)
    truncated = [r for r in records if r["event"] == "run.log.truncated"]
    assert len(truncated) == 1
    assert truncated[0]["data"]["dropped_lines"] > 150_000
    assert truncated[0]["data"]["cap_bytes"] == MB
    # the completion event after the flood was still read
    assert_sample_results(dep, run_id)


@pytest.mark.parametrize("max_attempts", [3, 1])
def test_killed_worker_run_is_recovered_after_lease_expiry(deploy, tmp_path, max_attempts):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, lease_seconds=3, cleanup_interval=1,
                 backoff_base_seconds=3, backoff_max_seconds=6)
    pidfile = tmp_path / "engine.pid"
    run_id = dep.enqueue(write_input(tmp_path / "slow.csv", mode="slow", seconds=3,
                                     pidfile=pidfile), max_attempts=max_attempts)["run_id"]
    first = dep.start_worker()
    wait_until(pidfile.exists, 30, "the engine to start")
    engine_pid = int(pidfile.read_text())
    crash(first)
    pidfile.unlink()

    # the run is left running, with the dead worker's lease
    row = dep.run_row(run_id)
    assert row["status"] == "running", row
    assert row["claimed_by"] and row["claim_expires_at"]
    assert row["attempt_count"] == 1
    wait_until(lambda: not pid_alive(engine_pid), 10, "the engine to die with its worker")

    second = dep.start_worker(exit_when_idle=True)

    def swept():
        r = dep.run_row(run_id)
        return r if r["status"] != "running" else None
    row = wait_until(swept, 20, "the lease sweep to recover the run", interval=0.02)
    assert row["error_message"] == "lease expired"
    assert row["attempt_count"] == 1
    assert row["claimed_by"] is None and row["claim_expires_at"] is None
    if max_attempts == 1:
        # no attempt left: the sweep fails the run for good
        assert row["status"] == "failed", row
        assert row["completed_at"] is not None
        assert dep.wait_worker(second, timeout=30) == 0
        assert dep.run_row(run_id) == row
        assert not pidfile.exists(), "the run was executed again"
        return
    assert row["status"] == "queued", row
    assert row["completed_at"] is None
    assert parse_ts(row["available_at"]) > time.time() + 1.0  # after a backoff delay (3 s)

    assert dep.wait_worker(second, timeout=60) == 0
    row = dep.run_row(run_id)
    assert row["status"] == "succeeded", (row, dep.worker_logs())
    assert row["attempt_count"] == 2
    assert row["error_message"] is None and row["claimed_by"] is None
    assert_sample_results(dep, run_id)
    starts = [r for r in dep.events(run_id) if r["event"] == "run.start"]
    assert [r["data"]["attempt"] for r in starts] == [1, 2]
    # two attempts by two different worker processes, each with its own token
    assert starts[0]["data"]["worker"] != starts[1]["data"]["worker"]
    assert starts[0]["data"]["worker"].split("#")[0] != starts[1]["data"]["worker"].split("#")[0]


def test_killed_worker_environment_build_is_recovered(deploy, tmp_path):
    dep = deploy(fresh=True, lease_seconds=3, cleanup_interval=1)
    run_id = dep.enqueue(SAMPLES / "contacts.csv")["run_id"]
    first = dep.start_worker()

    def building():
        envs = dep.environments()
        started = list((dep.data_dir / "venvs").glob("*/*/*/.build-*/.venv/bin/python"))
        return envs and envs[0]["status"] == "building" and started and envs[0]
    env = wait_until(building, 60, "the environment build to be under way")
    crash(first)
    row = dep.environments()[0]
    assert row["status"] == "building" and row["claimed_by"], row

    second = dep.start_worker(exit_when_idle=True)
    assert dep.wait_worker(second, timeout=120) == 0
    (env_after,) = dep.environments()
    assert env_after["id"] == env["id"]
    assert env_after["status"] == "ready", env_after
    assert env_after["error_message"] is None
    run = dep.run_row(run_id)
    assert run["status"] == "succeeded", (run, dep.worker_logs())
    assert run["attempt_count"] == 1
    # the environment in place is the one the second worker built
    (root,) = (dep.data_dir / "venvs").glob(f"*/*/*/{env['id']}")
    log = [json.loads(line) for line in (root / "logs" / "events.ndjson").read_text().splitlines()]
    (start,) = [r for r in log if r["event"] == "environment.start"]
    assert start["data"]["worker"] != row["claimed_by"]
    assert "environment.complete" in [r["event"] for r in log]


def test_two_workers_execute_200_runs_exactly_once(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, **{"supervisor.workers": 2})
    ledger = tmp_path / "ledger.txt"
    doc = write_input(tmp_path / "ledger.csv", mode="ledger", ledger=ledger, seconds=0.02)
    run_ids = [dep.enqueue(doc)["run_id"] for _ in range(200)]
    assert len(set(run_ids)) == 200

    started = time.monotonic()
    workers = [dep.start_worker(exit_when_idle=True)]   # one supervisor, two workers
    for worker in workers:
        assert dep.wait_worker(worker, timeout=150) == 0
    elapsed = time.monotonic() - started

    entries = defaultdict(list)
    for line in ledger.read_text().splitlines():
        run, pid, what = line.split()
        entries[run].append((what, pid))
    assert set(entries) == set(run_ids)
    for run in run_ids:
        assert [w for w, _ in entries[run]] == ["start", "end"], (run, entries[run])
        assert entries[run][0][1] == entries[run][1][1]
    counts = {r["status"]: r["n"] for r in dep.rows(
        "SELECT status, count(*) AS n FROM runs WHERE id IN (%s) GROUP BY status"
        % ",".join("?" * len(run_ids)), *run_ids)}
    assert counts == {"succeeded": 200}, counts
    assert dep.rows("SELECT id FROM runs WHERE status IN ('queued', 'running')") == []
    assert {r["attempt_count"] for r in dep.rows("SELECT attempt_count FROM runs WHERE id IN (%s)"
            % ",".join("?" * len(run_ids)), *run_ids)} == {1}
    # both workers took part
    by_worker = defaultdict(int)
    for run in run_ids:
        (start,) = [r for r in dep.events(run) if r["event"] == "run.start"]
        by_worker[start["data"]["worker"].split("#")[0]] += 1
    assert len(by_worker) == 2, by_worker
    assert elapsed < 120


# The times are parameters (iso_now), which both backends take for their columns.
STEAL = ("UPDATE runs SET claimed_by = 'thief#0001', claim_expires_at = ? WHERE id = ?",
         lambda: iso_now(3600))
CANCEL = ("UPDATE runs SET status = 'cancelled', claimed_by = NULL, claim_expires_at = NULL,"
          " completed_at = ? WHERE id = ?", lambda: iso_now())


@pytest.mark.parametrize("takeover", [STEAL, CANCEL], ids=["stolen", "cancelled"])
def test_lost_lease_stops_the_engine_and_leaves_the_row_alone(deploy, tmp_path, takeover):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, lease_seconds=3)
    pidfile = tmp_path / "engine.pid"
    run_id = dep.enqueue(write_input(tmp_path / "slow.csv", mode="slow", seconds=60,
                                     pidfile=pidfile))["run_id"]
    worker = dep.start_worker()
    wait_until(pidfile.exists, 30, "the engine to start")
    engine_pid = int(pidfile.read_text())

    # another claimant takes the run over (or the API cancels it)
    sql, moment = takeover
    dep.db().execute(sql, (moment(), run_id))
    stolen = dep.run_row(run_id)
    stolen_at = time.monotonic()
    wait_until(lambda: not pid_alive(engine_pid), 10, "the engine to be stopped")
    assert time.monotonic() - stolen_at < 8
    # a cancel reads as one; a run taken over is a lost claim
    event = "run.cancelled" if takeover is CANCEL else "run.lost_claim"
    wait_until(lambda: event in dep.event_names(run_id), 10, event)
    time.sleep(1.5)  # a few more heartbeats' worth of time
    assert dep.run_row(run_id) == stolen
    assert worker.poll() is None
    names = dep.event_names(run_id)
    assert "run.complete" not in names and "run.retry" not in names
    assert dep.rows("SELECT * FROM run_metrics WHERE run_id = ?", run_id) == []


def test_claim_lost_as_the_engine_succeeds_writes_nothing(deploy, tmp_path):
    # A long lease: the run is taken over and the engine succeeds between
    # two heartbeats, so it is the success that finds the claim gone.
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, lease_seconds=600)
    go = tmp_path / "go"
    run_id = dep.enqueue(write_input(tmp_path / "doc.csv", mode="paced", steps=1,
                                     go=go))["run_id"]
    worker = dep.start_worker()
    wait_until(lambda: "run.engine.start" in dep.event_names(run_id), 30,
               "the engine to start")
    sql, moment = STEAL
    dep.db().execute(sql, (moment(), run_id))
    stolen = dep.run_row(run_id)
    (tmp_path / "go.1").write_text("1")
    wait_until(lambda: "run.lost_claim" in dep.event_names(run_id), 30, "the lost claim")
    assert dep.run_row(run_id) == stolen
    for table in ("run_metrics", "run_fields", "run_table_columns"):
        assert dep.rows(f"SELECT * FROM {table} WHERE run_id = ?", run_id) == [], table
    assert "run.complete" not in dep.event_names(run_id)
    assert worker.poll() is None


ENGINE_ENV_ALLOWED = {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
                      "PYTHONUNBUFFERED", "PIP_DISABLE_PIP_VERSION_CHECK", "PIP_NO_INPUT",
                      "PIP_PROGRESS_BAR"}


def test_engine_gets_a_clean_environment_and_its_command_line(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, log_level="warning")
    env_file = tmp_path / "env.json"
    argv_file = tmp_path / "argv.json"
    doc = write_input(tmp_path / "doc.csv", env_file=env_file, argv_file=argv_file)
    answer = dep.enqueue(doc, sheets=["Sheet A", "Sheet B"],
                         options={"log_level": "debug", "engine_args": ["--quiet"]})
    active_argv = tmp_path / "active-argv.json"
    active = dep.enqueue(write_input(tmp_path / "active.csv", argv_file=active_argv),
                         sheets=["Sheet A"], options={"active_sheet_only": True})
    worker_env = {"ADE_SQL_PASSWORD": "hunter2-secret", "ADE_TEST_MARKER": "leak",
                  "SOME_SECRET_TOKEN": "leak", "PYTHONPATH": "/nonexistent/leak",
                  "PIP_INDEX_URL": "http://leak.invalid/", "http_proxy": "http://leak.invalid/",
                  "LANG": "C.UTF-8", "TZ": "UTC"}
    assert dep.run_worker(timeout=60, env=worker_env).returncode == 0
    row = dep.run_row(answer["run_id"])
    assert row["status"] == "succeeded", row
    assert dep.run_row(active["run_id"])["status"] == "succeeded"

    seen = json.loads(env_file.read_text())
    environ = seen["environ"]
    assert set(environ) <= ENGINE_ENV_ALLOWED, set(environ) - ENGINE_ENV_ALLOWED
    assert "leak" not in json.dumps(environ) and "hunter2" not in json.dumps(environ)
    assert environ.get("PYTHONUNBUFFERED") == "1"
    assert environ.get("TZ") == "UTC"
    # only stdin, stdout, stderr (and the descriptor that listed them)
    assert len(seen["fds"]) <= 4 and seen["fds"][:3] == [0, 1, 2], seen["fds"]
    # its own session and process group
    assert seen["sid"] == seen["pid"] and seen["pgid"] == seen["pid"]

    run_dir = dep.run_dir(answer["run_id"])
    # it works in its run's directory, not where the daemon was started
    assert seen["cwd"] == str(run_dir)
    argv = json.loads(argv_file.read_text())
    cfg_dir = dep.config_dir(answer["workspace_id"], answer["configuration_id"])
    assert argv == ["process", "file", "--input", str(run_dir / "input" / "doc.csv"),
                    "--output-dir", str(run_dir / "output"), "--config-package", str(cfg_dir),
                    "--log-format", "ndjson", "--log-level", "DEBUG",
                    "--input-sheet", "Sheet A", "--input-sheet", "Sheet B", "--quiet"]
    assert os.path.isfile(run_dir / row["output_path"])
    # --active-sheet-only wins over sheet names; the worker's log level is the default
    argv = json.loads(active_argv.read_text())
    assert "--active-sheet-only" in argv and "--input-sheet" not in argv
    assert argv[argv.index("--log-level") + 1] == "WARNING"
    assert "--max-findings-per-sheet" not in argv


def test_term_lets_the_current_run_finish_then_exits(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, lease_seconds=30)
    pidfile = tmp_path / "engine.pid"
    current = dep.enqueue(write_input(tmp_path / "slow.csv", mode="slow", seconds=2,
                                      pidfile=pidfile))["run_id"]
    worker = dep.start_worker()
    wait_until(pidfile.exists, 30, "the engine to start")
    later = dep.enqueue(write_input(tmp_path / "later.csv"))["run_id"]
    worker.send_signal(signal.SIGTERM)
    assert dep.wait_worker(worker, timeout=30) == 0
    row = dep.run_row(current)
    assert row["status"] == "succeeded", row
    assert row["attempt_count"] == 1
    assert_sample_results(dep, current)
    # nothing new was started after the TERM
    row = dep.run_row(later)
    assert row["status"] == "queued" and row["attempt_count"] == 0, row


@pytest.mark.parametrize("signals", [["SIGQUIT"], ["SIGTERM", "SIGTERM"]],
                         ids=["quit", "term-twice"])
def test_quit_stops_the_engine_and_releases_the_run(deploy, tmp_path, signals):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, lease_seconds=30)
    pidfile = tmp_path / "engine.pid"
    run_id = dep.enqueue(write_input(tmp_path / "slow.csv", mode="slow", seconds=60,
                                     pidfile=pidfile))["run_id"]
    worker = dep.start_worker()
    wait_until(pidfile.exists, 30, "the engine to start")
    engine_pid = int(pidfile.read_text())
    started = time.monotonic()
    for name in signals:
        worker.send_signal(getattr(signal, name))
        time.sleep(0.3)
    assert dep.wait_worker(worker, timeout=30) == 0
    assert time.monotonic() - started < 10
    assert not pid_alive(engine_pid)
    row = dep.run_row(run_id)
    assert row["status"] == "queued", row
    assert row["attempt_count"] == 0, "a release must not use up an attempt"
    assert row["claimed_by"] is None and row["claim_expires_at"] is None
    assert row["completed_at"] is None and row["exit_code"] is None
    assert "run.released" in dep.event_names(run_id)
    assert parse_ts(row["available_at"]) <= time.time() + 1


