"""Oracle: a TNS CONNECT to the listener (TCP 1521).

The listener answers a CONNECT with ACCEPT, REFUSE, REDIRECT or RESEND; any of them
proves an Oracle listener is reachable (a REFUSE also names the version and the
reason). No login is attempted. Setting ``oracle_service`` (or option ``service``)
names the service to ask for; otherwise a placeholder is used and the listener's
"unknown service" refusal (TNS-12514) is the expected, passing answer.
"""

from __future__ import annotations

from scanner.models import Transport
from scanner.probes.base import Outcome, Probe, ProbeContext, register
from scanner.probes.netio import close_quietly, connect_tcp
from scanner.wire.tns import TnsOptions, exchange, outcome_for, service_name


@register
class TnsConnectProbe(Probe):
    name = "tns"
    transports = (Transport.TCP,)
    summary = "Oracle listener: TNS CONNECT answered (ACCEPT/REFUSE/REDIRECT/RESEND)"
    exchanges = 2  # a RESEND costs one more round trip

    Options = TnsOptions

    async def run(self, ctx: ProbeContext) -> Outcome:
        service, configured = service_name(ctx)
        reader, writer = await connect_tcp(ctx)
        try:
            answer = await exchange(ctx, reader, writer, service)
        finally:
            close_quietly(writer)
        return outcome_for(ctx, answer, configured, service=service)
