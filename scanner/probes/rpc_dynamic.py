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
              their port out only through an authenticated activation, which this probe
              does not do, so it proves two things instead: the DCOM resolver
              (IObjectExporter 99fcfec4-5260-101b-bbcb-00aa0021347a) answers a bind on
              135, and the dynamic range answers (connect and bind to up to three
              endpoints the mapper lists there). Without a DCOM resolver (Samba) the
              interface is not-registered.
``any``       every TCP endpoint the mapper lists in the range (one bind per port)
``uuid:<uuid>[:<major>.<minor>]``  an explicit interface; meant for tests against
              servers that lack the named ones (the lab's Samba DC registers netlogon,
              lsarpc, samr, drsuapi, even6, ... but no WMI).

Option ``mapper_port`` (default 135) moves the mapper, for tests and odd deployments.

Per interface the evidence says {interface, uuid, port, status, reason}; status is
reachable, not-registered, filtered, refused, unreachable, protocol or unverified.
The check fails when any registered interface cannot be reached, is inconclusive
when none of them is registered, and passes otherwise.
"""

from __future__ import annotations

import asyncio
import re
import uuid as uuid_module
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scanner.models import Reason, Transport
from scanner.probes._rpc import (
    EPM,
    Endpoint,
    Interface,
    RpcConnection,
    ept_lookup,
    ept_map,
    interface_name,
)
from scanner.probes._windows_firewall import RPC_FIREWALL
from scanner.probes.base import (
    Outcome,
    Probe,
    ProbeContext,
    ProbeError,
    evidence_text,
    failed,
    inconclusive,
    passed,
    register,
)
from scanner.probes.netio import connect_tcp

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
DCOM_PROXY_PORTS = 3
_BAD = ("filtered", "refused", "unreachable", "protocol")


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
    if ack.accepted:
        return _result(label, iface.uuid, port, "reachable", "bind accepted", **extra)
    return _result(label, iface.uuid, port, "protocol", f"TCP {port} answers DCE/RPC but {ack.describe()}", **extra)


@register
class RpcDynamicProbe(Probe):
    name = "rpc-dynamic"
    accepts_range = True
    transports = (Transport.TCP,)
    summary = "Dynamic RPC ports: ept_map on 135 per interface, then connect and bind to the port it gives"
    exchanges = 5  # mapper bind + ept_map calls, then binds on the dynamic ports (in parallel)
    firewall = RPC_FIREWALL

    @classmethod
    def validate(cls, options: Mapping[str, Any]) -> None:
        extra = set(options) - {"interfaces", "mapper_port"}
        if extra:
            raise ValueError(f"rpc-dynamic: unknown options {sorted(extra)}")
        parse_interfaces(options.get("interfaces"))
        port = options.get("mapper_port", 135)
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError("rpc-dynamic: mapper_port must be a TCP port number")

    async def run(self, ctx: ProbeContext) -> Outcome:
        wanted = parse_interfaces(ctx.options.get("interfaces"))
        mapper_port = int(ctx.options.get("mapper_port", 135))
        mctx = ctx.with_port(mapper_port)
        try:
            reader, writer = await connect_tcp(mctx)
        except ProbeError as exc:
            o = exc.outcome
            raise ProbeError(
                failed(
                    o.reason,
                    f"the endpoint mapper cannot be asked which dynamic ports to check — {o.detail}",
                    **dict(o.evidence),
                )
            ) from None
        mapper = RpcConnection(mctx, reader, writer)
        mapped: dict[str, list[Endpoint]] = {}
        listing: list[Endpoint] | None = None
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
                if (want.any or want.dcom) and listing is None:
                    listing = await ept_lookup(mapper)
        finally:
            mapper.close()

        jobs: list[asyncio.Future[list[dict[str, Any]]]] = []
        for want in wanted:
            jobs.append(asyncio.ensure_future(self._check(ctx, want, mapped, listing or [], mapper_port)))
        per_want = await asyncio.gather(*jobs)
        results = [r for group in per_want for r in group]
        return self._verdict(ctx, results)

    async def _check(
        self, ctx: ProbeContext, want: Wanted, mapped: dict[str, list[Endpoint]],
        listing: list[Endpoint], mapper_port: int,
    ) -> list[dict[str, Any]]:  # fmt: skip
        if want.any:
            return await self._check_any(ctx, listing, mapper_port)
        if want.dcom:
            return [await self._check_dcom(ctx, want, listing, mapper_port)]
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

    async def _check_any(self, ctx: ProbeContext, listing: list[Endpoint], mapper_port: int) -> list[dict[str, Any]]:
        seen: dict[int, Endpoint] = {}
        for e in listing:
            if e.protocol == "tcp" and e.port and e.port != mapper_port and e.port not in seen:
                if ctx.ports is None or e.port in ctx.ports:
                    seen[e.port] = e
        chosen = list(seen.values())[:MAX_ANY_PORTS]
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
        self, ctx: ProbeContext, want: Wanted, listing: list[Endpoint], mapper_port: int
    ) -> dict[str, Any]:
        what = DCOM_NAMES[want.label]
        resolver = await bind_at(ctx, OBJECT_EXPORTER, mapper_port, want.label)
        if resolver["status"] == "protocol":
            return _result(
                want.label, OBJECT_EXPORTER.uuid, mapper_port, "not-registered",
                f"no DCOM on this host: the RPC service on TCP {mapper_port} does not know the DCOM "
                f"OXID resolver (IObjectExporter), so {what} is not offered",
            )  # fmt: skip
        if resolver["status"] != "reachable":
            return resolver
        proxies: dict[int, Endpoint] = {}
        for e in listing:
            if e.protocol == "tcp" and e.port and e.port != mapper_port and e.port not in proxies:
                if ctx.ports is None or e.port in ctx.ports:
                    proxies[e.port] = e
        chosen = list(proxies.values())[:DCOM_PROXY_PORTS]
        if not chosen:
            return _result(
                want.label, None, None, "unverified",
                f"DCOM answers on {mapper_port}, but the mapper lists no endpoint in the dynamic range to "
                f"test the path with; {what}'s own port is handed out by an authenticated DCOM activation",
            )  # fmt: skip
        tried = await asyncio.gather(*(bind_at(ctx, e.interface, e.port or 0, want.label) for e in chosen))
        ok = [t for t in tried if t["status"] == "reachable"]
        if ok:
            return _result(
                want.label, None, ok[0]["port"], "reachable",
                f"DCOM resolver answers on TCP {mapper_port} and the dynamic range answers "
                f"(bound {ok[0].get('name', ok[0].get('uuid'))} on TCP {ok[0]['port']}); {what}'s own port is "
                "handed out by an authenticated DCOM activation, so this is a range-level proof",
                via=[{"uuid": t.get("uuid"), "port": t.get("port"), "status": t["status"]} for t in tried],
            )  # fmt: skip
        first = tried[0]
        return _result(
            want.label, None, first.get("port"), first["status"],
            f"the dynamic range does not answer: {first['reason']}",
            via=[{"uuid": t.get("uuid"), "port": t.get("port"), "status": t["status"]} for t in tried],
        )  # fmt: skip

    def _verdict(self, ctx: ProbeContext, results: list[dict[str, Any]]) -> Outcome:
        evidence: dict[str, Any] = {"interfaces": results}
        bad = [r for r in results if r["status"] in _BAD]
        if bad:
            order = {s: i for i, s in enumerate(_BAD)}
            worst = min(bad, key=lambda r: order[r["status"]])
            names = ", ".join(f"{r['interface']} (TCP {r.get('port', '?')}: {r['status']})" for r in bad)
            reason = Reason(worst["status"])
            text = worst["reason"]
            if worst["status"] == "filtered":
                text = (
                    f"filtered: the endpoint mapper answers, but the dynamic port it gives is dropped — "
                    f"{names}. A firewall lets TCP 135 through and blocks the dynamic RPC range "
                    f"{ctx.ports or ''} between this host and {ctx.host}"
                )
            else:
                text = f"{names}: {text}"
            return failed(reason, text, **evidence)
        reachable = [r for r in results if r["status"] == "reachable"]
        missing = [r for r in results if r["status"] == "not-registered"]
        unverified = [r for r in results if r["status"] == "unverified"]
        if not reachable and missing and not unverified:
            names = ", ".join(r["interface"] for r in missing)
            return inconclusive(
                Reason.NOT_REGISTERED,
                f"not registered: {ctx.host}'s endpoint mapper has none of the interfaces this row needs "
                f"({names}); the services are not running or not installed there, so the dynamic ports "
                "cannot be tested",
                **evidence,
            )
        if not reachable:
            return inconclusive(Reason.NOT_REGISTERED, "; ".join(r["reason"] for r in unverified + missing), **evidence)
        ports = sorted({r["port"] for r in reachable if r.get("port")})
        text = (
            f"dynamic RPC answers: {', '.join(r['interface'] for r in reachable)} bound on TCP "
            f"{', '.join(map(str, ports))} (ports from the endpoint mapper)"
        )
        if missing or unverified:
            text += "; not registered there: " + ", ".join(r["interface"] for r in missing + unverified)
        return passed(text, **evidence)

    def summarize(self, evidence: Mapping[str, Any]) -> str:
        items = evidence.get("interfaces")
        parts = []
        for item in items[:6] if isinstance(items, list) else []:
            if isinstance(item, Mapping):
                port = f" on {evidence_text(item, 'port', 8)}" if item.get("port") else ""
                parts.append(f"{evidence_text(item, 'interface', 40) or '?'}: {evidence_text(item, 'status', 20) or '?'}{port}")
        return "; ".join(parts)
