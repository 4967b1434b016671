"""Markdown report for tickets and wikis: summary, findings, matrix, the attention rows, how to fix.

    get_reporter("markdown")(doc, "report.md")   # -> the document's exit code

Every cell from the document goes through `md()`: peers choose banners, certificate fields
and syslog lines, and a `|`, a backtick, a `<tag>` or a newline must not change the table
or inject markup into the ticket system that renders it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping, TextIO

from scanner.report import exit_code
from scanner.reporters import RenderOptions, reporter
from scanner.reporters._view import STATUS_ORDER, build_view, header_view, md, md_code, reason_words

if TYPE_CHECKING:
    from scanner.remediation import Fix

__all__ = ["code", "fixes_markdown", "md", "render_markdown"]
code = md_code  # the name other modules imported

MAX_ATTENTION = 500  # rows listed one by one; beyond, the findings above say it per group
MAX_ALL_ROWS = 2000  # the "All rows" tables; beyond, the JSON, CSV and HTML reports hold every row


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def fixes_markdown(fixes: list[Fix], level: int = 2) -> str:
    """The "How to fix" section: a change-request table, then the Windows and ONTAP commands."""
    from scanner import remediation

    h = "#" * level
    lines = [f"{h} How to fix", ""]
    if not fixes:
        return "\n".join(lines + ["No failed row: nothing to open.", ""])
    rows = remediation.table_rows(fixes)
    lines += _table(
        ["Source", "Destination", "Port", "Protocol", "Purpose", "What to do"],
        ([md(r["source"], 100), md(r["destination"], 100), md(r["port"], 60), md(r["protocol"], 20), md(r["purpose"], 200),
          md(f.advice, 600)] for r, f in zip(rows, fixes, strict=True)),
    )
    if any(f.opens for f in fixes):
        # Fenced blocks: their text is shown verbatim, and the commands are already reduced
        # to a safe character set, so no fence can be closed from inside.
        lines += ["", f"{h}# Windows Firewall (PowerShell)", "", "```powershell", remediation.powershell(fixes).rstrip(), "```"]
        lines += ["", f"{h}# Windows Firewall (netsh)", "", "```bat", remediation.netsh(fixes).rstrip(), "```"]
    if any(f.ontap_services for f in fixes):
        lines += ["", f"{h}# NetApp ONTAP", "", "```", remediation.ontap(fixes).rstrip(), "```"]
    return "\n".join(lines) + "\n"


def render_markdown(doc: Mapping[str, Any]) -> str:
    from scanner import remediation

    head = header_view(doc)
    view = build_view(doc)
    summary = doc.get("summary") or {}
    code_ = exit_code(doc)
    lines = [
        f"# portready {md(head['kind'], 20)} report",
        "",
        f"**{'Some rows FAILED' if code_ else 'No row failed'}** (exit {code_}{', strict' if summary.get('strict') else ''}): "
        + ", ".join(f"{summary.get(s, 0)} {s}" for s in STATUS_ORDER if summary.get(s)),
        "",
        f"- When: {md(head['started'], 40)} → {md(head['finished'], 40)}",
        f"- From: {md(head['host'], 120)} ({md(', '.join(head['addresses']), 300)})",
        f"- Inventory: {md(head['inventory_path'], 300)}" + (f" (sha256 {md_code(head['inventory_sha256'], 80)})" if head["inventory_sha256"] else ""),
        f"- Tool: portready {md(head['version'], 40)}, report schema {md(head['schema_version'], 10)}",
        "- Options: " + ", ".join(f"{md(k, 40)}={md(v, 80)}" for k, v in head["options"].items()),
    ]
    for note in head["notes"]:
        lines.append(f"- Note: {md(note, 600)}")
    if head["footprint"]:
        lines.append("- Security-log footprint of the checks that ran:")
        lines += [f"  - {md(item['text'], 1200)}" for item in head["footprint"]]
    if head["interrupted"]:
        lines[2:2] = [f"**{md(head['interrupted']['text'], 300)}**", ""]
    findings = [f for f in view["findings"] if f["status"] not in ("pass", "skip")]
    lines += ["", "## Findings", ""]
    if not findings:
        lines.append("None: every checked row passed or was skipped.")
    else:
        lines += _table(
            ["Verdict", "Row", "Port", "Protocol", "Purpose", "Reason", "Targets", "Detail (first target)"],
            ([f"**{f['status'].upper()}**", md(f"{f['profile']}/{f['row']}", 120), md(", ".join(f["checks"]) or f["doc_port"], 80),
              md(f["doc_protocol"], 20), md(f["purpose"], 200), md(f["reason_words"], 120),
              md(f"{f['count']}: " + ", ".join(h["name"] for h in f["hosts"]) + (f" and {f['more']} more" if f["more"] else ""), 400),
              md(f["detail"], 300)]
             for f in findings),
        )
    matrix = view["matrix"]
    if matrix["rows"]:
        lines += ["", "## Matrix", ""]
        lines += _table(
            [""] + [md(c["label"], 60) for c in matrix["columns"]],
            ([f"**{md(_matrix_label(r), 200)}**"] + [(cell["status"].upper() if cell else "—") for cell in matrix["grid"][i]]
             for i, r in enumerate(matrix["rows"])),
        )
    lines += ["", "## Rows that need attention", ""]
    attention = [
        (sec, b, r) for sec in view["sections"] for b in sec["blocks"] for r in b["rows"]
        if r["status"] in ("fail", "error", "warn", "inconclusive")
    ]
    if not attention:
        lines.append("None: every checked row passed or was skipped.")
    else:
        if len(attention) > MAX_ATTENTION:
            lines += [f"The first {MAX_ATTENTION} of {len(attention)}; the findings above group them all.", ""]
            attention = attention[:MAX_ATTENTION]
        lines += _table(
            ["Profile", "Target", "Port", "Protocol", "Source", "Destination", "Purpose", "Verdict", "Reason", "Detail", "Evidence"],
            ([md(sec["profile"], 60), md(f"{b['target']} ({b['address']})" if b["address"] and b["address"] != b["target"] else b["target"], 120),
              md(r["doc_port"], 60), md(r["doc_protocol"], 20), md(r["doc_source"], 80), md(r["doc_target"], 80),
              md(r["purpose"], 200), f"**{r['status'].upper()}**", md(reason_words(r["reason"]), 120), md(r["detail"], 400),
              md("; ".join(c["summary"] for c in r["checks"] if c["summary"]), 300)]
             for sec, b, r in attention),
        )
    lines += ["", "## All rows", ""]
    if len(doc.get("rows") or []) > MAX_ALL_ROWS:
        lines += [f"{len(doc.get('rows') or [])} row × target results: too many for a ticket; the JSON, CSV and HTML "
                  "reports hold every one.", ""]
    for sec in view["sections"] if len(doc.get("rows") or []) <= MAX_ALL_ROWS else []:
        lines += [f"### {md(sec['profile'], 100)} — {md(sec['section'], 200)}", ""]
        lines += _table(
            ["Target", "Port", "Protocol", "Source", "Destination", "Purpose", "Verdict", "Reason", "Time (ms)", "Evidence"],
            ([md(b["target"], 120), md(r["doc_port"], 60), md(r["doc_protocol"], 20), md(r["doc_source"], 80),
              md(r["doc_target"], 80), md(r["purpose"], 200), r["status"].upper(), md(r["reason"], 40), f"{r['ms']:.0f}",
              md("; ".join(c["summary"] for c in r["checks"] if c["summary"]), 300)]
             for b in sec["blocks"] for r in b["rows"]),
        )
        lines.append("")
    unexpected = doc.get("unexpected") or []
    if unexpected:
        lines += ["## Unexpected sources", ""]
        lines += _table(
            ["Protocol", "Port", "Source", "Count", "First arrival", "Syslog"],
            ([md(u.get("protocol"), 10), md(u.get("port"), 10), md(u.get("source_address"), 60), md(u.get("count"), 10),
              md(u.get("first_arrival", ""), 40), md((u.get("syslog") or {}).get("message", "") if isinstance(u.get("syslog"), Mapping) else "", 200)]
             for u in unexpected[:200] if isinstance(u, Mapping)),
        )
        lines.append("")
    lines.append(fixes_markdown(remediation.plan_fixes(doc)))
    return "\n".join(lines)


def _matrix_label(r: Mapping[str, Any]) -> str:
    """A matrix row: a target or profile, or a group of targets named (a few) and counted."""
    members = r.get("members")
    if not members:
        return str(r["label"])
    names = ", ".join(m["label"] for m in members[:6])
    return f"{r['label']}: {names}" + (f" and {len(members) - 6} more" if len(members) > 6 else "")


@reporter("markdown", flag="--markdown", help="write a Markdown report")
def write_markdown(doc: Mapping[str, Any], out: TextIO, options: RenderOptions) -> None:
    out.write(render_markdown(doc))
