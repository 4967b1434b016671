"""tds probe: SQL Server TDS PRELOGIN, against the SQL Server simulator and hostile peers."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanner.models import Reason, Status
from scanner.testing import make_context, run_probe
from scanner.wire.tds import (
    HEADER,
    PACKET_PRELOGIN,
    TdsError,
    build_prelogin,
    parse_header,
    parse_prelogin_data,
    product_name,
)
from tests.lab.netns import Host
from tests.lab.simulators import tds as sim

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_simulator(host: Host, argv: list[str]) -> subprocess.Popen[bytes]:
    """Run `python -m tests.lab.simulators ...` in a lab host; returns once it listens."""
    proc = host.popen(
        [sys.executable, "-m", "tests.lab.simulators", *argv, "--lifetime", "120"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(15)
    if not line or not line[0].startswith(b"ready"):
        proc.kill()
        raise RuntimeError(f"simulator {argv} did not start in {host.netns}")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    from tests.lab.netns import _kill_group

    _kill_group(proc, grace=1.0)
    if proc.stdout is not None:
        proc.stdout.close()


# -- bytes -----------------------------------------------------------------------------------
def _answer(options: list[tuple[int, bytes]], table_extra: bytes = b"") -> bytes:
    table, data = bytearray(), bytearray()
    offset = 5 * len(options) + 1
    for token, value in options:
        table += struct.pack(">BHH", token, offset + len(data), len(value))
        data += value
    return bytes(table) + table_extra + b"\xff" + bytes(data)


def test_prelogin_request_is_what_sql_server_parses() -> None:
    packet = build_prelogin("SQLEXPRESS")
    ptype, status, length, *_ = HEADER.unpack(packet[:8])
    assert (ptype, status, length) == (PACKET_PRELOGIN, 1, len(packet))
    options = sim.parse_prelogin(packet[8:])  # the simulator validates per [MS-TDS] 2.2.6.5
    assert list(options)[:5] == [0, 1, 2, 3, 4]
    assert options[sim.PL_ENCRYPTION] == b"\x00"
    assert options[sim.PL_INSTOPT] == b"SQLEXPRESS\x00"


def test_answer_gives_version_product_and_encryption() -> None:
    data = _answer([(0, bytes([15, 0, 0x07, 0xD0, 0, 0])), (1, b"\x03"), (2, b"\x00"), (3, b""), (4, b"\x00")])
    reply = parse_prelogin_data(data)
    assert reply.version_text == "15.0.2000"
    assert reply.product == "SQL Server 2019"
    assert reply.encryption == "required"
    assert reply.instance_ok is True


@pytest.mark.parametrize(
    ("major", "minor", "name"),
    [(10, 50, "SQL Server 2008 R2"), (13, 0, "SQL Server 2016"), (16, 0, "SQL Server 2022"), (99, 0, None)],
)
def test_product_names_follow_engine_versions(major: int, minor: int, name: str | None) -> None:
    assert product_name(major, minor) == name


@pytest.mark.parametrize(
    "data",
    [
        b"",  # nothing
        b"\x00\x00\x06",  # truncated option entry
        b"\x00\x00\x06\x00\x06",  # no terminator
        _answer([(0, b"\x0f\x00")]),  # VERSION too short
        b"\x00\x00\x10\x00\x06\xff",  # offset past the end
        b"\x00\x00\x06\xff\xff\xff",  # length past the end
        _answer([(1, b"\x00")]),  # no VERSION at all
    ],
)
def test_malformed_answers_are_rejected(data: bytes) -> None:
    with pytest.raises(TdsError):
        parse_prelogin_data(data)


@pytest.mark.parametrize(
    "head",
    [
        bytes.fromhex("1201002f00000100"),  # a PRELOGIN (client type) instead of a reply
        bytes.fromhex("0401000400000100"),  # length shorter than the header
        bytes.fromhex("0401ffff00000100"),  # length over the largest TDS packet
    ],
)
def test_bad_headers_are_rejected(head: bytes) -> None:
    with pytest.raises(TdsError):
        parse_header(head)


# -- against the simulator -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("version", "encryption", "product", "words"),
    [
        ("15.0.2000", "off", "SQL Server 2019", "off"),
        ("16.0.1000", "req", "SQL Server 2022", "required"),
        ("13.0.5026", "not_sup", "SQL Server 2016", "not supported"),
    ],
)
async def test_sql_server_answer_passes_with_version_and_encryption(
    version: str, encryption: str, product: str, words: str
) -> None:
    async with sim.tds_server(version=version, encryption=encryption, browser=False) as srv:
        ctx = make_context("sql1", "127.0.0.1", srv.port, probe="tds")
        result = await run_probe("tds", ctx)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["server_version"] == version
    assert result.evidence["product"] == product
    assert result.evidence["encryption"] == words
    assert product in result.detail


async def test_closed_port_is_refused() -> None:
    ctx = make_context("sql1", "127.0.0.1", free_port(), probe="tds")
    result = await run_probe("tds", ctx)
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED)


@pytest.mark.parametrize(
    ("mode", "flavor"),
    [("garbage", "tls"), ("truncated", "tds"), ("oversized", "tls"), ("drip", "tds"), ("silent", "tls"),
     ("truncated", "http")],
)  # fmt: skip
async def test_hostile_peers_fail_protocol_within_the_timeout(hostile, mode: str, flavor: str) -> None:  # type: ignore[no-untyped-def]
    address, port = hostile(mode, flavor=flavor)
    ctx = make_context("sql1", address, port, probe="tds", timeout=1.0)
    started = time.monotonic()
    result = await run_probe("tds", ctx)
    elapsed = time.monotonic() - started
    if mode in ("silent", "drip"):  # connected, then no (complete) answer: slowness, not a verdict
        assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
    else:
        assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL), result.detail
    assert elapsed < 1.0 * 2 + 1.0 * 2 + 1.0
    assert "Traceback" not in result.detail


async def test_peer_announcing_a_huge_multi_packet_answer_is_cut_off() -> None:
    """Packets without end-of-message, forever: stops at the message bound, no hang."""
    import asyncio

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        try:
            for _ in range(100):
                writer.write(bytes.fromhex("04007ff800000100") + b"\x00" * (0x7FF8 - 8))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        writer.close()

    server = await asyncio.start_server(endless, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        ctx = make_context("sql1", "127.0.0.1", port, probe="tds", timeout=1.0)
        result = await run_probe("tds", ctx)
    finally:
        server.close()
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL)
    assert "64 KiB" in result.detail


# -- in the lab: dropped and rejected --------------------------------------------------------
@pytest.fixture
def lab_sql(second_host: Host) -> Iterator[Host]:
    proc = start_simulator(second_host, ["tds", "--bind", "0.0.0.0", "--port", "1433", "--no-browser"])
    try:
        yield second_host
    finally:
        stop(proc)


@pytest.mark.lab
async def test_lab_sql_server_passes(lab_sql: Host) -> None:
    result = await run_probe("tds", make_context("sql1", lab_sql.ipv4, 1433, probe="tds"))
    assert result.status is Status.PASS, result.detail


@pytest.mark.lab
async def test_dropped_port_is_filtered_not_refused(lab_sql: Host) -> None:
    lab_sql.firewall.drop(1433)
    result = await run_probe("tds", make_context("sql1", lab_sql.ipv4, 1433, probe="tds", timeout=1.0))
    assert (result.status, result.reason) == (Status.FAIL, Reason.FILTERED), result.detail
    assert "1433" in result.detail


@pytest.mark.lab
async def test_rejected_port_is_refused(lab_sql: Host) -> None:
    lab_sql.firewall.reject(1433)
    result = await run_probe("tds", make_context("sql1", lab_sql.ipv4, 1433, probe="tds", timeout=1.0))
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED), result.detail


async def test_strict_encryption_server_is_reached_with_tls_first(loopback_tls_certs) -> None:  # type: ignore[no-untyped-def]
    """SQL Server 2022 "strict" (TDS 8.0): TLS before PRELOGIN; a plain PRELOGIN gets nothing."""
    import asyncio

    from tests.lab.simulators import server_ssl_context

    async def strict(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            ptype, payload = await sim.read_tds_message(reader, 2.0)
            response = sim.build_prelogin_response(
                sim.parse_prelogin(payload), (16, 0, 1000, 6), sim.Encryption.REQ, "MSSQLSERVER"
            )
            writer.write(sim.encode_packet(sim.PACKET_TABULAR_RESULT, response))
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, sim.TdsProtocolError):
            pass
        writer.close()

    tls = server_ssl_context(str(loopback_tls_certs.cert("valid")), str(loopback_tls_certs.key("valid")))
    server = await asyncio.start_server(strict, "127.0.0.1", 0, ssl=tls, ssl_handshake_timeout=2.0)
    try:
        ctx = make_context("sql1", "127.0.0.1", server.sockets[0].getsockname()[1], probe="tds")
        result = await run_probe("tds", ctx)
    finally:
        server.close()
    assert result.status is Status.PASS, result.detail
    assert result.evidence["encryption"].startswith("strict (TDS 8.0")
    assert result.evidence["product"] == "SQL Server 2022"


async def test_peer_closing_at_once_fails_closed_after_trying_tls_first() -> None:
    import asyncio

    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    try:
        ctx = make_context("sql1", "127.0.0.1", server.sockets[0].getsockname()[1], probe="tds", timeout=1.0)
        result = await run_probe("tds", ctx)
    finally:
        server.close()
    assert (result.status, result.reason) == (Status.FAIL, Reason.CLOSED), result.detail
    assert "accepted the connection" in result.detail and "then closed or reset it" in result.detail
    assert "TDS 8.0" in result.detail
