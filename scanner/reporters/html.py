"""HTML report: one self-contained file (inline CSS and JS), readable on screen and on paper.

    write_html(doc, "report.html")   # -> the document's exit code

The page is rendered from reports/report.html.j2 (Jinja2, autoescape on: every value from
the document, peers included, is escaped). This module also builds the *view* of a
document that the Markdown report shares: reason words, the profiles x targets matrix,
evidence flattened into bounded key/value items, and the one-line evidence summary.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from scanner.models import STATUS_SEVERITY, Status, is_failure
from scanner.report import exit_code
from scanner.reporters import reporter

REASON_WORDS: dict[str, str] = {
    "ok": "the protocol answered",
    "port-depth": "the port accepts connections (no public protocol to check deeper)",
    "refused": "refused: nothing listens there, or a firewall rejects",
    "filtered": "filtered: no answer at all, a firewall drops the packets",
    "unreachable": "unreachable: no route, or a firewall rejects with host-unreachable",
    "unresolved": "the name does not resolve",
    "protocol": "something answered, but not the documented protocol",
    "auth": "the service rejected the credentials",
    "policy": "the service refuses the method by policy",
    "tls": "the TLS handshake failed",
    "certificate": "the certificate is expired, not yet valid, misnamed or untrusted",
    "no-answer": "UDP silence: open or filtered, cannot tell",
    "not-verifiable": "documented, but no service answers there by design",
    "not-registered": "the RPC interface or SQL instance is not registered",
    "not-configured": "the port is chosen per installation: set it in the inventory",
    "needs-protocol-depth": "--depth port cannot check a dynamic range",
    "inbound": "traffic flows to the Auditor host: prove it with listen / send",
    "not-seen": "nothing arrived from that source",
    "permission": "the operating system refused the means (e.g. ICMP without rights)",
    "time-skew": "the clock differs from the domain controller's by more than Kerberos allows",
    "closed": "the service accepted the connection, then closed or reset it (TLS required, address allow-list, overload)",
    "internal": "a portready bug; the detail says what",
}
STATUS_ORDER = ("fail", "error", "warn", "inconclusive", "pass", "skip")
MAX_TEXT = 400
MAX_LIST = 12
MAX_TABLE_ROWS = 16
MAX_TABLE_COLS = 8
MAX_ITEMS = 40


def reason_words(reason: Any) -> str:
    return REASON_WORDS.get(str(reason), str(reason))


def clip(value: Any, limit: int = MAX_TEXT) -> str:
    """Text without control characters, bounded (peers choose its length)."""
    s = "".join(ch if ch.isprintable() or ch in "\n\t" else "\ufffd" for ch in str(value))
    return s if len(s) <= limit else s[:limit] + "…"


def _scalar(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return clip(value)


def evidence_items(evidence: Any, depth: int = 0) -> list[dict[str, Any]]:
    """A bounded, renderable view of an evidence dict.

    Each item is {key, kind: text|list|table|items, value, more}: scalars as text, lists of
    scalars as a list, lists of dicts as a small table, dicts as nested items (two levels).
    """
    if not isinstance(evidence, Mapping):
        return [{"key": "value", "kind": "text", "value": _scalar(evidence), "more": 0}]
    items: list[dict[str, Any]] = []
    for key, value in list(evidence.items())[:MAX_ITEMS]:
        k = clip(key, 60)
        if isinstance(value, Mapping):
            if depth >= 2:
                items.append({"key": k, "kind": "text", "value": clip(json.dumps(value, default=str)), "more": 0})
            else:
                items.append({"key": k, "kind": "items", "value": evidence_items(value, depth + 1), "more": 0})
        elif isinstance(value, (list, tuple)):
            if value and all(isinstance(v, Mapping) for v in value):
                cols: list[str] = []
                for v in value[:MAX_TABLE_ROWS]:
                    for c in v:
                        if c not in cols and len(cols) < MAX_TABLE_COLS:
                            cols.append(c)
                rows = [[_cell(v.get(c)) for c in cols] for v in value[:MAX_TABLE_ROWS]]
                items.append({"key": k, "kind": "table", "value": {"columns": [clip(c, 40) for c in cols], "rows": rows},
                              "more": max(0, len(value) - MAX_TABLE_ROWS)})
            else:
                items.append({"key": k, "kind": "list", "value": [_cell(v) for v in value[:MAX_LIST]],
                              "more": max(0, len(value) - MAX_LIST)})
        else:
            items.append({"key": k, "kind": "text", "value": _scalar(value), "more": 0})
    if len(evidence) > MAX_ITEMS:
        items.append({"key": "…", "kind": "text", "value": f"{len(evidence) - MAX_ITEMS} more keys", "more": 0})
    return items


def _cell(value: Any) -> str:
    if isinstance(value, (Mapping, list, tuple)):
        return clip(json.dumps(value, default=str), 160)
    return clip(_scalar(value), 160)


def evidence_summary(check: Mapping[str, Any]) -> str:
    """One line of what the peer showed: SMB dialect, TLS and certificate, endpoints, instances."""
    ev = check.get("evidence") or {}
    if not isinstance(ev, Mapping):
        return ""
    parts: list[str] = []
    if ev.get("dialect"):
        sign = " signing required" if ev.get("signing_required") else (" signing enabled" if ev.get("signing_enabled") else "")
        parts.append(f"SMB {ev['dialect']}{sign}")
    if ev.get("tls_version"):
        parts.append(str(ev["tls_version"]))
    if ev.get("not_after"):
        who = ev.get("subject") or ""
        days = ev.get("days_left")
        parts.append(f"certificate {who} until {str(ev['not_after'])[:10]}" + (f" ({days} days)" if days is not None else ""))
    if ev.get("endpoint_count") is not None:
        parts.append(f"{ev['endpoint_count']} RPC endpoints")
    for item in (ev.get("interfaces") or [])[:6] if isinstance(ev.get("interfaces"), list) else []:
        if isinstance(item, Mapping):
            port = f" on {item['port']}" if item.get("port") else ""
            parts.append(f"{item.get('interface', '?')}: {item.get('status', '?')}{port}")
    if isinstance(ev.get("instances"), list):
        names = [f"{i.get('name', '?')} (TCP {i.get('tcp_port') or '-'})" for i in ev["instances"][:6] if isinstance(i, Mapping)]
        if names:
            parts.append("instances " + ", ".join(names))
    if isinstance(ev.get("syslog"), Mapping):
        msg = ev["syslog"].get("message") or ev["syslog"].get("msg") or ""
        if msg:
            parts.append(f"syslog: {msg}")
    return clip("; ".join(str(p) for p in parts), 300)


def slug(text: Any) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")[:40] or "x"


def worst(statuses: Iterable[str]) -> str:
    best = Status.SKIP
    for s in statuses:
        try:
            st = Status(s)
        except ValueError:
            continue
        if STATUS_SEVERITY[st] > STATUS_SEVERITY[best]:
            best = st
    return best.value


def build_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the templates show, computed once: profiles, targets, matrix, sections."""
    rows = [r for r in doc.get("rows") or [] if isinstance(r, Mapping)]
    strict = bool((doc.get("summary") or {}).get("strict", False))
    profiles: list[str] = []
    targets: list[str] = []
    for r in rows:
        p, t = str(r.get("profile", "")), str(r.get("target", ""))
        if p not in profiles:
            profiles.append(p)
        if t not in targets:
            targets.append(t)
    pidx = {p: i for i, p in enumerate(profiles)}
    tidx = {t: i for i, t in enumerate(targets)}
    sections: list[dict[str, Any]] = []
    for p in profiles:
        blocks: list[dict[str, Any]] = []
        for t in targets:
            mine = [r for r in rows if str(r.get("profile", "")) == p and str(r.get("target", "")) == t]
            if not mine:
                continue
            blocks.append({
                "target": clip(t, 200),
                "address": clip(mine[0].get("address") or "", 80),
                "role": clip(mine[0].get("role") or "", 80),
                "id": f"pt{pidx[p]}-{tidx[t]}-{slug(t)}",
                "ti": tidx[t],
                "worst": worst(str(r.get("status")) for r in mine),
                "rows": [_row_view(r, strict) for r in mine],
            })
        first = next(r for r in rows if str(r.get("profile", "")) == p)
        sections.append({
            "profile": clip(p, 100),
            "section": clip(first.get("section", ""), 200),
            "id": f"p{pidx[p]}-{slug(p)}",
            "blocks": blocks,
            "worst": worst(b["worst"] for b in blocks),
        })
    matrix = _matrix(sections, targets)
    return {"sections": sections, "matrix": matrix, "targets": [clip(t, 200) for t in targets]}


def _matrix(sections: list[dict[str, Any]], targets: list[str]) -> dict[str, Any]:
    """Profiles x targets; transposed (targets as rows) when there are many targets."""
    cells: dict[tuple[int, int], dict[str, Any]] = {}
    for si, sec in enumerate(sections):
        for b in sec["blocks"]:
            ti = b["ti"]
            counts: dict[str, int] = {}
            for r in b["rows"]:
                counts[r["status"]] = counts.get(r["status"], 0) + 1
            cells[(si, ti)] = {"status": b["worst"], "href": "#" + b["id"], "counts": counts,
                               "title": ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: STATUS_ORDER.index(kv[0]) if kv[0] in STATUS_ORDER else 9))}
    transposed = len(targets) > 12
    row_labels = ([{"label": t, "href": None} for t in targets] if transposed
                  else [{"label": s["profile"], "href": "#" + s["id"]} for s in sections])
    col_labels = ([{"label": s["profile"], "href": "#" + s["id"]} for s in sections] if transposed
                  else [{"label": clip(t, 60), "href": None} for t in targets])
    grid: list[list[dict[str, Any] | None]] = []
    for i in range(len(row_labels)):
        line: list[dict[str, Any] | None] = []
        for j in range(len(col_labels)):
            line.append(cells.get((j, i) if transposed else (i, j)))
        grid.append(line)
    return {"rows": row_labels, "columns": col_labels, "grid": grid, "transposed": transposed}


def _row_view(r: Mapping[str, Any], strict: bool) -> dict[str, Any]:
    status = str(r.get("status", ""))
    checks = []
    total = 0.0
    for c in r.get("checks") or []:
        if not isinstance(c, Mapping):
            continue
        try:
            ms = float(c.get("duration_ms") or 0)
        except (TypeError, ValueError):
            ms = 0.0
        total += ms
        checks.append({
            "label": clip(f"{str(c.get('protocol', '')).upper()} {c.get('port', '')}", 60),
            "probe": clip(c.get("probe", ""), 40),
            "status": str(c.get("status")) if c.get("status") in STATUS_ORDER else "error",
            "reason": clip(c.get("reason", ""), 40),
            "detail": clip(c.get("detail", "")),
            "summary": evidence_summary(c),
            "evidence": evidence_items(c.get("evidence") or {}),
            "ms": ms,
        })
    try:
        failing = is_failure(Status(status), strict)
    except ValueError:
        failing = False
    return {
        "row": clip(r.get("row", ""), 80),
        "doc_port": clip(r.get("doc_port", ""), 120),
        "doc_protocol": clip(r.get("doc_protocol", ""), 40),
        "doc_source": clip(r.get("doc_source", ""), 200),
        "doc_target": clip(r.get("doc_target", ""), 300),
        "purpose": clip(r.get("purpose", ""), 600),
        "direction": clip(r.get("direction", ""), 20),
        "status": status if status in STATUS_ORDER else "error",
        "reason": clip(r.get("reason", ""), 40),
        "reason_words": reason_words(r.get("reason", "")),
        "detail": clip(r.get("detail", "")),
        "checks": checks,
        "ms": total,
        "failing": failing,
    }


def header_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    host = doc.get("host") or {}
    inv = doc.get("inventory") or {}
    options = doc.get("options") or {}
    return {
        "kind": clip(doc.get("kind", "scan"), 20),
        "started": clip(doc.get("started", ""), 40),
        "finished": clip(doc.get("finished", ""), 40),
        "host": clip(host.get("name", ""), 120),
        "addresses": [clip(a, 60) for a in (host.get("addresses") or [])[:16]],
        "os": clip(host.get("os", ""), 120),
        "python": clip(host.get("python", ""), 20),
        "inventory_path": clip(inv.get("path") or "(command-line targets only)", 300),
        "inventory_sha256": clip(inv.get("sha256") or "", 80),
        "roles": {clip(k, 60): clip(v, 20) for k, v in list((inv.get("roles") or {}).items())[:40]},
        "version": clip(doc.get("version", ""), 40),
        "schema_version": clip(doc.get("schema_version", ""), 10),
        "options": {clip(k, 40): _cell(v) for k, v in list(options.items())[:40]},
        "notes": [clip(n, 600) for n in (doc.get("notes") or [])[:50]],
    }


def templates_dir() -> Path:
    """reports/ shipped in the wheel (scanner/_reports), or the repository's reports/."""
    here = Path(__file__).resolve().parent.parent
    packaged = here / "_reports"
    return packaged if packaged.is_dir() else here.parent / "reports"


def render_template(name: str, **context: Any) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=True,  # every value is escaped; peers control much of the text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["reason_words"] = reason_words
    env.filters["ms"] = lambda v: f"{float(v):,.0f} ms" if float(v) >= 10 else f"{float(v):.1f} ms"
    return env.get_template(name).render(**context)


def render_html(doc: Mapping[str, Any]) -> str:
    from scanner import remediation

    fixes = remediation.plan_fixes(doc)
    summary = doc.get("summary") or {}
    code = exit_code(doc)
    return render_template(
        "report.html.j2",
        head=header_view(doc),
        view=build_view(doc),
        summary={k: summary.get(k, 0) for k in ("rows", *STATUS_ORDER)},
        strict=bool(summary.get("strict", False)),
        code=code,
        fixes=fixes,
        fix_table=remediation.table_rows(fixes),
        powershell=remediation.powershell(fixes) if any(f.opens for f in fixes) else "",
        netsh=remediation.netsh(fixes) if any(f.opens for f in fixes) else "",
        ontap=remediation.ontap(fixes) if any(f.ontap_services for f in fixes) else "",
        unexpected=evidence_items({"unexpected sources": list(doc.get("unexpected") or [])[:200]})
        if doc.get("unexpected") else [],
        listener=evidence_items(doc.get("listener")) if isinstance(doc.get("listener"), Mapping) else [],
    )


def write_text(dest: str | None, text: str) -> None:
    import sys

    if dest in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(dest).write_text(text, encoding="utf-8")


@reporter("html")
def write_html(doc: Mapping[str, Any], dest: str | None) -> int:
    write_text(dest, render_html(doc))
    return exit_code(doc)
