"""Arrivals -> results: one RowResult per inbound row x expected source, plus the unexpected.

    plan = plan_inbound(rows, settings_values, port_map={})
    bindings = plan_bindings(plan, ["0.0.0.0", "::"])
    ... listener runs ...
    report = match(plan, sources, listener.store, listener.failed, waited=30.0)
    report.rows, report.unexpected, report.complete

A row's checks are alternatives for a source: a Qumulo cluster that sends syslog over
UDP 514 proves its "514 UDP/TCP" row even though nothing came over TCP (the unused
transport is reported as `skip`). A row passes for a source when anything from it
arrived on one of the row's ports; `fail` / `not-seen` when nothing did. A role with no
listed source accepts traffic from anyone (devices named nowhere still prove the path).
"""

from __future__ import annotations

import datetime as _dt
import errno
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from scanner.listener.server import ArrivalStore, Binding, SourceRecord, bind_error_text
from scanner.models import (
    CheckResult,
    CheckSpec,
    Direction,
    PortRange,
    Reason,
    Row,
    RowResult,
    Status,
    Target,
    Transport,
)
from scanner.probes.base import get_probe

ANY_HOST = "any"
_MAX_TAGS_SHOWN = 16
_MAX_SOURCES_SHOWN = 32

# What each loss counter means, in words an admin can act on (the listener's own options).
LOSS_WORDS: dict[str, str] = {
    "connections_over_cap": "connection(s) refused with a reset: the listener was at --max-connections",
    "connections_over_source_cap": "connection(s) refused with a reset: this address was at "
                                   "--max-connections-per-source",
    "connections_shed": "connection(s) closed to make room at a cap (no complete message for a while)",
    "connections_shed_memory": "connection(s) closed: partial messages of all connections passed the memory cap",
    "connections_closed_slow": "connection(s) closed: a message did not complete within --frame-timeout",
    "connections_idle_closed": "connection(s) closed after --idle-timeout without data",
    "connections_parked_at_stop": "connection(s) still waiting for a slot when the listener stopped: not read",
    "frames_truncated": "message(s) truncated: cut by a close, a deadline or the listener stopping, "
                        "or longer than --max-frame",
    "frames_miscounted": "octet count(s) wrong in the stream (RFC 6587): resynchronised at the next "
                         "message, which was counted",
    "lines_unterminated": "last line(s) without LF when the sender closed (counted as messages)",
    "tags_over_cap": "tagged message(s) counted but their tag not kept individually (tag cap)",
    "udp_kernel_drops": "datagram(s) dropped by the kernel on this port (receive buffer full)",
    "tcp_bytes_discarded": "byte(s) discarded (beyond --max-frame, or between a wrong count and the "
                           "next message)",
}
# Losses the listener itself caused: the path works, but something sent was not taken.
LISTENER_LOSSES = frozenset({
    "connections_over_cap", "connections_over_source_cap", "connections_shed", "connections_shed_memory",
    "connections_parked_at_stop",
})  # fmt: skip


def loss_words(losses: Mapping[str, int], skip: Iterable[str] = ("tcp_bytes_discarded",)) -> str:
    """'lost: 3 connection(s) refused ...; 2 message(s) truncated ...' or ''."""
    skipped = set(skip)
    parts = [f"{n} {LOSS_WORDS.get(k, k.replace('_', ' '))}" for k, n in losses.items() if n and k not in skipped]
    return "lost or altered: " + "; ".join(parts) if parts else ""


@dataclass(frozen=True)
class InboundCheck:
    """One check of an inbound row, with the port actually listened on (None: cannot)."""

    spec: CheckSpec
    port: int | None
    doc_port: int | None
    why_not: Outcome | None = None


@dataclass(frozen=True)
class Outcome:
    status: Status
    reason: Reason
    detail: str


@dataclass(frozen=True)
class InboundRow:
    row: Row
    checks: tuple[InboundCheck, ...]


@dataclass(frozen=True)
class ExpectedSource:
    """A source host of a role, resolved once before listening."""

    target: Target
    addresses: tuple[str, ...]
    error: str | None = None


@dataclass(frozen=True)
class MatchReport:
    rows: list[RowResult]
    unexpected: list[dict[str, Any]]
    complete: bool


def iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _proven_by_listening(spec: CheckSpec) -> bool:
    """Whether the check's probe declares its traffic inbound (the listener proves it, not the scan)."""
    try:
        return get_probe(spec.probe).inbound
    except KeyError:  # profiles are validated at load; a hand-built spec may name anything
        return False


def plan_inbound(
    rows: Iterable[Row],
    settings_values: Mapping[str, Any] | None = None,
    port_map: Mapping[tuple[Transport, int], int] | None = None,
) -> list[InboundRow]:
    """The inbound rows (probe `listen`) with the port each check listens on.

    `settings_values["ports"][setting]` gives ports chosen per installation (nutanix-port);
    `port_map[(transport, documented port)]` moves a documented port (tests use high ports).
    """
    configured = dict((settings_values or {}).get("ports") or {})
    port_map = dict(port_map or {})
    out: list[InboundRow] = []
    for row in rows:
        if row.direction is not Direction.INBOUND:
            continue
        checks: list[InboundCheck] = []
        for spec in row.checks:
            if not _proven_by_listening(spec) or spec.protocol is Transport.ICMP:
                continue
            doc: int | None = None
            why: Outcome | None = None
            if isinstance(spec.port, PortRange):
                why = Outcome(
                    Status.SKIP, Reason.NOT_VERIFIABLE,
                    f"not verifiable by listening: the ports {spec.port} are handed out at run time; "
                    "the RPC endpoint mapper on 135 is checked instead",
                )  # fmt: skip
            elif spec.setting and configured.get(spec.setting) is not None:
                doc = int(configured[spec.setting])  # the installation's own port wins
            elif spec.port is not None:
                doc = spec.port
            else:
                why = Outcome(
                    Status.SKIP, Reason.NOT_CONFIGURED,
                    f"not configured: this port is chosen per installation; set ports.{spec.setting} "
                    "in the inventory to listen on it",
                )  # fmt: skip
            port = None if doc is None else port_map.get((spec.protocol, doc), doc)
            checks.append(InboundCheck(spec, port, doc, why))
        if checks:
            out.append(InboundRow(row, tuple(checks)))
    return out


def plan_bindings(plan: Iterable[InboundRow], addresses: Iterable[str]) -> list[Binding]:
    addrs = list(addresses)
    seen: dict[Binding, None] = {}
    for irow in plan:
        for check in irow.checks:
            if check.port is not None:
                for addr in addrs:
                    seen.setdefault(Binding(check.spec.protocol, check.port, addr), None)
    return list(seen)


def _label(source: ExpectedSource) -> str:
    host = source.target.host
    addrs = [a for a in source.addresses if a != host]
    return f"{host} ({', '.join(addrs[:3])})" if addrs else host


def _summary(rec: SourceRecord) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "source_address": rec.source,
        "count": rec.count,
        "bytes": rec.byte_count,
        "first_arrival": iso(rec.first),
        "last_arrival": iso(rec.last),
    }
    if rec.protocol is Transport.UDP:
        ev["datagrams"] = rec.datagrams
    else:
        ev["connections"] = rec.connections
        ev["messages"] = rec.messages
    if rec.via != "socket":
        ev["via"] = rec.via
    parsed = [s.syslog() for s in rec.samples]
    syslog = [p.evidence() for p in parsed if p is not None]
    if syslog:
        ev["syslog"] = syslog[0]
        if len(syslog) > 1:
            ev["last_syslog"] = syslog[-1]
    if rec.tagged:
        ev["tagged"] = rec.tagged  # every tagged message, kept individually or not
        ev["tags_distinct"] = len(rec.tags)
        per_row = Counter[str]()
        for t in rec.tags.values():
            per_row[t.tag.key] += t.count
        ev["tags_per_row"] = dict(per_row.most_common(_MAX_TAGS_SHOWN))
    if rec.tags:
        ev["tags"] = [
            {"nonce": t.tag.nonce, "row": t.tag.key, "count": t.count, "first_arrival": iso(t.first)}
            for t in list(rec.tags.values())[:_MAX_TAGS_SHOWN]
        ]
        if len(rec.tags) > _MAX_TAGS_SHOWN:
            ev["tags_not_shown"] = len(rec.tags) - _MAX_TAGS_SHOWN
    losses = {k: v for k, v in sorted(rec.losses.items()) if v}
    if losses:
        ev["losses"] = losses
    return ev


def _arrival_words(rec: SourceRecord) -> str:
    proto = rec.protocol.value.upper()
    if rec.protocol is Transport.UDP:
        what = f"{rec.datagrams} datagram{'s' if rec.datagrams != 1 else ''}"
    else:
        what = f"{rec.connections} connection{'s' if rec.connections != 1 else ''}"
        if rec.messages:
            what += f", {rec.messages} message{'s' if rec.messages != 1 else ''}"
    words = f"{what} on {proto} {rec.port}, first {iso(rec.first)}, last {iso(rec.last)}"
    first = next((p for p in (s.syslog() for s in rec.samples) if p is not None and p.format != "unknown"), None)
    if first is not None:
        words += f"; syslog from host {first.host or '-'}, app {first.app or '-'}"
    return words


def _unbound_outcome(
    check: InboundCheck,
    failed: Mapping[Binding, OSError],
    bound: set[tuple[Transport, int]],
    port_notes: Mapping[tuple[Transport, int], str],
) -> Outcome | None:
    """Why a check's port could not be watched (no socket and no capture), or None."""
    assert check.port is not None
    key = (check.spec.protocol, check.port)
    if key in bound:
        return None
    excs = [e for b, e in failed.items() if (b.protocol, b.port) == key]
    errors = [bind_error_text(b, e) for b, e in failed.items() if (b.protocol, b.port) == key]
    text = "; ".join(dict.fromkeys(errors)) or f"{check.spec.protocol.value.upper()} {check.port} was not bound"
    if key in port_notes:
        text += f" ({port_notes[key]})"
    # The listener could not do its job on this port: a failure with the fix, not a shrug.
    if any(e.errno in (errno.EACCES, errno.EPERM) for e in excs):
        return Outcome(
            Status.FAIL, Reason.PERMISSION,
            f"not watched: {text}; run `portready listen` elevated (root or sudo; Administrator on Windows; "
            "on Linux CAP_NET_BIND_SERVICE is enough), or for a test move the port with "
            f"--port {check.port}/{check.spec.protocol.value}=<high port> and point the sender there",
        )  # fmt: skip
    if any(e.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)) for e in excs):
        return Outcome(
            Status.FAIL, Reason.PORT_IN_USE,
            f"not watched: {text}; stop that process while testing, or confirm arrivals without binding "
            "with `portready listen --capture` (`portready local` shows who holds each port)",
        )  # fmt: skip
    return Outcome(
        Status.FAIL, Reason.NOT_VERIFIABLE,
        f"not watched: {text}; give an address this host has with --bind, or leave --bind out",
    )  # fmt: skip


def _check_keys(irow: InboundRow) -> list[tuple[Transport, int]]:
    return [(c.spec.protocol, c.port) for c in irow.checks if c.port is not None]


def is_complete(
    plan: list[InboundRow],
    sources: Mapping[str, list[ExpectedSource]],
    store: ArrivalStore,
    watched: Iterable[tuple[Transport, int]],
) -> bool:
    """Whether every expected source was seen on every watchable row (cheap: no parsing)."""
    watched_set = set(watched)
    seen: dict[tuple[Transport, int], set[str]] = {}
    for proto, port, source in store.records:
        seen.setdefault((proto, port), set()).add(source)
    for irow in plan:
        keys = [k for k in _check_keys(irow) if k in watched_set]
        if not keys:
            continue
        row_sources = sources.get(irow.row.source) or []
        if not row_sources:
            if not any(seen.get(k) for k in keys):
                return False
            continue
        for src in row_sources:
            if src.error is not None:
                continue
            if not any(seen.get(k, set()) & set(src.addresses) for k in keys):
                return False
    return True


def match(
    plan: list[InboundRow],
    sources: Mapping[str, list[ExpectedSource]],
    store: ArrivalStore,
    failed: Mapping[Binding, OSError] | None = None,
    watched: Iterable[tuple[Transport, int]] | None = None,
    waited: float = 0.0,
    port_notes: Mapping[tuple[Transport, int], str] | None = None,
) -> MatchReport:
    """Results for every inbound row x expected source, the unexpected sources, completeness.

    `watched` lists the (transport, port) pairs that a socket or a capture actually covered;
    by default every planned port counts as watched.
    """
    failed = failed or {}
    by_port: dict[tuple[Transport, int], list[SourceRecord]] = {}
    for rec in store.records.values():
        by_port.setdefault((rec.protocol, rec.port), []).append(rec)
    watched_set = set(watched) if watched is not None else {
        (c.spec.protocol, c.port) for r in plan for c in r.checks if c.port is not None
    }
    expected_on_port: dict[tuple[Transport, int], set[str]] = {}
    anyone_on_port: set[tuple[Transport, int]] = set()
    results: list[RowResult] = []
    complete = True
    for irow in plan:
        row_sources = list(sources.get(irow.row.source, ()))
        open_row = not row_sources
        if open_row:
            row_sources = [ExpectedSource(Target(irow.row.source, ANY_HOST, label="any source"), ())]
        for check in irow.checks:
            if check.port is not None:
                key = (check.spec.protocol, check.port)
                if open_row:
                    anyone_on_port.add(key)
                for src in row_sources:
                    expected_on_port.setdefault(key, set()).update(src.addresses)
        for src in row_sources:
            result, seen = _row_for_source(irow, src, by_port, failed, watched_set, open_row, waited, port_notes or {},
                                           store.port_drops)  # fmt: skip
            results.append(result)
            if not seen and src.error is None and any(c.port is not None and (c.spec.protocol, c.port) in watched_set for c in irow.checks):
                complete = False
    unexpected: list[dict[str, Any]] = []
    for key, recs in sorted(by_port.items(), key=lambda kv: (kv[0][1], kv[0][0].value)):
        if key in anyone_on_port:
            continue
        rows_here = [r.row.key for r in plan for c in r.checks if (c.spec.protocol, c.port) == key]
        for rec in sorted(recs, key=lambda r: r.first):
            if rec.source in expected_on_port.get(key, set()):
                continue
            entry = {"protocol": rec.protocol.value, "port": rec.port, "rows": rows_here, **_summary(rec)}
            unexpected.append(entry)
    return MatchReport(results, unexpected, complete)


def _row_for_source(
    irow: InboundRow,
    src: ExpectedSource,
    by_port: Mapping[tuple[Transport, int], list[SourceRecord]],
    failed: Mapping[Binding, OSError],
    watched: set[tuple[Transport, int]],
    open_row: bool,
    waited: float,
    port_notes: Mapping[tuple[Transport, int], str],
    port_drops: Mapping[tuple[Transport, int], Mapping[str, int]] | None = None,
) -> tuple[RowResult, bool]:
    port_drops = port_drops or {}
    address = src.addresses[0] if src.addresses else None
    if src.error is not None:
        checks = tuple(
            CheckResult(c.spec.protocol.value, c.port or c.spec.port_label, c.spec.probe, Status.FAIL, Reason.UNRESOLVED,
                        f"unresolved: {src.error} — arrivals cannot be matched to this source")
            for c in irow.checks
        )  # fmt: skip
        return RowResult(irow.row, src.target, None, checks), False
    found: list[tuple[InboundCheck, list[SourceRecord]]] = []
    for check in irow.checks:
        recs: list[SourceRecord] = []
        if check.port is not None:
            for rec in by_port.get((check.spec.protocol, check.port), ()):
                if open_row or rec.source in src.addresses:
                    recs.append(rec)
        found.append((check, recs))
    seen = any(recs for _, recs in found)
    checks_out: list[CheckResult] = []
    for check, recs in found:
        proto = check.spec.protocol.value
        port_label: int | str | None = check.port if check.port is not None else check.spec.port_label
        evidence: dict[str, Any] = {}
        if check.doc_port is not None and check.port != check.doc_port:
            evidence["documented_port"] = check.doc_port
        if check.why_not is not None:
            o = check.why_not
            checks_out.append(CheckResult(proto, port_label, check.spec.probe, o.status, o.reason, o.detail, evidence))
            continue
        if recs:
            recs.sort(key=lambda r: r.first)
            rec = recs[0]
            evidence.update(_summary(rec))
            if len(recs) > 1:
                evidence["sources"] = [r.source for r in recs[:_MAX_SOURCES_SHOWN]]
            who = (
                ", ".join(r.source for r in recs[:5]) + (" and more" if len(recs) > 5 else "")
                if open_row else _label(src)
            )  # fmt: skip
            losses: Counter[str] = Counter()
            for r in recs:
                losses.update(r.losses)
            kernel = port_drops.get((check.spec.protocol, check.port or 0), {}).get("udp_kernel_drops", 0)
            if kernel:
                losses["udp_kernel_drops"] = kernel
                evidence["port_kernel_drops"] = kernel
            lost = loss_words(losses)
            status = Status.WARN if any(losses.get(k) for k in LISTENER_LOSSES) else Status.PASS
            detail = f"arrived from {who}: {_arrival_words(rec)}" + (f"; {lost}" if lost else "")
            if status is Status.WARN:
                detail += " — the path works, but the listener did not take everything: raise the cap named"
            checks_out.append(CheckResult(proto, port_label, check.spec.probe, status, Reason.OK, detail, evidence))
            continue
        unbound = _unbound_outcome(check, failed, watched, port_notes)
        if unbound is not None:
            status, detail = unbound.status, unbound.detail
            if seen:  # the row is proven by another of its ports for this source
                status, detail = Status.SKIP, f"not needed for this source (it arrived on another port); {detail}"
            checks_out.append(CheckResult(proto, port_label, check.spec.probe, status, unbound.reason, detail, evidence))
            continue
        where = f"{proto.upper()} {check.port}"
        if seen:
            checks_out.append(CheckResult(
                proto, port_label, check.spec.probe, Status.SKIP, Reason.NOT_SEEN,
                f"nothing on {where}, not needed: this source's traffic for the row arrived on another "
                "of its documented ports", evidence,
            ))  # fmt: skip
            continue
        who = f"any {irow.row.doc_source} (no source listed for role {irow.row.source})" if open_row else _label(src)
        kernel = port_drops.get((check.spec.protocol, check.port or 0), {}).get("udp_kernel_drops", 0)
        if kernel:
            # Lost datagrams carry no sender: this source's may be among them.
            evidence["port_kernel_drops"] = kernel
            checks_out.append(CheckResult(
                proto, port_label, check.spec.probe, Status.INCONCLUSIVE, Reason.NOT_SEEN,
                f"not seen from {who} on {where} in {waited:.0f} s, but the kernel dropped {kernel} datagram(s) "
                "on this port (receive buffer full): this source's may be among them — send again when the "
                "port is quieter",
                evidence,
            ))  # fmt: skip
            continue
        checks_out.append(CheckResult(
            proto, port_label, check.spec.probe, Status.FAIL, Reason.NOT_SEEN,
            f"not seen: nothing arrived from {who} on {where} in {waited:.0f} s — make it send "
            f"(`portready send --to <this host> --row {irow.row.key}` or a test event), then check "
            "its target address and the firewalls on the way",
            evidence,
        ))  # fmt: skip
    return RowResult(irow.row, src.target, address, tuple(checks_out)), seen
