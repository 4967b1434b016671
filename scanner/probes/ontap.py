"""NetApp ONTAP management (cluster or SVM management LIF): HTTP 80 / HTTPS 443.

Asks the two management APIs the Auditor can use, without credentials:

1. REST ``GET /api/cluster`` (ONTAP 9.6+): ``401`` with ``WWW-Authenticate: Basic``,
   or ``200`` JSON naming the cluster/version.
2. ONTAPI (ZAPI) ``POST /servlets/netapp.servlets.admin.XMLrequest_filer`` with
   ``<netapp><system-get-version/></netapp>``: ``401`` Basic, or a ``<netapp>`` XML answer.

Either is an ONTAP-like answer → pass (a 401 Basic is what ONTAP gives without
credentials; a different web server could in theory give it too, so the realm is kept
as evidence). A web server that answers HTTP but neither API like ONTAP → `warn
protocol`: the port is open and HTTP works — the firewall question of the row is
answered — but this does not look like an ONTAP management address (wrong address,
the SVM has no management access, or REST/ONTAPI are disabled). Not HTTP at all →
`fail protocol`.

The scheme follows the port: 80 is HTTP, any other port HTTPS (option ``tls`` overrides).
Options: ``tls``, ``via_proxy``. Evidence: (HTTPS: the `tls` keys) + status, server,
api (rest/ontapi), realm, version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from scanner.models import Reason, Transport
from scanner.probes._options import option
from scanner.probes._proxy import ProxyAware
from scanner.probes._tls import summarize_evidence, tls_summary
from scanner.probes._web import WebClient, local_name, safe_xml
from scanner.probes.base import FirewallHint, Outcome, Probe, ProbeContext, options_of, passed, register, warned
from scanner.wire.http import HttpResponse, ProxyOptions, clip

REST_PATH = "/api/cluster"
ONTAPI_PATH = "/servlets/netapp.servlets.admin.XMLrequest_filer"
ONTAPI_REQUEST = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<netapp xmlns="http://www.netapp.com/filer/admin" version="1.21">'
    b"<system-get-version/></netapp>"
)


def basic_realm(response: HttpResponse) -> str | None:
    """The realm of a 401 Basic challenge ('' when none is named), else None."""
    if response.status != 401:
        return None
    for challenge in response.header_all("www-authenticate"):
        scheme, _, params = challenge.strip().partition(" ")
        if scheme.lower() == "basic":
            realm = ""
            if "realm=" in params:
                realm = params.split("realm=", 1)[1].split(",", 1)[0].strip().strip('"')
            return clip(realm, 80)
    return None


def rest_answer(response: HttpResponse) -> dict[str, Any] | None:
    realm = basic_realm(response)
    if realm is not None:
        return {"api": "rest", "realm": realm}
    if response.status == 200 and response.body_complete:
        try:
            data = json.loads(response.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return None
        version = data.get("version") if isinstance(data, dict) else None
        if isinstance(version, dict) and isinstance(version.get("full"), str):
            return {"api": "rest", "version": clip(version["full"], 120)}
    return None


def ontapi_answer(response: HttpResponse) -> dict[str, Any] | None:
    realm = basic_realm(response)
    if realm is not None:
        return {"api": "ontapi", "realm": realm}
    root = safe_xml(response.body, allow_doctype=True) if response.body_complete else None
    if root is None or local_name(root.tag) != "netapp":
        return None
    info: dict[str, Any] = {"api": "ontapi"}
    for element in root.iter():
        if local_name(element.tag) == "version" and element.text:
            info["version"] = clip(element.text.strip(), 120)
            break
    return info


def _said(response: HttpResponse) -> str:
    server = response.header("server")
    return f"{response.status} {response.reason}".strip() + (f" (Server: {clip(server, 60)})" if server else "")


@dataclass(frozen=True)
class OntapOptions(ProxyOptions):
    tls: bool | None = option(None, "HTTPS; unset: on every port but 80")


@register
class OntapManagementProbe(ProxyAware, Probe):
    name = "ontap"
    transports = (Transport.TCP,)
    summary = "NetApp ONTAP management: REST /api/cluster or ONTAPI over HTTP 80 / HTTPS 443"
    exchanges = 6
    # The cluster's own firewall policy takes the rule (`portready fix --format ontap`), per service.
    firewall = FirewallHint(appliance="ontap", services=((80, "http"),), default_service="https")

    Options = OntapOptions

    async def run(self, ctx: ProbeContext) -> Outcome:
        port = ctx.port or 443
        tls = options_of(ctx, OntapOptions).tls
        tls = port != 80 if tls is None else tls
        scheme = "HTTPS" if tls else "HTTP"
        web = WebClient(ctx, tls=tls, port=port)
        rest = await web.request("GET", REST_PATH, headers=(("Accept", "application/json"),), max_body=64 * 1024)
        info = rest_answer(rest)
        response = rest
        if info is None:
            response = await web.request(
                "POST", ONTAPI_PATH, body=ONTAPI_REQUEST, headers=(("Content-Type", "text/xml"),), max_body=64 * 1024
            )
            info = ontapi_answer(response)
        if info is None:
            return web.finish(
                warned(
                    Reason.PROTOCOL,
                    f"{scheme} answers on {ctx.where()} (the port is open), but not like ONTAP "
                    f"management: GET {REST_PATH} → {_said(rest)}, POST {ONTAPI_PATH} → "
                    f"{_said(response)} — check that {ctx.host} is the cluster or SVM management "
                    "address and that its management web services (REST/ONTAPI) are enabled",
                    **rest.evidence(),
                )
            )
        api = "ONTAP REST" if info["api"] == "rest" else "ONTAPI"
        path = REST_PATH if info["api"] == "rest" else ONTAPI_PATH
        how = (
            f"401 Basic authentication required (realm {info['realm']!r}), as ONTAP answers without credentials"
            if "realm" in info
            else f"{info.get('version') or 'an ONTAPI answer'}"
        )
        tls_words = f"; {tls_summary(ctx, web.session)}" if web.session is not None else ""
        return web.finish(
            passed(f"{api} answers on {ctx.where()}: {path} → {how}{tls_words}", **response.evidence(), **info)
        )

    def summarize(self, evidence: Mapping[str, Any]) -> str:
        return summarize_evidence(evidence)
