"""HTTPS: a TLS handshake (judged as by the `tls` probe), then an HTTP/1.1 request.

Any well-formed HTTP answer proves the web service answers, unless ``expect`` narrows
the acceptable statuses. Certificate problems make a pass `warn certificate`.

Options: ``path`` (default "/"), ``expect`` (list of HTTP statuses), ``via_proxy``.
Evidence: the `tls` keys + status, server, location (redirects), path.
"""

from __future__ import annotations

from typing import Any, Mapping

from scanner.models import Transport
from scanner.probes._proxy import ProxyAware
from scanner.probes._tls import judge, open_tls, summarize_evidence, tls_summary
from scanner.probes.base import Outcome, Probe, ProbeContext, ProbeError, options_of, register
from scanner.wire.http import HttpOptions, host_header, http_outcome, http_request


@register
class HttpsProbe(ProxyAware, Probe):
    name = "https"
    transports = (Transport.TCP,)
    summary = "HTTPS: TLS handshake and certificate, then the HTTP status of the documented path"
    exchanges = 4

    def summarize(self, evidence: Mapping[str, Any]) -> str:
        return summarize_evidence(evidence)

    Options = HttpOptions

    async def run(self, ctx: ProbeContext) -> Outcome:
        opts = options_of(ctx, HttpOptions)
        path = opts.path
        port = ctx.port or 443
        session = await open_tls(ctx)
        try:
            response = await http_request(
                ctx, session.reader, session.writer, "GET", path,
                host=host_header(ctx.host, port, 443), read_response_body=False,
            )  # fmt: skip
        except ProbeError as exc:
            return judge(ctx, session, exc.outcome)
        finally:
            await session.close()
        outcome = http_outcome(ctx, response, "HTTPS", "GET", path, opts.expect)
        if outcome.status.value == "pass":
            outcome = Outcome(
                outcome.status, outcome.reason,
                f"{outcome.detail}; {tls_summary(ctx, session)}", outcome.evidence,
            )  # fmt: skip
        return judge(ctx, session, outcome)
