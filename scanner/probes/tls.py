"""TLS handshake (no application protocol): version, cipher and the certificate, judged.

Proves that a TLS server answers on the port. Certificates that a careful client would
refuse (expired, not yet valid, issued for another name, not trusted) make the check
`warn certificate` with the reason in words: the port is reachable, the Auditor may
still refuse the certificate. A failed handshake is `fail tls`.

Options: ``via_proxy`` (true/false; see scanner.probes._proxy for the default).
Evidence (`_tls.TlsEvidence`): tls_version, cipher, subject, issuer, san, not_before, not_after, days_left,
trusted (+ trust_error), trust_store, name_matches, sha256, via_proxy.
"""

from __future__ import annotations

from typing import Any, Mapping

from scanner.models import Transport
from scanner.probes._proxy import ProxyAware
from scanner.probes._tls import judge, open_tls, summarize_evidence, tls_summary
from scanner.probes.base import Outcome, Probe, ProbeContext, passed, register


@register
class TlsHandshakeProbe(ProxyAware, Probe):
    name = "tls"
    transports = (Transport.TCP,)
    summary = "TLS handshake: version, cipher, certificate names, issuer, trust and expiry"
    exchanges = 3  # TCP connect, handshake, and a second handshake for untrusted certificates

    def summarize(self, evidence: Mapping[str, Any]) -> str:
        return summarize_evidence(evidence)

    async def run(self, ctx: ProbeContext) -> Outcome:
        session = await open_tls(ctx)
        await session.close()
        return judge(
            ctx,
            session,
            passed(f"TLS answers on {ctx.where()}: {tls_summary(ctx, session)}"),
        )
