"""End-to-end tests of the reference ADE engine in contrib/ade_engine.

Run with:  python3 -m pytest -q tests/integration/test_reference_engine.py

The engine runs from the source tree (PYTHONPATH=contrib/ade_engine/src) in
a subprocess, exactly as the worker starts it.  Expected numbers are worked
out here from the CSV files themselves, not copied from the engine.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import zipfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

try:
    import jsonschema
except ImportError:  # pragma: no cover - python3-jsonschema is expected
    jsonschema = None

REPO = Path(__file__).resolve().parents[2]
ENGINE_DIR = REPO / "contrib" / "ade_engine"
ENGINE_SRC = ENGINE_DIR / "src"
SAMPLE_CONFIG = REPO / "contrib" / "sample-config"
SAMPLES = REPO / "contrib" / "samples"
SCHEMA_FILE = REPO / "tests" / "data" / "run-completed.schema.json"
PYTHON = sys.executable

RECORD_KEYS = ["event_id", "engine_run_id", "timestamp", "level", "event", "message"]
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
HEX32 = re.compile(r"[0-9a-f]{32}")
SEVERITY_ORDER = ["info", "warning", "error"]
NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
LOOSE_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", re.IGNORECASE)

# What each sample should map to (header -> field), written by hand.
SAMPLE_MAPPINGS = {
    "contacts": {
        "Email": "email", "First Name": "first_name", "Middle Name": "middle_name",
        "Last Name": "last_name", "Full Name": "full_name",
    },
    "people_partial": {"Given Name": "first_name", "Surname": "last_name", "Contact": "email"},
    "unmapped": {},
}
SAMPLE_UNMAPPED = {
    "contacts": {},
    "people_partial": {"Notes": "no_signal", None: "empty_or_placeholder_header",
                       "Family Name": "duplicate_field"},
    "unmapped": {"Product": "no_signal", "Quantity": "no_signal", "Unit Price": "no_signal",
                 "Warehouse": "no_signal"},
}
SAMPLE_OUTCOMES = {"contacts": "success", "people_partial": "partial", "unmapped": "failure"}
ALL_FIELDS = ["email", "first_name", "middle_name", "last_name", "full_name"]


# ---------------------------------------------------------------------------
# helpers

def engine_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ENGINE_SRC)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_engine(*args: str, python: str = PYTHON, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, "-m", "ade_engine", *map(str, args)],
        capture_output=True, text=True, env=env or engine_env(), cwd=cwd or REPO, timeout=120,
    )


def process(input_file: Path, out_dir: Path, *extra: str, config: Path = SAMPLE_CONFIG,
            level: str = "info") -> subprocess.CompletedProcess:
    return run_engine("process", "file", "--input", input_file, "--output-dir", out_dir,
                      "--config-package", config, "--log-format", "ndjson",
                      "--log-level", level, *extra)


def parse_events(stderr: str) -> list[dict]:
    records = []
    run_ids = set()
    for line in stderr.splitlines():
        record = json.loads(line)
        assert isinstance(record, dict), line
        keys = list(record)
        assert keys[:6] == RECORD_KEYS, keys
        assert keys[6:] in ([], ["data"], ["error"], ["data", "error"]), keys
        assert HEX32.fullmatch(record["event_id"])
        assert HEX32.fullmatch(record["engine_run_id"])
        assert TIMESTAMP.fullmatch(record["timestamp"]), record["timestamp"]
        assert record["level"] in ("debug", "info", "warning", "error", "critical")
        assert record["event"].startswith("engine.")
        assert isinstance(record["message"], str)
        if "data" in record:
            assert isinstance(record["data"], dict) and record["data"]
        if "error" in record:
            assert set(record["error"]) == {"type", "message", "stack_trace"}
        run_ids.add(record["engine_run_id"])
        records.append(record)
    assert len(run_ids) <= 1, "engine_run_id must be fixed for a run"
    assert len({r["event_id"] for r in records}) == len(records)
    return records


def completed_payload(records: list[dict]) -> dict:
    assert records, "no events"
    last = records[-1]
    assert last["event"] == "engine.run.completed"
    assert last["message"] == "engine.run.completed"
    assert sum(r["event"] == "engine.run.completed" for r in records) == 1
    return last["data"]


@pytest.fixture(scope="session")
def schema():
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def validate_schema(payload: dict, schema: dict) -> None:
    if jsonschema is None:
        pytest.skip("jsonschema is not installed")
    jsonschema.validate(payload, schema)


def csv_facts(path: Path) -> dict:
    """Shape of the table in a CSV file, computed without the engine."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    blank = [not any(cell.strip() for cell in row) for row in rows]
    used = [i for i, b in enumerate(blank) if not b]
    if not used:
        return {"tables": 0}
    header_at, end = used[0], used[-1]
    table = rows[header_at:end + 1]
    width = max(map(len, table))
    grid = [row + [""] * (width - len(row)) for row in table]
    while width > 1 and not any(row[width - 1].strip() for row in grid):
        width -= 1
    grid = [row[:width] for row in grid]
    header, body = grid[0], grid[1:]
    return {
        "tables": 1,
        "header_row": header_at + 1,
        "header": [h if h.strip() else None for h in header],
        "rows_total": len(body),
        "rows_empty": sum(1 for row in body if not any(c.strip() for c in row)),
        "columns": width,
        "empty_columns": sum(1 for j in range(width) if not any(r[j].strip() for r in body)),
        "non_empty": sum(1 for r in body for c in r if c.strip()),
        "body": body,
    }


def walk_scopes(payload: dict):
    yield payload
    for workbook in payload.get("workbooks", []):
        yield workbook
        for sheet in workbook.get("sheets", []):
            yield sheet
            yield from sheet.get("tables", [])


def check_invariants(payload: dict) -> None:
    """The consistency rules the real engine's model enforces."""
    for scope in walk_scopes(payload):
        validation = scope["validation"]
        by_severity = validation.get("issues_by_severity", {})
        assert validation["issues_total"] == sum(by_severity.values())
        if validation["issues_total"] == 0:
            assert validation.get("max_severity") is None
        else:
            worst = max((s for s, n in by_severity.items() if n), key=SEVERITY_ORDER.index)
            assert validation["max_severity"] == worst
        counts = scope["counts"]
        fields = counts["fields"]
        assert fields["detected"] + fields["not_detected"] == fields["expected"]
        if scope.get("fields"):
            assert len(scope["fields"]) == fields["expected"]
        columns = counts["columns"]
        assert columns["mapped"] + columns["unmapped"] <= columns["total"]
        assert columns["empty"] <= columns["total"]
        assert counts["rows"]["empty"] <= counts["rows"]["total"]
        if counts.get("cells"):
            assert counts["cells"]["non_empty"] <= counts["cells"]["total"]
        for summary in scope.get("fields", []):
            assert summary["source_headers"] == sorted(set(summary["source_headers"]))
            assert summary["detected"] == (summary["occurrences"]["columns"] > 0)
            assert (summary["best_mapping_score"] is None) == (not summary["detected"])

    assert payload["counts"]["workbooks"] == len(payload["workbooks"])
    assert payload["counts"]["sheets"] == sum(len(w["sheets"]) for w in payload["workbooks"])
    assert payload["counts"]["tables"] == sum(
        len(s["tables"]) for w in payload["workbooks"] for s in w["sheets"])
    assert [w["locator"]["workbook"]["index"] for w in payload["workbooks"]] == list(
        range(len(payload["workbooks"])))
    for workbook in payload["workbooks"]:
        assert workbook["counts"]["sheets"] == len(workbook["sheets"])
        indexes = [s["locator"]["sheet"]["index"] for s in workbook["sheets"]]
        assert indexes == sorted(set(indexes))
        for sheet in workbook["sheets"]:
            assert sheet["counts"]["tables"] == len(sheet["tables"])
            indexes = [t["locator"]["table"]["index"] for t in sheet["tables"]]
            assert indexes == sorted(set(indexes))
            for table in sheet["tables"]:
                cols = table["structure"]["columns"]
                assert [c["index"] for c in cols] == list(range(len(cols)))
                for col in cols:
                    mapping = col["mapping"]
                    assert len(mapping["candidates"]) <= 3
                    scores = [c["score"] for c in mapping["candidates"]]
                    assert scores == sorted(scores, reverse=True)
                    if mapping["status"] == "mapped":
                        assert mapping["field"] and mapping["method"] == "classifier"
                        assert mapping["score"] is not None and mapping["unmapped_reason"] is None
                        assert col["valid_cells"] is not None
                        assert col["valid_cells"] <= col["non_empty_cells"]
                    else:
                        assert mapping["field"] is None and mapping["score"] is None
                        assert mapping["method"] is None and mapping["unmapped_reason"]
                        assert col["valid_cells"] is None

    execution = payload["execution"]
    if execution["status"] == "succeeded":
        assert execution["failure"] is None
    else:
        assert execution["failure"]["code"] in (
            "config_error", "input_error", "hook_error", "pipeline_error", "unknown_error")


def read_sheet(path: Path) -> list[list[str]]:
    """Cell texts of the first worksheet of an .xlsx written with inline strings."""
    assert zipfile.is_zipfile(path)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert "[Content_Types].xml" in names and "xl/workbook.xml" in names
        sheet_files = [n for n in names if n.startswith("xl/worksheets/") and n.endswith(".xml")]
        assert sheet_files, names
        root = ET.fromstring(zf.read(sorted(sheet_files)[0]))
        ET.fromstring(zf.read("xl/workbook.xml"))
    rows = []
    for row in root.iterfind("m:sheetData/m:row", NS):
        cells = {}
        for cell in row.iterfind("m:c", NS):
            col = re.match(r"[A-Z]+", cell.get("r")).group()
            index = 0
            for ch in col:
                index = index * 26 + ord(ch) - 64
            cells[index - 1] = "".join(t.text or "" for t in cell.iter(f"{{{NS['m']}}}t"))
        width = max(cells) + 1 if cells else 0
        rows.append([cells.get(i, "") for i in range(width)])
    return rows


# ---------------------------------------------------------------------------
# process file on the samples

@pytest.mark.parametrize("name", ["contacts", "people_partial", "unmapped"])
def test_sample_runs(name, tmp_path, schema):
    source = SAMPLES / f"{name}.csv"
    out_dir = tmp_path / "output"
    result = process(source, out_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    records = parse_events(result.stderr)
    events = [r["event"] for r in records]
    for expected in ("engine.run.started", "engine.run.planned", "engine.config.loaded",
                     "engine.workbook.started", "engine.sheet.started", "engine.table.written"):
        assert expected in events
    assert events.index("engine.run.started") < events.index("engine.config.loaded") \
        < events.index("engine.table.written")
    payload = completed_payload(records)
    validate_schema(payload, schema)
    check_invariants(payload)

    facts = csv_facts(source)
    output = out_dir / f"{name}_normalized.xlsx"
    assert payload["execution"]["status"] == "succeeded"
    assert payload["scope"] == "run" and payload["schema_version"] == 1
    assert payload["outputs"]["normalized"]["path"] == str(output.resolve())
    assert payload["evaluation"]["outcome"] == SAMPLE_OUTCOMES[name]

    mapping = SAMPLE_MAPPINGS[name]
    counts = payload["counts"]
    assert (counts["workbooks"], counts["sheets"], counts["tables"]) == (1, 1, 1)
    assert counts["rows"] == {"total": facts["rows_total"], "empty": facts["rows_empty"]}
    assert counts["columns"] == {
        "total": facts["columns"], "empty": facts["empty_columns"],
        "mapped": len(mapping), "unmapped": facts["columns"] - len(mapping)}
    assert counts["cells"] == {"total": facts["rows_total"] * facts["columns"],
                               "non_empty": facts["non_empty"]}
    detected = sorted(set(mapping.values()))
    assert counts["fields"] == {"expected": 5, "detected": len(detected),
                                "not_detected": 5 - len(detected)}
    assert [f["field"] for f in payload["fields"]] == ALL_FIELDS
    assert sorted(f["field"] for f in payload["fields"] if f["detected"]) == detected

    workbook = payload["workbooks"][0]
    assert workbook["locator"]["workbook"] == {"index": 0, "name": source.name}
    sheet = workbook["sheets"][0]
    assert sheet["locator"]["sheet"] == {"index": 0, "name": name}
    table = sheet["tables"][0]
    assert table["counts"]["rows"] == counts["rows"]
    assert table["counts"]["columns"] == counts["columns"]
    structure = table["structure"]
    assert structure["header"]["row_start"] == facts["header_row"]
    assert structure["data"] == {"row_start": facts["header_row"] + 1,
                                 "row_count": facts["rows_total"]}
    columns = structure["columns"]
    assert [c["header"]["raw"] for c in columns] == facts["header"]
    for j, column in enumerate(columns):
        raw = column["header"]["raw"]
        assert column["non_empty_cells"] == sum(1 for r in facts["body"] if r[j].strip())
        if raw in mapping:
            assert column["mapping"]["status"] == "mapped"
            assert column["mapping"]["field"] == mapping[raw]
        else:
            assert column["mapping"]["status"] == "unmapped"
            assert column["mapping"]["unmapped_reason"] == SAMPLE_UNMAPPED[name][raw]

    # the normalised workbook: mapped headers renamed, unmapped ones kept, blank rows dropped
    assert output.is_file()
    sheet_rows = read_sheet(output)
    expected_header = [mapping.get(h, h or "") for h in facts["header"]]
    assert sheet_rows[0][:len(expected_header)] == expected_header
    assert len(sheet_rows) == 1 + facts["rows_total"] - facts["rows_empty"]
    assert table["outputs"]["normalized"]["path"] == str(output.resolve())


def test_contacts_validation_counts(tmp_path):
    source = SAMPLES / "contacts.csv"
    result = process(source, tmp_path)
    payload = completed_payload(parse_events(result.stderr))
    facts = csv_facts(source)
    emails = [row[0].strip() for row in facts["body"] if row[0].strip()]
    bad = sum(1 for e in emails if not LOOSE_EMAIL.fullmatch(e) or e.count("@") != 1)
    assert bad >= 1
    assert payload["validation"]["issues_by_severity"] == {"warning": bad}
    assert payload["validation"]["max_severity"] == "warning"
    email = next(f for f in payload["fields"] if f["field"] == "email")
    assert email["valid_cells"] == len(emails) - bad
    assert email["source_headers"] == ["Email"]
    codes = [f["code"] for f in payload["evaluation"]["findings"]]
    assert codes == ["validation_warnings_present"]
    # the email transform lower-cases values in the output
    rows = read_sheet(tmp_path / "contacts_normalized.xlsx")
    assert "grace.hopper@example.org" in [r[0] for r in rows]


def test_people_partial_details(tmp_path):
    result = process(SAMPLES / "people_partial.csv", tmp_path)
    payload = completed_payload(parse_events(result.stderr))
    assert payload["validation"]["issues_by_severity"] == {"error": 1}
    codes = [f["code"] for f in payload["evaluation"]["findings"]]
    assert codes == ["fields_not_detected", "validation_errors_present"]
    email = next(f for f in payload["fields"] if f["field"] == "email")
    # found through its values, so the score is below a header match
    assert 0.5 <= email["best_mapping_score"] < 1
    assert payload["validation"]["rows_evaluated"] == 4


def test_broken_input_fails_with_completed_event(tmp_path, schema):
    result = process(SAMPLES / "broken.csv", tmp_path)
    assert result.returncode == 1
    records = parse_events(result.stderr)
    payload = completed_payload(records)
    validate_schema(payload, schema)
    check_invariants(payload)
    execution = payload["execution"]
    assert execution["status"] == "failed"
    assert execution["failure"]["code"] == "input_error"
    assert payload["evaluation"]["outcome"] == "unknown"
    assert payload["outputs"] is None
    assert any(r["level"] == "error" and "error" in r for r in records)
    assert not list(tmp_path.glob("*.xlsx"))


def test_config_without_register_fails_process(tmp_path, schema):
    package = tmp_path / "cfg" / "ade_config"
    (package / "columns").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "columns" / "fields.py").write_text("FIELDS = ['email']\n")
    result = process(SAMPLES / "contacts.csv", tmp_path / "out", config=tmp_path / "cfg")
    assert result.returncode == 1
    payload = completed_payload(parse_events(result.stderr))
    validate_schema(payload, schema)
    check_invariants(payload)
    assert payload["execution"]["failure"]["code"] == "config_error"
    assert payload["counts"]["fields"]["expected"] == 0

    validate = run_engine("config", "validate", "--config-package", tmp_path / "cfg")
    assert validate.returncode == 1
    assert "OK" not in validate.stdout


def test_failing_hook_is_a_hook_error(tmp_path, schema):
    package = tmp_path / "cfg" / "src" / "ade_config"
    for sub in ("columns", "hooks"):
        (package / sub).mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "columns" / "email.py").write_text(
        "def register(registry):\n    registry.field('email', aliases=['email'])\n")
    (package / "hooks" / "explode.py").write_text(
        "def register(registry):\n"
        "    def explode(ctx):\n"
        "        ctx.logger.event('demo.before_failure', 'about to fail')\n"
        "        raise RuntimeError('deliberate failure')\n"
        "    registry.hook('on_table_written', explode)\n")
    result = process(SAMPLES / "contacts.csv", tmp_path / "out", config=tmp_path / "cfg")
    assert result.returncode == 1
    records = parse_events(result.stderr)
    assert "engine.config.demo.before_failure" in [r["event"] for r in records]
    payload = completed_payload(records)
    validate_schema(payload, schema)
    check_invariants(payload)
    assert payload["execution"]["failure"]["code"] == "hook_error"
    # the table was found before the failure, so the outcome is graded
    assert payload["counts"]["tables"] == 1
    assert payload["evaluation"]["outcome"] == "partial"
    assert "execution_failed" in [f["code"] for f in payload["evaluation"]["findings"]]


def test_bom_and_blank_lines(tmp_path, schema):
    source = tmp_path / "with bom.csv"
    source.write_bytes(b"\xef\xbb\xbfEmail,Name\r\na@example.com,\"Doe, Jane\"\r\n\r\nb@example.com,Bo\r\n\r\n")
    result = process(source, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    payload = completed_payload(parse_events(result.stderr))
    validate_schema(payload, schema)
    check_invariants(payload)
    columns = payload["workbooks"][0]["sheets"][0]["tables"][0]["structure"]["columns"]
    assert columns[0]["header"] == {"raw": "Email", "normalized": "email"}
    assert payload["counts"]["rows"] == {"total": 3, "empty": 1}
    assert payload["counts"]["columns"]["mapped"] == 2
    output = tmp_path / "out" / "with bom_normalized.xlsx"
    assert read_sheet(output)[1] == ["a@example.com", "Doe, Jane"]


def test_empty_input_has_no_tables(tmp_path, schema):
    source = tmp_path / "empty.csv"
    source.write_text("\n\n")
    result = process(source, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    payload = completed_payload(parse_events(result.stderr))
    validate_schema(payload, schema)
    check_invariants(payload)
    assert payload["counts"]["tables"] == 0
    assert payload["evaluation"]["outcome"] == "failure"
    assert payload["evaluation"]["findings"][0]["code"] == "no_tables_detected"


def test_log_level_warning_hides_info_events(tmp_path):
    result = process(SAMPLES / "contacts.csv", tmp_path, level="WARNING")
    assert result.returncode == 0
    records = parse_events(result.stderr)
    assert all(r["level"] in ("warning", "error", "critical") for r in records)
    assert "engine.run.completed" not in [r["event"] for r in records]
    assert (tmp_path / "contacts_normalized.xlsx").is_file()


def test_debug_level_adds_classification_events(tmp_path):
    result = process(SAMPLES / "people_partial.csv", tmp_path, level="debug")
    assert result.returncode == 0
    records = parse_events(result.stderr)
    debug_events = [r["event"] for r in records if r["level"] == "debug"]
    assert debug_events.count("engine.column_classification") == csv_facts(
        SAMPLES / "people_partial.csv")["columns"]
    completed_payload(records)


def test_output_option_and_logs_dir(tmp_path):
    target = tmp_path / "custom" / "result.xlsx"
    logs = tmp_path / "logs"
    result = run_engine("process", "file", "-i", SAMPLES / "contacts.csv", "-o", target,
                        "--config-package", SAMPLE_CONFIG, "--log-format", "ndjson",
                        "--log-level", "warning", "--logs-dir", logs)
    assert result.returncode == 0, result.stderr
    assert target.is_file()
    log_file = logs / "contacts_engine_events.ndjson"
    # the file is never filtered above INFO, so it has the completion payload
    records = parse_events(log_file.read_text(encoding="utf-8"))
    payload = completed_payload(records)
    assert payload["outputs"]["normalized"]["path"] == str(target.resolve())


def test_text_format(tmp_path):
    result = run_engine("process", "file", "--input", SAMPLES / "contacts.csv",
                        "--output-dir", tmp_path, "--config-package", SAMPLE_CONFIG,
                        "--log-format", "text")
    assert result.returncode == 0
    assert result.stdout == ""
    assert "engine.run.completed" in result.stderr
    assert not result.stderr.lstrip().startswith("{")


# ---------------------------------------------------------------------------
# usage errors, config validate, version

@pytest.mark.parametrize("args", [
    ["process", "file", "--output-dir", "{tmp}", "--config-package", "{cfg}"],
    ["process", "file", "--input", "{tmp}/missing.csv", "--output-dir", "{tmp}",
     "--config-package", "{cfg}"],
    ["process", "file", "--input", "{tmp}", "--output-dir", "{tmp}", "--config-package", "{cfg}"],
    ["process", "file", "--input", "{csv}", "--output-dir", "{tmp}", "--config-package", "{csv}"],
    ["process", "file", "--input", "{csv}", "--output-dir", "{tmp}"],
    ["process", "file", "--input", "{csv}", "--output", "{tmp}/a.xlsx", "--output-dir", "{tmp}",
     "--config-package", "{cfg}"],
    ["process", "file", "--input", "{csv}", "--output", "{tmp}/a.csv", "--config-package", "{cfg}"],
    ["process", "file", "--input", "{csv}", "--output-dir", "{tmp}", "--config-package", "{cfg}",
     "--active-sheet-only", "--input-sheet", "contacts"],
    ["process", "file", "--input", "{csv}", "--output-dir", "{tmp}", "--config-package", "{cfg}",
     "--max-findings-per-sheet", "5"],
    ["process", "file", "--input", "{csv}", "--output-dir", "{tmp}", "--config-package", "{cfg}",
     "--log-level", "loud"],
    ["process"],
    [],
])
def test_usage_errors_exit_2(args, tmp_path):
    values = {"tmp": str(tmp_path), "cfg": str(SAMPLE_CONFIG), "csv": str(SAMPLES / "contacts.csv")}
    result = run_engine(*[a.format(**values) for a in args])
    assert result.returncode == 2, (args, result.stderr)
    assert result.stderr.strip()
    assert "engine.run.completed" not in result.stderr
    assert not list(tmp_path.glob("*.xlsx"))


def test_config_validate_sample(tmp_path):
    result = run_engine("config", "validate", "--config-package", SAMPLE_CONFIG,
                        "--log-format", "ndjson", "--log-level", "info")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Config package OK"
    assert "fields=5" in lines[1] and "validators=" in lines[1]
    records = parse_events(result.stderr)
    loaded = [r for r in records if r["event"] == "engine.config.loaded"]
    assert loaded and loaded[0]["data"]["fields"] == ALL_FIELDS


def test_config_validate_rejects_bad_code(tmp_path):
    package = tmp_path / "ade_config"
    (package / "columns").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "columns" / "bad.py").write_text(
        "def register(registry):\n    registry.field('x', pattern='(unclosed')\n")
    result = run_engine("config", "validate", "--config-package", tmp_path)
    assert result.returncode == 1
    assert "INVALID" in result.stdout


def test_version():
    expected = re.search(r'__version__ = "([^"]+)"',
                         (ENGINE_SRC / "ade_engine" / "__init__.py").read_text()).group(1)
    for args in (["version"], ["--version"]):
        result = run_engine(*args)
        assert result.returncode == 0
        assert result.stdout.strip() == expected


# ---------------------------------------------------------------------------
# offline editable install into a fresh venv (takes a few seconds)

def test_offline_editable_install(tmp_path):
    venv = tmp_path / ".venv"
    created = subprocess.run([PYTHON, "-m", "venv", "--system-site-packages", str(venv)],
                             capture_output=True, text=True, timeout=300)
    assert created.returncode == 0, created.stderr
    vpython = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_INDEX_URL")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    for project in ("contrib/ade_engine", "contrib/sample-config"):
        installed = subprocess.run(
            [vpython, "-m", "pip", "install", "--no-index", "--no-build-isolation", "-e", project],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
        assert installed.returncode == 0, installed.stdout + installed.stderr

    # run from outside the repository so only the installed packages can be found
    version = subprocess.run([vpython, "-m", "ade_engine", "version"], capture_output=True,
                             text=True, cwd=tmp_path, env=env, timeout=60)
    assert version.returncode == 0, version.stderr
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", version.stdout.strip())
    validate = subprocess.run(
        [vpython, "-m", "ade_engine", "config", "validate", "--config-package", str(SAMPLE_CONFIG)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert validate.returncode == 0, validate.stderr
    assert validate.stdout.startswith("Config package OK")
    run = subprocess.run(
        [vpython, "-m", "ade_engine", "process", "file", "--input", str(SAMPLES / "contacts.csv"),
         "--output-dir", str(tmp_path / "out"), "--config-package", str(SAMPLE_CONFIG),
         "--log-format", "ndjson", "--log-level", "info"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    assert completed_payload(parse_events(run.stderr))["execution"]["status"] == "succeeded"
