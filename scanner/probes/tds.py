"""SQL Server: a TDS PRELOGIN to the database engine (TCP 1433, or the inventory's port).

A PRELOGIN answer proves the SQL Server engine itself listens there (not just an open
port) and says which version it is and how it handles encryption; no login is
attempted, so no credentials are needed and no failed login is logged.
"""

from __future__ import annotations

from scanner.models import Transport
from scanner.probes.base import Outcome, Probe, ProbeContext, passed, register
from scanner.wire.tds import prelogin


@register
class TdsPreloginProbe(Probe):
    name = "tds"
    transports = (Transport.TCP,)
    summary = "SQL Server: TDS PRELOGIN answered (version, encryption)"
    exchanges = 2  # a TDS 8.0 (strict) server costs a second connection with TLS

    async def run(self, ctx: ProbeContext) -> Outcome:
        reply = await prelogin(ctx)
        return passed(
            f"SQL Server answered a TDS PRELOGIN on TCP {ctx.port}: {reply.describe()}",
            **reply.evidence(),
        )
