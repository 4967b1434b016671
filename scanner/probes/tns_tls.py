"""Oracle over TLS (TCPS, TCP 2484): the TLS handshake, then a TNS CONNECT inside it.

The handshake and the certificate judgement are the shared ones of the TLS kit `_tls`
(system CAs plus ``--ca-bundle``, or the bundle only with the trust-private-CA flag;
expired, not yet valid, misnamed or untrusted certificates in words). The listener
must still answer the TNS CONNECT inside TLS: a certificate problem then makes the
check `warn`/certificate; a handshake that fails is `fail`/tls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scanner.models import Transport
from scanner.probes._tls import judge, open_tls, summarize_evidence
from scanner.probes.base import Outcome, Probe, ProbeContext, ProbeError, register
from scanner.wire.tns import TnsOptions, exchange, outcome_for, service_name


@register
class TnsTlsProbe(Probe):
    name = "tns-tls"
    transports = (Transport.TCP,)
    summary = "Oracle TCPS: TLS handshake (certificate) then TNS CONNECT answered"
    exchanges = 3  # handshake (twice when the certificate fails verification) + CONNECT

    def summarize(self, evidence: Mapping[str, Any]) -> str:
        return summarize_evidence(evidence)

    Options = TnsOptions

    async def run(self, ctx: ProbeContext) -> Outcome:
        service, configured = service_name(ctx)
        session = await open_tls(ctx)
        try:
            answer = await exchange(ctx, session.reader, session.writer, service)
        except ProbeError as exc:  # not TNS inside TLS: the certificate is still evidence
            return judge(ctx, session, exc.outcome)
        finally:
            await session.close()
        return judge(ctx, session, outcome_for(ctx, answer, configured, service=service))
