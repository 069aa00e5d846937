"""The run's event log under pressure: its size limit counts what is
written, and a file system that refuses writes costs one warning."""

from __future__ import annotations

import errno
import grp
import os
import pwd
import subprocess

import pytest

from adetest import (
    FAKE_ENGINE_COMMAND, SERVICE_USER, assert_sample_results, share, wait_until, write_input,
)

MB = 1 << 20


def test_size_limit_counts_the_records_written(deploy, tmp_path):
    """One-character lines become records of a few hundred bytes each: the
    limit bounds the file, not the engine's bytes."""
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, max_log_size="1M")
    run_id = dep.enqueue(write_input(tmp_path / "lines.csv", mode="lines",
                                     count=MB))["run_id"]
    assert dep.run_worker(timeout=180).returncode == 0
    row = dep.run_row(run_id)
    assert row["status"] == "succeeded", row
    size = dep.events_path(run_id).stat().st_size
    assert size < MB + 64 * 1024, size
    records = dep.events(run_id)
    (truncated,) = [r for r in records if r["event"] == "run.log.truncated"]
    written = sum(1 for r in records if r["event"] == "run.engine.stdout")
    assert written > 1000
    # every line was either written or counted (and a few engine events
    # after the flood were dropped with them)
    assert MB <= truncated["data"]["dropped_lines"] + written <= MB + 10
    assert_sample_results(dep, run_id)



@pytest.fixture
def tiny_fs(tmp_path):
    """Mounts a 1 MiB tmpfs where asked; unmounted at teardown.  Skips where
    mounting is not allowed (it needs root)."""
    mounted = []

    def mount(path, owner=None):
        path.mkdir(parents=True, exist_ok=True)
        opts = "size=1m,mode=0755"
        if owner is not None:
            opts += f",uid={owner[0]},gid={owner[1]}"
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")
        mounted.append(path)
        return path
    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_refused_writes_warn_once_and_the_log_says_it_is_incomplete(deploy, tmp_path,
                                                                    tiny_fs):
    """The run's log directory is a full file system for a while: one warning
    for the run, a log of whole lines, and once space is back a record of
    what was lost."""
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    flooded, go = tmp_path / "flooded", tmp_path / "go"
    run_id = dep.enqueue(write_input(tmp_path / "stall.csv", mode="stall", mb=2, after=0,
                                     flooded=flooded, go=go))["run_id"]
    run_dir = dep.run_dir(run_id)
    run_dir.mkdir(parents=True)
    share(dep.data_dir / "workspaces")
    owner = None
    if SERVICE_USER is not None:
        owner = (pwd.getpwnam(SERVICE_USER[0]).pw_uid, grp.getgrnam(SERVICE_USER[1]).gr_gid)
    logs = tiny_fs(run_dir / "logs", owner)
    ballast = logs / "ballast"
    ballast.write_bytes(b"b" * (256 * 1024))

    worker = dep.start_worker(exit_when_idle=True)
    log = worker.log_path

    def refused():
        return flooded.exists() and "event log write" in log.read_text(errors="replace")
    wait_until(refused, 60, "the event log to find its file system full")
    ballast.unlink()                      # space comes back
    go.write_text("1")
    assert dep.wait_worker(worker, timeout=120) == 0
    row = dep.run_row(run_id)
    assert row["status"] == "succeeded", (row, dep.worker_logs())
    assert_sample_results(dep, run_id)

    warnings = [line for line in log.read_text(errors="replace").splitlines()
                if "event log write" in line]
    assert len(warnings) == 1, warnings[:5]
    records = dep.events(run_id)          # whole lines only: every one parses
    names = [r["event"] for r in records]
    (incomplete,) = [r for r in records if r["event"] == "run.log.incomplete"]
    assert incomplete["data"]["lost_records"] > 100
    assert incomplete["data"]["error"] == os.strerror(errno.ENOSPC)
    assert names.index("run.log.incomplete") < names.index("run.complete")
