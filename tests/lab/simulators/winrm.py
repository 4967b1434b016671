"""WinRM simulator: stands in for the Windows Remote Management service (WinRM 3.0 on
Windows Server 2019, behind HTTP.sys) on 5985 (HTTP) and 5986 (HTTPS).

Bytes followed:

- DMTF DSP0226 (WS-Management 1.x) section 11 "Metadata and Discovery": the Identify
  request is a SOAP 1.2 envelope whose Body holds ``wsmid:Identify``
  (``http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd``); the answer is
  ``wsmid:IdentifyResponse`` with ``ProtocolVersion``, ``ProductVendor``,
  ``ProductVersion`` (the wsmanidentity.xsd schema), ``Content-Type:
  application/soap+xml;charset=UTF-8``, as WinRM sends it.
- Windows answers an Identify without credentials only when the client says so with the
  HTTP header ``WSMANIDENTIFY: unauthenticated`` (what ``Test-WSMan`` and
  ``WSManFlagUseNoAuthentication`` send); without it, or for any other request without
  credentials, ``/wsman`` answers ``401`` with ``WWW-Authenticate: Negotiate`` and
  ``WWW-Authenticate: Kerberos`` (the default service auth: Basic and CredSSP off),
  ``Server: Microsoft-HTTPAPI/2.0`` and an empty body. Unauthenticated Identify hides
  the OS version (``OS: 0.0.0 SP: 0.0 Stack: 3.0``, per "Detecting Whether a Remote
  Computer Supports WS-Management Protocol"); the lab may set any string.
- Other paths get HTTP.sys's ``404 Not Found`` HTML page.

Modes (``identify``): ``"header"`` (Windows behaviour, default), ``"any"`` (answer any
Identify body without credentials, as some non-Windows WS-Man stacks do), ``"off"``
(401 for everything, as with anonymous Identify disabled behind a proxy).

Credentials are never checked: a request that carries ``Authorization`` gets 401 again
(the simulator cannot complete SPNEGO), which is what a wrong ticket earns on Windows.

    async with WinRmServer(port=0) as srv: ...
    python -m tests.lab.simulators winrm --bind ADDR --port 5985 [--cert C --key K] \
        [--identify header|any|off] [--product-version "OS: 10.0.17763 SP: 0.0 Stack: 3.0"]
"""

from __future__ import annotations

import ssl
import xml.etree.ElementTree as ET
from typing import Any, Literal

from . import HttpRequest, HttpResponse, HttpSimulator

SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
WSMID_NS = "http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd"
WSMAN_PROTOCOL_VERSION = "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd"
UNAUTHENTICATED_PRODUCT_VERSION = "OS: 0.0.0 SP: 0.0 Stack: 3.0"
SERVER_2019_PRODUCT_VERSION = "OS: 10.0.17763 SP: 0.0 Stack: 3.0"

IdentifyMode = Literal["header", "any", "off"]

_NOT_FOUND_HTML = (
    b'<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN""http://www.w3.org/TR/html4/strict.dtd">\r\n'
    b"<HTML><HEAD><TITLE>Not Found</TITLE>\r\n"
    b'<META HTTP-EQUIV="Content-Type" Content="text/html; charset=us-ascii"></HEAD>\r\n'
    b"<BODY><h2>Not Found</h2>\r\n"
    b"<hr><p>HTTP Error 404. The requested resource is not found.</p>\r\n"
    b"</BODY></HTML>\r\n"
)


def identify_response_xml(product_version: str, vendor: str = "Microsoft Corporation") -> bytes:
    """The IdentifyResponse envelope exactly as WinRM serialises it (one line)."""
    return (
        f'<s:Envelope xml:lang="en-US" xmlns:s="{SOAP12_NS}"><s:Header/><s:Body>'
        f'<wsmid:IdentifyResponse xmlns:wsmid="{WSMID_NS}">'
        f"<wsmid:ProtocolVersion>{WSMAN_PROTOCOL_VERSION}</wsmid:ProtocolVersion>"
        f"<wsmid:ProductVendor>{_xml_text(vendor)}</wsmid:ProductVendor>"
        f"<wsmid:ProductVersion>{_xml_text(product_version)}</wsmid:ProductVersion>"
        "</wsmid:IdentifyResponse></s:Body></s:Envelope>"
    ).encode()


def is_identify_request(body: bytes) -> bool:
    """True when ``body`` is a SOAP 1.2 envelope whose Body's first child is Identify."""
    if not body or b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        return False  # DTDs have no place in WS-Man; refuse entity tricks outright
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return False
    if root.tag != f"{{{SOAP12_NS}}}Envelope":
        return False
    soap_body = root.find(f"{{{SOAP12_NS}}}Body")
    if soap_body is None or len(soap_body) == 0:
        return False
    return soap_body[0].tag == f"{{{WSMID_NS}}}Identify"


def _xml_text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class WinRmServer(HttpSimulator):
    """WS-Management listener on ``/wsman`` (HTTP, or HTTPS with ``ssl_context``)."""

    name = "winrm"
    server_header = "Microsoft-HTTPAPI/2.0"
    max_body = 512 * 1024  # WinRM's MaxEnvelopeSizekb default is 500

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        identify: IdentifyMode = "header",
        product_version: str = UNAUTHENTICATED_PRODUCT_VERSION,
        product_vendor: str = "Microsoft Corporation",
        auth_schemes: tuple[str, ...] = ("Negotiate", "Kerberos"),
        **kwargs: Any,
    ) -> None:
        super().__init__(host, port, ssl_context=ssl_context, **kwargs)
        self.identify = identify
        self.product_version = product_version
        self.product_vendor = product_vendor
        self.auth_schemes = auth_schemes

    def respond(self, request: HttpRequest) -> HttpResponse:
        if request.path.lower() != "/wsman":
            return HttpResponse(404, _NOT_FOUND_HTML, [("Content-Type", "text/html; charset=us-ascii")])
        if (
            request.method == "POST"
            and request.header("authorization") is None
            and self._identify_allowed(request)
            and is_identify_request(request.body)
        ):
            body = identify_response_xml(self.product_version, self.product_vendor)
            return HttpResponse(200, body, [("Content-Type", "application/soap+xml;charset=UTF-8")])
        return self.unauthorized()

    def unauthorized(self) -> HttpResponse:
        headers = [("WWW-Authenticate", scheme) for scheme in self.auth_schemes]
        return HttpResponse(401, b"", headers)

    def _identify_allowed(self, request: HttpRequest) -> bool:
        if self.identify == "off":
            return False
        if self.identify == "any":
            return True
        return (request.header("wsmanidentify") or "").lower() == "unauthenticated"
