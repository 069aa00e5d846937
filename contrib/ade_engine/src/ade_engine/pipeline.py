"""``process file``: read a CSV, map its columns, validate, write, report.

The flow mirrors the real engine at a much smaller scale: one workbook per
input, one sheet per CSV file, at most one table per sheet (the first
non-empty row is the header, everything below it down to the last non-empty
row is data).  Every number in the ``engine.run.completed`` payload is
counted from the input.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections import Counter
from dataclasses import dataclass, field as dc_field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ade_engine.config import (
    SEVERITIES,
    SEVERITY_RANK,
    ConfigError,
    ConfigPackage,
    FieldSpec,
    load_config_package,
    normalize_header,
)
from ade_engine.events import ConfigLogger, EventLogger, utc_timestamp
from ade_engine.xlsx import a1_range, sheet_ref, sheet_title, write_workbook

SCHEMA_VERSION = 1
MAPPING_THRESHOLD = 0.5
PATTERN_WEIGHT = 0.9  # a value-pattern match never scores as high as a header alias
SAMPLE_SIZE = 100
SUPPORTED_EXTENSIONS = (".csv",)
SPREADSHEET_EXTENSIONS = (".xlsx", ".xlsm", ".xls")
PLACEHOLDER_HEADER = r"(?:unnamed|column|col|field)(?:_?\d+)*"
_PLACEHOLDER = re.compile(PLACEHOLDER_HEADER)


class EngineError(Exception):
    """A run failure with the category and stage reported to the worker."""

    def __init__(self, code: str, stage: str, message: str):
        super().__init__(message)
        self.code = code
        self.stage = stage


@dataclass
class ProcessOptions:
    input: Path
    output_file: Path
    config_package: Path
    input_sheets: list[str] = dc_field(default_factory=list)
    active_sheet_only: bool = False
    logs_file: Path | None = None


@dataclass
class TableResult:
    index: int
    header_row: int  # 1-based row number of the header in the sheet
    width: int
    body_rows: int
    empty_rows: int
    columns: list[dict[str, Any]]
    contributions: list[dict[str, Any]]
    issues: Counter
    rows_evaluated: int
    output_rows: list[list[str]]
    sheet_index: int = 0

    @property
    def output_range(self) -> str:
        return a1_range(self.width, len(self.output_rows))


@dataclass
class SheetResult:
    index: int
    name: str
    rows_emitted: int
    tables: list[TableResult] = dc_field(default_factory=list)


@dataclass
class RunState:
    config: ConfigPackage | None = None
    workbook_name: str | None = None
    sheets: list[SheetResult] | None = None
    output_written: bool = False


# --------------------------------------------------------------------------
# input

def is_blank(row: list[str]) -> bool:
    return all(not cell.strip() for cell in row)


def read_csv(path: Path) -> list[list[str]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise EngineError("input_error", "read_input", f"cannot read {path.name}: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EngineError(
            "input_error",
            "read_input",
            f"{path.name} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
        ) from exc
    try:
        return list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise EngineError("input_error", "read_input", f"{path.name} is not a readable CSV file: {exc}") from exc


# --------------------------------------------------------------------------
# mapping and validation

def score_candidates(normalized: str | None, values: list[str], fields: list[FieldSpec]) -> list[dict[str, Any]]:
    sample = [v.strip() for v in values if v.strip()][:SAMPLE_SIZE]
    scored = []
    for order, spec in enumerate(fields):
        score = 0.0
        if normalized and normalized in spec.aliases:
            score = 1.0
        elif spec.pattern is not None and sample:
            hits = sum(1 for v in sample if spec.pattern.fullmatch(v))
            score = round(PATTERN_WEIGHT * hits / len(sample), 4)
        if score > 0:
            scored.append((-score, order, {"field": spec.name, "score": score}))
    scored.sort(key=lambda item: (item[0], item[1]))
    return [item[2] for item in scored[:3]]


def decide_mapping(normalized: str | None, candidates: list[dict[str, Any]], taken: set[str]) -> dict[str, Any]:
    top = candidates[0] if candidates else None
    reason = None
    if top is not None and top["score"] >= 1.0:
        pass
    elif not normalized or _PLACEHOLDER.fullmatch(normalized):
        reason = "empty_or_placeholder_header"
    elif top is None:
        reason = "no_signal"
    elif top["score"] < MAPPING_THRESHOLD:
        reason = "below_threshold"
    elif len(candidates) > 1 and candidates[1]["score"] == top["score"]:
        reason = "ambiguous_top_candidates"
    if reason is None and top["field"] in taken:
        reason = "duplicate_field"
    if reason is not None:
        return {"status": "unmapped", "field": None, "score": None, "method": None,
                "candidates": candidates, "unmapped_reason": reason}
    return {"status": "mapped", "field": top["field"], "score": float(top["score"]),
            "method": "classifier", "candidates": candidates, "unmapped_reason": None}


def check_value(spec: FieldSpec, value: str) -> tuple[str, tuple[str, str] | None]:
    """Transform then validate one non-empty cell."""
    if spec.transform is not None:
        try:
            out = spec.transform(value)
        except Exception as exc:  # noqa: BLE001 - config code
            raise EngineError("pipeline_error", "transform",
                              f"transform for {spec.name!r} failed: {type(exc).__name__}: {exc}") from exc
        value = "" if out is None else str(out)
    if spec.validator is None:
        return value, None
    try:
        verdict = spec.validator(value)
    except Exception as exc:  # noqa: BLE001
        raise EngineError("pipeline_error", "validate",
                          f"validator for {spec.name!r} failed: {type(exc).__name__}: {exc}") from exc
    if verdict is None or verdict is True:
        return value, None
    if verdict is False:
        return value, (spec.severity, f"invalid {spec.name}")
    if isinstance(verdict, str):
        return value, (spec.severity, verdict)
    if isinstance(verdict, (tuple, list)) and len(verdict) == 2 and verdict[0] in SEVERITIES:
        return value, (verdict[0], str(verdict[1]))
    raise EngineError("pipeline_error", "validate",
                      f"validator for {spec.name!r} returned {verdict!r}; expected None, a message "
                      "or (severity, message)")


def build_table(rows: list[list[str]], fields: list[FieldSpec], logger: EventLogger,
                sheet_name: str, sheet_index: int) -> TableResult | None:
    filled = [i for i, row in enumerate(rows) if not is_blank(row)]
    if not filled:
        return None
    first, last = filled[0], filled[-1]
    block = rows[first:last + 1]
    width = max(len(r) for r in block)
    block = [r + [""] * (width - len(r)) for r in block]
    # drop trailing columns with neither a header nor any data
    while width > 1 and all(not r[width - 1].strip() for r in block):
        width -= 1
    block = [r[:width] for r in block]
    header, body = block[0], block[1:]
    kept = [r for r in body if not is_blank(r)]
    by_name = {spec.name: spec for spec in fields}

    columns, contributions, taken = [], [], set()
    issues: Counter = Counter()
    out_header = []
    out_body = [list(r) for r in kept]
    for j in range(width):
        raw = header[j] if header[j].strip() else None
        normalized = normalize_header(raw)
        values = [r[j] for r in body]
        non_empty = sum(1 for v in values if v.strip())
        candidates = score_candidates(normalized, values, fields)
        mapping = decide_mapping(normalized, candidates, taken)
        valid = None
        if mapping["status"] == "mapped":
            spec = by_name[mapping["field"]]
            taken.add(spec.name)
            valid = 0
            for out_row in out_body:
                if not out_row[j].strip():
                    continue
                out_row[j], issue = check_value(spec, out_row[j])
                if issue is None:
                    valid += 1
                else:
                    issues[issue[0]] += 1
            contributions.append({"field": spec.name, "score": mapping["score"], "header": raw,
                                  "valid": valid, "table": (sheet_index, 0)})
            out_header.append(spec.name)
        else:
            out_header.append(raw or "")
        columns.append({"index": j, "header": {"raw": raw, "normalized": normalized},
                        "non_empty_cells": non_empty, "valid_cells": valid, "mapping": mapping})
        logger.emit("debug", "engine.column_classification", None, {
            "sheet_name": sheet_name, "table_index": 0, "column_index": j, "header": raw,
            "status": mapping["status"], "field": mapping["field"], "score": mapping["score"],
            "candidates": candidates, "unmapped_reason": mapping["unmapped_reason"]})

    return TableResult(
        index=0, header_row=first + 1, width=width, body_rows=len(body),
        empty_rows=len(body) - len(kept), columns=columns, contributions=contributions,
        issues=issues, rows_evaluated=len(kept) if contributions else 0,
        output_rows=[out_header] + out_body, sheet_index=sheet_index)


# --------------------------------------------------------------------------
# report

def _tally(tables: list[TableResult]) -> dict[str, Any]:
    total = {"rows": 0, "empty_rows": 0, "cols": 0, "empty_cols": 0, "mapped": 0, "unmapped": 0,
             "cells": 0, "non_empty": 0, "rows_evaluated": 0, "issues": Counter(), "contributions": []}
    for t in tables:
        total["rows"] += t.body_rows
        total["empty_rows"] += t.empty_rows
        total["cols"] += t.width
        total["empty_cols"] += sum(1 for c in t.columns if c["non_empty_cells"] == 0)
        total["mapped"] += sum(1 for c in t.columns if c["mapping"]["status"] == "mapped")
        total["unmapped"] += sum(1 for c in t.columns if c["mapping"]["status"] == "unmapped")
        total["cells"] += t.body_rows * t.width
        total["non_empty"] += sum(c["non_empty_cells"] for c in t.columns)
        total["rows_evaluated"] += t.rows_evaluated
        total["issues"].update(t.issues)
        total["contributions"].extend(t.contributions)
    return total


def _counts(tally: dict[str, Any], fields: list[FieldSpec], workbooks=None, sheets=None, tables=None):
    detected = len({c["field"] for c in tally["contributions"]})
    return {
        "workbooks": workbooks, "sheets": sheets, "tables": tables,
        "rows": {"total": tally["rows"], "empty": tally["empty_rows"]},
        "columns": {"total": tally["cols"], "empty": tally["empty_cols"],
                    "mapped": tally["mapped"], "unmapped": tally["unmapped"]},
        "fields": {"expected": len(fields), "detected": detected, "not_detected": len(fields) - detected},
        "cells": {"total": tally["cells"], "non_empty": tally["non_empty"]},
    }


def _validation(tally: dict[str, Any]) -> dict[str, Any]:
    by_severity = {s: tally["issues"][s] for s in SEVERITIES if tally["issues"][s]}
    return {
        "rows_evaluated": tally["rows_evaluated"],
        "issues_total": sum(by_severity.values()),
        "issues_by_severity": by_severity,
        "max_severity": max(by_severity, key=SEVERITY_RANK.__getitem__) if by_severity else None,
    }


def _fields(tally: dict[str, Any], fields: list[FieldSpec]) -> list[dict[str, Any]]:
    out = []
    for spec in fields:
        mine = [c for c in tally["contributions"] if c["field"] == spec.name]
        out.append({
            "field": spec.name,
            "label": spec.label,
            "detected": bool(mine),
            "derived": False,
            "valid_cells": sum(c["valid"] for c in mine),
            "best_mapping_score": max(c["score"] for c in mine) if mine else None,
            "source_headers": sorted({c["header"] for c in mine if c["header"] is not None}),
            "occurrences": {"tables": len({c["table"] for c in mine}), "columns": len(mine)},
        })
    return out


def _finding(code: str, severity: str, message: str, count=None, meta=None) -> dict[str, Any]:
    return {"code": code, "severity": severity, "message": message, "count": count, "meta": meta}


def grade(counts: dict[str, Any], validation: dict[str, Any], failure: EngineError | None,
          missing: list[str] | None = None):
    tables = counts["tables"] or 0
    fields = counts["fields"]
    findings = []
    if failure is not None and tables == 0:
        outcome = "unknown"
        findings.append(_finding("execution_failed", "error", f"Run failed: {failure}", None,
                                 {"code": failure.code, "stage": failure.stage}))
    elif tables == 0:
        outcome = "failure"
        findings.append(_finding("no_tables_detected", "error", "No table was found in the input", 0))
    elif fields["expected"] > 0 and fields["detected"] == 0:
        outcome = "failure"
        findings.append(_finding("no_fields_detected", "error",
                                 "None of the configured fields was found", 0))
    elif fields["not_detected"] > 0:
        outcome = "partial"
        findings.append(_finding("fields_not_detected", "warning",
                                 f"{fields['not_detected']} of {fields['expected']} fields were not found",
                                 fields["not_detected"], {"fields": missing or []}))
    else:
        outcome = "success"
    by_severity = validation["issues_by_severity"]
    if by_severity.get("warning"):
        findings.append(_finding("validation_warnings_present", "warning",
                                 "Validation reported warnings", by_severity["warning"]))
    if by_severity.get("error"):
        findings.append(_finding("validation_errors_present", "error",
                                 "Validation reported errors", by_severity["error"]))
        if outcome == "success":
            outcome = "partial"
    if failure is not None and tables > 0:
        findings.append(_finding("execution_failed", "error", f"Run failed: {failure}", None,
                                 {"code": failure.code, "stage": failure.stage}))
        if outcome == "success":
            outcome = "partial"
    return {"outcome": outcome, "findings": findings}


def build_report(state: RunState, output_file: Path, started: datetime, completed: datetime,
                 failure: EngineError | None) -> dict[str, Any]:
    fields = state.config.fields if state.config else []
    out_path = str(output_file) if state.output_written else None
    workbooks, all_tables, sheet_count = [], [], 0
    if state.sheets is not None:
        wref = {"index": 0, "name": state.workbook_name}
        sheet_summaries = []
        for sheet in state.sheets:
            sref = {"index": sheet.index, "name": sheet.name}
            table_summaries = []
            for t in sheet.tables:
                tally = _tally([t])
                table_summaries.append({
                    "scope": "table",
                    "locator": {"workbook": wref, "sheet": sref, "table": {"index": t.index}},
                    "counts": _counts(tally, fields),
                    "validation": _validation(tally),
                    "fields": _fields(tally, fields),
                    "structure": {
                        "region": {"a1": a1_range(t.width, t.body_rows + 1, t.header_row)},
                        "header": {"row_start": t.header_row, "row_count": 1, "inferred": False},
                        "data": {"row_start": t.header_row + 1, "row_count": t.body_rows},
                        "columns": t.columns,
                    },
                    "outputs": {"normalized": {
                        "path": out_path, "sheet_name": sheet.name,
                        "range_a1": f"{sheet_ref(sheet.name)}!{t.output_range}"}} if out_path else None,
                })
            tally = _tally(sheet.tables)
            sheet_summaries.append({
                "scope": "sheet",
                "locator": {"workbook": wref, "sheet": sref},
                "counts": _counts(tally, fields, tables=len(sheet.tables)),
                "validation": _validation(tally),
                "fields": _fields(tally, fields),
                "scan": {"rows_emitted": sheet.rows_emitted, "stopped_early": False, "truncated_rows": 0},
                "is_active_sheet": True,
                "tables": table_summaries,
            })
            all_tables.extend(sheet.tables)
        sheet_count = len(state.sheets)
        tally = _tally(all_tables)
        workbooks.append({
            "scope": "workbook",
            "locator": {"workbook": wref},
            "counts": _counts(tally, fields, sheets=sheet_count, tables=len(all_tables)),
            "validation": _validation(tally),
            "fields": _fields(tally, fields),
            "sheets": sheet_summaries,
        })
    tally = _tally(all_tables)
    counts = _counts(tally, fields, workbooks=len(workbooks), sheets=sheet_count, tables=len(all_tables))
    validation = _validation(tally)
    field_list = _fields(tally, fields)
    return {
        "schema_version": SCHEMA_VERSION,
        "scope": "run",
        "execution": {
            "status": "failed" if failure else "succeeded",
            "started_at": utc_timestamp(started),
            "completed_at": utc_timestamp(completed),
            "duration_ms": max(0, int((completed - started).total_seconds() * 1000)),
            "failure": {"stage": failure.stage, "code": failure.code, "message": str(failure)}
            if failure else None,
        },
        "evaluation": grade(counts, validation, failure,
                            [f["field"] for f in field_list if not f["detected"]]),
        "counts": counts,
        "validation": validation,
        "fields": field_list,
        "outputs": {"normalized": {"path": out_path, "sheet_name": None, "range_a1": None}}
        if out_path else None,
        "workbooks": workbooks,
    }


# --------------------------------------------------------------------------
# driver

def call_hooks(state: RunState, stage: str, logger: EventLogger, **context: Any) -> None:
    hooks = state.config.registry.hooks[stage] if state.config else []
    for fn in hooks:
        name = getattr(fn, "__qualname__", repr(fn))
        logger.emit("debug", "engine.hook.start", None, {"stage": stage, "hook": name})
        ctx = SimpleNamespace(stage=stage, logger=ConfigLogger(logger), **context)
        try:
            fn(ctx)
        except Exception as exc:  # noqa: BLE001 - config code
            raise EngineError("hook_error", f"hooks.{stage}",
                              f"{stage} hook {name} failed: {type(exc).__name__}: {exc}") from exc
        logger.emit("debug", "engine.hook.end", None, {"stage": stage, "hook": name})


def _execute(opts: ProcessOptions, state: RunState, logger: EventLogger) -> None:
    try:
        state.config = load_config_package(opts.config_package)
    except ConfigError as exc:
        raise EngineError("config_error", "load_config", str(exc)) from exc
    config = state.config
    logger.emit("info", "engine.config.loaded", "Config package loaded", {
        "config_package": str(opts.config_package),
        "entrypoint": "auto-discovery",
        "plugin_modules": config.modules,
        "fields": [spec.name for spec in config.fields],
        "settings": {},
    })
    logger.emit("debug", "engine.settings.effective", "Effective settings", {
        "mapping_threshold": MAPPING_THRESHOLD,
        "detector_column_sample_size": SAMPLE_SIZE,
        "supported_file_extensions": list(SUPPORTED_EXTENSIONS),
        "remove_unmapped_columns": False,
        "write_diagnostics_columns": False,
    })

    suffix = opts.input.suffix.lower()
    if suffix in SPREADSHEET_EXTENSIONS:
        raise EngineError("input_error", "read_input",
                          f"{suffix} input is not supported by the reference engine (CSV only)")
    if suffix not in SUPPORTED_EXTENSIONS:
        raise EngineError("input_error", "read_input", f"unsupported file extension {suffix or '(none)'!r}")
    rows = read_csv(opts.input)
    sheet_name = sheet_title(opts.input.stem)
    if opts.input_sheets and sheet_name not in opts.input_sheets:
        raise EngineError("input_error", "select_sheets",
                          f"requested sheet(s) {', '.join(opts.input_sheets)} not found; "
                          f"the workbook has: {sheet_name}")

    state.workbook_name = opts.input.name
    state.sheets = []
    logger.emit("info", "engine.workbook.started", "Workbook started",
                {"schema_version": SCHEMA_VERSION, "sheet_count": 1})
    call_hooks(state, "on_workbook_start", logger, input_file=opts.input, output_file=opts.output_file)

    sheet = SheetResult(index=0, name=sheet_name, rows_emitted=len(rows))
    state.sheets.append(sheet)
    logger.emit("info", "engine.sheet.started", "Sheet started",
                {"schema_version": SCHEMA_VERSION, "sheet_name": sheet.name, "sheet_index": sheet.index})
    call_hooks(state, "on_sheet_start", logger, sheet_name=sheet.name, rows=rows)

    output_sheets = []
    table = build_table(rows, config.fields, logger, sheet.name, sheet.index)
    if table is None:
        logger.warning(f"No table found in sheet {sheet.name!r}", sheet_name=sheet.name)
        output_sheets.append((sheet.name, []))
    else:
        call_hooks(state, "on_table_mapped", logger, sheet_name=sheet.name, table=table)
        logger.emit("debug", "engine.validation.summary", None, {
            "sheet_name": sheet.name, "table_index": table.index,
            "rows_evaluated": table.rows_evaluated, "issues_by_severity": dict(table.issues)})
        call_hooks(state, "on_table_validated", logger, sheet_name=sheet.name, table=table)
        sheet.tables.append(table)
        output_sheets.append((sheet.name, table.output_rows))
        logger.emit("info", "engine.table.written", "Table written", {
            "schema_version": SCHEMA_VERSION, "sheet_name": sheet.name,
            "table_index": table.index, "output_range": table.output_range})
        call_hooks(state, "on_table_written", logger, sheet_name=sheet.name, table=table)

    call_hooks(state, "on_workbook_before_save", logger, output_file=opts.output_file, sheets=output_sheets)
    try:
        write_workbook(opts.output_file, output_sheets)
    except OSError as exc:
        raise EngineError("pipeline_error", "write_output",
                          f"cannot write {opts.output_file}: {exc.strerror or exc}") from exc
    state.output_written = True
    logger.info(f"Normalized workbook written to {opts.output_file}")


def run_process(opts: ProcessOptions, logger: EventLogger) -> int:
    """Run one file; returns the process exit code (0 ok, 1 failed)."""
    started = datetime.now(timezone.utc)
    clock = time.monotonic()
    logger.emit("info", "engine.run.started", "Run started", {
        "schema_version": SCHEMA_VERSION, "input_file": str(opts.input),
        "config_package": str(opts.config_package)})
    logger.emit("info", "engine.run.planned", "Run planned", {
        "schema_version": SCHEMA_VERSION, "output_file": str(opts.output_file),
        "output_dir": str(opts.output_file.parent),
        "logs_file": str(opts.logs_file) if opts.logs_file else None,
        "logs_dir": str(opts.logs_file.parent) if opts.logs_file else None})

    state = RunState()
    failure: EngineError | None = None
    try:
        _execute(opts, state, logger)
    except EngineError as exc:
        failure = exc
    except Exception as exc:  # noqa: BLE001 - report anything unexpected as a failed run
        failure = EngineError("unknown_error", "unknown", f"{type(exc).__name__}: {exc}")
        failure.__cause__ = exc
        failure.__traceback__ = exc.__traceback__
    if failure is not None:
        logger.error(f"Run failed: {failure}", exc=failure.__cause__ or failure,
                     code=failure.code, stage=failure.stage)

    # measure with the monotonic clock so a wall-clock step cannot go negative
    completed = started + timedelta(seconds=max(0.0, time.monotonic() - clock))
    payload = build_report(state, opts.output_file, started, completed, failure)
    logger.emit("info", "engine.run.completed", None, payload)
    return 0 if failure is None else 1
