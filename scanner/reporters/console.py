"""Console: the findings (identical outcomes grouped across targets) and the summary.

Every row x target is listed only for small runs or with `--verbose`: what a firewall
team needs from 2,500 targets is "TCP 3269 dropped on 2,500 domain controllers", not
20,000 lines. Plain text, no table library: lines wrap at word boundaries to the
terminal's width, or at 80 columns off a terminal (never mid-word), and peer text
has its control characters replaced, so no escape sequence reaches the terminal.
"""

from __future__ import annotations

import os
import re
import shutil
import textwrap
from collections import defaultdict
from typing import Any, Mapping, TextIO

from scanner.report import exit_code
from scanner.reporters import RenderOptions, reporter
from scanner.reporters._view import (
    STATUS_ORDER,
    check_summary,
    clip,
    findings_of,
    footprint_view,
    interrupted_view,
    reason_words,
)

SMALL_RUN = 60  # row x target results listed one by one without --verbose...
FEW_TARGETS, FEW_TARGETS_ROWS = 5, 400  # ...or every row of a run against a few targets
FINDINGS_LINES = 160  # console lines the findings may take; the rest are counted (every one is in JSON/HTML)
HOSTS_NAMED = 5
MAX_NOTES = 10
OFF_TERMINAL_WIDTH = 80

_COLOUR = {"pass": "32", "warn": "33", "inconclusive": "35", "fail": "1;31", "error": "1;31", "skip": "2"}


def printable(text: Any, limit: int = 400) -> str:
    """Peer-supplied text without control characters (no terminal escapes), bounded."""
    return clip(text, limit)


class _Lines:
    """Wraps and writes lines; colours status words only on a terminal that allows it."""

    def __init__(self, out: TextIO, width: int | None) -> None:
        tty = bool(getattr(out, "isatty", lambda: False)())
        self.out = out
        self.width = width or (shutil.get_terminal_size((100, 24)).columns if tty else OFF_TERMINAL_WIDTH)
        self.written = 0
        self.colour = tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        if os.name == "nt" and not (os.environ.get("WT_SESSION") or os.environ.get("TERM")):
            self.colour = False  # the classic Windows console shows escape codes as text

    def status(self, status: str) -> str:
        word = status.upper().ljust(5)
        return f"\x1b[{_COLOUR.get(status, '0')}m{word}\x1b[0m" if self.colour else word

    def line(self, text: str, *, indent: int = 0, lead: str = "") -> None:
        """`lead` (already safe, maybe coloured) starts the first line; the text wraps under it."""
        first = " " * indent + lead
        shown = len(" " * indent + (lead if not self.colour else _plain(lead)))
        rest = " " * shown
        wrapped = textwrap.wrap(text, width=max(20, self.width - shown), break_long_words=False,
                                break_on_hyphens=False) or [""]
        self.out.write(first + wrapped[0] + "\n")
        for part in wrapped[1:]:
            self.out.write(rest + part + "\n")
        self.written += len(wrapped)


def _plain(lead: str) -> str:
    return re.sub("\x1b\\[[0-9;]*m", "", lead)


@reporter("console")
def write_console(doc: Mapping[str, Any], out: TextIO, options: RenderOptions) -> None:
    w = _Lines(out, options.width)
    rows = [r for r in doc.get("rows") or [] if isinstance(r, Mapping)]
    interrupted = interrupted_view(doc)
    if interrupted:
        w.line(interrupted["text"], lead="!! ")
    _footprint(w, doc)
    targets = {str(r.get("target", "")) for r in rows}
    listed = options.verbose or len(rows) <= SMALL_RUN or (len(targets) <= FEW_TARGETS and len(rows) <= FEW_TARGETS_ROWS)
    if listed:
        _per_target(w, rows)
    if not listed or len(targets) > 1:
        _findings(w, doc, listed)
    _summary(w, doc)


def _footprint(w: _Lines, doc: Mapping[str, Any]) -> None:
    """The header line(s): what the checks that ran leave in the targets' security logs."""
    items = footprint_view(doc)
    if not items:
        return
    w.line("Security-log footprint of the checks that ran (README: \"Footprint in the target's security log\"):")
    for item in items:
        w.line(item["text"], indent=1, lead="- ")
    w.out.write("\n")


def _per_target(w: _Lines, rows: list[Mapping[str, Any]]) -> None:
    by_profile: dict[str, dict[str, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_profile[str(r.get("profile", ""))][str(r.get("target", ""))].append(r)
    for profile, per_target in by_profile.items():
        first = next(iter(per_target.values()))[0]
        w.line(f"{clip(profile, 100, one_line=True)} — {clip(first.get('section', ''), 200, one_line=True)}", lead="== ")
        for target, mine in per_target.items():
            address = mine[0].get("address")
            where = clip(target, 200, one_line=True) + (f" ({clip(address, 80, one_line=True)})" if address and address != target else "")
            w.line(where, indent=1)
            for r in mine:
                status = str(r.get("status", ""))
                label = f"{clip(r.get('doc_port', ''), 60, one_line=True)} {clip(r.get('doc_protocol', ''), 20, one_line=True)}"
                w.line(f"{label} — {clip(r.get('purpose', ''), 200, one_line=True)}", indent=3, lead=w.status(status) + " ")
                checks = ", ".join(f"{str(c.get('protocol', '')).upper()} {c.get('port', '')}: {c.get('status')}"
                                   for c in r.get("checks") or [] if isinstance(c, Mapping))
                why = _reason_and_detail(str(r.get("reason", "")), str(r.get("detail", ""))) if status != "pass" else _why_passed(r)
                w.line(clip(f"{checks} — {why}" if why else checks, 600, one_line=True), indent=9)
    if rows:
        w.out.write("\n")


def _findings(w: _Lines, doc: Mapping[str, Any], listed: bool) -> None:
    findings = findings_of(doc)
    attention = [f for f in findings if f["status"] not in ("pass", "skip")]
    if attention:
        w.line(f"Findings: {len(attention)} outcome(s) that need attention, grouped across targets")
    budget = w.written + FINDINGS_LINES
    shown = 0
    for f in attention:
        if w.written >= budget:
            break
        shown += 1
        what = ", ".join(f["checks"]) or f"{f['doc_port']} {f['doc_protocol']}"
        w.line(f"{clip(f['profile'], 100, one_line=True)}/{clip(f['row'], 80, one_line=True)} — "
               f"{clip(what, 120, one_line=True)} ({clip(f['purpose'], 160, one_line=True)})",
               indent=1, lead=w.status(f["status"]) + " ")
        words = reason_words(f["reason"])
        w.line(words if words.startswith(f"{f['reason']}:") else f"{clip(f['reason'], 40, one_line=True)}: {words}", indent=7)
        hosts = [clip(h, 80, one_line=True) for h in f["targets"][:HOSTS_NAMED]]
        more = f["count"] - len(hosts)
        w.line(f"{f['count']:,} target{'s' if f['count'] != 1 else ''}: " + ", ".join(hosts)
               + (f" and {more:,} more" if more > 0 else ""), indent=7)
        if f.get("detail"):
            w.line(f"e.g. {clip(f['targets'][0], 80, one_line=True)}: {clip(f['detail'], 300, one_line=True)}", indent=7)
    if len(attention) > shown:
        w.line(f"… and {len(attention) - shown} more findings: every one is in the JSON and HTML reports")
    passing = [f for f in findings if f["status"] == "pass"]
    if passing:
        n = sum(f["count"] for f in passing)
        w.line(f"Passing: {n:,} row × target result{'s' if n != 1 else ''} over {len(passing)} documented "
               f"row{'s' if len(passing) != 1 else ''}" + ("" if listed else " (--verbose lists every one)"))
    skipped = [f for f in findings if f["status"] == "skip"]
    if skipped:
        n = sum(f["count"] for f in skipped)
        reasons = sorted({f["reason"] for f in skipped})
        w.line(f"Skipped: {n:,} row × target result{'s' if n != 1 else ''} ({', '.join(reasons)})")


def _summary(w: _Lines, doc: Mapping[str, Any]) -> None:
    summary = doc.get("summary") or {}
    parts = [f"{summary.get(k, 0)} {k}" for k in STATUS_ORDER if summary.get(k)]
    w.line(f"{summary.get('rows', 0)} rows: " + (", ".join(parts) or "nothing to report"))
    unexpected = [u for u in doc.get("unexpected") or [] if isinstance(u, Mapping)]
    if unexpected:
        shown = ", ".join(f"{clip(u.get('source_address'), 60, one_line=True)} ({clip(u.get('protocol'), 10, one_line=True)} "
                          f"{clip(u.get('port'), 10, one_line=True)})" for u in unexpected[:HOSTS_NAMED])
        more = len(unexpected) - HOSTS_NAMED
        w.line(f"Unexpected sources: {len(unexpected)} sent traffic no row expects: {shown}"
               + (f" and {more} more" if more > 0 else ""))
    notes = [n for n in doc.get("notes") or [] if isinstance(n, str)]
    for note in notes[:MAX_NOTES]:
        w.line(clip(note, 600, one_line=True))
    if len(notes) > MAX_NOTES:
        w.line(f"… and {len(notes) - MAX_NOTES} more notes in the JSON and HTML reports")
    code = exit_code(doc)
    verdict = "some rows FAILED" if code else "no row failed"
    status = "fail" if code else "pass"
    text = f"{verdict} (exit {code}{', strict' if summary.get('strict') else ''})"
    interrupted = interrupted_view(doc)
    if interrupted:  # the command exits 130/143 then, not with the verdict's code
        text = f"{verdict} among the finished checks; the run was interrupted by {interrupted['signal']}"
    w.out.write((f"\x1b[{_COLOUR[status]}m{text}\x1b[0m" if w.colour else text) + "\n")


def _reason_and_detail(reason: str, detail: str) -> str:
    """'refused: …' once: many details already start with their reason."""
    if not detail:
        return reason
    return detail if detail.startswith(f"{reason}:") else f"{reason}: {detail}"


def _why_passed(row: Mapping[str, Any]) -> str:
    """A short 'why it passed': the checks' summaries, else the first evidence of the first check."""
    checks = [c for c in row.get("checks") or [] if isinstance(c, Mapping)]
    summaries = [s for s in (check_summary(c) for c in checks) if s]
    if summaries:
        return "; ".join(summaries)
    for c in checks:
        ev = c.get("evidence") or {}
        if isinstance(ev, Mapping):
            items = [f"{k}={v}" for k, v in ev.items() if isinstance(v, (str, int, float, bool)) and k != "depth"][:3]
            if items:
                return ", ".join(items)
    return ""
