"""CSV report for spreadsheets: one line per row x target x check.

    write_csv(doc, "report.csv")   # -> the document's exit code

Spreadsheets run cells that start with = + - @ (and tab / carriage return) as formulas,
and peers choose some of this text (banners, details), so such cells get a leading
apostrophe (the OWASP "CSV injection" advice): the value shows as text and never runs.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Mapping

from scanner.report import exit_code
from scanner.reporters import reporter
from scanner.reporters.html import write_text

COLUMNS = (
    "profile", "section", "row", "doc_port", "doc_protocol", "doc_source", "doc_target", "purpose", "direction",
    "role", "target", "address", "row_status", "row_reason", "row_detail",
    "check_protocol", "check_port", "probe", "check_status", "check_reason", "check_detail", "duration_ms", "evidence",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
MAX_CELL = 2000  # a spreadsheet cell holds 32767 characters; evidence is bounded far below


def cell(value: Any) -> str:
    """A spreadsheet-safe cell: text, bounded, never starting like a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        return str(value)  # numbers stay numbers (a negative one is still just a number)
    elif isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    else:
        text = str(value)
    text = text.replace("\x00", "")
    if len(text) > MAX_CELL:
        text = text[:MAX_CELL] + "…"
    if text.startswith(_FORMULA_START):
        text = "'" + text
    return text


def render_csv(doc: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(COLUMNS)
    for row in doc.get("rows") or []:
        if not isinstance(row, Mapping):
            continue
        base = [row.get(k) for k in ("profile", "section", "row", "doc_port", "doc_protocol", "doc_source", "doc_target",
                                     "purpose", "direction", "role", "target", "address")]
        base += [row.get("status"), row.get("reason"), row.get("detail")]
        checks = [c for c in row.get("checks") or [] if isinstance(c, Mapping)] or [{}]
        for c in checks:
            w.writerow([cell(v) for v in base + [
                c.get("protocol"), c.get("port"), c.get("probe"), c.get("status"), c.get("reason"), c.get("detail"),
                c.get("duration_ms"), c.get("evidence") or None,
            ]])
    return buf.getvalue()


@reporter("csv")
def write_csv(doc: Mapping[str, Any], dest: str | None) -> int:
    text = render_csv(doc)
    if dest in (None, "-"):
        write_text(dest, text)
    else:
        # utf-8-sig: Excel on Windows reads the purpose texts' non-ASCII right only with a BOM
        with open(dest, "w", encoding="utf-8-sig", newline="") as fh:
            fh.write(text)
    return exit_code(doc)
