"""ade-ctl runs tail and envs log: a run's events and a build's log, read
whole or followed while the job goes on, as readable lines or as the
records themselves."""

from __future__ import annotations

import json
import re
import subprocess

from adetest import CTL, FAKE_ENGINE_COMMAND, clean_env, wait_until, write_input

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\S+) +(\S+) +(.*)$")


def follower(dep, *args) -> subprocess.Popen:
    return subprocess.Popen([str(CTL), "-c", str(dep.conf_path), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env(), errors="replace")


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the follower did not stop:\n{out}\n{err}") from None
    return proc.returncode, out, err


def events_of(out: str) -> list[str]:
    names = []
    for line in out.splitlines():
        m = LINE.match(line)
        assert m, f"not a log line: {line!r}"
        names.append(m.group(2))
    return names


def test_tail_prints_a_finished_runs_events(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    run = dep.enqueue(write_input(tmp_path / "a.csv"))["run_id"]
    assert dep.run_worker().returncode == 0
    shown = dep.ctl("runs", "tail", run).stdout
    names = events_of(shown)
    assert names[0] == "run.start" and names[-1] == "run.complete"
    assert names == [r["event"] for r in dep.events(run)]
    raw = dep.ctl("runs", "tail", run, "--json").stdout
    assert [json.loads(line) for line in raw.splitlines()] == dep.events(run)
    missing = dep.ctl("runs", "tail", "00000000-0000-4000-8000-000000000000", check=False)
    assert missing.returncode == 3


def test_tail_follows_a_run_from_before_it_starts_to_its_end(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, backoff_base_seconds=1,
                 backoff_max_seconds=1)
    # the first attempt fails, the second succeeds: the follower stays
    # through the retry and stops at the end
    run = dep.enqueue(write_input(tmp_path / "a.csv", mode="flaky",
                                  counter=tmp_path / "count"))["run_id"]
    proc = follower(dep, "runs", "tail", "-f", run)
    dep.start_worker()
    code, out, err = finish(proc)
    assert code == 0, err
    names = events_of(out)
    assert names.count("run.start") == 2 and "run.retry" in names
    assert names[-1] == "run.complete"
    assert dep.run_row(run)["status"] == "succeeded"


def test_tail_of_a_cancelled_run_ends(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    pidfile = tmp_path / "engine.pid"
    run = dep.enqueue(write_input(tmp_path / "a.csv", mode="slow", seconds=120,
                                  pidfile=pidfile))["run_id"]
    dep.start_worker()
    wait_until(pidfile.exists, 60, "the engine to start")
    proc = follower(dep, "runs", "tail", "--follow", run)
    dep.ctl("runs", "cancel", run)
    code, out, err = finish(proc)
    assert code == 0, err
    assert "run.cancelled" in events_of(out)


def test_hostile_engine_output_is_shown_as_text(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    run = dep.enqueue(write_input(tmp_path / "a.csv", mode="garbage"))["run_id"]
    assert dep.run_worker().returncode == 0
    result = subprocess.run([str(CTL), "-c", str(dep.conf_path), "runs", "tail", run],
                            capture_output=True, env=clean_env())
    assert result.returncode == 0, result.stderr
    text = result.stdout
    # no control character reaches the terminal but the line ends
    assert not re.search(rb"[\x00-\x09\x0b-\x1f\x7f]", text)
    assert b"plain text on stdout" in text


def test_envs_log_follows_a_build_at_one_path(deploy, tmp_path):
    dep = deploy(fresh=True)
    run = dep.enqueue(write_input(tmp_path / "a.csv"))["run_id"]
    dep.start_worker()
    env = wait_until(lambda: (dep.environments() or [None])[0], 60, "the environment row")
    proc = follower(dep, "envs", "log", "-f", env["id"])
    code, out, err = finish(proc, timeout=600)
    assert code == 0, err
    names = events_of(out)
    assert names[0] == "environment.start" and names[-1] == "environment.complete"
    assert dep.wait_run(run, timeout=120)["status"] == "succeeded"
    # the log stays where the follower found it
    again = dep.ctl("envs", "log", env["id"], "--json").stdout
    assert [json.loads(line)["event"] for line in again.splitlines()] == names
    assert dep.ctl("envs", "log", "no-such-id", check=False).returncode == 3
