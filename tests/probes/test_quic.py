"""The `quic` probe against aioquic (a real QUIC v1 implementation, used here only as the
test peer: Initial answers, Retry, and Version Negotiation when it speaks only QUIC v2),
plus a closed UDP port (ICMP port-unreachable on loopback), a silent UDP socket, and
hostile UDP peers (tests/lab/hostile.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from scanner.models import Reason, Status
from scanner.probes.base import Settings
from scanner.probes.quic import client_initial_keys, parse_reply
from scanner.testing import make_context
from tests.lab.tls import TlsCerts
from tests.probes.test_tls import closed_port, probe, timed

aioquic = pytest.importorskip("aioquic")


@pytest.fixture
async def quic_server(loopback_tls_certs: TlsCerts) -> AsyncIterator[Callable[..., Any]]:
    from aioquic.asyncio import serve
    from aioquic.quic.configuration import QuicConfiguration

    servers: list[Any] = []

    async def start(retry: bool = False, versions: list[int] | None = None) -> int:
        config = QuicConfiguration(is_client=False, alpn_protocols=["h3"])
        if versions is not None:
            config.supported_versions = versions
        config.load_cert_chain(str(loopback_tls_certs.cert("valid")), str(loopback_tls_certs.key("valid")))
        server = await serve("127.0.0.1", 0, configuration=config, retry=retry)
        servers.append(server)
        transport = server._transport
        assert transport is not None
        return int(transport.get_extra_info("sockname")[1])

    yield start
    for server in servers:
        server.close()


async def quic(port: int, timeout: float = 1.0) -> Any:
    """Run the probe with one retry; it must end within both tries plus a margin."""
    settings = Settings(timeout=timeout, retries=1)
    return await timed(
        probe("quic", port, protocol="udp", role="entra-id-endpoints", settings=settings), 2 * timeout + 2
    )


async def test_quic_server_answers_our_initial(quic_server: Callable[..., Any]) -> None:
    port = await quic_server()
    result = await quic(port)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["packet_type"] == "Initial" and result.evidence["version"] == "QUIC v1"


async def test_retry_proves_quic(quic_server: Callable[..., Any]) -> None:
    port = await quic_server(retry=True)
    result = await quic(port)
    assert result.status is Status.PASS and result.evidence["packet_type"] == "Retry"


async def test_version_negotiation_proves_quic(quic_server: Callable[..., Any]) -> None:
    from aioquic.quic.packet import QuicProtocolVersion

    port = await quic_server(versions=[QuicProtocolVersion.VERSION_2])
    result = await quic(port)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["packet_type"] == "Version Negotiation"
    assert "QUIC v2" in result.evidence["versions"]


async def test_closed_udp_port_is_refused() -> None:
    result = await quic(closed_port())
    assert result.status is Status.FAIL and result.reason is Reason.REFUSED


@pytest.fixture
def silent_udp() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


async def test_silence_is_inconclusive_never_pass(silent_udp: int) -> None:
    result = await quic(silent_udp, timeout=0.5)
    assert result.status is Status.INCONCLUSIVE and result.reason is Reason.NO_ANSWER


@pytest.mark.parametrize("mode", ["udp-garbage", "udp-oversized"])
async def test_hostile_udp_peer_is_not_quic(hostile: Callable[..., tuple[str, int]], mode: str) -> None:
    _, port = hostile(mode, cap=1024 * 1024)
    result = await quic(port)
    assert result.status is Status.FAIL and result.reason is Reason.PROTOCOL, result.detail


async def test_long_header_for_another_connection_is_not_proof() -> None:
    """A peer echoing our own packet back: long header, but addressed to its DCID, not our SCID."""

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.transport.sendto(data, addr)  # type: ignore[attr-defined]

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    try:
        result = await quic(transport.get_extra_info("sockname")[1])
    finally:
        transport.close()
    assert result.status is Status.FAIL and result.reason is Reason.PROTOCOL


def test_initial_keys_match_rfc_9001_appendix_a() -> None:
    key, iv, hp = client_initial_keys(bytes.fromhex("8394c8f03e515708"))
    assert key.hex() == "1f369613dd76d5467730efcbe3b1a22d"
    assert iv.hex() == "fa044b2f42a3fd3b46fb255c"
    assert hp.hex() == "9f50449e04a0e810283a1e9933adedd2"


async def test_port_level_udp_443_sends_a_quic_initial() -> None:
    from scanner.probes.udp import payload_for

    ctx = make_context("login.lab.test", "127.0.0.1", 443, "udp", probe="udp")
    payload = payload_for(ctx)
    assert len(payload) == 1200 and payload[0] & 0xC0 == 0xC0 and payload[1:5] == b"\x00\x00\x00\x01"
    assert parse_reply(payload[:7], b"", b"") is None
