"""TCP connect: the port-level check, and the deepest one for ports without a public protocol."""

from __future__ import annotations

from scanner.models import Reason, Transport
from scanner.probes.base import Outcome, Probe, ProbeContext, passed, register
from scanner.probes.netio import tcp_port_open


@register
class TcpConnectProbe(Probe):
    name = "tcp"
    transports = (Transport.TCP,)
    summary = "TCP connect (port level): accepted, refused, filtered or unreachable"
    exchanges = 1
    depth = "port"
    port_level_for = (Transport.TCP,)

    async def run(self, ctx: ProbeContext) -> Outcome:
        await tcp_port_open(ctx)
        return passed(
            f"TCP {ctx.port} on {ctx.host} accepts connections (port-level check: "
            "reachability only, the service behind it was not asked anything)",
            reason=Reason.PORT_DEPTH,
            depth="port",
        )
