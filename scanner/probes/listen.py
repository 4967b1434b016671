"""Inbound rows: traffic flows to the Auditor host, so only `portready listen` can prove them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scanner.models import Reason, Transport
from scanner.probes.base import Outcome, Probe, ProbeContext, evidence_text, register, skipped


@register
class InboundProbe(Probe):
    name = "listen"
    accepts_range = True
    transports = (Transport.TCP, Transport.UDP)
    summary = "inbound to the Auditor host: proven by `portready listen` and `portready send`"
    exchanges = 0
    depth = "inert"  # sends nothing: inbound rows are proved by `portready listen`
    inbound = True

    async def run(self, ctx: ProbeContext) -> Outcome:
        return skipped(
            Reason.INBOUND,
            f"inbound: {ctx.row.doc_source} connect to this host on "
            f"{ctx.protocol.value.upper()} {ctx.port if ctx.port is not None else ctx.ports}; run `portready listen` here and "
            "`portready send` on a source to prove it",
        )

    def summarize(self, evidence: Mapping[str, Any]) -> str:
        syslog = evidence.get("syslog")
        if not isinstance(syslog, Mapping):
            return ""
        message = evidence_text(syslog, "message", 200) or evidence_text(syslog, "msg", 200)
        return f"syslog: {message}" if message else ""
