"""The `ontap` probe against a small ONTAP management simulator defined here (no lab
simulator exists for it): REST ``GET /api/cluster`` answers ``401`` with
``WWW-Authenticate: Basic`` as ONTAP 9 does without credentials; the ONTAPI variant
answers ``POST /servlets/netapp.servlets.admin.XMLrequest_filer`` with
``<!DOCTYPE netapp SYSTEM 'file:/etc/netapp_gx.dtd'><netapp version='1.100' ...>``
(the shape NetApp's own support answers show). Plus other web servers and hostile peers.
"""

from __future__ import annotations

import random
import socket
import ssl
from collections.abc import Callable

import pytest

from scanner.models import Reason, Status
from scanner.probes.ontap import basic_realm
from scanner.wire.http import HttpResponse as ProbeResponse
from tests.lab.simulators import HttpRequest, HttpResponse, HttpSimulator, server_ssl_context
from tests.lab.simulators.papi import PapiServer
from tests.lab.tls import TlsCerts
from tests.probes.test_tls import closed_port, probe, settings_for, timed

ONTAPI_RESULT = (
    b"<?xml version='1.0' encoding='UTF-8' ?>\n"
    b"<!DOCTYPE netapp SYSTEM 'file:/etc/netapp_gx.dtd'>\n"
    b"<netapp version='1.100' xmlns='http://www.netapp.com/filer/admin'>\n"
    b"<results status=\"passed\"><version>NetApp Release 9.1P3: Tue Apr 04 2017</version></results></netapp>"
)


class OntapServer(HttpSimulator):
    """ONTAP management web server: REST (``rest=True``) and/or ONTAPI."""

    name = "ontap"
    server_header = "libzapid-httpd"

    def __init__(self, *args: object, rest: bool = True, ontapi_auth: bool = True, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.rest = rest
        self.ontapi_auth = ontapi_auth

    def respond(self, request: HttpRequest) -> HttpResponse:
        if request.path == "/api/cluster" and self.rest:
            return HttpResponse(401, b"", [("WWW-Authenticate", 'Basic realm="Restricted"')])
        if request.path == "/servlets/netapp.servlets.admin.XMLrequest_filer" and request.method == "POST":
            if self.ontapi_auth:
                return HttpResponse(401, b"", [("WWW-Authenticate", 'Basic realm="Secure Access"')])
            return HttpResponse(200, ONTAPI_RESULT, [("Content-Type", "text/xml")])
        return HttpResponse(404, b"<html>Not Found</html>", [("Content-Type", "text/html")])


@pytest.fixture
def tls_context(loopback_tls_certs: TlsCerts) -> ssl.SSLContext:
    return server_ssl_context(str(loopback_tls_certs.cert("valid")), str(loopback_tls_certs.key("valid")))


async def test_rest_401_basic_passes_over_https(tls_context: ssl.SSLContext, loopback_tls_certs: TlsCerts) -> None:
    async with OntapServer(ssl_context=tls_context) as srv:
        result = await probe("ontap", srv.port, settings=settings_for(loopback_tls_certs))
    assert result.status is Status.PASS, result.detail
    assert result.evidence["api"] == "rest" and result.evidence["realm"] == "Restricted"
    assert result.evidence["trusted"] is True


async def test_ontapi_answer_passes_when_rest_is_absent(tls_context: ssl.SSLContext, loopback_tls_certs: TlsCerts) -> None:
    async with OntapServer(ssl_context=tls_context, rest=False, ontapi_auth=False) as srv:
        result = await probe("ontap", srv.port, settings=settings_for(loopback_tls_certs))
    assert result.status is Status.PASS, result.detail
    assert result.evidence["api"] == "ontapi"
    assert result.evidence["version"].startswith("NetApp Release 9.1P3")


async def test_plain_http_on_port_80_is_used_by_default() -> None:
    address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"
    try:
        with socket.socket() as sock:
            sock.bind((address, 80))
    except OSError as exc:
        pytest.skip(f"cannot bind {address}:80 here ({exc})")
    async with OntapServer(host=address, port=80) as srv:
        result = await probe("ontap", srv.port, address=address)
    assert result.status is Status.PASS, result.detail
    assert "tls_version" not in result.evidence and result.evidence["api"] == "rest"


async def test_other_web_server_warns_that_it_is_not_ontap() -> None:
    async with PapiServer() as srv:  # Apache answering 401 JSON on /platform and 404 elsewhere
        result = await probe("ontap", srv.port, options={"tls": False})
    assert result.status is Status.WARN and result.reason is Reason.PROTOCOL
    assert "not like ONTAP" in result.detail and "404" in result.detail


async def test_closed_port_is_refused() -> None:
    result = await timed(probe("ontap", closed_port()), 3)
    assert result.status is Status.FAIL and result.reason is Reason.REFUSED


@pytest.mark.parametrize(("mode", "flavor"), [("garbage", "http"), ("drip", "http"), ("silent", "http"), ("oversized", "http")])
async def test_hostile_http_peer_fails_within_the_timeout(
    hostile: Callable[..., tuple[str, int]], mode: str, flavor: str
) -> None:
    _, port = hostile(mode, flavor=flavor, cap=8 * 1024 * 1024)
    result = await timed(probe("ontap", port, options={"tls": False}), 5)
    if mode in ("silent", "drip"):  # connected, then no (complete) answer: slowness, not a verdict
        assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
    else:
        assert result.status is Status.FAIL and result.reason is Reason.PROTOCOL, result.detail


@pytest.mark.parametrize("mode", ["garbage", "truncated", "drip"])
async def test_hostile_tls_peer_fails_within_the_timeout(hostile: Callable[..., tuple[str, int]], mode: str) -> None:
    _, port = hostile(mode, flavor="tls")
    result = await timed(probe("ontap", port), 5)
    if mode in ("silent", "drip"):  # accepted, then no complete handshake: slowness or not TLS, never a verdict
        assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
        assert "does not speak TLS" in result.detail
    else:
        assert result.status is Status.FAIL and result.reason is Reason.TLS


def test_basic_realm_reads_only_basic_challenges() -> None:
    def response(status: int, *challenges: str) -> ProbeResponse:
        return ProbeResponse("1.1", status, "", tuple(("www-authenticate", c) for c in challenges))

    assert basic_realm(response(401, 'Negotiate', 'Basic realm="Secure Access"')) == "Secure Access"
    assert basic_realm(response(401, "Negotiate")) is None
    assert basic_realm(response(200, 'Basic realm="x"')) is None
