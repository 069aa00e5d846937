"""ade-superd against a real SQL Server (or Babelfish) that answers, but not as
the daemon would like: a wrong password, a database that does not exist, a
login without permissions; and text that is not ASCII, in both directions.

They run against the server of ADE_TEST_MSSQL_* (see conftest.py) and are
reported as skipped when none is named.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import uuid

import pytest

from adetest import SERVICE_USER, wait_until

pytestmark = pytest.mark.backends("mssql")


def secret_file(path, text: str):
    path.write_text(text + "\n")
    os.chmod(path, 0o600)
    if SERVICE_USER is not None:
        os.chown(path, pwd.getpwnam(SERVICE_USER[0]).pw_uid,
                 grp.getgrnam(SERVICE_USER[1]).gr_gid)
    return path


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def assert_backs_off(dep, words: str):
    """The workers try three times with growing delays, saying why in one
    line each time, give up, and are started again by the supervisor."""
    proc = dep.start_worker()

    def text():
        return proc.log_path.read_text(errors="replace")
    wait_until(lambda: "after 3 attempts" in text(), 60, "a worker to give up")
    wait_until(lambda: len(re.findall(r"worker 0 started", text())) >= 2, 60,
               "the worker to be started again")
    attempts = [line for line in text().splitlines()
                if "cannot connect to the database (attempt" in line]
    assert attempts and all(words in line for line in attempts), text()
    delays = [float(m.group(1)) for m in
              (re.search(r"next attempt in ([\d.]+) s", line) for line in attempts[:2])]
    assert delays[1] > delays[0], delays
    proc.terminate()
    assert dep.wait_worker(proc, timeout=60) == 0, text()
    return text()


def test_wrong_password_is_one_clear_line_and_a_bounded_retry(deploy, tmp_path):
    dep = deploy()
    wrong = "Wrong-" + uuid.uuid4().hex[:8]
    secret_file(dep.root / "wrong-password", wrong)
    dep.configure(password_file=str(dep.root / "wrong-password"))
    result = dep.ctl("db", "check", check=False)
    assert result.returncode == 1, result
    line = one_line(result.stderr)
    assert "cannot connect to" in line and "Login failed" in line, line
    assert "18456" in line, line
    log = assert_backs_off(dep, "Login failed")
    assert wrong not in result.stdout + result.stderr + log


def test_unknown_database_is_one_clear_line_and_a_bounded_retry(deploy):
    dep = deploy()
    name = "ade_missing_" + uuid.uuid4().hex[:6]
    dep.configure(database=name)
    result = dep.ctl("db", "check", check=False)
    assert result.returncode == 1, result
    line = one_line(result.stderr)
    assert "cannot connect to" in line and name in line, line
    assert_backs_off(dep, name)


def test_login_without_permissions_is_named_not_taken_for_missing_tables(deploy, ms_server):
    """A login that may open the database but read none of its tables: db
    check and the workers say "permission denied", not "missing tables"."""
    dep = deploy()
    login = "ade_noperm_" + uuid.uuid4().hex[:6]
    password = "Np-" + uuid.uuid4().hex[:10]
    ms_server.admin(f"CREATE LOGIN {login} WITH PASSWORD = '{password}'")
    try:
        conn = ms_server.connect(dep.db_name)
        try:
            conn.cursor().execute(f"CREATE USER {login} FOR LOGIN {login}")
        finally:
            conn.close()
        secret_file(dep.root / "noperm-password", password)
        dep.configure(user=login, password_file=str(dep.root / "noperm-password"))
        result = dep.ctl("db", "check", check=False)
        assert result.returncode == 1, result
        assert "permission" in result.stderr.lower(), result
        assert "missing" not in result.stdout + result.stderr, result
        run = dep.run_worker(timeout=120)
        assert run.returncode == 78, run.stderr
        assert "permission" in run.stderr.lower(), run.stderr
        assert "lacks required tables" not in run.stderr, run.stderr
    finally:
        dep.close()
        conn = ms_server.connect(dep.db_name)
        try:
            conn.cursor().execute(f"DROP USER {login}")
        finally:
            conn.close()
        ms_server.admin(f"DROP LOGIN {login}")


def test_non_ascii_text_round_trips(deploy, tmp_path):
    """Names, file names, document text and result rows that are not ASCII,
    some longer than 4000 bytes, are stored and read back intact; a sheet of
    300 columns makes statements far longer than 4000 bytes."""
    dep = deploy()
    long_header = "Évaluation-" + "é日" * 1500            # 6,000+ bytes in UTF-8
    headers = ["Courriel", "Prénom", "名前", long_header] + [
        f"Colonne {i} – ü" for i in range(300)]
    document = tmp_path / "données-été.csv"
    document.write_text(",".join(headers) + "\n" +
                        "a@example.com,Zoë,山田,x" + ",v" * 300 + "\n", encoding="utf-8")
    answer = dep.enqueue(document, workspace="Équipe Ünïcode 日本",
                         configuration="Réglages")
    result = dep.run_worker(timeout=180)
    assert result.returncode == 0, result.stderr
    row = dep.run_row(answer["run_id"])
    assert row["status"] == "succeeded", (row, result.stderr)
    (doc,) = dep.rows("SELECT original_filename FROM documents WHERE id = ?",
                      answer["document_id"])
    assert doc["original_filename"] == "données-été.csv"
    (ws,) = dep.rows("SELECT name FROM workspaces WHERE id = ?", answer["workspace_id"])
    assert ws["name"] == "Équipe Ünïcode 日本"
    columns = dep.rows("SELECT header_raw FROM run_table_columns WHERE run_id = ?"
                       " ORDER BY column_index", answer["run_id"])
    assert [c["header_raw"] for c in columns] == headers
    # and ade-ctl reads them back the same
    shown = json.loads(dep.ctl("runs", "show", answer["run_id"], json_out=True).stdout)
    assert [c["header_raw"] for c in shown["table_columns"]] == headers
