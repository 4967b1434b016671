"""CSV report for spreadsheets: one line per row x target x check.

    get_reporter("csv")(doc, "report.csv")   # -> the document's exit code

Spreadsheets run cells that start with = + - @ (and tab / carriage return) as formulas,
and peers choose some of this text (banners, details), so such cells get a leading
apostrophe (the OWASP "CSV injection" advice): the value shows as text and never runs.
Control characters (terminal escapes: `--csv -` may print to a terminal) become U+FFFD.
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any, Mapping, TextIO

from scanner.reporters import RenderOptions, reporter
from scanner.reporters._view import check_summary

COLUMNS = (
    "profile", "section", "row", "doc_port", "doc_protocol", "doc_source", "doc_target", "purpose", "direction",
    "role", "target", "address", "row_status", "row_reason", "row_detail",
    "check_protocol", "check_port", "probe", "check_status", "check_reason", "check_detail", "duration_ms", "evidence",
    "check_summary",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Every control character but tab and newline (a cell may hold lines), and bidi/format characters.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]")
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
    text = _CONTROLS.sub("\ufffd", text.replace("\x00", ""))
    if len(text) > MAX_CELL:
        text = text[:MAX_CELL] + "…"
    if text.startswith(_FORMULA_START):
        text = "'" + text
    return text


def render_csv(doc: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    write_csv(doc, buf, RenderOptions())
    return buf.getvalue()


# utf-8-sig: Excel on Windows reads the purpose texts' non-ASCII right only with a BOM
@reporter("csv", flag="--csv", help="write a CSV report (one line per row x target x check)",
          encoding="utf-8-sig", newline="")
def write_csv(doc: Mapping[str, Any], out: TextIO, options: RenderOptions) -> None:
    w = csv.writer(out, lineterminator="\r\n")
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
                c.get("duration_ms"), c.get("evidence") or None, check_summary(c) if c else None,
            ]])
