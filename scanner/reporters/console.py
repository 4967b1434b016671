"""Console: a table per profile (row as documented, target, checks, verdict, reason, detail)."""

from __future__ import annotations

import sys
from collections import defaultdict
from typing import Any, Mapping

from scanner.report import exit_code
from scanner.reporters import reporter

_STYLE = {
    "pass": "green",
    "warn": "yellow",
    "inconclusive": "magenta",
    "fail": "bold red",
    "error": "bold red",
    "skip": "dim",
}


def printable(text: Any, limit: int = 400) -> str:
    """Peer-supplied text without control characters (no terminal escapes), bounded."""
    s = "".join(ch if ch.isprintable() or ch == "\n" else "\ufffd" for ch in str(text))
    return s if len(s) <= limit else s[:limit] + "…"


def _checks_cell(row: Mapping[str, Any]) -> str:
    parts = []
    for c in row.get("checks", []):
        parts.append(f"{str(c['protocol']).upper()} {c['port']}: {c['status']}")
    return "\n".join(parts)


@reporter("console")
def write_console(doc: Mapping[str, Any], dest: str | None) -> int:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=sys.stdout if dest in (None, "-") else open(dest, "w", encoding="utf-8"), highlight=False)
    by_profile: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in doc.get("rows", []):
        by_profile[str(row["profile"])].append(row)
    for profile, rows in by_profile.items():
        table = Table(title=Text(f"{profile} — {printable(rows[0].get('section', ''))}"), show_lines=True, expand=False)
        table.add_column("Row (as documented)", overflow="fold", max_width=34)
        table.add_column("Target", overflow="fold", max_width=28)
        table.add_column("Checks", overflow="fold")
        table.add_column("Verdict")
        table.add_column("Reason / detail", overflow="fold", max_width=70)
        for row in rows:
            label = f"{row['doc_port']} {row.get('doc_protocol', '')}\n{row.get('purpose', '')}"
            target = row["target"] + (f"\n{row['address']}" if row.get("address") and row["address"] != row["target"] else "")
            detail = row["detail"] if row["status"] != "pass" else _first_evidence(row)
            table.add_row(
                Text(printable(label, 120)),
                Text(printable(target, 120)),
                Text(printable(_checks_cell(row), 400)),
                Text(row["status"].upper(), style=_STYLE.get(row["status"], "")),
                Text(printable(_reason_and_detail(str(row["reason"]), detail), 600)),
            )
        console.print(table)
    summary = doc.get("summary", {})
    parts = [f"{summary.get(k, 0)} {k}" for k in ("pass", "warn", "inconclusive", "fail", "error", "skip") if summary.get(k)]
    console.print(Text(f"{summary.get('rows', 0)} rows: " + (", ".join(parts) or "nothing to report")))
    for note in doc.get("notes", []):
        console.print(Text(printable(note, 600), style="dim"))
    code = exit_code(doc)
    verdict = "some rows FAILED" if code else "no row failed"
    console.print(Text(f"{verdict} (exit {code}{', strict' if summary.get('strict') else ''})", style=_STYLE["fail"] if code else _STYLE["pass"]))
    if dest not in (None, "-"):
        console.file.close()
    return code


def _reason_and_detail(reason: str, detail: str) -> str:
    """'refused: …' once: many details already start with their reason."""
    if not detail:
        return reason
    return detail if detail.startswith(f"{reason}:") else f"{reason}: {detail}"


def _first_evidence(row: Mapping[str, Any]) -> str:
    """A short 'why it passed' for the table: the first evidence of the first check."""
    for c in row.get("checks", []):
        ev = c.get("evidence") or {}
        items = [f"{k}={v}" for k, v in ev.items() if isinstance(v, (str, int, float, bool)) and k != "depth"][:3]
        if items:
            return ", ".join(items)
    return ""
