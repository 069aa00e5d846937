"""ade-ctl db check / db init, and schemas older than the daemon.

The ADE migrations older than valid_cells created run_fields and
run_table_columns without it: such a database must keep working, its
results stored without the column, while a column the daemon cannot do
without stops the workers with its name.
"""

from __future__ import annotations

import json

import pytest

from adetest import FAKE_ENGINE_COMMAND, assert_sample_results, sample_rows, write_input


def drop_column(dep, table: str, column: str) -> None:
    dep.db().drop_column(table, column)


def test_db_check_names_missing_tables_and_columns(deploy):
    dep = deploy(fresh=True)
    result = dep.ctl("db", "check")
    assert result.stdout.strip() == "schema OK"

    drop_column(dep, "runs", "run_options")
    drop_column(dep, "environments", "python_version")
    dep.db().execute("DROP TABLE worker_leases")
    result = dep.ctl("db", "check", check=False)
    assert result.returncode == 1, result
    first = result.stdout.splitlines()[0]
    assert first == "missing: runs.run_options, environments.python_version, worker_leases", \
        result.stdout
    assert "db init" in result.stdout

    # the workers refuse to start on such a schema, naming what is missing
    dep.close_db()
    worker = dep.run_worker(timeout=30)
    assert worker.returncode == 78, worker.stderr
    assert "runs.run_options" in worker.stderr and "worker_leases" in worker.stderr

    # db init brings back the table, not the columns (those are the migrations' job)
    dep.init_db()
    again = dep.ctl("db", "check", check=False)
    assert again.returncode == 1
    assert again.stdout.splitlines()[0] == \
        "missing: runs.run_options, environments.python_version"


def test_results_without_valid_cells_on_an_older_schema(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    drop_column(dep, "run_fields", "valid_cells")
    drop_column(dep, "run_table_columns", "valid_cells")

    check = dep.ctl("db", "check")  # still usable: exit 0, the column named as optional
    lines = check.stdout.splitlines()
    assert lines[0] == "missing (optional; results are stored without it): " \
        "run_fields.valid_cells, run_table_columns.valid_cells", check.stdout
    assert lines[-1] == "schema OK"

    run_id = dep.enqueue(write_input(tmp_path / "doc.csv"))["run_id"]
    dep.close_db()
    result = dep.run_worker(timeout=60)
    assert result.returncode == 0, result.stderr
    row = dep.run_row(run_id)
    assert row["status"] == "succeeded", (row, result.stderr)

    # every other column holds what the original worker stored
    want = sample_rows()
    fields = dep.rows("SELECT * FROM run_fields WHERE run_id = ? ORDER BY field", run_id)
    assert [dict(f, run_id=None) for f in fields] == [
        {k: v for k, v in dict(f, run_id=None).items() if k != "valid_cells"}
        for f in sorted(want["run_fields"], key=lambda r: r["field"])]
    columns = dep.rows("SELECT * FROM run_table_columns WHERE run_id = ?"
                       " ORDER BY column_index", run_id)
    assert [dict(c, run_id=None) for c in columns] == [
        {k: v for k, v in dict(c, run_id=None).items() if k != "valid_cells"}
        for c in want["run_table_columns"]]
    shown = json.loads(dep.ctl("runs", "show", run_id, json_out=True).stdout)
    assert len(shown["fields"]) == len(fields) and len(shown["table_columns"]) == len(columns)
    assert all("valid_cells" not in f and "run_id" not in f for f in shown["fields"])


# SQLite databases are made by ade-ctl db init, which always had the column.
@pytest.mark.backends("pgsql", "mssql")
def test_db_init_adds_valid_cells_on_server_backends(deploy, tmp_path):
    dep = deploy(engine_command=FAKE_ENGINE_COMMAND)
    drop_column(dep, "run_fields", "valid_cells")
    drop_column(dep, "run_table_columns", "valid_cells")
    dep.init_db()
    assert dep.ctl("db", "check").stdout.strip() == "schema OK"
    run_id = dep.enqueue(write_input(tmp_path / "doc.csv"))["run_id"]
    dep.close_db()
    assert dep.run_worker(timeout=60).returncode == 0
    assert_sample_results(dep, run_id)


def test_db_init_makes_the_schema_db_schema_describes(deploy):
    """Every backend's DDL makes exactly the tables and columns the one
    description has (ade-ctl db schema --json), no more and no fewer."""
    dep = deploy(fresh=True)
    schema = json.loads(dep.ctl("db", "schema", "--json").stdout)
    assert "runs" in schema and "run_id" in schema["run_fields"]["required"]
    db = dep.db()
    for table, cols in schema.items():
        described = cols["required"] + cols["optional"] + cols["unused"]
        assert len(set(described)) == len(described), (table, described)
        have = db.columns(table)
        assert have, f"db init made no table {table}"
        assert have == set(described), (
            table, "not made:", sorted(set(described) - have),
            "not described:", sorted(have - set(described)))


def test_db_check_needs_the_run_id_of_result_rows(deploy):
    dep = deploy(fresh=True)
    dep.db().execute("DROP TABLE run_metrics")
    dep.db().execute("CREATE TABLE run_metrics (evaluation_outcome TEXT)")
    result = dep.ctl("db", "check", check=False)
    assert result.returncode == 1
    assert "run_metrics.run_id" in result.stdout.splitlines()[0], result.stdout
