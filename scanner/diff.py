"""What changed between two runs (the vendor's post-upgrade port review).

    old, new = load_pair(Path("before.json"), Path("after.json"))   # ConfigError (exit 2) if unusable
    d = diff_documents(old, new)                                     # a JSON-able dict
    d["summary"]["exit_code"]                                        # 1 when anything regressed

Results are matched by (profile, row, target). What counts as a **regression** (exit 1):

- a row x target whose status got worse: its severity rose (pass < inconclusive < warn <
  fail < error), e.g. pass -> fail, pass -> warn, warn -> fail;
- a row x target that fails in the new run and did not exist in the old one (a new
  target or a new catalogue row that fails).

Reported but not regressions (unless `strict`): targets or rows that disappeared, a row x
target no longer checked, pass -> skip (both may be a decommissioned host or a narrower
inventory; `strict=True` counts them, for CI jobs that must keep proving the same set);
a changed reason with the same status (filtered -> refused); evidence changes (SMB dialect
or signing, TLS version, certificate replaced or expiring sooner, RPC endpoints or
interfaces added or lost, SQL instances and their ports).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from scanner.errors import ConfigError
from scanner.models import STATUS_SEVERITY, Status, is_failure
from scanner.report import READABLE_VERSIONS, SCHEMA_VERSION, SchemaVersionError, load_document
from scanner.reporters._view import clip, md, render_template

EXIT_SAME, EXIT_REGRESSED = 0, 1
EXPIRY_WARN_DAYS = 30

Key = tuple[str, str, str]


def load_pair(old_path: Path, new_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both reports, validated by `report.load_document` (versions 1 and 2 compare: 2 only adds fields)."""
    docs: list[dict[str, Any]] = []
    versions: list[Any] = []
    for path in (old_path, new_path):
        try:
            docs.append(load_document(path))
            versions.append(docs[-1]["schema_version"])
        except SchemaVersionError as exc:
            versions.append(exc.version)
    if len(docs) < 2:
        raise ConfigError(
            f"{old_path} / {new_path}", None,
            f"cannot compare: incompatible report schema versions (old {versions[0]!r}, new {versions[1]!r}; this "
            f"portready reads {', '.join(map(str, READABLE_VERSIONS))}). Re-render or re-run both with the same "
            "portready version.",
        )
    return docs[0], docs[1]


def _key(row: Mapping[str, Any]) -> Key:
    return (str(row.get("profile", "")), str(row.get("row", "")), str(row.get("target", "")))


def _sev(status: str) -> int:
    try:
        return STATUS_SEVERITY[Status(status)]
    except ValueError:
        return STATUS_SEVERITY[Status.ERROR]


def _failing(status: str, strict: bool = False) -> bool:
    try:
        return is_failure(Status(status), strict)
    except ValueError:
        return True


def _brief(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "profile": row.get("profile"), "row": row.get("row"), "target": row.get("target"), "address": row.get("address"),
        "doc_port": row.get("doc_port"), "doc_protocol": row.get("doc_protocol"), "purpose": row.get("purpose"),
    }


def _change(kind: str, regression: bool, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> dict[str, Any]:
    base = _brief(new or old or {})
    base.update({
        "kind": kind,
        "regression": regression,
        "old_status": old.get("status") if old else None,
        "new_status": new.get("status") if new else None,
        "old_reason": old.get("reason") if old else None,
        "new_reason": new.get("reason") if new else None,
        "detail": (new or {}).get("detail") or (old or {}).get("detail") or "",
    })
    return base


def diff_documents(old: Mapping[str, Any], new: Mapping[str, Any], *, strict: bool = False) -> dict[str, Any]:
    """The changes from `old` to `new` as a JSON-able dict (see the module docstring for the rules)."""
    old_rows = {_key(r): r for r in old.get("rows") or [] if isinstance(r, Mapping)}
    new_rows = {_key(r): r for r in new.get("rows") or [] if isinstance(r, Mapping)}
    old_targets = {k[2] for k in old_rows}
    new_targets = {k[2] for k in new_rows}
    old_defs = {k[:2] for k in old_rows}
    new_defs = {k[:2] for k in new_rows}
    changes: list[dict[str, Any]] = []
    evidence: list[dict[str, Any]] = []
    for key in list(old_rows) + [k for k in new_rows if k not in old_rows]:
        o, n = old_rows.get(key), new_rows.get(key)
        if o is None and n is not None:
            fails = _failing(str(n.get("status")))
            changes.append(_change("new-failing" if fails else "added", fails, None, n))
            continue
        if n is None and o is not None:
            changes.append(_change("no-longer-checked", strict, o, None))
            continue
        assert o is not None and n is not None
        os_, ns = str(o.get("status")), str(n.get("status"))
        if os_ != ns:
            if ns == "skip":
                changes.append(_change("no-longer-checked", strict and os_ != "skip", o, n))
            elif os_ == "skip":
                fails = _failing(ns)
                changes.append(_change("new-failing" if fails else "now-checked", fails, o, n))
            elif _sev(ns) > _sev(os_):
                changes.append(_change("newly-failing" if _failing(ns) and not _failing(os_) else "worse", True, o, n))
            elif ns == "pass":
                changes.append(_change("newly-passing", False, o, n))
            else:
                changes.append(_change("better", False, o, n))
        elif o.get("reason") != n.get("reason"):
            changes.append(_change("reason-changed", False, o, n))
        for item in _evidence_changes(o, n):
            evidence.append({**_brief(n), **item})
    targets = {"added": sorted(new_targets - old_targets), "removed": sorted(old_targets - new_targets)}
    rows = {
        "added": [f"{p}/{r}" for p, r in sorted(new_defs - old_defs)],
        "removed": [f"{p}/{r}" for p, r in sorted(old_defs - new_defs)],
    }
    regressions = sum(1 for c in changes if c["regression"])
    if strict:
        regressions += len(targets["removed"]) + len(rows["removed"])
    counts: dict[str, int] = {}
    for c in changes:
        counts[c["kind"]] = counts.get(c["kind"], 0) + 1
    return {
        "tool": "portready",
        "kind": "diff",
        "schema_version": SCHEMA_VERSION,
        "old": _side(old),
        "new": _side(new),
        "changes": changes,
        "evidence": evidence,
        "targets": targets,
        "rows": rows,
        "summary": {
            "regressions": regressions,
            "improvements": counts.get("newly-passing", 0) + counts.get("better", 0),
            "changes": len(changes),
            "evidence_changes": len(evidence),
            "by_kind": counts,
            "strict": strict,
            "exit_code": EXIT_REGRESSED if regressions else EXIT_SAME,
        },
    }


def _side(doc: Mapping[str, Any]) -> dict[str, Any]:
    host = doc.get("host") or {}
    inv = doc.get("inventory") or {}
    return {
        "started": doc.get("started"), "finished": doc.get("finished"), "version": doc.get("version"),
        "kind": doc.get("kind"), "host": host.get("name"), "addresses": list(host.get("addresses") or [])[:16],
        "inventory": {"path": inv.get("path"), "sha256": inv.get("sha256")},
        "summary": {k: (doc.get("summary") or {}).get(k) for k in ("rows", "pass", "warn", "inconclusive", "fail", "error", "skip")},
    }


def _check_key(c: Mapping[str, Any]) -> tuple[str, str, str]:
    return (str(c.get("protocol")), str(c.get("port")), str(c.get("probe")))


def _evidence_changes(o: Mapping[str, Any], n: Mapping[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    old_checks = {_check_key(c): c for c in o.get("checks") or [] if isinstance(c, Mapping)}
    for nc in n.get("checks") or []:
        if not isinstance(nc, Mapping):
            continue
        oc = old_checks.get(_check_key(nc))
        if oc is None:
            continue
        oe, ne = oc.get("evidence") or {}, nc.get("evidence") or {}
        if not isinstance(oe, Mapping) or not isinstance(ne, Mapping):
            continue
        where = f"{str(nc.get('protocol', '')).upper()} {nc.get('port')}"

        def add(what: str, text: str, old: Any = None, new: Any = None, _where: str = where) -> None:
            out.append({"check": _where, "what": what, "text": text, "old": old, "new": new})

        for field, label in (("dialect", "SMB dialect"), ("signing_required", "SMB signing required"), ("tls_version", "TLS version")):
            if field in oe and field in ne and oe[field] != ne[field]:
                add(field, f"{label} changed from {oe[field]} to {ne[field]}", oe[field], ne[field])
            elif field in ne and field not in oe:
                add(field, f"{label} now {ne[field]}", None, ne[field])
            elif field in oe and field not in ne:
                add(field, f"{label} no longer seen (was {oe[field]})", oe[field], None)
        out_cert = _cert_changes(oe, ne)
        for what, text, old, new in out_cert:
            add(what, text, old, new)
        for what, text, old, new in _set_changes(oe, ne):
            add(what, text, old, new)
    return out


def _cert_changes(oe: Mapping[str, Any], ne: Mapping[str, Any]) -> list[tuple[str, str, Any, Any]]:
    out: list[tuple[str, str, Any, Any]] = []
    if not (oe.get("sha256") or oe.get("not_after")) or not (ne.get("sha256") or ne.get("not_after")):
        return out
    replaced = any(oe.get(k) != ne.get(k) for k in ("sha256", "subject", "not_after") if k in oe or k in ne)
    if replaced:
        parts = [f"{k} {oe.get(k)} → {ne.get(k)}" for k in ("subject", "issuer", "not_after") if oe.get(k) != ne.get(k)]
        out.append(("certificate-replaced", "certificate replaced: " + ("; ".join(parts) or "new fingerprint"),
                    {k: oe.get(k) for k in ("subject", "not_after", "sha256")}, {k: ne.get(k) for k in ("subject", "not_after", "sha256")}))
    o_after, n_after = str(oe.get("not_after") or ""), str(ne.get("not_after") or "")
    if o_after and n_after and n_after < o_after:
        out.append(("expires-sooner", f"the certificate now expires sooner: {n_after[:10]} (was {o_after[:10]})", o_after, n_after))
    else:
        od, nd = oe.get("days_left"), ne.get("days_left")
        if isinstance(nd, int) and nd <= EXPIRY_WARN_DAYS and not (isinstance(od, int) and od <= EXPIRY_WARN_DAYS):
            out.append(("expiry-near", f"the certificate expires in {nd} days ({n_after[:10]})", od, nd))
    return out


def _named(items: Any, key_fields: tuple[str, ...]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for it in items if isinstance(items, list) else []:
        if isinstance(it, Mapping):
            name = next((str(it[k]) for k in key_fields if it.get(k)), None)
            if name:
                out.setdefault(name, it)
    return out


def _set_changes(oe: Mapping[str, Any], ne: Mapping[str, Any]) -> list[tuple[str, str, Any, Any]]:
    out: list[tuple[str, str, Any, Any]] = []
    if "endpoints" in oe and "endpoints" in ne:
        # Endpoint ports are handed out at each service start: compare interfaces, not ports.
        o = _named(oe["endpoints"], ("name", "uuid"))
        n = _named(ne["endpoints"], ("name", "uuid"))
        if set(n) - set(o):
            added = sorted(set(n) - set(o))
            out.append(("endpoints-added", "new RPC endpoints: " + ", ".join(added[:20]), None, added))
        if set(o) - set(n):
            lost = sorted(set(o) - set(n))
            out.append(("endpoints-lost", "RPC endpoints no longer registered: " + ", ".join(lost[:20]), lost, None))
    if "interfaces" in oe and "interfaces" in ne:
        o = _named(oe["interfaces"], ("interface", "uuid"))
        n = _named(ne["interfaces"], ("interface", "uuid"))
        for name in sorted(set(o) | set(n)):
            a, b = o.get(name), n.get(name)
            if a is None or b is None:
                out.append(("interfaces", f"RPC interface {name} {'added' if a is None else 'lost'}", a, b))
            elif a.get("status") != b.get("status"):
                out.append(("interfaces", f"RPC interface {name}: {a.get('status')} → {b.get('status')}", a.get("status"), b.get("status")))
    if "instances" in oe and "instances" in ne:
        o = _named(oe["instances"], ("name",))
        n = _named(ne["instances"], ("name",))
        for name in sorted(set(o) | set(n)):
            a, b = o.get(name), n.get(name)
            if a is None:
                out.append(("instances", f"new SQL instance {name} (TCP {b.get('tcp_port') if b else '-'})", None, name))
            elif b is None:
                out.append(("instances", f"SQL instance {name} no longer announced (was TCP {a.get('tcp_port')})", name, None))
            elif a.get("tcp_port") != b.get("tcp_port"):
                out.append(("instances", f"SQL instance {name} moved from TCP {a.get('tcp_port')} to {b.get('tcp_port')}",
                            a.get("tcp_port"), b.get("tcp_port")))
    return out


KIND_WORDS = {
    "newly-failing": "newly failing",
    "new-failing": "new row × target, failing",
    "worse": "worse",
    "newly-passing": "newly passing",
    "better": "better",
    "reason-changed": "reason changed",
    "no-longer-checked": "no longer checked",
    "now-checked": "now checked",
    "added": "new row × target",
}


def change_line(c: Mapping[str, Any]) -> str:
    """'dc1 active-directory/gc-ssl-3269 (3269 TCP): pass → fail (filtered)'."""
    old = f"{c.get('old_status')}" + (f" ({c.get('old_reason')})" if c.get("old_reason") and c.get("old_reason") != "ok" else "")
    new = f"{c.get('new_status')}" + (f" ({c.get('new_reason')})" if c.get("new_reason") and c.get("new_reason") != "ok" else "")
    if c.get("old_status") is None:
        old = "—"
    if c.get("new_status") is None:
        new = "—"
    return f"{c.get('target')} {c.get('profile')}/{c.get('row')} ({c.get('doc_port')} {c.get('doc_protocol')}): {old} → {new}"


def _printable(text: Any, limit: int = 300) -> str:
    return clip(text, limit, one_line=True)


MAX_GROUPS = 50  # console lines per section; the JSON and Markdown diffs list every change


def _targets_text(targets: list[Any], named: int = 5) -> str:
    shown = ", ".join(_printable(t, 80) for t in targets[:named])
    return f"{len(targets):,} targets: {shown}" + (f" and {len(targets) - named:,} more" if len(targets) > named else "")


def _grouped_changes(changes: list[Mapping[str, Any]], mark: str) -> list[str]:
    """One line per identical change across targets (2,500 DCs losing TCP 3269 is one line)."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for c in changes:
        key = tuple(str(c.get(k)) for k in ("kind", "profile", "row", "doc_port", "doc_protocol", "old_status",
                                            "old_reason", "new_status", "new_reason"))
        groups.setdefault(key, []).append(c)
    lines = []
    for members in list(groups.values())[:MAX_GROUPS]:
        c = members[0]
        words = KIND_WORDS.get(c["kind"], c["kind"])
        if len(members) == 1:
            lines.append(f"  {mark} {words}: {_printable(change_line(c))}")
        else:
            what = change_line({**c, "target": ""}).lstrip()
            lines.append(f"  {mark} {words}: {_printable(what)} on {_targets_text([m.get('target') for m in members])}")
    if len(groups) > MAX_GROUPS:
        lines.append(f"  … and {len(groups) - MAX_GROUPS} more (see --json or --markdown)")
    return lines


def _grouped_evidence(evidence: list[Mapping[str, Any]]) -> list[str]:
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for e in evidence:
        groups.setdefault(tuple(str(e.get(k)) for k in ("profile", "row", "check", "text")), []).append(e)
    lines = []
    for (profile, row, check, text), members in list(groups.items())[:MAX_GROUPS]:
        where = (_printable(members[0].get("target")) if len(members) == 1
                 else _targets_text([m.get("target") for m in members]) + ",")
        lines.append(f"  • {where} {_printable(profile)}/{_printable(row)} {_printable(check)}: {_printable(text)}")
    if len(groups) > MAX_GROUPS:
        lines.append(f"  … and {len(groups) - MAX_GROUPS} more (see --json or --markdown)")
    return lines


def render_text(d: Mapping[str, Any]) -> str:
    """Console text (peer text made printable: no terminal escapes)."""
    s = d["summary"]
    lines = [
        f"portready diff: {_printable(d['old'].get('started'), 40)} ({_printable(d['old'].get('host'), 120)}) → "
        f"{_printable(d['new'].get('started'), 40)} ({_printable(d['new'].get('host'), 120)})",
    ]
    regs = [c for c in d["changes"] if c["regression"]]
    others = [c for c in d["changes"] if not c["regression"]]
    if regs:
        lines.append(f"REGRESSIONS ({len(regs)}):")
        lines += _grouped_changes(regs, "✗")
    if others:
        lines.append(f"Other changes ({len(others)}):")
        lines += _grouped_changes(others, "•")
    if d["evidence"]:
        lines.append(f"Evidence ({len(d['evidence'])}):")
        lines += _grouped_evidence(d["evidence"])
    for what in ("targets", "rows"):
        for side in ("added", "removed"):
            if d[what][side]:
                lines.append(f"{what.capitalize()} {side}: {_printable(', '.join(map(str, d[what][side])), 1000)}")
    if len(lines) == 1:
        lines.append("No change.")
    verdict = f"{s['regressions']} regression(s)" if s["regressions"] else "no regression"
    lines.append(f"{verdict}, {s['improvements']} improvement(s), {s['evidence_changes']} evidence change(s) (exit {s['exit_code']}{', strict' if s['strict'] else ''})")
    return "\n".join(lines) + "\n"


def render_markdown(d: Mapping[str, Any]) -> str:
    s = d["summary"]
    lines = [
        "# portready diff",
        "",
        f"**{s['regressions']} regression(s)**, {s['improvements']} improvement(s), {s['evidence_changes']} evidence change(s) "
        f"(exit {s['exit_code']}{', strict' if s['strict'] else ''})",
        "",
        f"- Old: {md(d['old'].get('started'))} from {md(d['old'].get('host'))}, portready {md(d['old'].get('version'))}",
        f"- New: {md(d['new'].get('started'))} from {md(d['new'].get('host'))}, portready {md(d['new'].get('version'))}",
        "",
        "## Changes",
        "",
    ]
    if d["changes"]:
        lines += ["| Regression | Change | Target | Row | Port | Protocol | Purpose | Old | New | Detail |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for c in sorted(d["changes"], key=lambda c: not c["regression"]):
            old = f"{c['old_status'] or '—'} {c['old_reason'] or ''}".strip()
            new = f"{c['new_status'] or '—'} {c['new_reason'] or ''}".strip()
            lines.append("| " + " | ".join([
                "**yes**" if c["regression"] else "no", md(KIND_WORDS.get(c["kind"], c["kind"])), md(c.get("target")),
                md(f"{c.get('profile')}/{c.get('row')}"), md(c.get("doc_port")), md(c.get("doc_protocol")), md(c.get("purpose"), 200),
                md(old), md(new), md(c.get("detail")),
            ]) + " |")
    else:
        lines.append("No status or reason changed.")
    lines += ["", "## Evidence", ""]
    if d["evidence"]:
        lines += ["| Target | Row | Check | Change |", "| --- | --- | --- | --- |"]
        for e in d["evidence"]:
            lines.append(f"| {md(e.get('target'))} | {md(str(e.get('profile')) + '/' + str(e.get('row')))} | {md(e.get('check'))} | {md(e.get('text'))} |")
    else:
        lines.append("No evidence changed.")
    lines += ["", "## Targets and rows", ""]
    for what in ("targets", "rows"):
        for side in ("added", "removed"):
            items = d[what][side]
            lines.append(f"- {what.capitalize()} {side}: " + (", ".join(md(x, 120) for x in items[:500]) if items else "none"))
    return "\n".join(lines) + "\n"


def render_html(d: Mapping[str, Any]) -> str:
    def c(v: Any, limit: int = 400) -> str:
        return clip(v if v is not None else "—", limit)

    changes = [
        {**{k: c(v) for k, v in ch.items() if k not in ("regression",)}, "regression": ch["regression"],
         "kind_words": KIND_WORDS.get(ch["kind"], ch["kind"]),
         "old_cls": ch["old_status"] if ch["old_status"] in {s.value for s in Status} else "skip",
         "new_cls": ch["new_status"] if ch["new_status"] in {s.value for s in Status} else "skip"}
        for ch in sorted(d["changes"], key=lambda ch: not ch["regression"])
    ]
    evidence = [{k: c(v) for k, v in e.items() if k in ("target", "profile", "row", "check", "text", "doc_port")} for e in d["evidence"]]
    return render_template(
        "diff.html.j2",
        d={"old": {k: c(v) for k, v in d["old"].items() if not isinstance(v, (dict, list))},
           "new": {k: c(v) for k, v in d["new"].items() if not isinstance(v, (dict, list))}},
        summary=d["summary"],
        changes=changes,
        evidence=evidence,
        targets={k: [c(x, 200) for x in v[:500]] for k, v in d["targets"].items()},
        rows={k: [c(x, 200) for x in v[:500]] for k, v in d["rows"].items()},
    )
