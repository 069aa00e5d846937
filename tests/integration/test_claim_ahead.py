"""A run's success claims the next run in the same transaction (and, on
PostgreSQL, round trip), and a run so claimed is never lost or charged an
attempt when its worker dies or stops before running it."""

from __future__ import annotations

from adetest import FAKE_ENGINE_COMMAND, write_input

import pytest

pytestmark = pytest.mark.backends("pgsql", "sqlite")


def attempts_and_starts(dep, run_id: str) -> tuple[int, list[int]]:
    row = dep.run_row(run_id)
    assert row["status"] == "succeeded", (row, dep.worker_logs())
    starts = [r["data"]["attempt"] for r in dep.events(run_id) if r["event"] == "run.start"]
    return row["attempt_count"], starts


def chained(dep, runs: list[str]) -> int:
    """How many of the runs started when another one of them completed."""
    ids = ",".join(f"'{r}'" for r in runs)
    return dep.rows(f"SELECT count(*) AS n FROM runs a JOIN runs b"
                    f" ON b.started_at = a.completed_at"
                    f" WHERE a.id IN ({ids}) AND b.id IN ({ids})")[0]["n"]


@pytest.mark.backends("pgsql")
def test_a_success_claims_the_next_run_in_its_own_transaction(deploy, tmp_path):
    """now() is the time a transaction began: a run claimed in the
    transaction that wrote the success before it started at the very
    instant that one completed."""
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, **{"supervisor.workers": 1})
    runs = [dep.enqueue(write_input(tmp_path / f"r{i}.csv"))["run_id"] for i in range(4)]
    result = dep.run_worker(timeout=90)
    assert result.returncode == 0, result.stderr
    assert all(dep.run_row(r)["status"] == "succeeded" for r in runs)
    # Compared by the server, to the microsecond.
    assert chained(dep, runs) == len(runs) - 1, dep.rows("SELECT * FROM runs")
    # The last success found nothing more to claim, and claimed nothing.
    assert dep.rows("SELECT count(*) AS n FROM runs WHERE status <> 'succeeded'")[0]["n"] == 0


def test_a_run_claimed_ahead_by_a_worker_that_died_is_released_at_once(deploy, tmp_path):
    # The lease is fifteen minutes: only an immediate release lets the
    # second run finish within the test's deadline.
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, lease_seconds=900,
                 **{"supervisor.workers": 1})
    die = tmp_path / "die-after-claim"
    die.write_text("ahead")
    runs = [dep.enqueue(write_input(tmp_path / f"r{i}.csv"))["run_id"] for i in range(2)]
    superd = dep.start_worker(exit_when_idle=True,
                              env={"ADE_TEST_DIE_AFTER_CLAIM": str(die)})
    assert dep.wait_worker(superd, timeout=240) == 0, dep.worker_logs()
    assert not die.exists(), "no worker died after a claim made ahead"
    # The worker died holding the second run, claimed with the first's
    # success, which was written.
    logs = dep.worker_logs(tail=100000)
    assert f"released run {runs[1]} of a dead worker" in logs, logs
    for run in runs:
        # a claim that was never acted on costs the run no attempt
        assert attempts_and_starts(dep, run) == (1, [1]), dep.worker_logs()


def test_a_worker_that_recycles_gives_back_the_run_it_claimed_ahead(deploy, tmp_path):
    """A worker that stops after a job (here: its job limit) while it holds
    the next run gives that run back at once, without using an attempt."""
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, lease_seconds=900,
                 max_jobs_per_child=1, **{"supervisor.workers": 1})
    runs = [dep.enqueue(write_input(tmp_path / f"r{i}.csv"))["run_id"] for i in range(4)]
    result = dep.run_worker(timeout=240)
    assert result.returncode == 0, result.stderr
    assert "gave back the run claimed ahead" in dep.worker_logs(tail=100000)
    for run in runs:
        assert attempts_and_starts(dep, run) == (1, [1]), dep.worker_logs()


@pytest.mark.backends("pgsql")
def test_a_run_without_results_still_claims_the_next(deploy, tmp_path):
    """A success without result rows is one statement, not a folded one:
    it claims the next run too."""
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, **{"supervisor.workers": 1})
    runs = [dep.enqueue(write_input(tmp_path / f"r{i}.csv", payload="none"))["run_id"]
            for i in range(2)]
    result = dep.run_worker(timeout=240)
    assert result.returncode == 0, result.stderr
    assert all(dep.run_row(r)["status"] == "succeeded" for r in runs)
    assert chained(dep, runs) == 1
