"""The dynamic RPC range (TCP 1024-65535): ask the mapper, then connect and bind.

A firewall that opens 135 but drops the dynamic range is the classic trap: the
mapper answers and every RPC call after it hangs. So for each interface the row
needs, this probe asks the endpoint mapper on 135 (ept_map) for the interface's
TCP port, then connects to that port and sends a DCE/RPC BIND: only an accepting
BIND_ACK from the dynamic port counts as reachable.

Profile option ``interfaces`` (a list), names from the vendor's firewall rules:

``eventlog``  Remote Event Log: even6 f6beaff7-1e19-4fbb-9f8f-b89e2018337c v1.0 (TCP,
              MS-EVEN6) or eventlog 82273fdc-e32a-18c3-3f78-827929dc23ea v0.0 (MS-EVEN)
``scm``       Service Control Manager, svcctl 367abb81-9844-35f1-ad32-98f038001003 v2.0
``winreg``    Remote Registry 338cd001-2244-31f1-aaaa-900038001003 v1.0 (Windows
              registers it on the named pipe \\winreg only: expect not-registered on TCP)
``tasksched`` ITaskSchedulerService 86d35949-83c9-4044-b424-db363231fd0c v1.0
``wmi``, ``pla``  DCOM servers (WMI; Performance Logs and Alerts, MS-PLA). DCOM hands
              their port out only through an authenticated activation (the ``dcom``
              probe does it when the inventory has credentials), so anonymously this
              probe proves the DCOM resolver (IObjectExporter
              99fcfec4-5260-101b-bbcb-00aa0021347a) answers on 135, plus the range
              proof below. It is offered on the mapper's own association
              (alter_context, as RPCSS serves both there; evidence ``asked``); a
              server that answers that with a FAULT, garbage, a close or silence is
              asked with a bind on a connection of its own. Without a DCOM resolver
              (Samba) the interface is not-registered.
``any``       every TCP endpoint the mapper lists in the range (one bind per port)
``uuid:<uuid>[:<major>.<minor>]``  an explicit interface; meant for tests against
              servers that lack the named ones (the lab's Samba DC registers netlogon,
              lsarpc, samr, drsuapi, even6, ... but no WMI).

Option ``mapper_port`` (default 135) moves the mapper, for tests and odd deployments.

The range itself is proven whatever the named interfaces: the probe lists every
endpoint the mapper has (ept_lookup) and binds to up to RANGE_PORTS distinct TCP ports
of the row's range among them. A firewall that drops the range fails the row
`filtered` even when the named service is missing on the host; "not registered"
(Windows error 1753, EPT_S_NOT_REGISTERED) then says the service is missing, with the
range verdict beside it, never a reason to skip the range.

Evidence: ``interfaces`` (per named interface {interface, uuid, port, status, reason};
status reachable, not-registered, filtered, refused, unreachable, protocol or
unverified), ``range`` (per sampled port {interface, uuid, port, status}) and
``range_verdict`` (reachable, filtered, refused, unreachable, protocol, or untested
when the mapper lists nothing in the range). The check fails when any interface or
sampled port cannot be reached, is inconclusive when a named interface is not
registered (the range verdict in words beside it), and passes otherwise.
"""

from __future__ import annotations

import asyncio
import re
import uuid as uuid_module
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from scanner.models import Reason, Status, Transport
from scanner.probes._options import option
from scanner.probes._stealth import second_signal
from scanner.probes._windows_firewall import RPC_FIREWALL
from scanner.probes.base import (
    Outcome,
    Probe,
    ProbeContext,
    ProbeError,
    evidence_text,
    failed,
    inconclusive,
    options_of,
    passed,
    register,
)
from scanner.probes.epm import shared_listing
from scanner.probes.netio import connect_tcp
from scanner.wire.rpc import (
    EPM,
    BindAck,
    Endpoint,
    Interface,
    RpcConnection,
    ept_map,
    interface_name,
)

# Name -> the interfaces that each satisfy it (the first registered one is used).
NAMED: dict[str, tuple[Interface, ...]] = {
    "eventlog": (
        Interface("f6beaff7-1e19-4fbb-9f8f-b89e2018337c", 1, 0),
        Interface("82273fdc-e32a-18c3-3f78-827929dc23ea", 0, 0),
    ),
    "scm": (Interface("367abb81-9844-35f1-ad32-98f038001003", 2, 0),),
    "winreg": (Interface("338cd001-2244-31f1-aaaa-900038001003", 1, 0),),
    "tasksched": (Interface("86d35949-83c9-4044-b424-db363231fd0c", 1, 0),),
}
DCOM_NAMES = {"wmi": "WMI", "pla": "Performance Logs and Alerts"}
# Interfaces Windows offers over SMB named pipes only: where the traffic really goes.
PIPE_ONLY = {
    "winreg": "Windows serves Remote Registry on the named pipe \\PIPE\\winreg, i.e. over SMB (TCP 445)",
}
OBJECT_EXPORTER = Interface("99fcfec4-5260-101b-bbcb-00aa0021347a", 0, 0)
_UUID_OPTION = re.compile(r"^uuid:([0-9a-fA-F-]{36})(?::(\d+)\.(\d+))?$")
MAX_ANY_PORTS = 16
RANGE_PORTS = 3  # distinct dynamic ports bound to prove the range itself
_BAD = ("filtered", "refused", "unreachable", "protocol")  # worst first; any other failure sorts last
_NOT_BAD = ("reachable", "not-registered", "unverified")


def _is_bad(status: str) -> bool:
    return status not in _NOT_BAD


def _severity(status: str) -> int:
    return _BAD.index(status) if status in _BAD else len(_BAD)


@dataclass
class Wanted:
    """One entry of the option list, resolved to the interfaces that satisfy it."""

    label: str
    candidates: tuple[Interface, ...] = ()
    dcom: bool = False
    any: bool = False


def parse_interfaces(value: Any) -> list[Wanted]:
    """The ``interfaces`` option as Wanted entries; ValueError on anything unknown."""
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError("rpc-dynamic needs option 'interfaces': a non-empty list")
    out: list[Wanted] = []
    for item in value:
        text = str(item).strip()
        low = text.lower()
        if low in NAMED:
            out.append(Wanted(low, NAMED[low]))
        elif low in DCOM_NAMES:
            out.append(Wanted(low, dcom=True))
        elif low == "any":
            out.append(Wanted("any", any=True))
        elif m := _UUID_OPTION.match(text):
            uuid_module.UUID(m.group(1))  # ValueError when not a UUID
            major, minor = int(m.group(2) or 0), int(m.group(3) or 0)
            if m.group(2) is None:
                out.append(Wanted(low, tuple(Interface(m.group(1).lower(), v, 0) for v in (0, 1, 2, 3, 4))))
            else:
                out.append(Wanted(low, (Interface(m.group(1).lower(), major, minor),)))
        else:
            known = ", ".join([*NAMED, *DCOM_NAMES, "any", "uuid:<uuid>"])
            raise ValueError(f"rpc-dynamic: unknown interface {text!r} (known: {known})")
    return out


@dataclass(frozen=True)
class RpcDynamicOptions:
    interfaces: Any = option(help="the RPC interfaces to find, e.g. [wmi, scm, eventlog, any, uuid:<uuid>]")
    mapper_port: int = option(135, "the endpoint mapper's port")
    wanted: tuple[Wanted, ...] = field(init=False, default=())  # `interfaces`, parsed

    def __post_init__(self) -> None:
        object.__setattr__(self, "wanted", tuple(parse_interfaces(self.interfaces)))
        if not 0 < self.mapper_port < 65536:
            raise ValueError("rpc-dynamic: mapper_port must be a TCP port number")


def _result(label: str, uuid: str | None, port: int | None, status: str, reason: str, **more: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"interface": label, "status": status, "reason": reason}
    if uuid:
        out["uuid"] = uuid
        name = interface_name(uuid)
        if name != uuid:
            out["name"] = name
    if port is not None:
        out["port"] = port
    out.update(more)
    return out


async def bind_at(ctx: ProbeContext, iface: Interface, port: int, label: str) -> dict[str, Any]:
    """Connect to `port` and bind `iface`: the per-interface verdict as evidence."""
    in_range = ctx.ports is None or port in ctx.ports
    extra: dict[str, Any] = {} if in_range else {"in_range": False}
    try:
        reader, writer = await connect_tcp(ctx, port)
    except ProbeError as exc:
        return _result(label, iface.uuid, port, exc.outcome.reason.value, exc.outcome.detail, **extra)
    conn = RpcConnection(ctx, reader, writer, port)
    try:
        ack = await conn.bind(iface)
    except ProbeError as exc:
        return _result(label, iface.uuid, port, "protocol", exc.outcome.detail, **extra)
    finally:
        conn.close()
    return _answered(label, iface, port, ack, **extra)


def _answered(label: str, iface: Interface, port: int, ack: BindAck, request: str = "bind", **extra: Any) -> dict[str, Any]:
    """The per-interface verdict of a bind (or alter_context) answer, as evidence."""
    words = ack.describe(request)
    if ack.accepted:
        return _result(label, iface.uuid, port, "reachable", words, **extra)
    return _result(label, iface.uuid, port, "protocol", f"TCP {port} answers DCE/RPC but {words}", **extra)


async def _resolver_on(mapper: RpcConnection, port: int) -> dict[str, Any] | None:
    """Whether TCP `port` knows the DCOM OXID resolver, asked on the mapper's association
    (alter_context: RPCSS serves both on 135) instead of a connection of its own.
    None: not answered here (a FAULT, a close, a timeout), so a fresh bind asks."""
    try:
        ack = await mapper.alter_context(OBJECT_EXPORTER)
    except ProbeError:
        return None
    if ack is None:
        return None
    return _answered("dcom", OBJECT_EXPORTER, port, ack, "alter_context", asked="alter_context")


@register
class RpcDynamicProbe(Probe):
    name = "rpc-dynamic"
    accepts_range = True
    transports = (Transport.TCP,)
    summary = "Dynamic RPC ports: ept_map on 135 per interface, then connect and bind to the port it gives"
    exchanges = 6  # mapper bind, ept_map calls, ept_lookup, alter_context, then binds on the dynamic ports (in parallel)
    firewall = RPC_FIREWALL
    footprint: ClassVar[str] = "none in the Security log (anonymous binds, no call on the dynamic ports)"

    Options = RpcDynamicOptions

    async def run(self, ctx: ProbeContext) -> Outcome:
        opts = options_of(ctx, RpcDynamicOptions)
        wanted, mapper_port = list(opts.wanted), opts.mapper_port
        mctx = ctx.with_port(mapper_port)
        try:
            reader, writer = await connect_tcp(mctx)
        except ProbeError as exc:
            o = exc.outcome
            text = f"the endpoint mapper cannot be asked which dynamic ports to check — {o.detail}"
            if o.reason is Reason.FILTERED:
                text += ". " + await second_signal(mctx, mapper_port)
            raise ProbeError(failed(o.reason, text, **dict(o.evidence))) from None
        mapper = RpcConnection(mctx, reader, writer)
        mapped: dict[str, list[Endpoint]] = {}
        try:
            ack = await mapper.bind(EPM)
            if not ack.accepted:
                return failed(
                    Reason.PROTOCOL,
                    f"{mctx.where()} is not an RPC endpoint mapper ({ack.describe()}), "
                    "so the dynamic ports cannot be found",
                )
            for want in wanted:
                for iface in want.candidates:
                    key = str(iface)
                    if key not in mapped:
                        mapped[key] = await ept_map(mapper, iface)
            listing = await shared_listing(mctx, mapper, mapper_port)
            resolver = await _resolver_on(mapper, mapper_port) if any(w.dcom for w in wanted) else None
        finally:
            mapper.close()

        in_range = in_range_endpoints(ctx, listing, mapper_port)
        checks = [self._check(ctx, want, mapped, in_range, mapper_port, resolver) for want in wanted]
        per_want, sampled = await asyncio.gather(
            asyncio.gather(*checks), self._sample_range(ctx, wanted, mapped, in_range)
        )
        results = [r for group in per_want for r in group]
        return self._verdict(ctx, results, sampled)

    async def _check(
        self, ctx: ProbeContext, want: Wanted, mapped: dict[str, list[Endpoint]],
        in_range: list[Endpoint], mapper_port: int, resolver: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        if want.any:
            return await self._check_any(ctx, in_range)
        if want.dcom:
            return [await self._check_dcom(ctx, want, mapper_port, resolver)]
        for iface in want.candidates:
            towers = mapped.get(str(iface)) or []
            if towers:
                port = towers[0].port
                assert port is not None
                return [await bind_at(ctx, iface, port, want.label)]
        uuids = ", ".join(sorted({i.uuid for i in want.candidates}))
        words = (
            f"the endpoint mapper has no TCP endpoint for {want.label} ({uuids}): the service "
            "is not running, or listens on a named pipe only"
        )
        if want.label in PIPE_ONLY:
            words += f"; {PIPE_ONLY[want.label]}"
        return [_result(want.label, want.candidates[0].uuid, None, "not-registered", words)]

    async def _check_any(self, ctx: ProbeContext, in_range: list[Endpoint]) -> list[dict[str, Any]]:
        chosen = in_range[:MAX_ANY_PORTS]
        if not chosen:
            return [
                _result("any", None, None, "not-registered", "the endpoint mapper lists no TCP endpoint in the range")
            ]
        return list(
            await asyncio.gather(
                *(
                    bind_at(ctx, e.interface, e.port or 0, f"any: {e.annotation or interface_name(e.uuid)}")
                    for e in chosen
                )
            )
        )

    async def _check_dcom(
        self, ctx: ProbeContext, want: Wanted, mapper_port: int, asked: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        what = DCOM_NAMES[want.label]
        if asked is not None:  # answered on the mapper's own association
            resolver = {**asked, "interface": want.label}
        else:
            resolver = await bind_at(ctx, OBJECT_EXPORTER, mapper_port, want.label)
        how = {"asked": resolver["asked"]} if "asked" in resolver else {}
        if resolver["status"] == "protocol":
            return _result(
                want.label, OBJECT_EXPORTER.uuid, mapper_port, "not-registered",
                f"no DCOM on this host: the RPC service on TCP {mapper_port} does not know the DCOM "
                f"OXID resolver (IObjectExporter), so {what} is not offered", **how,
            )  # fmt: skip
        if resolver["status"] != "reachable":
            return resolver
        return _result(
            want.label, OBJECT_EXPORTER.uuid, mapper_port, "unverified",
            f"the DCOM resolver answers on TCP {mapper_port}; {what}'s own port is handed out only by an "
            "authenticated DCOM activation (a credentialed run adds it)", dcom=what, **how,
        )  # fmt: skip

    async def _sample_range(
        self, ctx: ProbeContext, wanted: list[Wanted], mapped: dict[str, list[Endpoint]], in_range: list[Endpoint]
    ) -> list[dict[str, Any]]:
        """Bind a few distinct listed ports of the range, whatever interface each one serves."""
        if any(w.any for w in wanted):
            return []  # `any` already binds every listed port
        taken = {t.port for towers in mapped.values() for t in towers[:1]}
        spare = [e for e in in_range if e.port not in taken]
        chosen = _spread(spare, RANGE_PORTS)
        tried = await asyncio.gather(
            *(bind_at(ctx, e.interface, e.port or 0, e.annotation or interface_name(e.uuid)) for e in chosen)
        )
        return [
            {k: v for k, v in t.items() if k in ("interface", "uuid", "name", "port", "status", "reason")}
            for t in tried
        ]

    def _verdict(self, ctx: ProbeContext, results: list[dict[str, Any]], sampled: list[dict[str, Any]]) -> Outcome:
        outcome = self._judge(ctx, results, sampled)
        adds = credentialed_adds(ctx)
        if adds and outcome.status is not Status.FAIL:
            outcome = Outcome(outcome.status, outcome.reason, f"{outcome.detail}. {adds}", outcome.evidence)
        return outcome

    def _judge(self, ctx: ProbeContext, results: list[dict[str, Any]], sampled: list[dict[str, Any]]) -> Outcome:
        proven = sampled + [r for r in results if r.get("port") is not None and r["status"] != "unverified"]
        verdict = range_verdict(proven)
        if verdict == "reachable":
            results = [_range_level(r, proven) if r.get("dcom") else r for r in results]
        results = [{k: v for k, v in r.items() if k != "dcom"} for r in results]
        evidence: dict[str, Any] = {"interfaces": results, "range": sampled, "range_verdict": verdict}
        bad = [r for r in results + sampled if _is_bad(r["status"])]
        if bad:
            worst = min(bad, key=lambda r: _severity(r["status"]))
            names = ", ".join(f"{r['interface']} (TCP {r.get('port', '?')}: {r['status']})" for r in bad)
            reason = Reason(worst["status"])
            if worst["status"] == "filtered":
                text = (
                    f"filtered: the endpoint mapper answers, but the dynamic ports it lists are dropped — "
                    f"{names}. A firewall lets TCP 135 through and blocks the dynamic RPC range "
                    f"{ctx.ports or ''} between this host and {ctx.host}. {STEALTH_WORDS}"
                )
            else:
                text = f"{names}: {worst['reason']}"
            return failed(reason, text, **evidence)
        reachable = [r for r in results if r["status"] == "reachable"]
        missing = [r for r in results if r["status"] in ("not-registered", "unverified")]
        range_words = _range_words(proven, verdict)
        if missing:
            names = ", ".join(r["interface"] for r in missing)
            text = "; ".join(r["reason"] for r in missing)
            if verdict == "reachable":
                head = f"{names} cannot be tested on {ctx.host}, but the dynamic RPC range answers: {range_words}"
            else:
                head = f"{names} cannot be tested on {ctx.host}, and {range_words}"
            if reachable:
                head += "; reachable: " + ", ".join(r["interface"] for r in reachable)
            return inconclusive(Reason.NOT_REGISTERED, f"not registered: {head}. {text}", **evidence)
        ports = sorted({r["port"] for r in reachable if r.get("port")})
        text = (
            f"dynamic RPC answers: {', '.join(r['interface'] for r in reachable)} bound on TCP "
            f"{', '.join(map(str, ports))} (ports from the endpoint mapper); {range_words}"
        )
        return passed(text, **evidence)

    def summarize(self, evidence: Mapping[str, Any]) -> str:
        items = evidence.get("interfaces")
        parts = []
        for item in items[:6] if isinstance(items, list) else []:
            if isinstance(item, Mapping):
                port = f" on {evidence_text(item, 'port', 8)}" if item.get("port") else ""
                parts.append(f"{evidence_text(item, 'interface', 40) or '?'}: {evidence_text(item, 'status', 20) or '?'}{port}")
        return "; ".join(parts)

# Windows Firewall drops both a blocked port and one where nothing listens ("stealth mode"):
# silence alone cannot tell them apart, the mapper's listing can.
STEALTH_WORDS = (
    "A Windows firewall drops both blocked ports and ports where nothing listens (stealth mode); "
    "here the endpoint mapper lists a service on each of these ports, so they are listening: "
    "a firewall drops them"
)


def credentialed_adds(ctx: ProbeContext) -> str:
    """Words for a row whose dcom check needs credentials that this run does not have."""
    if ctx.credentials is not None:
        return ""
    servers = [str(c.options.get("server", "wmi")).upper() for c in ctx.row.checks if c.probe == "dcom"]
    if not servers:
        return ""
    return (
        f"Without credentials this is what can be proven anonymously; a credentialed run adds the "
        f"authenticated DCOM activation of {', '.join(servers)} and the port it hands out (check dcom)"
    )


def in_range_endpoints(ctx: ProbeContext, listing: list[Endpoint], mapper_port: int) -> list[Endpoint]:
    """The mapper's TCP endpoints inside the row's range, one per port (not the mapper itself)."""
    seen: dict[int, Endpoint] = {}
    for e in listing:
        if e.protocol == "tcp" and e.port and e.port != mapper_port and e.port not in seen:
            if ctx.ports is None or e.port in ctx.ports:
                seen[e.port] = e
    return [seen[p] for p in sorted(seen)]


def _spread(endpoints: list[Endpoint], n: int) -> list[Endpoint]:
    """Up to n endpoints spread over the sorted list (lowest, highest, then between)."""
    if len(endpoints) <= n:
        return list(endpoints)
    picks = sorted({round(i * (len(endpoints) - 1) / (n - 1)) for i in range(n)}) if n > 1 else [0]
    return [endpoints[i] for i in picks]


def _range_level(entry: dict[str, Any], proven: list[dict[str, Any]]) -> dict[str, Any]:
    """A DCOM server whose resolver and range answer: reachable, at range level (anonymous proof)."""
    ok = next(r for r in proven if r["status"] == "reachable")
    return _result(
        entry["interface"], None, ok["port"], "reachable",
        f"DCOM resolver answers on TCP {entry['port']} and the dynamic range answers (bound "
        f"{ok.get('name', ok.get('uuid'))} on TCP {ok['port']}); {entry['dcom']}'s own port is handed out "
        "by an authenticated DCOM activation, so this is a range-level proof (a credentialed run adds "
        "the activation itself: the dcom check)",
    )  # fmt: skip


def range_verdict(proven: list[dict[str, Any]]) -> str:
    """reachable when any bound port answered; else the worst failure; untested without ports."""
    if not proven:
        return "untested"
    if any(r["status"] == "reachable" for r in proven):
        bad = [r["status"] for r in proven if _is_bad(r["status"])]
        return min(bad, key=_severity) if bad else "reachable"
    bad = [r["status"] for r in proven if _is_bad(r["status"])]
    return min(bad, key=_severity) if bad else "untested"


def _range_words(proven: list[dict[str, Any]], verdict: str) -> str:
    if verdict == "untested":
        return "the endpoint mapper lists no TCP endpoint in the range, so the range itself cannot be tested"
    ports = sorted({int(r["port"]) for r in proven if r["status"] == "reachable"})
    return f"range reachable (bound on TCP {', '.join(map(str, ports))})"
