"""RPC endpoint mapper (TCP 135): bind to it and list what it knows.

A DCE/RPC BIND to the mapper interface (e1af8308-5d1f-11c9-91a4-08002b14a0fa v3.0)
answered with an accepting BIND_ACK proves the RPC endpoint mapper itself answers;
ept_lookup then lists the registered endpoints (evidence). A port that accepts the
connection but answers anything else fails with reason `protocol`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, ClassVar

from scanner.models import Reason, Transport
from scanner.probes._stealth import second_signal
from scanner.probes._windows_firewall import RPC_FIREWALL
from scanner.probes.base import Outcome, Probe, ProbeContext, ProbeError, failed, passed, register
from scanner.probes.netio import connect_tcp
from scanner.wire.rpc import EPM, Endpoint, RpcConnection, ept_lookup

MAX_LISTED = 48  # endpoints kept as evidence (a Windows DC registers 100+)


async def shared_listing(ctx: ProbeContext, conn: RpcConnection, port: int) -> list[Endpoint]:
    """The mapper's whole listing (ept_lookup), read once per address, port and scan.

    The `epm` check and `rpc-dynamic` both need it; whichever asks first reads it on its
    own bound connection and the other uses that reading (each still binds to the mapper
    itself, so each proves TCP 135 on its own).
    """
    listing, _reused = await ctx.memo.once(
        ("epm-listing", ctx.address, port), lambda: ept_lookup(conn), wait=ctx.step_timeout()
    )
    return list(listing)


@register
class EndpointMapperProbe(Probe):
    name = "epm"
    transports = (Transport.TCP,)
    summary = "RPC endpoint mapper: DCE/RPC bind on 135 and ept_lookup of the registered endpoints"
    exchanges = 4  # bind, then a few ept_lookup pages
    firewall = RPC_FIREWALL
    footprint: ClassVar[str] = "none in the Security log (anonymous bind and ept_lookup on 135)"

    async def run(self, ctx: ProbeContext) -> Outcome:
        try:
            reader, writer = await connect_tcp(ctx)
        except ProbeError as exc:
            if exc.outcome.reason is not Reason.FILTERED:
                raise
            o = exc.outcome
            words = await second_signal(ctx, ctx.port or 135)
            raise ProbeError(failed(o.reason, f"{o.detail}. {words}", **dict(o.evidence))) from None
        conn = RpcConnection(ctx, reader, writer)
        try:
            ack = await conn.bind(EPM)
            if not ack.accepted:
                return failed(
                    Reason.PROTOCOL,
                    f"{ctx.where()} speaks DCE/RPC but is not an endpoint mapper: {ack.describe()}",
                )
            endpoints = await shared_listing(ctx, conn, ctx.port or 135)
        finally:
            conn.close()
        tcp = [e for e in endpoints if e.protocol == "tcp" and e.port]
        ports = sorted({e.port for e in tcp if e.port is not None})
        dynamic = [p for p in ports if p != 135]
        by_protocol = Counter(e.protocol for e in endpoints)
        others = [e for e in endpoints if not (e.protocol == "tcp" and e.port)]  # (not `in tcp`: n² compares)
        listed = [e.to_evidence() for e in (tcp + others)[:MAX_LISTED]]
        return passed(
            f"RPC endpoint mapper on {ctx.host} TCP {ctx.port} answered a DCE/RPC bind and listed "
            f"{len(endpoints)} endpoints ({len(tcp)} on TCP"
            + (f", dynamic TCP ports {', '.join(map(str, dynamic[:8]))}" if dynamic else "")
            + ")",
            endpoint_count=len(endpoints),
            tcp_endpoint_count=len(tcp),
            tcp_ports=ports[:64],
            protocols=dict(by_protocol),
            interfaces=len({e.uuid for e in endpoints}),
            endpoints=listed,
            endpoints_truncated=len(endpoints) > MAX_LISTED,
        )

    def summarize(self, evidence: Mapping[str, Any]) -> str:
        count = evidence.get("endpoint_count")
        return f"{count} RPC endpoints" if isinstance(count, int) and not isinstance(count, bool) else ""
