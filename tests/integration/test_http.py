"""The HTTP endpoint ([http] listen): /health, /ready and /metrics served by a
child of the supervisor, and the stats lines of the maintenance pass.

/metrics is parsed with the Prometheus client library's own text parser and
its figures are checked against the database after known work."""

from __future__ import annotations

import json
import os
import re
import signal

import pytest

from adetest import FAKE_ENGINE_COMMAND, pid_alive, wait_until, write_input
from httpkit import answering, get, http_deploy

parser = pytest.importorskip("prometheus_client.parser")


def samples(text: str) -> dict:
    """{(name, frozenset(labels)): value} of every sample of the exposition."""
    out = {}
    for family in parser.text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: dict, name: str, **labels) -> float:
    return found[(name, frozenset(labels.items()))]


def test_metrics_agree_with_the_database_after_known_work(deploy, tmp_path):
    dep, port = http_deploy(deploy, **{"supervisor.workers": 1})
    ok = dep.enqueue(write_input(tmp_path / "ok.csv"))["run_id"]
    flaky = dep.enqueue(write_input(tmp_path / "flaky.csv", mode="flaky",
                                    counter=tmp_path / "count"))["run_id"]
    bad = dep.enqueue(write_input(tmp_path / "bad.csv", mode="exit2"))["run_id"]
    dep.start_worker()
    for run in (ok, flaky):
        assert dep.wait_run(run)["status"] == "succeeded"
    assert dep.wait_run(bad)["status"] == "failed"

    by_status = {}
    for r in dep.rows("SELECT status FROM runs"):
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1

    # the database figures are cached a few seconds: wait for a reading that
    # has every run finished
    def scraped():
        answer = answering(port, "/metrics")
        if answer is None or answer[0] != 200:
            return None
        found = samples(answer[2])
        for status_name in ("succeeded", "failed"):
            if found.get(("ade_runs", frozenset({("status", status_name)}))) != \
                    by_status[status_name]:
                return None
        return answer
    status, headers, text = wait_until(scraped, 30, "metrics with the three runs")
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    found = samples(text)
    for status_name in ("queued", "running", "succeeded", "failed", "cancelled"):
        assert value(found, "ade_runs", status=status_name) == by_status.get(status_name, 0)
    assert value(found, "ade_queue_depth") == 0
    assert value(found, "ade_database_up") == 1

    # two succeeded, one failed for good, one attempt retried: four attempts
    assert value(found, "ade_runs_finished_total", outcome="succeeded") == 2
    assert value(found, "ade_runs_finished_total", outcome="failed") == 1
    assert value(found, "ade_runs_finished_total", outcome="retried") == 1
    assert value(found, "ade_runs_finished_total", outcome="lost") == 0
    attempts = sum(r["attempt_count"] for r in dep.rows(
        "SELECT attempt_count FROM runs WHERE id IN (?, ?, ?)", ok, flaky, bad))
    assert attempts == 4
    assert value(found, "ade_run_duration_seconds_count") == attempts
    assert value(found, "ade_run_duration_seconds_bucket", le="+Inf") == attempts
    assert value(found, "ade_run_duration_seconds_sum") > 0
    assert value(found, "ade_run_pickup_wait_seconds_count") == attempts
    assert value(found, "ade_claims_total", kind="run") == attempts
    # one environment, built here for the template's configuration or not at all
    builds = value(found, "ade_environment_builds_total", outcome="ready")
    assert builds == value(found, "ade_claims_total", kind="environment")
    assert value(found, "ade_environment_build_duration_seconds_count") == builds
    assert value(found, "ade_workers", state="idle") + \
        value(found, "ade_workers", state="running") == 1
    assert value(found, "ade_workers_wanted") == 1
    assert value(found, "ade_worker_restarts_total") == 0
    assert value(found, "ade_claims_lost_total") == 0

    # buckets are cumulative and end at the count
    buckets = sorted(((float(dict(labels)["le"]), v) for (name, labels), v in found.items()
                      if name == "ade_run_duration_seconds_bucket"))
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and counts[-1] == attempts


def test_health_ready_and_what_is_not_served(deploy):
    dep, port = http_deploy(deploy)
    sup = dep.start_worker()
    status, headers, body = wait_until(lambda: answering(port), 30, "the endpoint")
    assert status == 200 and headers["Content-Type"] == "application/json"
    health = json.loads(body)
    assert health["status"] == "ok" and health["supervisor_pid"] == sup.pid

    def ready():
        answer = answering(port, "/ready")
        return answer if answer and answer[0] == 200 else None
    ready_body = json.loads(wait_until(ready, 30, "readiness")[2])
    assert ready_body["ready"] is True and ready_body["database"]["reachable"] is True
    assert ready_body["workers"]["up"] >= 1

    assert get(port, "/nothing")[0] == 404
    assert get(port, "/metrics", method="POST")[0] == 405
    assert get(port, "/metrics", method="HEAD")[0] == 200

    # the endpoint is the supervisor's child and goes with it
    http_pid = json.loads(dep.ctl("status", json_out=True).stdout)["http_pid"]
    assert http_pid > 0
    sup.send_signal(signal.SIGTERM)
    assert dep.wait_worker(sup) == 0
    assert not pid_alive(http_pid)


def test_a_killed_endpoint_is_started_again(deploy):
    dep, port = http_deploy(deploy)
    dep.start_worker()
    wait_until(lambda: answering(port), 30, "the endpoint")
    first = json.loads(dep.ctl("status", json_out=True).stdout)["http_pid"]
    os.kill(first, signal.SIGKILL)

    def replaced():
        pid = json.loads(dep.ctl("status", json_out=True).stdout)["http_pid"]
        return pid if pid not in (0, first) and answering(port) else None
    wait_until(replaced, 30, "a new endpoint")
    assert re.search(r"http endpoint killed by signal 9.*; restarting in",
                     dep.worker_logs()), dep.worker_logs()


def test_without_listen_there_is_no_endpoint(deploy):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    dep.start_worker()
    status = wait_until(lambda: (lambda r: json.loads(r.stdout) if r.returncode == 0 else None)(
        dep.ctl("status", json_out=True, check=False)), 20, "the control socket")
    assert status["http_pid"] == 0


def test_a_listen_address_that_is_not_one_is_reported(deploy):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, **{"http.listen": "localhost"})
    dep.start_worker()
    log = wait_until(lambda: "not restarted" in dep.worker_logs() and dep.worker_logs(), 30,
                     "the supervisor's word on the endpoint")
    assert "http listen = localhost: not HOST:PORT" in log
    assert "http endpoint stopped on a configuration error; not restarted" in log


@pytest.mark.backends("pgsql")
def test_ready_follows_the_database(deploy, pg_server):
    dep, port = http_deploy(deploy)
    dep.start_worker()

    def ready(code):
        def check():
            answer = answering(port, "/ready")
            return answer if answer and answer[0] == code else None
        return check
    wait_until(ready(200), 30, "readiness")
    dep.close_db()
    pg_server.halt()
    try:
        body = json.loads(wait_until(ready(503), 60, "unreadiness with the server down")[2])
        assert body["ready"] is False and body["database"]["reachable"] is False
        assert "database unreachable" in body["reasons"]
        # health is the supervisor's, not the database's
        assert answering(port)[0] == 200
    finally:
        pg_server.resume()
    wait_until(ready(200), 90, "readiness again after the server came back")


def test_stats_lines_count_what_was_done(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, cleanup_interval=1,
                 **{"supervisor.stats_period": 1})
    dep.enqueue(write_input(tmp_path / "ok.csv"))
    bad = dep.enqueue(write_input(tmp_path / "bad.csv", mode="exit2"))["run_id"]
    dep.start_worker()
    dep.wait_run(bad)

    def totals():
        lines = re.findall(r"stats: \d+ s: (\d+) runs? finished \((\d+) succeeded, "
                           r"(\d+) failed, (\d+) cancelled\).*; queue (\d+) due",
                           dep.worker_logs(tail=10**7))
        done = [sum(int(line[i]) for line in lines) for i in range(4)]
        return done if done[0] == 2 else None
    finished, succeeded, failed, cancelled = wait_until(totals, 60, "stats lines of both runs")
    assert (succeeded, failed, cancelled) == (1, 1, 0)
