"""SQL Server Browser on UDP 1434: the instance list with each named instance's TCP port.

The Browser is how clients find named instances (dynamic ports); its answer proves
UDP 1434 gets through and tells which ports the sql-named-instances check must reach.
"""

from __future__ import annotations

import dataclasses

from scanner.models import Reason, Transport
from scanner.probes.base import Outcome, Probe, ProbeContext, ProbeError, failed, passed, register
from scanner.probes.netio import udp_exchange
from scanner.probes.udp import udp_payload
from scanner.wire.mcsqlr import BrowserInstance, McsqlrError, parse_svr_resp, ucast_ex


@udp_payload(1434)
def _browser_request(ctx: ProbeContext) -> bytes:
    # CLNT_UCAST_EX (0x03); the port-level UDP probe gets a real Browser question too.
    return ucast_ex()


async def query_browser(ctx: ProbeContext, port: int | None = None) -> list[BrowserInstance]:
    """Ask the Browser for every instance; ProbeError on refusal, silence or garbage."""
    port = ctx.port if port is None else port
    if port is None:
        raise ValueError("query_browser needs a port")
    bctx = ctx.with_port(port, Transport.UDP)
    reply = await udp_exchange(bctx, ucast_ex(), what="SQL Server Browser answer")
    try:
        return parse_svr_resp(reply)
    except McsqlrError as exc:
        raise ProbeError(
            failed(
                Reason.PROTOCOL,
                f"UDP {port} on {ctx.host} answered, but not as the SQL Server Browser: {exc}",
                reply_bytes=len(reply),
            )
        ) from None


@register
class SqlBrowserProbe(Probe):
    name = "sql-browser"
    transports = (Transport.UDP,)
    summary = "SQL Server Browser (MC-SQLR): instance list with TCP ports"
    exchanges = 1

    async def run(self, ctx: ProbeContext) -> Outcome:
        try:
            instances = await query_browser(ctx)
        except ProbeError as exc:
            if exc.outcome.reason is Reason.NO_ANSWER:
                detail = exc.outcome.detail + " (the SQL Server Browser service may be stopped)"
                raise ProbeError(dataclasses.replace(exc.outcome, detail=detail)) from None
            raise
        names = ", ".join(
            f"{i.name} (TCP {i.tcp_port})" if i.tcp_port else f"{i.name} (no TCP port)" for i in instances
        )
        return passed(
            f"the SQL Server Browser on UDP {ctx.port} announced {len(instances)} "
            f"instance{'s' if len(instances) != 1 else ''}: {names}",
            instances=[i.evidence() for i in instances],
        )
