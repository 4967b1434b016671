"""Inbound rows: traffic flows to the Auditor host, so only `portready listen` can prove them."""

from __future__ import annotations

from scanner.models import Reason, Transport
from scanner.probes.base import Outcome, Probe, ProbeContext, register, skipped


@register
class InboundProbe(Probe):
    name = "listen"
    accepts_range = True
    transports = (Transport.TCP, Transport.UDP)
    summary = "inbound to the Auditor host: proven by `portready listen` and `portready send`"
    exchanges = 0
    depth = "inert"  # sends nothing: inbound rows are proved by `portready listen`

    async def run(self, ctx: ProbeContext) -> Outcome:
        return skipped(
            Reason.INBOUND,
            f"inbound: {ctx.row.doc_source} connect to this host on "
            f"{ctx.protocol.value.upper()} {ctx.port if ctx.port is not None else ctx.ports}; run `portready listen` here and "
            "`portready send` on a source to prove it",
        )
