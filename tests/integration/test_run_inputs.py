"""What a run is given, and what it does when that is odd: documents that
are not regular files, names that are not UTF-8, validators that die."""

from __future__ import annotations

import os

import pytest

from adetest import FAKE_ENGINE, FAKE_ENGINE_COMMAND, write_input


def document_of(dep, run_id):
    row = dep.rows("SELECT d.workspace_id, d.stored_uri FROM documents d JOIN runs r"
                   " ON r.input_document_id = d.id WHERE r.id = ?", run_id)[0]
    return dep.document_path(row["workspace_id"], row["stored_uri"])


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_document_that_is_not_a_file_says_what_it_is(deploy, tmp_path, kind):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    run_id = dep.enqueue(write_input(tmp_path / "doc.csv"), max_attempts=3)["run_id"]
    path = document_of(dep, run_id)
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    second = dep.enqueue(write_input(tmp_path / "second.csv"))["run_id"]
    assert dep.run_worker(timeout=60).returncode == 0
    row = dep.run_row(run_id)
    assert row["status"] == "failed" and row["attempt_count"] == 1, row
    assert row["exit_code"] == 2
    want = "a FIFO" if kind == "fifo" else "a directory"
    assert f"is {want}, not a regular file" in row["error_message"], row
    # the worker did not block on it
    assert dep.run_row(second)["status"] == "succeeded"


@pytest.mark.sqlite_only("only SQLite keeps text that is not UTF-8")
def test_invalid_utf8_in_stored_uri_is_repaired_in_the_error(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    run_id = dep.enqueue(write_input(tmp_path / "doc.csv"))["run_id"]
    db = dep.db()
    db.execute("UPDATE documents SET stored_uri = CAST(x'6e6f2dff2d66696c65' AS TEXT)"
               " WHERE id = (SELECT input_document_id FROM runs WHERE id = ?)", (run_id,))
    assert dep.run_worker(timeout=60).returncode == 0
    (raw,) = db.execute("SELECT CAST(error_message AS BLOB) AS m, status FROM runs"
                        " WHERE id = ?", (run_id,)).fetchall()
    assert raw["status"] == "failed"
    text = bytes(raw["m"]).decode("utf-8")        # raises on invalid UTF-8
    assert "no-\ufffd-file" in text, text


@pytest.mark.parametrize("mode,attempts", [("signal9", 2), ("exit127", 2), ("exit1", 1)])
def test_validation_retries_what_may_pass(deploy, mode, attempts, tmp_path):
    """An invalid package fails at once; a validator killed by a signal or
    one that could not start is tried again."""
    dep = deploy(engine_command=f"{{python}} {FAKE_ENGINE} --validate={mode}",
                 backoff_base_seconds=0, backoff_max_seconds=0)
    run_id = dep.enqueue(write_input(tmp_path / "v.csv"), options={"validate_only": True},
                         max_attempts=2)["run_id"]
    assert dep.run_worker(timeout=60).returncode == 0
    row = dep.run_row(run_id)
    assert row["status"] == "failed", row
    assert row["attempt_count"] == attempts, row
    starts = [r for r in dep.events(run_id) if r["event"] == "run.validate.start"]
    assert len(starts) == attempts
