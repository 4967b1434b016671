"""vSphere SDK (vCenter / ESXi, HTTPS 443): the Web Services endpoint under /sdk answers.

1. ``GET /sdk/vimServiceVersions.xml`` — the namespace list every vCenter and ESXi serves
   without credentials (``<namespaces><namespace><name>urn:vim25</name><version>…``).
2. If that is missing, ``POST /sdk`` with a SOAP ``RetrieveServiceContent`` (no login
   needed, as pyVmomi does first) — the ``about`` block names the product and API version.

Either proves the SDK answers; an HTTPS server that gives neither is `fail protocol`
(it is not a vSphere SDK). XML from the peer is parsed without DOCTYPE/ENTITY and
bounded in size. Certificates are judged as by the `tls` probe.

Options: ``via_proxy``. Evidence: the `tls` keys + status, server, api_version,
api_versions (namespace@version), prior_versions, full_name, api_type.
"""

from __future__ import annotations

from typing import Any, Mapping

from scanner.models import Reason, Transport
from scanner.probes._proxy import ProxyAware
from scanner.probes._tls import summarize_evidence, tls_summary
from scanner.probes._web import WebClient, local_name, safe_xml
from scanner.probes.base import Outcome, Probe, ProbeContext, ProbeError, failed, passed, register
from scanner.wire.http import HttpResponse, clip

VERSIONS_PATH = "/sdk/vimServiceVersions.xml"
SDK_PATH = "/sdk"
RETRIEVE_SERVICE_CONTENT = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
    b' xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
    b' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
    b'<soapenv:Body><RetrieveServiceContent xmlns="urn:vim25">'
    b'<_this type="ServiceInstance">ServiceInstance</_this>'
    b"</RetrieveServiceContent></soapenv:Body></soapenv:Envelope>"
)


def parse_service_versions(body: bytes) -> dict[str, Any] | None:
    """{'api_version', 'api_versions', 'prior_versions'} from vimServiceVersions.xml."""
    root = safe_xml(body)
    if root is None or local_name(root.tag) != "namespaces":
        return None
    versions: list[str] = []
    current: str | None = None
    prior: list[str] = []
    for namespace in root:
        if local_name(namespace.tag) != "namespace":
            continue
        name = version = None
        for child in namespace:
            tag = local_name(child.tag)
            if tag == "name":
                name = (child.text or "").strip()
            elif tag == "version":
                version = (child.text or "").strip()
            elif tag == "priorVersions" and not prior:
                prior = [clip((v.text or "").strip(), 40) for v in child][:40]
        if name and version:
            versions.append(clip(f"{name}@{version}", 80))
            if name == "urn:vim25" and current is None:
                current = clip(version, 40)
        if len(versions) >= 20:
            break
    if not versions:
        return None
    return {"api_version": current or versions[0].split("@", 1)[-1], "api_versions": versions, "prior_versions": prior}


def parse_service_content(body: bytes) -> dict[str, Any] | None:
    """{'full_name', 'api_version', 'api_type'} from a RetrieveServiceContentResponse."""
    root = safe_xml(body)
    if root is None:
        return None
    for element in root.iter():
        if local_name(element.tag) != "about":
            continue
        fields = {local_name(c.tag): (c.text or "").strip() for c in element}
        if fields.get("apiVersion") or fields.get("fullName"):
            return {
                "full_name": clip(fields.get("fullName", ""), 120),
                "api_version": clip(fields.get("apiVersion", ""), 40),
                "api_type": clip(fields.get("apiType", ""), 40),
            }
    return None


def _said(response: HttpResponse | None, error: Outcome | None) -> str:
    if response is not None:
        server = response.header("server")
        return f"{response.status} {response.reason}".strip() + (f" (Server: {clip(server, 60)})" if server else "")
    return clip(error.detail, 160) if error is not None else "nothing"


@register
class VsphereSdkProbe(ProxyAware, Probe):
    name = "vsphere"
    transports = (Transport.TCP,)
    summary = "vSphere SDK: /sdk/vimServiceVersions.xml or RetrieveServiceContent over HTTPS"
    exchanges = 6

    async def run(self, ctx: ProbeContext) -> Outcome:
        web = WebClient(ctx, tls=True)
        response = await web.request("GET", VERSIONS_PATH)  # non-HTTP ends the probe here
        if response.status == 200 and (info := parse_service_versions(response.body)):
            return web.finish(self._passed(ctx, web, response, "vimServiceVersions.xml", info))
        first = response
        second: HttpResponse | None = None
        error: Outcome | None = None
        try:
            second = await web.request(
                "POST", SDK_PATH, body=RETRIEVE_SERVICE_CONTENT,
                headers=(("Content-Type", "text/xml; charset=utf-8"), ("SOAPAction", '"urn:vim25/6.0"')),
            )  # fmt: skip
        except ProbeError as exc:
            if exc.outcome.reason is not Reason.PROTOCOL:
                raise
            error = exc.outcome
        if second is not None and (info := parse_service_content(second.body)):
            return web.finish(self._passed(ctx, web, second, "RetrieveServiceContent", info))
        return web.finish(
            failed(
                Reason.PROTOCOL,
                f"HTTPS answers on {ctx.where()}, but not as a vSphere SDK: GET {VERSIONS_PATH} → "
                f"{_said(first, None)}; POST {SDK_PATH} RetrieveServiceContent → {_said(second, error)} "
                "— check that this is a vCenter Server or ESXi host and that /sdk is not blocked "
                "by a reverse proxy",
                **first.evidence(),
            )
        )

    @staticmethod
    def _passed(
        ctx: ProbeContext, web: WebClient, response: HttpResponse, how: str, info: dict[str, Any]
    ) -> Outcome:
        product = info.get("full_name") or f"vSphere API {info.get('api_version')}"
        tls = f"; {tls_summary(ctx, web.session)}" if web.session is not None else ""
        return passed(
            f"vSphere SDK answers on {ctx.where()}: {product} ({how}){tls}",
            **response.evidence(),
            **info,
        )

    def summarize(self, evidence: Mapping[str, Any]) -> str:
        return summarize_evidence(evidence)
