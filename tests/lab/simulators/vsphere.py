"""vSphere SDK simulator: stands in for the vSphere Web Services SDK endpoint of VMware
vCenter Server 8.0.2 (``/sdk`` behind envoy on HTTPS 443); with ``api_type="HostAgent"``
it answers as an ESXi host does.

Bytes followed (vSphere Web Services API reference, vim25 namespace; the shapes vcsim
and pyVmomi rely on):

- ``GET /sdk/vimServiceVersions.xml``: the namespace list
  ``<namespaces version="1.0"><namespace><name>urn:vim25</name><version>8.0.2.0</version>
  <priorVersions><version>8.0.1.0</version>...`` as vCenter 8.0.2 returns it (text/xml,
  no credentials needed).
- ``GET /sdk/vimService.wsdl``: the service WSDL (``urn:vim25Service``, importing
  ``vim.wsdl``, port ``VimPort`` at ``https://localhost/sdk/vimService``).
- ``POST /sdk`` with a SOAP 1.1 envelope whose Body holds ``RetrieveServiceContent``
  (``urn:vim25``, ``_this`` = ``ServiceInstance``): ``RetrieveServiceContentResponse``
  with a ServiceContent whose ``about`` (AboutInfo) lists, in WSDL order, name,
  fullName ("VMware vCenter Server 8.0.2 build-22385739"), vendor, version, build,
  localeVersion, localeBuild, osType, productLineId, apiType ("VirtualCenter"),
  apiVersion, instanceUuid, licenseProductName, licenseProductVersion. No login is
  needed for this call, as on the real server.
- Any other SOAP method without a session: HTTP 500 with a ``ServerFaultCode`` fault and
  a ``NotAuthenticatedFault`` detail; a body that is not a SOAP envelope: HTTP 500 with
  an ``InvalidRequestFault`` detail. Everything else: 404.

    async with VsphereServer(ssl_context=ctx) as srv: ...
    python -m tests.lab.simulators vsphere --bind ADDR --port 443 --cert C --key K \
        [--version 8.0.2 --build 22385739 --api-version 8.0.2.0]
"""

from __future__ import annotations

import ssl
import uuid
import xml.etree.ElementTree as ET
from typing import Any

from . import HttpRequest, HttpResponse, HttpSimulator

SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
VIM25_NS = "urn:vim25"
XML_TYPE = ("Content-Type", "text/xml; charset=utf-8")

PRIOR_VERSIONS_8_0_2 = (
    "8.0.1.0", "8.0.0.2", "8.0.0.1", "8.0.0.0", "7.0.3.2", "7.0.3.1", "7.0.3.0",
    "7.0.2.1", "7.0.2.0", "7.0.1.1", "7.0.1.0", "7.0.0.2", "7.0.0.1", "7.0.0.0",
    "6.9.1", "6.8.7", "6.7.3", "6.7.2", "6.7.1", "6.7", "6.5", "6.0", "5.5", "5.1",
    "5.0", "4.1", "4.0",
)  # fmt: skip

_ENVELOPE_OPEN = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/"\n'
    ' xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"\n'
    ' xmlns:xsd="http://www.w3.org/2001/XMLSchema"\n'
    ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n<soapenv:Body>\n'
)
_ENVELOPE_CLOSE = "</soapenv:Body>\n</soapenv:Envelope>"

WSDL = (
    b'<?xml version="1.0" encoding="UTF-8" ?>\n<!--\n'
    b"   Copyright 2005-2023 VMware, Inc.  All rights reserved.\n-->\n"
    b'<definitions targetNamespace="urn:vim25Service"\n'
    b'   xmlns="http://schemas.xmlsoap.org/wsdl/"\n'
    b'   xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"\n'
    b'   xmlns:interface="urn:vim25"\n>\n'
    b'   <import location="vim.wsdl" namespace="urn:vim25" />\n'
    b'   <service name="VimService">\n'
    b'      <port binding="interface:VimBinding" name="VimPort">\n'
    b'         <soap:address location="https://localhost/sdk/vimService" />\n'
    b"      </port>\n   </service>\n</definitions>\n"
)


def service_versions_xml(api_version: str, prior: tuple[str, ...]) -> bytes:
    prior_xml = "".join(f"<version>{v}</version>" for v in prior)
    return (
        '<?xml version="1.0" encoding="UTF-8" ?>\n<!--\n'
        "   Copyright 2008-2023 VMware, Inc.  All rights reserved.\n-->\n"
        '<namespaces version="1.0">\n <namespace>\n  <name>urn:vim25</name>\n'
        f"  <version>{api_version}</version>\n"
        f"  <priorVersions>{prior_xml}</priorVersions>\n"
        " </namespace>\n</namespaces>\n"
    ).encode()


def soap_method(body: bytes) -> tuple[str, str] | None:
    """(namespace, local name) of the first element in a SOAP 1.1 Body, or None."""
    if not body or b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        return None
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    if root.tag != f"{{{SOAP11_NS}}}Envelope":
        return None
    soap_body = root.find(f"{{{SOAP11_NS}}}Body")
    if soap_body is None or len(soap_body) == 0:
        return None
    tag = soap_body[0].tag
    if not tag.startswith("{"):
        return "", tag
    namespace, _, local = tag[1:].partition("}")
    return namespace, local


def fault_xml(detail: str) -> bytes:
    return (
        _ENVELOPE_OPEN
        + "<soapenv:Fault>\n<faultcode>ServerFaultCode</faultcode>\n<faultstring></faultstring>\n"
        + f"<detail>{detail}</detail>\n</soapenv:Fault>\n"
        + _ENVELOPE_CLOSE
    ).encode()


class VsphereServer(HttpSimulator):
    """vCenter's ``/sdk`` endpoint (use ``ssl_context`` for HTTPS as on the real one)."""

    name = "vsphere"
    server_header = "envoy"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        version: str = "8.0.2",
        build: str = "22385739",
        api_version: str = "8.0.2.0",
        prior_versions: tuple[str, ...] = PRIOR_VERSIONS_8_0_2,
        api_type: str = "VirtualCenter",
        instance_uuid: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(host, port, ssl_context=ssl_context, **kwargs)
        self.version = version
        self.build = build
        self.api_version = api_version
        self.prior_versions = prior_versions
        self.api_type = api_type
        self.instance_uuid = instance_uuid or str(uuid.uuid4())

    @property
    def product_name(self) -> str:
        return "VMware vCenter Server" if self.api_type == "VirtualCenter" else "VMware ESXi"

    def service_content_xml(self) -> bytes:
        vc = self.api_type == "VirtualCenter"
        about = (
            f"<about><name>{self.product_name}</name>"
            f"<fullName>{self.product_name} {self.version} build-{self.build}</fullName>"
            "<vendor>VMware, Inc.</vendor>"
            f"<version>{self.version}</version><build>{self.build}</build>"
            "<localeVersion>INTL</localeVersion><localeBuild>000</localeBuild>"
            f"<osType>{'linux-x64' if vc else 'vmnix-x86'}</osType>"
            f"<productLineId>{'vpx' if vc else 'embeddedEsx'}</productLineId>"
            f"<apiType>{self.api_type}</apiType><apiVersion>{self.api_version}</apiVersion>"
            + (f"<instanceUuid>{self.instance_uuid}</instanceUuid>" if vc else "")
            + f"<licenseProductName>{'VMware VirtualCenter Server' if vc else 'VMware ESX Server'}"
            "</licenseProductName>"
            f"<licenseProductVersion>{self.version.split('.')[0]}.0</licenseProductVersion>"
            "</about>"
        )
        root = "group-d1" if vc else "ha-folder-root"
        returnval = (
            f'<returnval><rootFolder type="Folder">{root}</rootFolder>'
            '<propertyCollector type="PropertyCollector">propertyCollector</propertyCollector>'
            '<viewManager type="ViewManager">ViewManager</viewManager>'
            + about
            + '<setting type="OptionManager">VpxSettings</setting>'
            '<userDirectory type="UserDirectory">UserDirectory</userDirectory>'
            '<sessionManager type="SessionManager">SessionManager</sessionManager>'
            '<authorizationManager type="AuthorizationManager">AuthorizationManager'
            "</authorizationManager>"
            '<searchIndex type="SearchIndex">SearchIndex</searchIndex>'
            "</returnval>"
        )
        return (
            _ENVELOPE_OPEN
            + f'<RetrieveServiceContentResponse xmlns="urn:vim25">{returnval}'
            + "</RetrieveServiceContentResponse>\n"
            + _ENVELOPE_CLOSE
        ).encode()

    def respond(self, request: HttpRequest) -> HttpResponse:
        path = request.path
        if request.method in ("GET", "HEAD"):
            if path == "/sdk/vimServiceVersions.xml":
                body = service_versions_xml(self.api_version, self.prior_versions)
                return HttpResponse(200, body, [XML_TYPE])
            if path == "/sdk/vimService.wsdl":
                return HttpResponse(200, WSDL, [XML_TYPE])
        if request.method == "POST" and path in ("/sdk", "/sdk/", "/sdk/vimService"):
            method = soap_method(request.body)
            if method is None:
                detail = '<InvalidRequestFault xmlns="urn:vim25" xsi:type="InvalidRequest"></InvalidRequestFault>'
                return HttpResponse(500, fault_xml(detail), [XML_TYPE])
            if method == (VIM25_NS, "RetrieveServiceContent"):
                return HttpResponse(200, self.service_content_xml(), [XML_TYPE])
            detail = (
                '<NotAuthenticatedFault xmlns="urn:vim25" xsi:type="NotAuthenticated">'
                '<object type="Folder">group-d1</object><privilegeId>System.View</privilegeId>'
                "</NotAuthenticatedFault>"
            )
            return HttpResponse(500, fault_xml(detail), [XML_TYPE])
        return HttpResponse(404, b"", [])
