"""The Auditor host's own readiness: local ports, name resolution, time skew to the DCs.

    results = await local_readiness(rows, targets, settings, local_roles={"auditor-server"})

Three kinds of rows, reported like any other (profile "local"):

- `local/port-9004` (`local/port-514-udp` for UDP): each port the selected inbound rows
  need on this host is free (before install) or held by the expected service (after);
  which process holds it either way.
- `local/resolve-<host>`: every target name resolves from this host.
- `local/time-skew-<dc>`: this host's clock against each domain controller's, read by the
  probes that declare `clock_evidence` (the LDAP RootDSE currentTime, the SMB negotiate
  response), on the ports the rows to the domain controllers give them, in row order.
  Kerberos refuses tickets beyond 5 minutes of skew.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import errno
import ipaddress
import socket
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from scanner.listener.owners import PortOwner, describe_owners, port_owners
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
from scanner.probes.base import Settings

KERBEROS_MAX_SKEW = 300.0  # seconds: the default "maximum tolerance for computer clock synchronization"
WARN_SKEW = 60.0  # drifting: fine today, close to breaking
LOCAL_PROFILE = "local"
_SECTION = "Netwrix Auditor Server readiness"
# Process names that may hold a port after install, by port; the default fits Netwrix services.
_EXPECTED_OWNERS: dict[int, tuple[str, ...]] = {
    135: ("svchost", "rpcss"),  # the RPC endpoint mapper always holds 135 on Windows
    80: ("system", "reportingservicesservice", "netwrix"),  # http.sys (PID 4) or SSRS
    443: ("system", "reportingservicesservice", "netwrix"),
}
_DEFAULT_OWNERS = ("netwrix", "nw")


@dataclass(frozen=True)
class TimeSource:
    """A probe that reads a peer's clock, the port to run it on, and the evidence key of the time."""

    probe: str
    port: int
    evidence: str


def time_sources(rows: Iterable[Row], dc_role: str = "domain-controllers") -> list[TimeSource]:
    """Where to read a DC's clock: each probe declaring `clock_evidence`, on the first port a row
    to `dc_role` checks it on (row order), so a new clock-reading probe needs no edit here."""
    from scanner.probes.base import registry

    probes = registry()
    out: list[TimeSource] = []
    for row in rows:
        if row.target != dc_role or row.direction is not Direction.OUTBOUND:
            continue
        for spec in row.checks:
            probe = probes.get(spec.probe)
            if probe is None or not probe.clock_evidence or not isinstance(spec.port, int):
                continue
            if spec.protocol is Transport.TCP and all(s.probe != spec.probe for s in out):
                out.append(TimeSource(spec.probe, spec.port, probe.clock_evidence))
    return out


def _row(row_id: str, *, port: str, protocol: str, target_role: str, doc_target: str, purpose: str,
         check: CheckSpec, direction: Direction = Direction.OUTBOUND) -> Row:  # fmt: skip
    return Row(
        profile=LOCAL_PROFILE, id=row_id, section=_SECTION, doc_port=port, doc_protocol=protocol,
        doc_source="Netwrix Auditor Server", doc_target=doc_target, purpose=purpose, direction=direction,
        source="auditor-server", target=target_role, checks=(check,),
    )  # fmt: skip


def _result(row: Row, target: Target, address: str | None, check: CheckSpec, status: Status, reason: Reason,
            detail: str, started: float, **evidence: Any) -> RowResult:  # fmt: skip
    port: int | str | None = check.port if isinstance(check.port, int) else check.port_label
    result = CheckResult(check.protocol.value, port, check.probe, status, reason, detail, evidence,
                         (time.perf_counter() - started) * 1000)  # fmt: skip
    return RowResult(row, target, address, (result,))


# -- local ports ---------------------------------------------------------------------------
def local_ports(rows: Iterable[Row], local_roles: Iterable[str], settings_values: Mapping[str, Any] | None = None) -> dict[tuple[Transport, int], list[Row]]:
    """(transport, port) this host must listen on, with the rows that need each."""
    roles = set(local_roles)
    configured = dict((settings_values or {}).get("ports") or {})
    out: dict[tuple[Transport, int], list[Row]] = {}
    for row in rows:
        if row.direction is not Direction.INBOUND or row.target not in roles:
            continue
        for spec in row.checks:
            if spec.protocol is Transport.ICMP or isinstance(spec.port, PortRange):
                continue
            port = configured.get(spec.setting) if spec.setting else None
            port = int(port) if port is not None else spec.port
            if isinstance(port, int):
                out.setdefault((spec.protocol, port), []).append(row)
    return out


def _bind_test(protocol: Transport, port: int) -> OSError | None:
    """Bind (never listen) for an instant: None when the port is free for us."""
    kind = socket.SOCK_DGRAM if protocol is Transport.UDP else socket.SOCK_STREAM
    sock = socket.socket(socket.AF_INET, kind)
    try:
        if kind == socket.SOCK_STREAM and sys.platform != "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
    except OSError as exc:
        return exc
    finally:
        sock.close()
    return None


def expected_owner(port: int, owners: list[PortOwner]) -> bool:
    wanted = _EXPECTED_OWNERS.get(port, _DEFAULT_OWNERS)
    names = [(o.name or "").lower() for o in owners]
    return bool(names) and all(any(n.startswith(w) or w in n for w in wanted) for n in names if n)


def port_row(protocol: Transport, port: int, rows: list[Row], owners: list[PortOwner], bind_error: OSError | None, started: float) -> RowResult:
    """The verdict for one local port, from who holds it and whether a bind worked."""
    suffix = "" if protocol is Transport.TCP else f"-{protocol.value}"
    check = CheckSpec(protocol, "local-port", port)
    needed_by = sorted({r.key for r in rows})
    sources = sorted({r.doc_source for r in rows})
    row = _row(f"port-{port}{suffix}", port=str(port), protocol=protocol.value.upper(), target_role="auditor-server",
               doc_target="Netwrix Auditor Server (this host)", direction=Direction.INBOUND,
               purpose=f"Listen for {', '.join(sources)[:200]}", check=check)  # fmt: skip
    target = Target("auditor-server", socket.gethostname() or "localhost", label="this host")
    where = f"{protocol.value.upper()} {port}"
    ev: dict[str, Any] = {"needed_by": needed_by, "owners": [
        {"pid": o.pid, "name": o.name, "address": o.address} for o in owners[:8]
    ]}  # fmt: skip
    if owners:
        who = describe_owners(owners)
        if expected_owner(port, owners):
            return _result(row, target, None, check, Status.PASS, Reason.OK,
                           f"held by the expected service: {who} listens on {where}", started, **ev)  # fmt: skip
        return _result(row, target, None, check, Status.WARN, Reason.PORT_IN_USE,
                       f"in use: {who} holds {where}, which Netwrix Auditor needs for {', '.join(needed_by)}; "
                       "before install, stop or move that service; after install, check that it is the Auditor's",
                       started, **ev)  # fmt: skip
    if bind_error is None:
        return _result(row, target, None, check, Status.PASS, Reason.OK,
                       f"free: nothing holds {where}; Netwrix Auditor can listen there", started, **ev)  # fmt: skip
    if bind_error.errno in (errno.EACCES, errno.EPERM):
        return _result(row, target, None, check, Status.INCONCLUSIVE, Reason.PERMISSION,
                       f"cannot tell: no process is seen on {where} and binding it needs root or "
                       "Administrator; run `portready local` elevated", started, **ev)  # fmt: skip
    return _result(row, target, None, check, Status.WARN, Reason.PORT_IN_USE,
                   f"in use: {where} cannot be bound ({bind_error.strerror or bind_error}) and the holder is not "
                   "visible; run elevated to see which process holds it", started, **ev)  # fmt: skip


async def check_local_ports(ports: Mapping[tuple[Transport, int], list[Row]]) -> list[RowResult]:
    def one(key: tuple[Transport, int]) -> RowResult:
        started = time.perf_counter()
        protocol, port = key
        owners = port_owners(protocol, port)
        bind_error = None if owners else _bind_test(protocol, port)
        if bind_error is not None and bind_error.errno not in (errno.EACCES, errno.EPERM):
            owners = port_owners(protocol, port)  # it may have appeared meanwhile
        return port_row(protocol, port, ports[key], owners, bind_error, started)

    keys = sorted(ports, key=lambda k: (k[1], k[0].value))
    return list(await asyncio.gather(*(asyncio.to_thread(one, k) for k in keys)))


# -- name resolution -----------------------------------------------------------------------
def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


async def check_resolution(targets: Mapping[str, list[Target]], local_roles: Iterable[str], timeout: float) -> list[RowResult]:
    from scanner.engine import resolve

    skip = set(local_roles)
    seen: dict[str, Target] = {}
    for role, hosts in targets.items():
        if role in skip:
            continue
        for t in hosts:
            if not _is_literal(t.host) and not t.host.startswith("*."):
                seen.setdefault(t.host.lower().rstrip("."), t)
    limit = asyncio.Semaphore(32)

    async def one(name: str, target: Target) -> RowResult:
        started = time.perf_counter()
        check = CheckSpec(Transport.UDP, "resolve", 53)
        row = _row(f"resolve-{name}", port="53", protocol="DNS", target_role=target.role, doc_target=target.host,
                   purpose="Name resolution of a target from this host", check=check)  # fmt: skip
        async with limit:
            res = await resolve(target.host, max(timeout, 2.0))
        if res.address is None:
            return _result(row, target, None, check, Status.FAIL, Reason.UNRESOLVED,
                           f"unresolved: {res.error} — check this host's DNS servers and the name", started)  # fmt: skip
        return _result(row, target, res.address, check, Status.PASS, Reason.OK,
                       f"resolves to {', '.join(res.addresses[:4])}", started, addresses=list(res.addresses[:16]))  # fmt: skip

    return list(await asyncio.gather(*(one(n, t) for n, t in sorted(seen.items()))))


# -- time skew -----------------------------------------------------------------------------
def parse_iso(value: str) -> _dt.datetime | None:
    try:
        when = _dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=_dt.timezone.utc)


def skew_outcome(remote: _dt.datetime, local: _dt.datetime, source: str, dc: str, resolution: float = 1.0) -> tuple[Status, Reason, str, float]:
    """Status for the clock difference `remote - local` (seconds; positive: the DC is ahead)."""
    skew = (remote - local).total_seconds()
    size = abs(skew)
    ahead = "ahead of" if skew > 0 else "behind"
    words = f"{dc}'s clock is {size:.0f} s {ahead} this host's ({source})"
    if size - resolution > KERBEROS_MAX_SKEW:
        return Status.FAIL, Reason.TIME_SKEW, (
            f"time skew: {words}; Kerberos refuses tickets beyond 5 minutes — synchronise this host "
            "with the domain's time (w32tm /resync, or the DC as NTP source)"), skew  # fmt: skip
    if size - resolution > WARN_SKEW:
        return Status.WARN, Reason.TIME_SKEW, (
            f"drifting: {words}; Kerberos fails beyond 5 minutes — check this host's time source"), skew  # fmt: skip
    return Status.PASS, Reason.OK, f"in sync: {words}", skew


async def check_time_skew(dcs: list[Target], settings: Settings, sources: list[TimeSource]) -> list[RowResult]:
    from scanner.engine import context_for, execute_check
    from scanner.probes.netio import resolve
    from scanner.timing import HostTiming

    async def one(target: Target) -> RowResult:
        started = time.perf_counter()
        check = CheckSpec(Transport.TCP, "time-skew", sources[0].port if sources else None)
        row = _row(f"time-skew-{target.host.lower()}", port=", ".join(str(s.port) for s in sources) or "-",
                   protocol="TCP", target_role=target.role,
                   doc_target=target.host, purpose="Clock skew to the domain controller (Kerberos allows 5 minutes)",
                   check=check)  # fmt: skip
        res = await resolve(target.host, max(settings.timeout, 2.0))
        if res.address is None:
            return _result(row, target, None, check, Status.FAIL, Reason.UNRESOLVED,
                           f"unresolved: {res.error}", started)  # fmt: skip
        tried: list[str] = []
        timing = HostTiming(settings.timeout, settings.min_timeout)
        for source in sources:
            probe, port, key = source.probe, source.port, source.evidence
            ctx = context_for(row, target, CheckSpec(Transport.TCP, probe, port), address=res.address,
                              settings=settings, timing=timing)  # fmt: skip
            result = await execute_check(probe, ctx)
            when = result.evidence.get(key)
            if not isinstance(when, str) or parse_iso(when) is None:
                tried.append(f"{probe} on {port}: {result.detail[:200]}")
                continue
            remote = parse_iso(when)
            observed = parse_iso(str(result.evidence.get("observed_at", ""))) or _dt.datetime.now(_dt.timezone.utc)
            assert remote is not None
            status, reason, detail, skew = skew_outcome(remote, observed, f"{probe} {key.replace('_', ' ')}", target.host)
            return _result(row, target, res.address, CheckSpec(Transport.TCP, "time-skew", port), status, reason,
                           detail, started, skew_seconds=round(skew, 3), dc_time=when,
                           local_time=observed.isoformat(), time_source=f"{probe}:{port}")  # fmt: skip
        return _result(row, target, res.address, check, Status.INCONCLUSIVE, Reason.NO_ANSWER,
                       "cannot tell the DC's time: " + ("; ".join(tried) or "no row to the domain controllers "
                       "checks a port with a probe that reads the clock (LDAP, SMB)"), started)  # fmt: skip

    return list(await asyncio.gather(*(one(t) for t in dcs)))


async def local_readiness(
    rows: Iterable[Row],
    targets: Mapping[str, list[Target]],
    settings: Settings,
    *,
    local_roles: Iterable[str] = ("auditor-server",),
    dc_role: str = "domain-controllers",
    time_skew: bool = True,
    time_rows: Iterable[Row] | None = None,
) -> list[RowResult]:
    """Every readiness row: local ports, then resolution, then time skew.

    `time_rows` are the rows whose clock-reading checks to the DCs give the time sources
    (default: `rows`; the command passes the whole catalogue, whatever the selection)."""
    rows = list(rows)
    roles = list(local_roles)
    ports = local_ports(rows, roles, settings.values)
    out = await check_local_ports(ports)
    out += await check_resolution(targets, roles, settings.timeout)
    if time_skew and targets.get(dc_role):
        sources = time_sources(rows if time_rows is None else time_rows, dc_role)
        out += await check_time_skew(list(targets[dc_role]), settings, sources)
    return out
