"""discover_domain_controllers: SRV lookup against the lab DC and crafted DNS servers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from scanner.discovery import DiscoveryError, discover_domain_controllers


def srv_answer(query: bytes, targets: list[tuple[int, int, str]], truncated: bool = False) -> bytes:
    import dns.message
    import dns.rrset

    q = dns.message.from_wire(query)
    r = dns.message.make_response(q)
    if truncated:
        r.flags |= 0x0200
        return bytes(r.to_wire())
    rrset = dns.rrset.from_text(q.question[0].name, 600, "IN", "SRV",
                                *(f"{p} {w} 389 {t}." for p, w, t in targets))  # fmt: skip
    r.answer.append(rrset)
    return bytes(r.to_wire())


@contextlib.asynccontextmanager
async def dns_server(udp: Callable[[bytes], bytes], tcp: Callable[[bytes], bytes]) -> AsyncIterator[int]:
    """UDP and TCP on the same loopback port."""
    loop = asyncio.get_running_loop()

    class Udp(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: object) -> None:
            self.transport.sendto(udp(data), addr)  # type: ignore[attr-defined]

    transport, _ = await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = int.from_bytes(await reader.readexactly(2), "big")
        reply = tcp(await reader.readexactly(size))
        writer.write(len(reply).to_bytes(2, "big") + reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield port
    finally:
        server.close()
        transport.close()


async def test_targets_come_sorted_by_priority_then_weight() -> None:
    targets = [(10, 50, "dc3.x.test"), (0, 10, "dc2.x.test"), (0, 90, "dc1.x.test")]
    async with dns_server(lambda q: srv_answer(q, targets), lambda q: b"") as port:
        dcs = await discover_domain_controllers("x.test", "127.0.0.1", 1.0, port=port)
    assert dcs == ["dc1.x.test", "dc2.x.test", "dc3.x.test"]


async def test_truncated_udp_answer_is_asked_again_over_tcp() -> None:
    targets = [(0, 100, "big.x.test")]
    async with dns_server(lambda q: srv_answer(q, [], truncated=True), lambda q: srv_answer(q, targets)) as port:
        dcs = await discover_domain_controllers("x.test", "127.0.0.1", 1.0, port=port)
    assert dcs == ["big.x.test"]


async def test_silent_server_raises_with_words() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
        quiet.bind(("127.0.0.1", 0))
        with pytest.raises(DiscoveryError, match="did not answer"):
            await discover_domain_controllers("x.test", "127.0.0.1", 0.4, port=quiet.getsockname()[1])


async def test_garbage_answer_raises_with_words() -> None:
    async with dns_server(lambda q: q[:2] + b"\xff" * 40, lambda q: b"") as port:
        with pytest.raises(DiscoveryError, match="not DNS"):
            await discover_domain_controllers("x.test", "127.0.0.1", 1.0, port=port)


@pytest.mark.lab
async def test_lab_dc_is_discovered_from_its_own_dns(dc) -> None:
    assert await discover_domain_controllers(dc.realm.lower(), dc.address) == [dc.fqdn]


@pytest.mark.lab
async def test_unknown_domain_raises_nxdomain_in_words(dc) -> None:
    with pytest.raises(DiscoveryError, match="NXDOMAIN"):
        await discover_domain_controllers("elsewhere.test", dc.address)


@pytest.fixture(params=["datagram-endpoint", "thread"])
def udp_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both UDP paths: the event loop's, and the worker-thread one Windows takes (where the
    Proactor loop would hide ICMP port-unreachable), forced here on Linux."""
    monkeypatch.setenv("PORTREADY_UDP_STRATEGY", request.param)
    return str(request.param)


async def test_each_udp_path_reads_the_answer(udp_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import scanner.probes.netio as netio

    tries: list[int] = []
    blocking = netio._udp_try_blocking

    def counted(*args: object) -> object:
        tries.append(1)
        return blocking(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(netio, "_udp_try_blocking", counted)
    targets = [(0, 10, "dc2.x.test"), (0, 90, "dc1.x.test")]
    async with dns_server(lambda q: srv_answer(q, targets), lambda q: b"") as port:
        assert await discover_domain_controllers("x.test", "127.0.0.1", 1.0, port=port) == ["dc1.x.test", "dc2.x.test"]
    assert bool(tries) is (udp_path == "thread")  # the path asked for is the one taken


async def test_each_udp_path_says_a_closed_dns_port_is_closed_not_silent(udp_path: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
        gone.bind(("127.0.0.1", 0))
        port = gone.getsockname()[1]
    # Nothing listens there now: the kernel answers ICMP port-unreachable, which both paths see.
    with pytest.raises(DiscoveryError, match="cannot be asked"):
        await discover_domain_controllers("x.test", "127.0.0.1", 1.0, port=port)


async def test_each_udp_path_says_a_silent_server_did_not_answer(udp_path: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
        quiet.bind(("127.0.0.1", 0))
        with pytest.raises(DiscoveryError, match="did not answer"):
            await discover_domain_controllers("x.test", "127.0.0.1", 0.4, port=quiet.getsockname()[1])


@pytest.mark.lab
async def test_lab_dc_is_discovered_on_the_thread_path_too(dc, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PORTREADY_UDP_STRATEGY", "thread")
    assert await discover_domain_controllers(dc.realm.lower(), dc.address) == [dc.fqdn]
