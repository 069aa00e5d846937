"""Engine values that do not fit the result columns, and completion payloads
that are too large or not valid: the run is stored the same way on every
backend, and the event log says what was cut, dropped or lost."""

from __future__ import annotations

import sys

import pytest

from adetest import ENGINES, FAKE_ENGINE_COMMAND, write_input

sys.path.insert(0, str(ENGINES))
from fake_engine import UNFIT_FIELD, UNFIT_LABEL, UNFIT_SHEET  # noqa: E402

FIELD_MAX, LABEL_MAX, NAME_MAX = 128, 255, 255
INT_MAX = 2 ** 31 - 1


def cut_utf8(text: str, limit: int) -> str:
    """The longest prefix of text whose UTF-8 form has at most limit bytes."""
    data = text.encode()[:limit]
    return data.decode("utf-8", "ignore")


def events_named(dep, run_id, name):
    return [r for r in dep.events(run_id) if r["event"] == name]


def test_values_too_long_or_too_large_are_cut_or_dropped(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    run_id = dep.enqueue(write_input(tmp_path / "unfit.csv", payload="unfit"),
                         max_attempts=3)["run_id"]
    result = dep.run_worker(timeout=90)
    assert result.returncode == 0, result.stderr
    row = dep.run_row(run_id)
    # stored at the first attempt: nothing was retried
    assert row["status"] == "succeeded", (row, dep.worker_logs())
    assert row["attempt_count"] == 1 and row["exit_code"] == 0
    assert len(events_named(dep, run_id, "run.start")) == 1

    metrics = dep.rows("SELECT * FROM run_metrics WHERE run_id = ?", run_id)[0]
    assert metrics["row_count_total"] is None          # 2^40: dropped
    assert metrics["cell_count_total"] is None         # 1e300: dropped
    assert metrics["evaluation_outcome"] == "x" * 20   # VARCHAR(20)
    assert metrics["sheet_count"] == 1

    fields = dep.rows("SELECT * FROM run_fields WHERE run_id = ? ORDER BY field", run_id)
    cut = cut_utf8(UNFIT_FIELD, FIELD_MAX)
    assert len(cut.encode()) == 127 and len(cut) == 64  # on a character boundary
    assert [f["field"] for f in fields] == [cut, "name"]
    first = fields[0]
    assert first["label"] == UNFIT_LABEL[:LABEL_MAX]
    assert first["valid_cells"] == INT_MAX              # NOT NULL: clamped
    assert first["occurrences_tables"] == INT_MAX

    columns = dep.rows("SELECT * FROM run_table_columns WHERE run_id = ?"
                       " ORDER BY column_index", run_id)
    assert [c["column_index"] for c in columns] == [0, 1, 2]   # 2^32 left out
    assert {c["sheet_name"] for c in columns} == {cut_utf8(UNFIT_SHEET, NAME_MAX)}
    assert columns[0]["mapping_method"] == "m" * 32
    assert columns[0]["non_empty_cells"] == -2 ** 31

    (adjusted,) = events_named(dep, run_id, "run.results.adjusted")
    assert adjusted["level"] == "warning"
    cols = adjusted["data"]["columns"]
    assert cols["run_fields.field"] == {"cut": 2}
    assert cols["run_fields.label"] == {"cut": 1}
    assert cols["run_fields.valid_cells"] == {"clamped": 2}
    assert cols["run_metrics.row_count_total"] == {"dropped": 1}
    assert cols["run_metrics.cell_count_total"] == {"dropped": 1}
    assert cols["run_table_columns.sheet_name"] == {"cut": 4}
    assert adjusted["data"]["rows_dropped"] == {"run_table_columns": 1}
    (dupes,) = events_named(dep, run_id, "run.results.duplicates")
    assert dupes["data"]["dropped"] == 1


def test_integer_beyond_int64_is_dropped_not_lost(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    run_id = dep.enqueue(write_input(tmp_path / "big.csv", payload="bigint"))["run_id"]
    assert dep.run_worker(timeout=90).returncode == 0
    row = dep.run_row(run_id)
    assert row["status"] == "succeeded" and row["attempt_count"] == 1, row
    assert events_named(dep, run_id, "run.results.missing_payload") == []
    metrics = dep.rows("SELECT * FROM run_metrics WHERE run_id = ?", run_id)[0]
    assert metrics["row_count_total"] is None
    assert metrics["sheet_count"] == 1
    assert len(dep.rows("SELECT * FROM run_fields WHERE run_id = ?", run_id)) == 2
    (adjusted,) = events_named(dep, run_id, "run.results.adjusted")
    assert adjusted["data"]["columns"]["run_metrics.row_count_total"] == {"dropped": 1}


def test_completion_longer_than_max_event_line_is_read_and_capped(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, max_event_line="64K",
                 max_result_rows=1000)
    run_id = dep.enqueue(write_input(tmp_path / "many.csv", payload="many",
                                     fields=5000))["run_id"]
    assert dep.run_worker(timeout=90).returncode == 0
    row = dep.run_row(run_id)
    assert row["status"] == "succeeded" and row["attempt_count"] == 1, row
    assert events_named(dep, run_id, "run.results.missing_payload") == []
    fields = dep.rows("SELECT field FROM run_fields WHERE run_id = ?", run_id)
    columns = dep.rows("SELECT column_index FROM run_table_columns WHERE run_id = ?",
                       run_id)
    assert len(fields) == 1000 and columns == []
    (capped,) = events_named(dep, run_id, "run.results.capped")
    assert capped["data"] == {"max_result_rows": 1000, "stored": 1000, "left_out": 9000}
    # the completion event is in the log whole
    (done,) = events_named(dep, run_id, "engine.run.completed")
    assert len(done["data"]["fields"]) == 5000


def test_completion_over_its_limit_fails_the_run_saying_so(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND, max_event_line="64K",
                 max_completion_size="256K")
    run_id = dep.enqueue(write_input(tmp_path / "many.csv", payload="many", fields=5000),
                         max_attempts=3)["run_id"]
    assert dep.run_worker(timeout=90).returncode == 0
    row = dep.run_row(run_id)
    # the same engine and input would report the same: no retry
    assert row["status"] == "failed" and row["attempt_count"] == 1, row
    assert row["exit_code"] == 2
    assert "max_completion_size" in row["error_message"], row
    assert events_named(dep, run_id, "run.results.missing_payload") == []
    assert len(events_named(dep, run_id, "run.results.unreadable")) == 1
    assert dep.rows("SELECT * FROM run_fields WHERE run_id = ?", run_id) == []


def test_invalid_completion_fails_the_run_saying_so(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    run_id = dep.enqueue(write_input(tmp_path / "cut.csv", payload="cut"))["run_id"]
    assert dep.run_worker(timeout=90).returncode == 0
    row = dep.run_row(run_id)
    assert row["status"] == "failed" and row["attempt_count"] == 1, row
    assert row["exit_code"] == 2
    assert "not valid JSON" in row["error_message"], row
    assert events_named(dep, run_id, "run.results.missing_payload") == []


def test_results_beyond_one_statement_are_stored_whole_and_replaced_on_rerun(
        deploy, tmp_path):
    # 2,000 fields and 2,500 table columns: more values than one statement
    # may carry on every backend, so the rows go in several INSERTs (and on
    # SQL Server in several calls), still as one transaction
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    run_id = dep.enqueue(write_input(tmp_path / "many.csv", payload="many",
                                     fields=2000, columns=2500))["run_id"]

    def stored():
        fields = dep.rows("SELECT field, valid_cells FROM run_fields"
                          " WHERE run_id = ?", run_id)
        columns = dep.rows("SELECT column_index FROM run_table_columns"
                           " WHERE run_id = ?", run_id)
        metrics = dep.rows("SELECT run_id FROM run_metrics WHERE run_id = ?",
                           run_id)
        return fields, columns, metrics

    for attempt in (1, 2):
        assert dep.run_worker(timeout=120).returncode == 0
        row = dep.run_row(run_id)
        assert row["status"] == "succeeded", (row, dep.worker_logs())
        # the rows of the first success do not stand in the second's way
        assert row["attempt_count"] == 1, (row, dep.worker_logs())
        fields, columns, metrics = stored()
        # a second success replaces the rows of the first, none doubled
        assert sorted((f["field"], f["valid_cells"]) for f in fields) == \
            sorted((f"f{i}", i) for i in range(2000)), attempt
        assert sorted(c["column_index"] for c in columns) == list(range(2500))
        assert len(metrics) == 1
        if attempt == 1:
            dep.ctl("runs", "requeue", run_id)


@pytest.mark.backends("pgsql")      # the statements are told apart by their text
def test_a_success_and_its_result_rows_are_one_statement(deploy, tmp_path):
    # One statement the server parses and plans, not one per result table;
    # the second attempt's claim clears what an earlier success stored.
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND,
                 **{"worker.log_level": "debug", "database.echo": "yes"})
    runs = [dep.enqueue(write_input(tmp_path / f"r{i}.csv"))["run_id"] for i in range(3)]
    result = dep.run_worker(timeout=90)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    successes = [line for line in lines
                 if " sql: WITH u AS (UPDATE runs SET status = 'succeeded'" in line]
    assert len(successes) == 3, successes
    for line in successes:
        for table in ("run_metrics", "run_fields", "run_table_columns"):
            assert f"INSERT INTO {table} " in line, (table, line[:300])
    assert not [line for line in lines if " sql+: " in line and "INSERT INTO run_" in line]
    for run in runs:
        assert dep.run_row(run)["status"] == "succeeded"
        for table in ("run_metrics", "run_fields", "run_table_columns"):
            assert dep.rows(f"SELECT run_id FROM {table} WHERE run_id = ?", run), table
