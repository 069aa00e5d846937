"""Database faults that no retry can mend are configuration errors: the
workers say so once and exit 78, and the supervisor stops instead of
starting them again forever."""

from __future__ import annotations

import time

import pytest

EX_CONFIG = 78


def break_database(dep, how):
    db_file = dep.db_path
    if how == "not_sqlite":
        db_file.write_bytes(b"this is not an SQLite database\n" * 200)
        for suffix in ("-wal", "-shm"):
            db_file.with_name(db_file.name + suffix).unlink(missing_ok=True)
    elif how == "read_only_file":
        db_file.chmod(0o444)
    elif how == "read_only_directory":
        db_file.parent.chmod(0o555)
    elif how == "missing_directory":
        dep.configure(**{"database.sqlite_path": "/nonexistent-ade/sub/ade.sqlite"})


@pytest.mark.sqlite_only("the faults are SQLite files and directories")
@pytest.mark.parametrize("how", ["not_sqlite", "read_only_file", "read_only_directory",
                                 "missing_directory"])
def test_permanent_database_fault_is_a_configuration_error(deploy, how):
    dep = deploy(**{"supervisor.workers": 2})
    dep.close_db()
    break_database(dep, how)
    try:
        started = time.monotonic()
        result = dep.run_worker(timeout=60)
        assert result.returncode == EX_CONFIG, result.stderr
        if how == "missing_directory":
            # Known before any worker starts, as ade-superd -n knows it.
            assert "/nonexistent-ade/sub" in result.stderr
            assert "worker 0 started" not in result.stderr
            return
        lines = [line for line in result.stderr.splitlines()
                 if "not retrying (a configuration error)" in line]
        # once per worker, never restarted
        assert len(lines) == 2, result.stderr
        assert "restarting in" not in result.stderr
        assert time.monotonic() - started < 30
    finally:
        dep.db_path.parent.chmod(0o750)
