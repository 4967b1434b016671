"""DCOM activation the way the Auditor does it: WMI (or PLA) over 135 and its own dynamic port.

With the role's credentials, at packet integrity (the floor Windows enforces since the
DCOM hardening of KB5004442, March 2023):

1. connect to the endpoint mapper port (135), bind IRemoteSCMActivator
   (000001a0-0000-0000-c000-000000000046) with NTLM and call RemoteCreateInstance for the
   server's class; the answer names the object exporter's string bindings, i.e. the
   dynamic TCP port this server's object really listens on;
2. connect to that port (a firewall that drops the range shows here, with the port named);
3. WMI: bind IWbemLevel1Login and call NTLMLogin("//./root/cimv2"), what every WMI query
   of the Auditor starts with. PLA: an authenticated bind to IDataCollectorSet on the
   object's port (activation plus bind; no PLA method is called).

On a range check (the row's 1024-65535) the activator is asked on option ``mapper_port``
(default 135) and the port it hands out is compared with the range; on a single-port check
that port is the activator's. Option ``server``: ``wmi`` (default) or ``pla``. Evidence: server, clsid, port (the one
activation handed out), bindings (as the server named them), step (where it ended) and
namespace. Failures map to auth (logon refused), policy (DCOM launch/activation or WMI
namespace rights, authentication level), not-registered (no DCOM on the host, class or
namespace missing) or the network reasons. impacket comes from the `portready[dcom]` extra;
without it, or without credentials, the check is a skip that says what it would add.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from scanner.models import Reason, Transport
from scanner.probes._impacket_rpc import (
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
from scanner.probes._stealth import second_signal
from scanner.probes._windows_firewall import DCOM_FIREWALL
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


@dataclass(frozen=True)
class DcomServer:
    label: str
    title: str
    clsid: str
    iid: str


SERVERS: dict[str, DcomServer] = {
    "wmi": DcomServer(
        "wmi", "WMI", "8bc3f05e-d86b-11d0-a075-00c04fb68820", "f309ad18-d86a-11d0-a075-00c04fb68820"
    ),  # CLSID_WbemLevel1Login, IID_IWbemLevel1Login (MS-WMI 1.9)
    "pla": DcomServer(
        "pla",
        "Performance Logs and Alerts",
        "03837521-098b-11d8-9414-505054503030",
        "03837520-098b-11d8-9414-505054503030",
    ),  # CLSID_DataCollectorSet, IID_IDataCollectorSet (MS-PLA 1.9)  # fmt: skip
}
NAMESPACE = "//./root/cimv2"

# HRESULTs an activation or WMI login ends with (MS-ERREF 2.1, MS-WMI 2.2.11).
HRESULTS: dict[int, tuple[Reason, str]] = {
    0x80070005: (
        Reason.POLICY,
        "access denied: the account logged on but may not launch or activate this DCOM server remotely "
        "(DCOM 'Remote Launch' / 'Remote Activation' permissions, the 'Distributed COM Users' group)",
    ),
    0x80041003: (
        Reason.POLICY,
        "WMI refused the account: it lacks 'Enable Account' / 'Remote Enable' on the namespace root\\cimv2",
    ),
    0x80040154: (Reason.NOT_REGISTERED, "the class is not registered: the service is not installed on the host"),
    0x8004100E: (Reason.NOT_REGISTERED, "the WMI namespace root\\cimv2 does not exist there"),
    0x80080005: (Reason.PROTOCOL, "the server failed to start the DCOM server (CO_E_SERVER_EXEC_FAILURE)"),
    0x800706BA: (Reason.PROTOCOL, "the RPC server is unavailable (RPC_S_SERVER_UNAVAILABLE)"),
}
_BINDING = re.compile(r"^(?P<host>[^\[]*)\[(?P<port>\d{1,5})\]$")


def dcom_outcome(ctx: ProbeContext, exc: BaseException, what: str, port: int | None) -> Outcome:
    """classify(), plus the HRESULTs DCOM and WMI answer with."""
    code = getattr(exc, "error_code", None)
    if isinstance(code, int) and (code & 0xFFFFFFFF) in HRESULTS:
        hresult = f"0x{code & 0xFFFFFFFF:08x}"
        reason, words = HRESULTS[code & 0xFFFFFFFF]
        make = inconclusive if reason is Reason.NOT_REGISTERED else failed
        return make(reason, f"{what} on {ctx.host}: {words} ({hresult})", hresult=hresult)
    text = str(exc).lower()
    if "abstract_syntax_not_supported" in text or "proposed transfer syntaxes" in text:
        return inconclusive(
            Reason.NOT_REGISTERED,
            f"no DCOM on {ctx.host}: the RPC service on {ctx.where(port)} does not know the DCOM activator "
            "(IRemoteSCMActivator), so WMI and other DCOM servers are not offered (not a Windows host?)",
        )
    return classify(ctx, exc, what, port)


def binding_port(bindings: list[str]) -> int | None:
    """The TCP port of the first 'host[port]' string binding; None when none has one."""
    for text in bindings:
        m = _BINDING.match(text.strip())
        if m and 0 < int(m.group("port")) < 65536:
            return int(m.group("port"))
    return None


@dataclass
class Activation:
    """What RemoteCreateInstance handed back (kept between the two worker-thread steps)."""

    interface: Any
    bindings: list[str]
    port: int | None


def activate(
    ctx: ProbeContext, creds: Credentials, server: DcomServer, timeout: float, sessions: Sessions | None = None
) -> Activation:
    """Blocking: the authenticated RemoteCreateInstance on the mapper port. ProbeError on failure."""
    from impacket.dcerpc.v5 import dcomrt
    from impacket.uuid import string_to_bin

    port = ctx.port or 135
    what = f"DCOM activation of {server.title} (RemoteCreateInstance on TCP {port})"
    dce = authenticated_dce(ctx, creds, f"ncacn_ip_tcp:{ctx.address}[{port}]", port, timeout, sessions)
    try:
        connect(dce)
        iface = dcomrt.IRemoteSCMActivator(dce).RemoteCreateInstance(
            string_to_bin(server.clsid), string_to_bin(server.iid)
        )
        bindings = [
            str(b["aNetworkAddr"]).rstrip("\x00")[:128]
            for b in iface.get_cinstance().get_string_bindings()
            if b["wTowerId"] == 7  # ncacn_ip_tcp
        ][:8]
    except ProbeError:
        raise
    except Exception as exc:  # noqa: BLE001 - every library error is mapped by dcom_outcome
        raise ProbeError(dcom_outcome(ctx, exc, what, port)) from None
    finally:
        disconnect_quietly(dce)
    return Activation(iface, bindings, binding_port(bindings))


def login(
    ctx: ProbeContext, creds: Credentials, server: DcomServer, act: Activation, timeout: float,
    sessions: Sessions | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Blocking: bind the object's interface on its own port; WMI: NTLMLogin to root\\cimv2."""
    from impacket.dcerpc.v5.dcom import wmi
    from impacket.dcerpc.v5.dtypes import NULL
    from impacket.uuid import uuidtup_to_bin

    port = act.port or 0
    what = f"{server.title} on its DCOM port TCP {port}"
    dce = authenticated_dce(ctx, creds, f"ncacn_ip_tcp:{ctx.address}[{port}]", port, timeout, sessions)
    step = "bind"
    try:
        connect(dce)
        dce.bind(uuidtup_to_bin((server.iid, "0.0")))
        if server.label != "wmi":
            return {"step": "bind"}
        step = "login"
        req = wmi.IWbemLevel1Login_NTLMLogin()
        req["ORPCthis"] = act.interface.get_cinstance().get_ORPCthis()
        req["ORPCthis"]["flags"] = 0
        req["wszNetworkResource"] = NAMESPACE + "\x00"
        req["wszPreferredLocale"] = NULL
        req["lFlags"] = 0
        req["pCtx"] = NULL
        resp = dce.request(req, uuid=act.interface.get_iPid())
        namespace = b"".join(resp["ppNamespace"]["abData"]) if resp["ppNamespace"] else b""
        if namespace[:4] != b"MEOW":  # OBJREF signature (MS-DCOM 2.2.18)
            raise ProbeError(
                failed(Reason.PROTOCOL, f"{what} accepted NTLMLogin but handed back no namespace object", step=step)
            )
    except ProbeError:
        raise
    except Exception as exc:  # noqa: BLE001 - every library error is mapped by dcom_outcome
        outcome = dcom_outcome(ctx, exc, what, port)
        raise ProbeError(
            type(outcome)(outcome.status, outcome.reason, outcome.detail, {**outcome.evidence, "step": step})
        ) from None
    finally:
        disconnect_quietly(dce)
    return {"step": "login", "namespace": "root\\cimv2"}


# impacket's DCOM classes keep per-target tables in class attributes (OID sets, connection
# slots). We never start its pinger and leave the tables alone: clearing them from one worker
# thread races with another thread's activation, and they hold a few bytes per target.


@dataclass(frozen=True)
class DcomOptions:
    server: str = option("wmi", "the DCOM server to activate: " + ", ".join(SERVERS))
    mapper_port: int = option(135, "the activator's port when the row is a range")

    def __post_init__(self) -> None:
        if self.server.lower() not in SERVERS:
            raise ValueError(f"dcom: unknown server {self.server!r} (known: {', '.join(SERVERS)})")
        if not 0 < self.mapper_port < 65536:
            raise ValueError("dcom: mapper_port must be a TCP port number")


@register
class DcomActivationProbe(Probe):
    name = "dcom"
    transports = (Transport.TCP,)
    summary = "DCOM: authenticated RemoteCreateInstance on 135 (packet integrity), then the server's own port"
    exchanges = 6  # connect + bind/auth + activation on 135; connect + bind/auth + login on the object port
    footprint: ClassVar[str] = (
        "event 4624 (logon type 3, NTLM) for the activation and again on the object's port (plus 4672 for an "
        "administrator), 4625 on a wrong password; System log 10016 when DCOM permissions refuse the account"
    )
    accepts_range = True
    Options = DcomOptions
    firewall = DCOM_FIREWALL  # WMI's or PLA's own rule group, from the `server` evidence

    async def run(self, ctx: ProbeContext) -> Outcome:
        if ctx.port is None:  # a range check: the activator listens on the mapper port
            return await self._run(ctx.with_port(options_of(ctx, DcomOptions).mapper_port))
        return await self._run(ctx)

    async def _run(self, ctx: ProbeContext) -> Outcome:
        server = SERVERS[options_of(ctx, DcomOptions).server.lower()]
        adds = f"a DCOM activation of {server.title} at packet integrity, the port it hands out" + (
            " and a WMI login to root\\cimv2" if server.label == "wmi" else ""
        )
        creds = ctx.credentials
        if creds is None:
            return no_credentials(ctx, adds)
        if (unsupported := integrated_unsupported(ctx, f"the DCOM activation of {server.title}")) is not None:
            return unsupported
        if not load_impacket():
            return missing_extra(f"the DCOM activation of {server.title}")
        # Our own connect first: a dropped or refused 135 reads as such, in our words.
        base = {"server": server.label, "clsid": server.clsid}
        try:
            _reader, writer = await connect_tcp(ctx)
        except ProbeError as exc:
            o = exc.outcome
            if o.reason is not Reason.FILTERED:
                raise _with(exc, base) from None  # `server` names the rule group `fix` enables
            words = await second_signal(ctx, ctx.port or 135)
            raise ProbeError(failed(o.reason, f"{o.detail}. {words}", **{**base, **o.evidence})) from None
        close_quietly(writer)
        sessions = Sessions()
        try:
            act = await ctx.in_thread(activate, ctx, creds, server, ctx.step_timeout(), sessions)
        except ProbeError as exc:
            raise _with(exc, {**base, "step": "activation"}) from None
        finally:
            sessions.cut()  # wakes a worker still blocked in recv, so it ends now
        evidence: dict[str, Any] = {**base, "bindings": act.bindings, "step": "activation"}
        if act.port is None:
            return failed(
                Reason.PROTOCOL,
                f"{server.title} was activated on {ctx.host}, but the answer names no TCP port "
                f"(bindings: {', '.join(act.bindings) or 'none'})",
                **evidence,
            )
        evidence["port"] = act.port
        in_range = ctx.ports is None or act.port in ctx.ports
        octx = ctx.with_port(act.port)
        try:
            _reader, writer = await connect_tcp(octx)
        except ProbeError as exc:
            o = exc.outcome
            words = o.detail
            if o.reason is Reason.FILTERED:
                words = (
                    f"filtered: DCOM activated {server.title} on {ctx.host} and handed out TCP {act.port}, so it "
                    f"listens there, but that dynamic port is dropped: a firewall between this host and "
                    f"{ctx.host} lets 135 through and blocks the dynamic RPC range (Windows Firewall's stealth "
                    "mode drops unused ports too; here the activation proves the port is in use)"
                )
            raise ProbeError(failed(o.reason, words, **{**evidence, **o.evidence})) from None
        close_quietly(writer)
        try:
            evidence.update(await ctx.in_thread(login, octx, creds, server, act, ctx.step_timeout(), sessions))
        except ProbeError as exc:
            raise _with(exc, evidence) from None
        finally:
            sessions.cut()
        done = "NTLMLogin to root\\cimv2 accepted" if server.label == "wmi" else "authenticated bind accepted"
        text = (
            f"{server.title}: DCOM activation on TCP {ctx.port} at packet integrity as {creds} handed out "
            f"TCP {act.port}; {done} there"
        )
        if not in_range:
            evidence["in_range"] = False
            text += (
                f" (outside the documented range {ctx.ports}: a firewall rule for that range alone would not cover it)"
            )
        return passed(text, **evidence)


def _with(exc: ProbeError, evidence: Mapping[str, Any]) -> ProbeError:
    o = exc.outcome
    return ProbeError(type(o)(o.status, o.reason, o.detail, {**evidence, **o.evidence}))
