"""WinRM (TCP 5985 HTTP, 5986 HTTPS): a WS-Management Identify on /wsman.

DMTF DSP0226 section 11: an Identify without credentials (header
``WSMANIDENTIFY: unauthenticated``, as ``Test-WSMan`` sends it) is answered with an
IdentifyResponse naming the product vendor and version. Windows often refuses
anonymous Identify: a ``401`` on /wsman offering Negotiate or Kerberos (or NTLM,
CredSSP) is WinRM answering too and passes, with the offered schemes as evidence.
Anything else (404, another web server, not HTTP) fails with reason `protocol`.
On HTTPS the TLS version and certificate are evidence; certificate problems turn
a pass into warn `certificate`, a failed handshake is fail `tls`.

Option ``tls`` (bool) overrides the port's default (5986 = HTTPS, else HTTP);
``path`` (default /wsman) for listeners with a custom URL prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scanner.models import Reason, Transport
from scanner.probes._options import option
from scanner.probes._tls import summarize_evidence
from scanner.probes._web import WebClient, local_name, safe_xml
from scanner.probes.base import Outcome, Probe, ProbeContext, failed, inconclusive, options_of, passed, register
from scanner.wire.http import HttpResponse, clip

SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
WSMID_NS = "http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd"
IDENTIFY = (
    f'<s:Envelope xmlns:s="{SOAP12_NS}" xmlns:wsmid="{WSMID_NS}">'
    "<s:Header/><s:Body><wsmid:Identify/></s:Body></s:Envelope>"
).encode()
WINRM_SCHEMES = ("negotiate", "kerberos", "ntlm", "credssp")
MAX_IDENTIFY_BODY = 64 * 1024


def auth_schemes(response: HttpResponse) -> list[str]:
    """The scheme names of every WWW-Authenticate header (tokens dropped), in order."""
    out: list[str] = []
    for value in response.header_all("www-authenticate"):
        for part in value.split(","):
            word = part.strip().split(" ", 1)[0]
            if word and "=" not in word and word not in out:
                out.append(clip(word, 40))
    return out[:10]


def parse_identify(body: bytes) -> dict[str, str] | None:
    """ProtocolVersion/ProductVendor/ProductVersion of an IdentifyResponse, or None."""
    root = safe_xml(body, MAX_IDENTIFY_BODY)
    if root is None or local_name(root.tag) != "Envelope":
        return None
    for element in root.iter():
        if local_name(element.tag) == "IdentifyResponse":
            found: dict[str, str] = {}
            for child in element:
                key = local_name(child.tag)
                if key in ("ProtocolVersion", "ProductVendor", "ProductVersion"):
                    found[key] = clip((child.text or "").strip(), 200)
            return found
    return None


@dataclass(frozen=True)
class WinRmOptions:
    tls: bool | None = option(None, "HTTPS; unset: on port 5986")
    path: str = option("/wsman", "the WS-Management path")

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or any(c in self.path for c in " \r\n"):
            raise ValueError("winrm: option 'path' must be an absolute path such as /wsman")


@register
class WinRmProbe(Probe):
    name = "winrm"
    transports = (Transport.TCP,)
    summary = "WinRM: WS-Management Identify on /wsman (HTTP 5985 / HTTPS 5986), auth schemes, TLS"
    exchanges = 3

    Options = WinRmOptions

    async def run(self, ctx: ProbeContext) -> Outcome:
        opts = options_of(ctx, WinRmOptions)
        tls = ctx.port == 5986 if opts.tls is None else opts.tls
        path = opts.path
        web = WebClient(ctx, tls=tls)
        response = await web.request(
            "POST", path,
            headers=(
                ("Content-Type", "application/soap+xml;charset=UTF-8"),
                ("WSMANIDENTIFY", "unauthenticated"),
            ),
            body=IDENTIFY, max_body=MAX_IDENTIFY_BODY,
        )  # fmt: skip
        return web.finish(self._judge(ctx, response, tls, path))

    def _judge(self, ctx: ProbeContext, response: HttpResponse, tls: bool, path: str) -> Outcome:
        scheme = "HTTPS" if tls else "HTTP"
        evidence: dict[str, Any] = {"scheme": scheme.lower(), **response.evidence()}
        schemes = auth_schemes(response)
        if schemes:
            evidence["auth_schemes"] = schemes
        where = f"{scheme} {ctx.port} on {ctx.host}"
        if response.status == 200:
            identity = parse_identify(response.body)
            if identity is None:
                return failed(
                    Reason.PROTOCOL,
                    f"{where} answered 200 to a WS-Management Identify on {path} with something that is "
                    "not an IdentifyResponse: a web server, but not WinRM",
                    **evidence,
                )
            vendor = identity.get("ProductVendor", "")
            version = identity.get("ProductVersion", "")
            evidence.update(
                product_vendor=vendor, product_version=version, protocol_version=identity.get("ProtocolVersion", "")
            )
            return passed(
                f"WinRM on {where} answered a WS-Management Identify ({vendor} {version})".strip(), **evidence
            )
        if response.status == 401:
            offered = [s for s in schemes if s.lower() in WINRM_SCHEMES]
            if offered:
                return passed(
                    f"WinRM on {where} answers on {path} and asks for authentication ({', '.join(offered)}); "
                    "anonymous Identify is refused, as Windows does by default",
                    **evidence,
                )
            if schemes:
                return inconclusive(
                    Reason.PROTOCOL,
                    f"{where} answers 401 on {path} offering only {', '.join(schemes)}: not the Negotiate/"
                    "Kerberos a WinRM listener offers by default, so WinRM cannot be confirmed",
                    **evidence,
                )
            return failed(
                Reason.PROTOCOL,
                f"{where} answers 401 on {path} without any WWW-Authenticate scheme: not WinRM",
                **evidence,
            )
        server = response.header("server")
        return failed(
            Reason.PROTOCOL,
            f"{where} is an HTTP server (status {response.status}"
            + (f", {clip(server, 60)}" if server else "")
            + f") without WS-Management on {path}: WinRM does not listen there",
            **evidence,
        )

    def summarize(self, evidence: Mapping[str, Any]) -> str:
        return summarize_evidence(evidence)
