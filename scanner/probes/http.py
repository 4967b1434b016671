"""Plain HTTP: an HTTP/1.1 request for the documented path; any HTTP answer proves it.

Through a proxy (internet-bound rows, or ``via_proxy: true``) the request goes to the
proxy in absolute form (``GET http://host/path``), as a browser or .NET client sends
it; the proxy's own refusals (407, 403 from the proxy, 502/503/504) are reported as such.

Options: ``path`` (default "/"), ``expect`` (list of HTTP statuses), ``via_proxy``.
Evidence: status, server, location (redirects), path, via_proxy.
"""

from __future__ import annotations

import dataclasses

from scanner.models import Transport
from scanner.probes._proxy import ProxyAware, connect_proxy, proxy_answer, proxy_for
from scanner.probes.base import Outcome, Probe, ProbeContext, ProbeError, options_of, register
from scanner.probes.netio import connect_tcp
from scanner.wire.http import (
    HttpOptions,
    clip,
    close_writer,
    host_header,
    http_outcome,
    http_request,
)


@register
class HttpProbe(ProxyAware, Probe):
    name = "http"
    transports = (Transport.TCP,)
    summary = "HTTP: the status of the documented path (any HTTP answer proves the service)"
    exchanges = 2

    Options = HttpOptions

    async def run(self, ctx: ProbeContext) -> Outcome:
        opts = options_of(ctx, HttpOptions)
        path = opts.path
        port = ctx.port or 80
        host = host_header(ctx.host, port, 80)
        proxy = proxy_for(ctx, port)
        if proxy is None:
            reader, writer = await connect_tcp(ctx, port)
            try:
                response = await http_request(
                    ctx, reader, writer, "GET", path, host=host, read_response_body=False
                )
            finally:
                await close_writer(writer)
            return http_outcome(ctx, response, "HTTP", "GET", path, opts.expect)
        proxy_ctx, stream = await connect_proxy(ctx, proxy)
        url = f"http://{host}{path}"
        headers: tuple[tuple[str, str], ...] = ()
        auth = proxy.authorization()
        if auth is not None:
            headers = (("Proxy-Authorization", auth),)
        try:
            response = await http_request(
                proxy_ctx, stream.reader, stream.writer, "GET", url, host=host,
                headers=headers, read_response_body=False,
            )  # fmt: skip
        except ProbeError as exc:
            outcome = exc.outcome
            raise ProbeError(
                dataclasses.replace(outcome, evidence={**outcome.evidence, "via_proxy": proxy.label})
            ) from None
        finally:
            await close_writer(stream.writer)
        if response.status in (407, 502, 503, 504):
            raise ProbeError(
                proxy_answer(proxy, url, response.status, clip(response.reason, 80), verb="GET")
            )
        outcome = http_outcome(ctx, response, "HTTP", "GET", path, opts.expect)
        return dataclasses.replace(
            outcome,
            detail=f"{outcome.detail} (through the proxy {proxy.label})",
            evidence={**outcome.evidence, "via_proxy": proxy.label},
        )
