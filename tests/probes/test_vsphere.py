"""The `vsphere` probe against the vSphere SDK simulator (tests/lab/simulators/vsphere.py,
vCenter 8.0.2 /sdk bytes) over TLS with lab certificates, a variant without
vimServiceVersions.xml (RetrieveServiceContent fallback), other HTTPS servers, XML
bombs, and hostile peers."""

from __future__ import annotations

import ssl
from collections.abc import Callable

import pytest

from scanner.models import Reason, Status
from scanner.probes.vsphere import parse_service_content, parse_service_versions
from tests.lab.simulators import HttpRequest, HttpResponse, server_ssl_context
from tests.lab.simulators.papi import PapiServer
from tests.lab.simulators.vsphere import VsphereServer
from tests.lab.tls import TlsCerts, TlsPeer
from tests.probes.test_tls import closed_port, probe, settings_for, timed


@pytest.fixture
def tls_context(loopback_tls_certs: TlsCerts) -> ssl.SSLContext:
    return server_ssl_context(str(loopback_tls_certs.cert("valid")), str(loopback_tls_certs.key("valid")))


class NoVersionsFile(VsphereServer):
    """An SDK endpoint whose vimServiceVersions.xml is hidden (404), e.g. by a proxy rule."""

    def respond(self, request: HttpRequest) -> HttpResponse:
        if request.path == "/sdk/vimServiceVersions.xml":
            return HttpResponse(404, b"", [])
        return super().respond(request)


class XmlBomb(VsphereServer):
    """Answers both SDK requests with a billion-laughs document."""

    def respond(self, request: HttpRequest) -> HttpResponse:
        bomb = (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i else b"&lol;") * 10) for i in range(1, 10))
            + b"]><namespaces><namespace><name>urn:vim25</name><version>&lol9;</version></namespace></namespaces>"
        )
        return HttpResponse(200, bomb, [("Content-Type", "text/xml")])


async def test_vcenter_sdk_passes_with_api_versions(tls_context: ssl.SSLContext, loopback_tls_certs: TlsCerts) -> None:
    async with VsphereServer(ssl_context=tls_context) as srv:
        result = await probe("vsphere", srv.port, settings=settings_for(loopback_tls_certs))
    assert result.status is Status.PASS, result.detail
    assert result.evidence["api_version"] == srv.api_version
    assert f"urn:vim25@{srv.api_version}" in result.evidence["api_versions"]
    assert "7.0.3.0" in result.evidence["prior_versions"]
    assert result.evidence["server"] == "envoy" and result.evidence["trusted"] is True


async def test_retrieve_service_content_is_the_fallback(
    tls_context: ssl.SSLContext, loopback_tls_certs: TlsCerts
) -> None:
    async with NoVersionsFile(ssl_context=tls_context, api_type="HostAgent", version="7.0.3") as srv:
        result = await probe("vsphere", srv.port, settings=settings_for(loopback_tls_certs))
    assert result.status is Status.PASS, result.detail
    assert result.evidence["full_name"].startswith("VMware ESXi 7.0.3")
    assert result.evidence["api_type"] == "HostAgent"
    assert "RetrieveServiceContent" in result.detail


async def test_self_signed_vcenter_warns_certificate(loopback_tls_certs: TlsCerts) -> None:
    context = server_ssl_context(str(loopback_tls_certs.cert("self_signed")), str(loopback_tls_certs.key("self_signed")))
    async with VsphereServer(ssl_context=context) as srv:
        result = await probe("vsphere", srv.port, settings=settings_for(loopback_tls_certs))
    assert result.status is Status.WARN and result.reason is Reason.CERTIFICATE
    assert result.evidence["api_version"] == srv.api_version


async def test_other_https_server_is_not_a_vsphere_sdk(
    tls_context: ssl.SSLContext, loopback_tls_certs: TlsCerts
) -> None:
    async with PapiServer(ssl_context=tls_context) as srv:
        result = await probe("vsphere", srv.port, settings=settings_for(loopback_tls_certs))
    assert result.status is Status.FAIL and result.reason is Reason.PROTOCOL
    assert "not as a vSphere SDK" in result.detail and "404" in result.detail


async def test_xml_bomb_is_refused_not_expanded(tls_context: ssl.SSLContext, loopback_tls_certs: TlsCerts) -> None:
    async with XmlBomb(ssl_context=tls_context) as srv:
        result = await timed(probe("vsphere", srv.port, settings=settings_for(loopback_tls_certs)), 4)
    assert result.status is Status.FAIL and result.reason is Reason.PROTOCOL


def test_parsers_reject_entities_and_read_real_shapes() -> None:
    from tests.lab.simulators.vsphere import service_versions_xml

    info = parse_service_versions(service_versions_xml("8.0.2.0", ("8.0.1.0",)))
    assert info == {"api_version": "8.0.2.0", "api_versions": ["urn:vim25@8.0.2.0"], "prior_versions": ["8.0.1.0"]}
    assert parse_service_versions(b'<!DOCTYPE x [<!ENTITY a "b">]><namespaces/>') is None
    assert parse_service_content(b"<not-xml") is None


async def test_closed_port_is_refused() -> None:
    result = await timed(probe("vsphere", closed_port()), 3)
    assert result.status is Status.FAIL and result.reason is Reason.REFUSED


async def test_plain_tls_service_fails_protocol(loopback_tls_peer: Callable[..., TlsPeer], loopback_tls_certs: TlsCerts) -> None:
    peer = loopback_tls_peer("valid", http=False)
    result = await timed(probe("vsphere", peer.port, settings=settings_for(loopback_tls_certs)), 5)
    assert result.status is Status.FAIL and result.reason is Reason.PROTOCOL


@pytest.mark.parametrize("mode", ["garbage", "truncated", "oversized", "drip", "silent"])
async def test_hostile_peer_fails_within_the_timeout(hostile: Callable[..., tuple[str, int]], mode: str) -> None:
    _, port = hostile(mode, flavor="tls", cap=8 * 1024 * 1024)
    result = await timed(probe("vsphere", port), 5)
    if mode in ("silent", "drip"):  # accepted, then no complete handshake: slowness or not TLS, never a verdict
        assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
        assert "does not speak TLS" in result.detail
    else:
        assert result.status is Status.FAIL and result.reason is Reason.TLS


