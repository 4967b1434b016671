"""The `papi` probe against the PowerScale PAPI simulator (tests/lab/simulators/papi.py,
OneFS 9.5 /platform bytes behind Apache) over TLS, plus other servers and hostile peers."""

from __future__ import annotations

import ssl
from collections.abc import Callable

import pytest

from scanner.models import Reason, Status
from tests.lab.simulators import server_ssl_context
from tests.lab.simulators.papi import PapiServer
from tests.lab.simulators.vsphere import VsphereServer
from tests.lab.tls import TlsCerts, TlsPeer
from tests.probes.test_tls import closed_port, probe, settings_for, timed


@pytest.fixture
def tls_context(loopback_tls_certs: TlsCerts) -> ssl.SSLContext:
    return server_ssl_context(str(loopback_tls_certs.cert("valid")), str(loopback_tls_certs.key("valid")))


async def test_unauthorized_papi_answer_passes(tls_context: ssl.SSLContext, loopback_tls_certs: TlsCerts) -> None:
    async with PapiServer(ssl_context=tls_context) as srv:
        result = await probe("papi", srv.port, settings=settings_for(loopback_tls_certs))
    assert result.status is Status.PASS, result.detail
    assert result.evidence["status"] == 401 and result.evidence["papi_error"] == "AEC_UNAUTHORIZED"
    assert result.evidence["server"] == "Apache" and result.evidence["trusted"] is True


async def test_wrong_name_certificate_warns(loopback_tls_certs: TlsCerts) -> None:
    context = server_ssl_context(str(loopback_tls_certs.cert("wrong_name")), str(loopback_tls_certs.key("wrong_name")))
    async with PapiServer(ssl_context=context) as srv:
        result = await probe("papi", srv.port, settings=settings_for(loopback_tls_certs))
    assert result.status is Status.WARN and result.reason is Reason.CERTIFICATE
    assert result.evidence["papi_error"] == "AEC_UNAUTHORIZED"


async def test_other_https_server_fails_protocol(tls_context: ssl.SSLContext, loopback_tls_certs: TlsCerts) -> None:
    async with VsphereServer(ssl_context=tls_context) as srv:
        result = await probe("papi", srv.port, settings=settings_for(loopback_tls_certs))
    assert result.status is Status.FAIL and result.reason is Reason.PROTOCOL
    assert "not as the PowerScale Platform API" in result.detail


async def test_plain_http_papi_reads_no_reply_that_names_not_tls() -> None:
    async with PapiServer() as srv:  # plain HTTP waits for a request line: silence to our ClientHello
        result = await timed(probe("papi", srv.port), 4)
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
    assert "does not speak TLS" in result.detail


async def test_closed_port_is_refused() -> None:
    result = await timed(probe("papi", closed_port()), 3)
    assert result.status is Status.FAIL and result.reason is Reason.REFUSED


async def test_tls_without_http_fails_protocol(loopback_tls_peer: Callable[..., TlsPeer], loopback_tls_certs: TlsCerts) -> None:
    peer = loopback_tls_peer("valid", http=False)
    result = await timed(probe("papi", peer.port, settings=settings_for(loopback_tls_certs)), 5)
    assert result.status is Status.FAIL and result.reason is Reason.PROTOCOL


@pytest.mark.parametrize("mode", ["garbage", "truncated", "oversized", "drip", "silent"])
async def test_hostile_peer_fails_within_the_timeout(hostile: Callable[..., tuple[str, int]], mode: str) -> None:
    _, port = hostile(mode, flavor="tls", cap=8 * 1024 * 1024)
    result = await timed(probe("papi", port), 5)
    if mode in ("silent", "drip"):  # accepted, then no complete handshake: slowness or not TLS, never a verdict
        assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
        assert "does not speak TLS" in result.detail
    else:
        assert result.status is Status.FAIL and result.reason is Reason.TLS
