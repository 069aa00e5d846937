"""A tiny .xlsx writer (zipfile + hand-written SpreadsheetML).

Every cell is written as an inline string; that keeps the writer short and
loses nothing read from a CSV file.  Files open in spreadsheet programs and
in openpyxl.
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

_MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_HEAD = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_BAD_XML_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_BAD_SHEET_CHARS = re.compile(r"[\[\]:*?/\\]")


def column_letter(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA."""
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def a1_range(columns: int, rows: int, first_row: int = 1) -> str:
    """Range covering ``columns`` x ``rows`` cells starting at column A."""
    columns = max(columns, 1)
    last_row = first_row + max(rows, 1) - 1
    return f"A{first_row}:{column_letter(columns - 1)}{last_row}"


def sheet_title(candidate: str | None, default: str = "Sheet1") -> str:
    """A name Excel accepts: no []:*?/\\, no edge quotes, at most 31 chars."""
    name = _BAD_SHEET_CHARS.sub("_", candidate or "").strip().strip("'")[:31].strip()
    return name or default


def sheet_ref(name: str) -> str:
    """Sheet name as used in a reference (quoted when needed)."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name):
        return name
    return "'" + name.replace("'", "''") + "'"


def _text(value: str) -> str:
    return escape(_BAD_XML_CHARS.sub("", value))


def _attr(value: str) -> str:
    return escape(_BAD_XML_CHARS.sub("", value), {'"': "&quot;"})


def _sheet_xml(rows: list[list[str]]) -> str:
    width = max((len(r) for r in rows), default=0)
    out = [_HEAD, f'<worksheet xmlns="{_MAIN_NS}">']
    out.append(f'<dimension ref="{a1_range(width, len(rows)) if rows else "A1"}"/>')
    if not rows:
        out.append("<sheetData/>")
    else:
        out.append("<sheetData>")
        for r, row in enumerate(rows, start=1):
            out.append(f'<row r="{r}">')
            for c, value in enumerate(row):
                if value is None or value == "":
                    continue
                value = str(value)
                space = ' xml:space="preserve"' if value != value.strip() else ""
                out.append(
                    f'<c r="{column_letter(c)}{r}" t="inlineStr"><is><t{space}>{_text(value)}</t></is></c>'
                )
            out.append("</row>")
        out.append("</sheetData>")
    out.append("</worksheet>")
    return "".join(out)


def write_workbook(path: Path, sheets: list[tuple[str, list[list[str]]]]) -> None:
    """Write ``sheets`` (name, rows) to ``path`` atomically."""
    if not sheets:
        sheets = [("Sheet1", [])]
    overrides = "".join(
        f'<Override PartName="/xl/worksheets/sheet{i}.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
        for i in range(1, len(sheets) + 1)
    )
    content_types = (
        _HEAD
        + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        + overrides
        + "</Types>"
    )
    root_rels = (
        _HEAD
        + f'<Relationships xmlns="{_PKG_REL_NS}">'
        f'<Relationship Id="rId1" Type="{_REL_NS}/officeDocument" Target="xl/workbook.xml"/>'
        "</Relationships>"
    )
    workbook = (
        _HEAD
        + f'<workbook xmlns="{_MAIN_NS}" xmlns:r="{_REL_NS}"><sheets>'
        + "".join(
            f'<sheet name="{_attr(name)}" sheetId="{i}" r:id="rId{i}"/>'
            for i, (name, _) in enumerate(sheets, start=1)
        )
        + "</sheets></workbook>"
    )
    workbook_rels = (
        _HEAD
        + f'<Relationships xmlns="{_PKG_REL_NS}">'
        + "".join(
            f'<Relationship Id="rId{i}" Type="{_REL_NS}/worksheet" Target="worksheets/sheet{i}.xml"/>'
            for i in range(1, len(sheets) + 1)
        )
        + "</Relationships>"
    )

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".xlsx", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("[Content_Types].xml", content_types)
            zf.writestr("_rels/.rels", root_rels)
            zf.writestr("xl/workbook.xml", workbook)
            zf.writestr("xl/_rels/workbook.xml.rels", workbook_rels)
            for i, (_, rows) in enumerate(sheets, start=1):
                zf.writestr(f"xl/worksheets/sheet{i}.xml", _sheet_xml(rows))
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp_name, 0o666 & ~mask)
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
