"""Peer answers built to break parsers: a backtracking bomb for the TNS regex, digits that
str.isdigit() accepts but int() refuses (superscripts), absurdly long numbers. Real loopback
peers answer the real probes; every answer must become a verdict, never `error internal`.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from scanner.models import Reason, Status
from scanner.probes.base import Settings
from scanner.testing import make_context, run_probe
from scanner.wire import tns as _tns
from scanner.wire.tns import REFUSE, descriptor_value, parse_answer

_Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: _Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def _wire(text: str) -> bytes:
    """Latin-1 where it can (the parsers decode latin-1: b"\\xb2" reads "²"), else UTF-8."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _tns_refuse(text: str) -> bytes:
    data = _wire(text)
    body = struct.pack(">BBH", 0x22, 0x00, len(data)) + data
    return struct.pack(">HHBBH", 8 + len(body), 0, REFUSE, 0, 0) + body


def _tns_peer(text: str) -> _Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(4096)  # the CONNECT
            writer.write(_tns_refuse(text))
            await writer.drain()
            await reader.read(1)
        finally:
            writer.close()

    return handler


# A lazy value before \s* made the old regex cubic: 3 KB took 25 s on the event loop.
_BOMB = "(DESCRIPTION=(ERR=" + " " * 60000 + "x"


@pytest.mark.timeout(60)  # a guard for the old regex (hours on this input), not a measurement
async def test_a_backtracking_bomb_in_a_tns_refuse_is_a_verdict() -> None:
    async for port in _serve(_tns_peer(_BOMB)):
        ctx = make_context("ora1", "127.0.0.1", port, probe="tns", settings=Settings(timeout=2.0, retries=0))
        result = await run_probe("tns", ctx)
    assert result.status is not Status.ERROR and result.reason is not Reason.INTERNAL, result.detail


@pytest.mark.timeout(60)
def test_descriptor_values_parse_in_linear_time_on_every_bomb_shape() -> None:
    for text in (_BOMB, "(ERR=" * 12000, "(" + " " * 60000 + "ERR", "(ERR" + " " * 60000 + "=", "(ERR=(" * 10000):
        assert descriptor_value(text, "ERR") in (None, "")
    assert descriptor_value("(ERR = 12514 )", "ERR") == "12514"


@pytest.mark.parametrize("digits", ["¹²³", "١٢٥١٤", "9" * 5000, "12514\u00b2"])
async def test_tns_fields_with_non_ascii_or_endless_digits_are_a_verdict(digits: str) -> None:
    text = f"(DESCRIPTION=(TMP=)(VSNNUM={digits})(ERR={digits}))"
    answer = parse_answer(REFUSE, _tns_refuse(text)[8:])
    assert answer.error is None and answer.vsnnum is None
    async for port in _serve(_tns_peer(text)):
        ctx = make_context("ora1", "127.0.0.1", port, probe="tns", settings=Settings(timeout=2.0, retries=0))
        result = await run_probe("tns", ctx)
    assert result.status is not Status.ERROR and result.reason is not Reason.INTERNAL, result.detail


class _BrowserPeer(asyncio.DatagramProtocol):
    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(self.answer, addr)


@pytest.mark.parametrize("port_text", ["¹³³", "١٤٣٣", "9" * 5000, "1433²"])
async def test_sql_browser_ports_that_are_not_ascii_digits_are_a_verdict(port_text: str) -> None:
    text = f"ServerName;SQL1;InstanceName;SQLEXPRESS;IsClustered;No;Version;15.0;tcp;{port_text};;"
    data = _wire(text)
    datagram = struct.pack("<BH", 0x05, len(data)) + data
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _BrowserPeer(datagram), local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        ctx = make_context("sql1", "127.0.0.1", port, "udp", probe="sql-browser", timeout=1.0)
        result = await run_probe("sql-browser", ctx)
    finally:
        transport.close()
    assert result.status is not Status.ERROR and result.reason is not Reason.INTERNAL, result.detail
    (instance,) = result.evidence["instances"]
    assert instance["tcp_port"] is None


@pytest.mark.parametrize("length", ["²", "١٠", "9" * 5000, "-5", "0x10"])
async def test_http_content_length_that_is_not_a_plain_number_is_a_verdict(length: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nServer: hostile\r\nContent-Length: " + _wire(length) + b"\r\n\r\nbody")
            await writer.drain()
        finally:
            writer.close()

    async for port in _serve(handler):
        # WinRM over plain HTTP (5985) reads the body of its answer.
        ctx = make_context("h1", "127.0.0.1", port, probe="winrm", timeout=1.0)
        result = await run_probe("winrm", ctx)
    assert result.status is not Status.ERROR and result.reason is not Reason.INTERNAL, result.detail


@pytest.mark.timeout(60)  # a guard: a super-linear pattern would take minutes here, these take ms
def test_every_pattern_that_reads_peer_data_is_linear_on_bomb_shapes() -> None:
    import re

    from scanner.listener import syslog, tag
    from scanner.probes import icmp_echo
    from scanner.wire import http as _http

    size = 200_000
    text_bombs = [" " * size, "(" * size, "a" * size, "1" * size, "Jan 1" * (size // 5), "[" * size, ":" * size]
    byte_bombs = [b.encode() for b in text_bombs] + [b"HTTP/1.1 200 " + b"x" * size, b"time=" + b"1" * size + b"x",
                                                     b"portready-test " + b"a" * size]  # fmt: skip
    for pattern in (syslog._BSD_TS, syslog._ISO_TS, syslog._BSD_TAG, re.compile(_tns._KEY_RE.format("ERR"), re.I)):
        for bomb in text_bombs:
            pattern.search(bomb)
    for bpattern in (syslog._PRI, _http._STATUS_LINE, icmp_echo._RTT, tag._TAG_RE):
        for bbomb in byte_bombs:
            bpattern.search(bbomb)
