"""netio's timeout helpers against real loopback sockets: `within` ends a wait on time,
`drain_within` returns at once for a small request and still ends when the peer stops
reading, and `read_exactly` returns bytes already buffered without waiting again."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from scanner.models import Reason
from scanner.probes.base import ProbeError
from scanner.probes.netio import drain_within, read_exactly, within
from scanner.testing import make_context


async def test_within_returns_the_value_or_times_out() -> None:
    assert await within(asyncio.sleep(0, result="done"), 1.0) == "done"
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await within(asyncio.sleep(5), 0.1)
    assert time.monotonic() - started < 2


async def _pair() -> tuple[socket.socket, asyncio.StreamReader, asyncio.StreamWriter]:
    """A connected pair: a raw socket that reads only when told, and our stream."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    loop = asyncio.get_running_loop()
    connecting = asyncio.ensure_future(asyncio.open_connection("127.0.0.1", listener.getsockname()[1]))
    peer, _ = await loop.sock_accept(listener)
    listener.close()
    reader, writer = await connecting
    return peer, reader, writer


async def test_a_small_request_drains_at_once_and_a_peer_that_never_reads_ends_the_wait() -> None:
    peer, _reader, writer = await _pair()
    try:
        writer.write(b"x" * 100)
        await drain_within(writer, 0.5)  # below the high-water mark: nothing to wait for
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            for _ in range(64):  # the peer never reads: the buffers fill and writing pauses
                writer.write(b"y" * (1 << 20))
                await drain_within(writer, 0.3)
        assert time.monotonic() - started < 5
    finally:
        writer.transport.abort()
        peer.close()


async def test_bytes_already_buffered_are_read_without_waiting_and_a_short_read_still_fails() -> None:
    peer, reader, writer = await _pair()
    ctx = make_context("peer", "127.0.0.1", 1, probe="tcp", timeout=0.5, retries=0)
    try:
        peer.sendall(b"abcdef")
        await asyncio.sleep(0.05)  # arrived: now in the reader's buffer
        assert await read_exactly(ctx, reader, 4, "answer") == b"abcd"
        assert await read_exactly(ctx, reader, 2, "answer", started=True) == b"ef"
        peer.close()
        with pytest.raises(ProbeError) as caught:
            await read_exactly(ctx, reader, 4, "answer")
        assert caught.value.outcome.reason is Reason.CLOSED
    finally:
        writer.transport.abort()


@pytest.mark.parametrize("protocol", ["ldap", "rpc"])
async def test_a_peer_that_stops_reading_our_request_is_no_reply_not_another_protocol(protocol: str) -> None:
    from scanner.wire import ldap as ldap_wire
    from scanner.wire.rpc import RpcConnection

    peer, reader, writer = await _pair()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ctx = make_context("peer", "127.0.0.1", 1, probe="tcp", timeout=0.3, retries=0)
    huge = b"z" * (64 << 20)  # more than every buffer on the way: the write must wait for the peer
    try:
        with pytest.raises(ProbeError) as caught:
            if protocol == "ldap":
                await ldap_wire.exchange(ctx, reader, writer, huge, 1, "LDAP answer")
            else:
                await RpcConnection(ctx, reader, writer)._send(huge)
        assert caught.value.outcome.reason is Reason.NO_REPLY, caught.value.outcome.detail
    finally:
        writer.transport.abort()
        peer.close()
