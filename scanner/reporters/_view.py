"""The view of a report document that every format renders: computed once, bounded, sanitised.

    view = build_view(doc)        # findings, profiles x targets matrix (grouped when large), sections
    head = header_view(doc)       # when, from where, inventory, options, notes, interrupted
    clip(peer_text, 200)          # no control characters or terminal escapes, bounded

Formats (html, markdown, console, csv, junit) and `diff` read from here instead of
from each other. Nothing here knows a probe: a check's one-line summary is the
probe's own `summarize()`, saved in the document (or asked of the probe for a
version-1 report, which had none).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from scanner.models import STATUS_SEVERITY, Status, is_failure, reason_words
from scanner.report import findings_of

__all__ = [
    "STATUS_ORDER", "build_view", "check_summary", "clip", "evidence_items", "findings_of", "footprint_view", "header_view",
    "interrupted_view", "md", "md_code", "reason_words", "render_template", "slug", "worst",
]

STATUS_ORDER = ("fail", "error", "warn", "inconclusive", "pass", "skip")
MAX_TEXT = 400
MAX_LIST = 12
MAX_TABLE_ROWS = 16
MAX_TABLE_COLS = 8
MAX_ITEMS = 40
MATRIX_TARGETS = 40  # above this, matrix rows are groups of targets with the same verdicts
HOSTS_NAMED = 8  # hosts named per finding in the page; the rest are counted (all in JSON)

# C0/C1 controls (terminal escapes, CSI), DEL, line/paragraph separators, bidi and
# zero-width format characters: a peer could use them to rewrite what an admin sees.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]")
_UNSAFE_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\n\t]")


def clip(value: Any, limit: int = MAX_TEXT, *, one_line: bool = False) -> str:
    """Text without control characters (no terminal escapes), bounded: peers choose it.

    Newlines and tabs are kept unless `one_line`.
    """
    s = value if isinstance(value, str) else str(value)
    s = (_UNSAFE_LINES if one_line else _UNSAFE).sub("\ufffd", s[: limit + 1])
    return s if len(s) <= limit else s[:limit] + "…"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")  # inline markup, links, table cells; < and & become entities


def md(value: Any, limit: int = 400) -> str:
    """Text safe in a Markdown table cell: escaped markup, entities for < and &, no newlines."""
    s = clip(value, limit)
    s = s.replace("&", "&amp;").replace("<", "&lt;")
    s = _MD_SPECIAL.sub(r"\\\1", s)
    s = re.sub(r"[\r\n\t]+", " ", s)
    return s


def md_code(value: Any, limit: int = 200) -> str:
    """Inline code that no backtick can close early (double fence, backticks replaced)."""
    s = clip(value, limit).replace("`", "'")
    s = re.sub(r"[\r\n\t]+", " ", s)
    return f"`` {s} ``"


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
                items.append({"key": k, "kind": "text", "value": clip(_json(value)), "more": 0})
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


def _json(value: Any) -> str:
    try:
        return json.dumps(value, default=str)[:2000]
    except (ValueError, RecursionError):
        return "…"


def _cell(value: Any) -> str:
    if isinstance(value, (Mapping, list, tuple)):
        return clip(_json(value), 160)
    return clip(_scalar(value), 160)


_LEGACY: dict[str, Any] = {}


def check_summary(check: Mapping[str, Any]) -> str:
    """The check's one-line summary: saved by the engine, else (version-1 reports) the probe's own words."""
    saved = check.get("summary")
    if isinstance(saved, str):
        return clip(saved, 300, one_line=True)
    evidence = check.get("evidence")
    if not isinstance(evidence, Mapping) or not evidence:
        return ""
    probe = _legacy_probe(str(check.get("probe", "")))
    if probe is None:
        return ""
    try:
        return clip(probe.summarize(evidence), 300, one_line=True)
    except Exception:  # noqa: BLE001 - a saved report may hold anything; no summary then
        return ""


def _legacy_probe(name: str) -> Any:
    # Imported only for version-1 reports: the probe registry loads every probe module.
    if name not in _LEGACY:
        from scanner.probes.base import registry

        cls = registry().get(name)
        _LEGACY[name] = cls() if cls is not None else None
    return _LEGACY[name]


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


def _status(value: Any) -> str:
    return value if isinstance(value, str) and value in STATUS_ORDER else "error"


def build_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the page shows, computed once: findings, matrix, per-profile sections.

    With many targets (more than MATRIX_TARGETS) each section also has `groups`: the
    targets whose rows have the same outcomes (row, verdict, reason), worst and largest
    first, so the page shows one rows table per group and one line per target (see
    `_block_groups`); evidence is then prepared only for the blocks shown in full.
    """
    rows = [r for r in doc.get("rows") or [] if isinstance(r, Mapping)]
    strict = bool((doc.get("summary") or {}).get("strict", False))
    by_pt: dict[str, dict[str, list[Mapping[str, Any]]]] = defaultdict(dict)
    targets: dict[str, int] = {}
    for r in rows:
        p, t = str(r.get("profile", "")), str(r.get("target", ""))
        targets.setdefault(t, len(targets))
        by_pt[p].setdefault(t, []).append(r)
    many = len(targets) > MATRIX_TARGETS
    sections: list[dict[str, Any]] = []
    block_ids: dict[str, str] = {}  # target -> id of its first block (findings link there)
    for pi, (p, per_target) in enumerate(by_pt.items()):
        blocks: list[dict[str, Any]] = []
        for t, mine in per_target.items():
            ti = targets[t]
            bid = f"pt{pi}-{ti}-{slug(t)}"
            block_ids.setdefault(t, bid)
            blocks.append({
                "target": clip(t, 200),
                "address": clip(mine[0].get("address") or "", 80),
                "role": clip(mine[0].get("role") or "", 80),
                "id": bid,
                "ti": ti,
                "worst": worst(str(r.get("status")) for r in mine),
                "rows": [_row_view(r, strict, with_evidence=not many) for r in mine],
                "raw": mine,  # the document's rows, for evidence prepared later (grouped pages)
            })
        first = next(iter(per_target.values()))[0]
        section: dict[str, Any] = {
            "profile": clip(p, 100),
            "section": clip(first.get("section", ""), 200),
            "id": f"p{pi}-{slug(p)}",
            "blocks": blocks,
            "worst": worst(b["worst"] for b in blocks),
            "groups": _block_groups(blocks, f"p{pi}") if many else None,
        }
        sections.append(section)
    target_list = list(targets)
    return {
        "sections": sections,
        "matrix": _matrix(sections, target_list, block_ids),
        "targets": [clip(t, 200) for t in target_list],
        "findings": findings_view(doc, block_ids),
    }


def _block_groups(blocks: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """A section's targets grouped by identical outcomes, for pages of many targets.

    Each group: {id, count, worst, rep (the first target's block, shown in full with its
    evidence), members (every target of the group, the first included: one line each,
    with its block id as anchor, and per row its verdict and one-line summary or detail)}.
    A group of one target is its block in full. Every row x target stays on the page; only
    the evidence of the other members of a group is left to the JSON report.
    """
    grouped: dict[tuple[tuple[str, str, str], ...], list[dict[str, Any]]] = {}
    for b in blocks:
        key = tuple((r["row"], r["status"], r["reason"]) for r in b["rows"])
        grouped.setdefault(key, []).append(b)
    order = sorted(grouped.values(), key=lambda bs: (-STATUS_SEVERITY[Status(bs[0]["worst"])], -len(bs)))
    out = []
    for gi, members in enumerate(order):
        rep = members[0]
        for view_row, row in zip(rep["rows"], rep["raw"], strict=False):  # evidence for the block shown in full
            for check, raw_check in zip(view_row["checks"], [c for c in row.get("checks") or [] if isinstance(c, Mapping)],
                                        strict=False):
                check["evidence"] = evidence_items(raw_check.get("evidence") or {})
        lines = [{"target": b["target"], "address": b["address"], "role": b["role"], "id": b["id"], "worst": b["worst"],
                  "cells": [_member_cell(r) for r in b["rows"]]} for b in members] if len(members) > 1 else []
        out.append({"id": f"{prefix}-g{gi}", "count": len(members), "worst": rep["worst"], "rep": rep,
                    "members": lines, "headers": [r["row"] for r in rep["rows"]]})
    return out


def _member_cell(r: Mapping[str, Any]) -> dict[str, Any]:
    """One row of one member target: its verdict and what it said, in one short line."""
    said = "; ".join(c["summary"] for c in r["checks"] if c["summary"])
    if r["status"] != "pass" or not said:
        said = r["detail"] or said or r["reason_words"]
    return {"status": r["status"], "reason": r["reason"], "text": clip(said, 160, one_line=True),
            "title": f"{r['row']}: {r['status']} ({r['reason']})"}


def findings_view(doc: Mapping[str, Any], block_ids: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The document's findings (identical outcomes grouped across targets), bounded for display."""
    out = []
    for f in findings_of(doc):
        hosts = f["targets"]
        out.append({
            "status": _status(f["status"]),
            "reason": clip(f["reason"], 40),
            "reason_words": reason_words(f["reason"]),
            "profile": clip(f["profile"], 100),
            "row": clip(f["row"], 80),
            "doc_port": clip(f["doc_port"], 120),
            "doc_protocol": clip(f["doc_protocol"], 40),
            "purpose": clip(f["purpose"], 300, one_line=True),
            "checks": [clip(c, 40) for c in f["checks"][:8]],
            "detail": clip(f["detail"], 400, one_line=True),
            "count": f["count"],
            "hosts": [{"name": clip(h, 120), "href": "#" + block_ids[h] if block_ids and h in block_ids else None}
                      for h in hosts[:HOSTS_NAMED]],
            "more": max(0, len(hosts) - HOSTS_NAMED),
        })
    return out


def _matrix(sections: list[dict[str, Any]], targets: list[str], block_ids: Mapping[str, str]) -> dict[str, Any]:
    """Profiles x targets; targets as rows when there are many; groups of targets when there are very many."""
    cells: dict[tuple[int, int], dict[str, Any]] = {}
    for si, sec in enumerate(sections):
        for b in sec["blocks"]:
            counts: dict[str, int] = {}
            for r in b["rows"]:
                counts[r["status"]] = counts.get(r["status"], 0) + 1
            cells[(si, b["ti"])] = {"status": b["worst"], "href": "#" + b["id"], "counts": counts,
                                    "title": _counts_title(counts),
                                    "outcomes": tuple((r["row"], r["status"], r["reason"]) for r in b["rows"])}
    if len(targets) > MATRIX_TARGETS:
        addresses = [""] * len(targets)
        for sec in sections:
            for b in sec["blocks"]:
                addresses[b["ti"]] = addresses[b["ti"]] or b["address"] or b["target"]
        return _grouped_matrix(sections, targets, cells, block_ids, addresses)
    transposed = len(targets) > 12
    row_labels = ([{"label": clip(t, 60), "href": None} for t in targets] if transposed
                  else [{"label": s["profile"], "href": "#" + s["id"]} for s in sections])
    col_labels = ([{"label": s["profile"], "href": "#" + s["id"]} for s in sections] if transposed
                  else [{"label": clip(t, 60), "href": None} for t in targets])
    grid: list[list[dict[str, Any] | None]] = []
    for i in range(len(row_labels)):
        grid.append([cells.get((j, i) if transposed else (i, j)) for j in range(len(col_labels))])
    return {"rows": row_labels, "columns": col_labels, "grid": grid, "transposed": transposed, "grouped": False}


def _counts_title(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: STATUS_ORDER.index(kv[0])
                                                       if kv[0] in STATUS_ORDER else 9))


def _grouped_matrix(sections: list[dict[str, Any]], targets: list[str],
                    cells: Mapping[tuple[int, int], dict[str, Any]], block_ids: Mapping[str, str],
                    addresses: list[str]) -> dict[str, Any]:
    """One matrix row per group of targets whose verdict is the same in every profile.

    2,500 domain controllers that all drop one port are one line, not 2,500 red cells;
    each group lists every target of it, linked to its rows below.
    """
    groups: dict[tuple[Any, ...], list[int]] = {}
    for ti in range(len(targets)):
        # Same verdict, reason and row in every profile: the same finding, so the same line.
        key = tuple((cells.get((si, ti)) or {}).get("outcomes", ()) for si in range(len(sections)))
        groups.setdefault(key, []).append(ti)
    ordered = []
    for members in groups.values():
        statuses = tuple((cells.get((si, members[0])) or {}).get("status", "") for si in range(len(sections)))
        ordered.append((statuses, members))
    ordered.sort(key=lambda kv: (-max((STATUS_SEVERITY[Status(s)] for s in kv[0] if s), default=0), -len(kv[1])))
    rows, grid = [], []
    for key, members in ordered:
        rows.append({
            "label": f"{len(members):,} target{'s' if len(members) != 1 else ''}" + _subnets(addresses[ti] for ti in members),
            "href": None,
            "members": [{"label": clip(targets[ti], 60),
                         "href": "#" + block_ids[targets[ti]] if targets[ti] in block_ids else None}
                        for ti in members],
        })
        line: list[dict[str, Any] | None] = []
        for si, status in enumerate(key):
            if not status:
                line.append(None)
                continue
            counts: dict[str, int] = {}
            for ti in members:
                for s, n in cells[(si, ti)]["counts"].items():
                    counts[s] = counts.get(s, 0) + n
            line.append({"status": status, "href": "#" + sections[si]["id"], "counts": counts, "title": _counts_title(counts)})
        grid.append(line)
    columns = [{"label": s["profile"], "href": "#" + s["id"]} for s in sections]
    return {"rows": rows, "columns": columns, "grid": grid, "transposed": True, "grouped": True}


def _subnets(addresses: Iterable[str], shown: int = 3) -> str:
    """' in 10.1.0.0/24, 10.1.1.0/24 … (10 subnets)': where a group's targets are (IPv4 /24, IPv6 /64)."""
    nets: dict[str, int] = {}
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        net = ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 64}", strict=False)
        nets[str(net)] = nets.get(str(net), 0) + 1
    if not nets:
        return ""
    names = list(nets)
    more = f" … ({len(names)} subnets)" if len(names) > shown else ""
    return " in " + ", ".join(names[:shown]) + more


def _row_view(r: Mapping[str, Any], strict: bool, *, with_evidence: bool = True) -> dict[str, Any]:
    status = _status(r.get("status"))
    checks = []
    total = 0.0
    for c in r.get("checks") or []:
        if not isinstance(c, Mapping):
            continue
        try:
            ms = float(c.get("duration_ms") or 0)
        except (TypeError, ValueError, OverflowError):
            ms = 0.0
        total += ms
        checks.append({
            "label": clip(f"{str(c.get('protocol', '')).upper()} {c.get('port', '')}", 60),
            "probe": clip(c.get("probe", ""), 40),
            "status": _status(c.get("status")),
            "reason": clip(c.get("reason", ""), 40),
            "detail": clip(c.get("detail", "")),
            "summary": check_summary(c),
            "evidence": evidence_items(c.get("evidence") or {}) if with_evidence else [],
            "ms": ms,
        })
    return {
        "row": clip(r.get("row", ""), 80),
        "doc_port": clip(r.get("doc_port", ""), 120),
        "doc_protocol": clip(r.get("doc_protocol", ""), 40),
        "doc_source": clip(r.get("doc_source", ""), 200),
        "doc_target": clip(r.get("doc_target", ""), 300),
        "purpose": clip(r.get("purpose", ""), 600),
        "direction": clip(r.get("direction", ""), 20),
        "status": status,
        "reason": clip(r.get("reason", ""), 40),
        "reason_words": reason_words(r.get("reason", "")),
        "detail": clip(r.get("detail", "")),
        "checks": checks,
        "ms": total,
        "failing": is_failure(Status(status), strict),
    }


def interrupted_view(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The `interrupted` field as display text, or None for a complete run (and for old reports)."""
    info = doc.get("interrupted")
    if not isinstance(info, Mapping):
        return None
    signal = clip(info.get("signal") or "a signal", 20, one_line=True)
    done, planned = info.get("checks_done"), info.get("checks_planned")
    counts = (f"{done} of {planned} checks finished" if isinstance(done, int) and isinstance(planned, int)
              else "only the checks that finished")
    return {"signal": signal, "checks_done": done, "checks_planned": planned,
            "text": f"INTERRUPTED by {signal}: {counts}; rows without a finished check are not in this report"}


def header_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    host = _mapping(doc.get("host"))
    inv = _mapping(doc.get("inventory"))
    options = _mapping(doc.get("options"))
    return {
        "kind": clip(doc.get("kind", "scan"), 20),
        "started": clip(doc.get("started", ""), 40),
        "finished": clip(doc.get("finished", ""), 40),
        "host": clip(host.get("name", ""), 120),
        "addresses": [clip(a, 60) for a in _list(host.get("addresses"))[:16]],
        "os": clip(host.get("os", ""), 120),
        "python": clip(host.get("python", ""), 20),
        "inventory_path": clip(inv.get("path") or "(command-line targets only)", 300),
        "inventory_sha256": clip(inv.get("sha256") or "", 80),
        "roles": {clip(k, 60): clip(v, 20) for k, v in list(_mapping(inv.get("roles")).items())[:40]},
        "version": clip(doc.get("version", ""), 40),
        "schema_version": clip(doc.get("schema_version", ""), 10),
        "options": {clip(k, 40): _cell(v) for k, v in list(options.items())[:40]},
        "notes": [clip(n, 600) for n in _list(doc.get("notes"))[:50]],
        "interrupted": interrupted_view(doc),
        "footprint": footprint_view(doc),
    }


def footprint_view(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The document's `footprint` (probes whose checks ran and leave events), bounded; [] for old reports.

    Each item: {probe, checks, footprint, flagged: [{footprint, checks}], text: one line for text formats}.
    """
    out: list[dict[str, Any]] = []
    for item in _list(doc.get("footprint"))[:MAX_ITEMS]:
        if not isinstance(item, Mapping) or not isinstance(item.get("footprint"), str):
            continue
        checks = item.get("checks")
        n = checks if isinstance(checks, int) and not isinstance(checks, bool) else 0
        flagged = []
        for f in _list(item.get("flagged"))[:8]:
            if isinstance(f, Mapping) and isinstance(f.get("footprint"), str):
                fn = f.get("checks")
                flagged.append({"footprint": clip(f["footprint"], 300, one_line=True),
                                "checks": fn if isinstance(fn, int) and not isinstance(fn, bool) else 0})
        probe = clip(item.get("probe", ""), 40, one_line=True)
        words = clip(item["footprint"], 400, one_line=True)
        text = f"{probe} ({n:,} check{'s' if n != 1 else ''}): {words}"
        if flagged:
            text += "; this run: " + "; ".join(f"{f['footprint']} ({f['checks']:,})" for f in flagged)
        out.append({"probe": probe, "checks": n, "footprint": words, "flagged": flagged, "text": text})
    return out


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def templates_dir() -> Path:
    """reports/ shipped in the wheel (scanner/_reports), or the repository's reports/."""
    here = Path(__file__).resolve().parent.parent
    packaged = here / "_reports"
    return packaged if packaged.is_dir() else here.parent / "reports"


def render_template(name: str, **context: Any) -> str:
    return "".join(stream_template(name, **context))


def stream_template(name: str, **context: Any) -> Iterator[str]:
    """The rendered template in pieces, so a large page is written as it is made, never held whole."""
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
    return env.get_template(name).generate(**context)
