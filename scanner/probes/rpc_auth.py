"""Authenticated RPC binds and the one call per interface that proves the Auditor's access.

With the role's credentials, for each interface the row names, bind with NTLM at packet
integrity and make the call the Auditor depends on:

``scm``        svcctl (MS-SCMR): ROpenSCManagerW, then close the handle
``eventlog``   on pipes eventlog (MS-EVEN): ElfrOpenELW of the log named by option ``log``
               (default "Security"), ElfrNumberOfRecords, close; on TCP even6 (MS-EVEN6,
               what Windows registers there): EvtRpcRegisterLogQuery of that log, close
``winreg``     Remote Registry (MS-RRP) on \\PIPE\\winreg: OpenLocalMachine, close
``tasksched``  ITaskSchedulerService (MS-TSCH) on \\PIPE\\atsvc: SchRpcHighestVersion

The check's port picks the transport: 445/139 go over SMB named pipes (as Windows serves
Remote Registry, and as the Auditor reaches SCM and EventLog through file sharing); any
other port (135) asks the endpoint mapper there for the interface's dynamic TCP port.

Per interface the evidence says {interface, transport, port, status, reason}; status is
ok, auth, policy, not-registered, or a network reason. The check fails on any auth, policy
or network failure, is inconclusive when an interface is not registered, passes otherwise.
Without credentials it is a skip saying what a credentialed run adds; without impacket a
skip naming the `portready[dcom]` extra.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

from scanner.models import Reason, Transport
from scanner.probes._impacket_rpc import (
    CallError,
    Sessions,
    authenticated_dce,
    classify,
    connect,
    disconnect_quietly,
    integrated_unsupported,
    load_impacket,
    missing_extra,
    no_credentials,
)
from scanner.probes._options import option
from scanner.probes._windows_firewall import RPC_AUTH_FIREWALL
from scanner.probes.base import (
    Credentials,
    Outcome,
    Probe,
    ProbeContext,
    ProbeError,
    failed,
    inconclusive,
    options_of,
    passed,
    register,
)
from scanner.probes.netio import close_quietly, connect_tcp
from scanner.wire.rpc import EPM, Interface, RpcConnection, ept_map

PIPE_PORTS = (445, 139)


@dataclass(frozen=True)
class Target:
    """One interface the Auditor uses: where it listens and the call that proves access."""

    label: str
    iface: Interface
    pipe: str
    call: str  # words for the evidence
    tcp_iface: Interface | None = None  # where TCP serves another interface (even6 for eventlog)
    tcp_call: str = ""

    def on(self, via_pipe: bool) -> tuple[Interface, str]:
        """The interface and call used over pipes or over TCP."""
        if via_pipe or self.tcp_iface is None:
            return self.iface, self.call
        return self.tcp_iface, self.tcp_call


TARGETS: dict[str, Target] = {
    "scm": Target("scm", Interface("367abb81-9844-35f1-ad32-98f038001003", 2, 0), "svcctl", "ROpenSCManagerW"),
    "eventlog": Target(
        "eventlog",
        Interface("82273fdc-e32a-18c3-3f78-827929dc23ea", 0, 0),
        "eventlog",
        "ElfrOpenELW",
        Interface("f6beaff7-1e19-4fbb-9f8f-b89e2018337c", 1, 0),
        "EvtRpcRegisterLogQuery",
    ),  # fmt: skip
    "winreg": Target("winreg", Interface("338cd001-2244-31f1-aaaa-900038001003", 1, 0), "winreg", "OpenLocalMachine"),
    "tasksched": Target(
        "tasksched", Interface("86d35949-83c9-4044-b424-db363231fd0c", 1, 0), "atsvc", "SchRpcHighestVersion"
    ),
}


def _parse(value: Any) -> list[Target]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError("rpc-auth needs option 'interfaces': a non-empty list")
    out = []
    for item in value:
        name = str(item).strip().lower()
        if name not in TARGETS:
            raise ValueError(f"rpc-auth: unknown interface {item!r} (known: {', '.join(TARGETS)})")
        out.append(TARGETS[name])
    return out


@dataclass(frozen=True)
class RpcAuthOptions:
    interfaces: Any = option(help="the interfaces to bind and call: " + ", ".join(TARGETS))
    log: str = option("Security", "the event log the eventlog call opens")
    targets: tuple[Target, ...] = field(init=False, default=())  # `interfaces`, parsed

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(_parse(self.interfaces)))


def _call(target: Target, dce: Any, log: str, via_pipe: bool) -> dict[str, Any]:
    """The proving call on a bound `dce`; returns extra evidence. impacket errors propagate."""
    if target.label == "eventlog" and not via_pipe:
        from impacket.dcerpc.v5 import even6

        resp = even6.hEvtRpcRegisterLogQuery(dce, log + "\x00", even6.EvtQueryChannelName)
        code = int(resp["Error"]["Error"])
        if code:
            raise CallError("EvtRpcRegisterLogQuery", code)
        with contextlib.suppress(Exception):  # closing is courtesy; Samba does not implement it
            even6.hEvtRpcClose(dce, resp["Handle"])
        return {"log": log}
    if target.label == "scm":
        from impacket.dcerpc.v5 import scmr

        resp = scmr.hROpenSCManagerW(dce)
        scmr.hRCloseServiceHandle(dce, resp["lpScHandle"])
        return {}
    if target.label == "eventlog":
        from impacket.dcerpc.v5 import even

        resp = even.hElfrOpenELW(dce, log + "\x00", "\x00")
        handle = resp["LogHandle"]
        count = even.hElfrNumberOfRecords(dce, handle)["NumberOfRecords"]
        even.hElfrCloseEL(dce, handle)
        return {"log": log, "records": int(count)}
    if target.label == "winreg":
        from impacket.dcerpc.v5 import rrp

        resp = rrp.hOpenLocalMachine(dce)
        rrp.hBaseRegCloseKey(dce, resp["phKey"])
        return {}
    from impacket.dcerpc.v5 import tsch

    version = tsch.hSchRpcHighestVersion(dce)["pVersion"]
    return {"version": f"{version >> 16}.{version & 0xFFFF}"}


def _uuid_bin(iface: Interface) -> bytes:
    from impacket.dcerpc.v5.rpcrt import uuidtup_to_bin

    return bytes(uuidtup_to_bin((iface.uuid, f"{iface.major}.{iface.minor}")))


def bind_and_call(
    ctx: ProbeContext, creds: Credentials, target: Target, port: int, via_pipe: bool, timeout: float,
    sessions: Sessions | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Blocking (worker thread): connect, authenticate, bind, call. Evidence dict; raises only on our bugs."""
    binding = rf"ncacn_np:{ctx.address}[\pipe\{target.pipe}]" if via_pipe else f"ncacn_ip_tcp:{ctx.address}[{port}]"
    iface, call = target.on(via_pipe)
    what = f"{target.label} ({call} over {'SMB pipe ' + target.pipe if via_pipe else f'TCP {port}'})"
    entry: dict[str, Any] = {
        "interface": target.label, "transport": f"\\PIPE\\{target.pipe}" if via_pipe else "tcp", "port": port,
        "call": call,
    }  # fmt: skip
    dce = None
    step = "connect"
    try:
        dce = authenticated_dce(ctx, creds, binding, port, timeout, sessions)
        connect(dce)
        step = "bind"
        dce.bind(_uuid_bin(iface))
        step = "call"
        entry.update(_call(target, dce, options_of(ctx, RpcAuthOptions).log, via_pipe))
    except Exception as exc:  # noqa: BLE001 - classify maps every library error to a reason
        outcome = classify(ctx, exc, what, port)
        detail = outcome.detail
        if step == "call" and not via_pipe and "nca_s_proto_error" in str(exc):
            # Over TCP the NTLM logon completes only with the first call (rpc_auth3 has no answer):
            # Windows then faults with access denied, Samba with a protocol error.
            outcome = failed(
                Reason.AUTH,
                f"{what} on {ctx.host}: the server dropped the authenticated association at the first call "
                "(nca_s_proto_error): the NTLM logon most likely failed (wrong user name or password)",
            )
            detail = outcome.detail
        elif step == "call":  # the logon and the bind worked: say so, the call's answer is the news
            detail = f"authenticated bind accepted, then {detail}"
        entry.update(status=outcome.reason.value, step=step, reason=detail)
        return entry
    finally:
        if dce is not None:
            disconnect_quietly(dce)
    entry.update(status="ok", reason=f"authenticated bind and {call} succeeded")
    return entry


async def _tcp_port(ctx: ProbeContext, iface: Interface) -> int | None:
    """The interface's dynamic TCP port from the mapper on the check's port (None: not registered)."""
    reader, writer = await connect_tcp(ctx)
    conn = RpcConnection(ctx, reader, writer)
    try:
        ack = await conn.bind(EPM)
        if not ack.accepted:
            raise ProbeError(failed(Reason.PROTOCOL, f"{ctx.where()} is not an RPC endpoint mapper ({ack.describe()})"))
        towers = await ept_map(conn, iface)
    finally:
        conn.close()
    return towers[0].port if towers else None


@register
class RpcAuthProbe(Probe):
    name = "rpc-auth"
    transports = (Transport.TCP,)
    summary = "Authenticated RPC: NTLM bind at packet integrity and the call that proves access (SCM, EventLog, ...)"
    exchanges = 6  # SMB negotiate + session setup + pipe open + bind + call, per interface in sequence
    footprint: ClassVar[str] = (
        "event 4624 (logon type 3, NTLM) per interface (plus 4672 for an administrator), 4625 on a wrong "
        "password; 5145 (named pipe access) where detailed file-share auditing is on"
    )
    firewall = RPC_AUTH_FIREWALL  # each interface's rule group, from the `asked` evidence

    Options = RpcAuthOptions

    async def run(self, ctx: ProbeContext) -> Outcome:
        targets = list(options_of(ctx, RpcAuthOptions).targets)
        names = ", ".join(f"{t.label} ({t.call})" for t in targets)
        creds = ctx.credentials
        if creds is None:
            return no_credentials(ctx, f"an authenticated bind and call for {names}")
        if (unsupported := integrated_unsupported(ctx, f"authenticated RPC to {names}")) is not None:
            return unsupported
        if not load_impacket():
            return missing_extra(f"authenticated RPC to {names}")
        asked = [t.label for t in targets]
        try:
            return await self._check(ctx, creds, targets, asked)
        except ProbeError as exc:  # dropped or refused before any answer: still say what was asked
            o = exc.outcome
            raise ProbeError(type(o)(o.status, o.reason, o.detail, {"asked": asked, **o.evidence})) from None

    async def _check(self, ctx: ProbeContext, creds: Credentials, targets: list[Target], asked: list[str]) -> Outcome:
        port = ctx.port or 445
        via_pipe = port in PIPE_PORTS
        if via_pipe:
            # Our own connect first: dropped / refused read as such (and impacket, which leaks
            # its socket when the connect fails, only runs against a port that answers).
            _reader, writer = await connect_tcp(ctx, port)
            close_quietly(writer)
        results: list[dict[str, Any]] = []
        for target in targets:  # in sequence: one logon after the other, as the Auditor does
            if via_pipe:
                results.append(await self._in_thread(ctx, creds, target, port, True))
                continue
            dynamic = await _tcp_port(ctx, target.on(False)[0])
            if dynamic is None:
                results.append({
                    "interface": target.label, "transport": "tcp", "status": "not-registered",
                    "reason": f"the endpoint mapper on {ctx.where()} has no TCP endpoint for {target.label}",
                })  # fmt: skip
                continue
            dctx = ctx.with_port(dynamic)
            try:  # our own connect first: a dropped dynamic port reads filtered, in our words
                _reader, writer = await connect_tcp(dctx)
            except ProbeError as exc:
                o = exc.outcome
                words = o.detail
                if o.reason is Reason.FILTERED:
                    words = (
                        f"{o.detail}: the endpoint mapper lists {target.label} on TCP {dynamic}, so it listens "
                        "there (not stealth mode's unused port): a firewall drops the dynamic RPC range"
                    )
                results.append({
                    "interface": target.label, "transport": "tcp", "port": dynamic, "status": o.reason.value,
                    "reason": words,
                })  # fmt: skip
                continue
            close_quietly(writer)
            results.append(await self._in_thread(dctx, creds, target, dynamic, False))
        return verdict(ctx, results, str(creds), asked)

    @staticmethod
    async def _in_thread(ctx: ProbeContext, creds: Credentials, target: Target, port: int, via_pipe: bool) -> Any:
        sessions = Sessions()
        try:
            return await ctx.in_thread(bind_and_call, ctx, creds, target, port, via_pipe, ctx.step_timeout(), sessions)
        finally:
            sessions.cut()  # wakes a worker still blocked in recv, so it ends now


_ORDER = ("auth", "policy", "filtered", "refused", "unreachable", "protocol")


def verdict(ctx: ProbeContext, results: list[dict[str, Any]], account: str, asked: list[str] | None = None) -> Outcome:
    """Worst per-interface status decides; words name each interface and what it said.

    `asked` (evidence) names the interfaces the check was given, whatever happened to each.
    """
    evidence: dict[str, Any] = {"interfaces": results, "account": account}
    if asked is not None:
        evidence["asked"] = list(asked)
    bad = [r for r in results if r["status"] not in ("ok", "not-registered")]
    if bad:
        worst = min(bad, key=lambda r: _ORDER.index(r["status"]) if r["status"] in _ORDER else len(_ORDER))
        text = "; ".join(r["reason"] for r in bad)
        return failed(Reason(worst["status"]), text, **evidence)
    missing = [r for r in results if r["status"] == "not-registered"]
    ok = [r for r in results if r["status"] == "ok"]
    if missing:
        head = "not registered: " + "; ".join(r["reason"] for r in missing)
        if ok:
            head += "; working as " + account + ": " + ", ".join(f"{r['interface']} ({r['call']})" for r in ok)
        return inconclusive(Reason.NOT_REGISTERED, head, **evidence)
    return passed(
        f"authenticated as {account} at packet integrity: "
        + ", ".join(f"{r['interface']} ({r['call']} via {r['transport']})" for r in ok),
        **evidence,
    )
