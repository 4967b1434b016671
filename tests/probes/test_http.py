"""The `http` probe: a real HTTP server (the PAPI simulator's bounded HTTP/1.1 server in
the clear, answering as Apache does), TLS on the port, and hostile peers."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from scanner.models import Reason, Status
from tests.lab.simulators.papi import PapiServer
from tests.lab.tls import TlsPeer
from tests.probes.test_tls import closed_port, probe, timed


async def test_any_http_answer_passes_with_status_and_server() -> None:
    async with PapiServer() as srv:
        result = await probe("http", srv.port, options={"path": "/platform/latest"})
    assert result.status is Status.PASS, result.detail
    assert result.evidence["status"] == 401 and result.evidence["server"] == "Apache"
    assert result.evidence["path"] == "/platform/latest"


async def test_unexpected_status_fails_with_words() -> None:
    async with PapiServer() as srv:
        result = await probe("http", srv.port, options={"expect": [200, 302]})
    assert result.status is Status.FAIL and result.reason is Reason.PROTOCOL
    assert "404" in result.detail and "200 or 302" in result.detail


async def test_tls_only_port_fails_closed_and_says_tls_may_be_required(loopback_tls_peer: Callable[..., TlsPeer]) -> None:
    """openssl s_server closes on a plaintext request without a TLS alert: accepted, then closed."""
    peer = loopback_tls_peer("valid", http=True)
    result = await timed(probe("http", peer.port), 4)
    assert result.status is Status.FAIL and result.reason is Reason.CLOSED
    assert "accepted the connection" in result.detail and "require TLS" in result.detail, result.detail


async def test_tls_record_on_the_port_is_named(hostile: Callable[..., tuple[str, int]]) -> None:
    _, port = hostile("truncated", flavor="tls")  # a ServerHello record start
    result = await timed(probe("http", port), 4)
    assert result.status is Status.FAIL and result.reason is Reason.PROTOCOL
    assert "speaks TLS" in result.detail, result.detail


async def test_closed_port_is_refused() -> None:
    result = await timed(probe("http", closed_port()), 3)
    assert result.status is Status.FAIL and result.reason is Reason.REFUSED


async def test_truncated_body_still_proves_http(hostile: Callable[..., tuple[str, int]]) -> None:
    """Status line and headers arrived whole; the body is not needed to prove HTTP."""
    _, port = hostile("truncated", flavor="http")
    result = await timed(probe("http", port), 4)
    assert result.status is Status.PASS and result.evidence["server"] == "hostile"


@pytest.mark.parametrize(
    ("mode", "flavor"),
    [("garbage", "http"), ("oversized", "http"), ("drip", "http"), ("silent", "http"), ("truncated", "smb")],
)
async def test_hostile_peer_fails_protocol_within_the_timeout(
    hostile: Callable[..., tuple[str, int]], mode: str, flavor: str
) -> None:
    _, port = hostile(mode, flavor=flavor, cap=8 * 1024 * 1024)
    result = await timed(probe("http", port), 5)
    if mode in ("silent", "drip"):  # connected, then no (complete) answer: slowness, not a verdict
        assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
    else:
        assert result.status is Status.FAIL and result.reason is Reason.PROTOCOL, result.detail
