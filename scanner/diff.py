"""What changed between two runs (the vendor's post-upgrade port review).

    old, new = load_pair(Path("before.json"), Path("after.json"))   # ConfigError (exit 2) if unusable
    d = diff_documents(old, new)                                     # a JSON-able dict
    d["summary"]["exit_code"]                                        # 1 when anything regressed
    render_text(d)                                                   # or render_markdown / render_html

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

This module only compares; the diff's console, Markdown and HTML forms live with the other
formats (`scanner.reporters._diff`) and are re-exported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from scanner.errors import ConfigError
from scanner.models import STATUS_SEVERITY, Status, is_failure
from scanner.report import READABLE_VERSIONS, SCHEMA_VERSION, SchemaVersionError, load_document
from scanner.reporters._diff import KIND_WORDS, change_line, render_html, render_markdown, render_text

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


__all__ = ["KIND_WORDS", "change_line", "diff_documents", "load_pair", "render_html", "render_markdown", "render_text"]
