"""Dell PowerScale (Isilon) OneFS Platform API on HTTPS 8080: ``GET /platform/latest``.

Without credentials a cluster answers ``401`` with the PAPI error JSON
(``{"errors":[{"code":"AEC_UNAUTHORIZED",...}]}``); with them ``200 {"latest":"16"}``.
Either proves the Platform API answers (401 is a pass: this is a reachability check,
no credentials are sent). Anything else — another web server, HTML, plain HTTP — is
`fail protocol`. Certificates are judged as by the `tls` probe.

Options: ``via_proxy``. Evidence: the `tls` keys + status, server, latest, papi_error.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from scanner.models import Reason, Transport
from scanner.probes._proxy import ProxyAware
from scanner.probes._tls import summarize_evidence, tls_summary
from scanner.probes._web import WebClient
from scanner.probes.base import Outcome, Probe, ProbeContext, failed, passed, register
from scanner.wire.http import HttpResponse, clip

PATH = "/platform/latest"


def papi_answer(response: HttpResponse) -> dict[str, Any] | None:
    """{'latest': ...} or {'papi_error': 'AEC_UNAUTHORIZED'} when the body is PAPI's, else None."""
    if not response.body_complete or not response.body:
        return None
    try:
        data = json.loads(response.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    if response.status == 200 and isinstance(data.get("latest"), (str, int)):
        return {"latest": clip(str(data["latest"]), 20)}
    errors = data.get("errors")
    if response.status == 401 and isinstance(errors, list):
        for error in errors[:10]:
            if isinstance(error, dict) and error.get("code") == "AEC_UNAUTHORIZED":
                return {"papi_error": "AEC_UNAUTHORIZED"}
    return None


@register
class PapiProbe(ProxyAware, Probe):
    name = "papi"
    transports = (Transport.TCP,)
    summary = "PowerScale Platform API: GET /platform/latest over HTTPS (401 AEC_UNAUTHORIZED counts)"
    exchanges = 4

    async def run(self, ctx: ProbeContext) -> Outcome:
        web = WebClient(ctx, tls=True, port=ctx.port or 8080)
        response = await web.request("GET", PATH, headers=(("Accept", "application/json"),), max_body=64 * 1024)
        info = papi_answer(response)
        server = response.header("server")
        said = f"{response.status} {response.reason}".strip() + (f" (Server: {clip(server, 60)})" if server else "")
        if info is None:
            return web.finish(
                failed(
                    Reason.PROTOCOL,
                    f"HTTPS answers on {ctx.where()}, but not as the PowerScale Platform API: "
                    f"GET {PATH} → {said} without PAPI's JSON — check that this is the cluster's "
                    "management address and that 8080 is the OneFS web service",
                    **response.evidence(),
                )
            )
        tls = f"; {tls_summary(ctx, web.session)}" if web.session is not None else ""
        what = (
            f"latest API version {info['latest']}"
            if "latest" in info
            else "401 AEC_UNAUTHORIZED without credentials, as expected"
        )
        return web.finish(
            passed(f"PowerScale Platform API answers on {ctx.where()}: GET {PATH} → {what}{tls}",
                   **response.evidence(), **info)
        )

    def summarize(self, evidence: Mapping[str, Any]) -> str:
        return summarize_evidence(evidence)
