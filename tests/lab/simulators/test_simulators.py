"""Each simulator answers requests built here from the specifications (never from a
portready probe), survives hostile clients, and runs as a process for namespaces."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import ssl
import struct
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trustme

from .papi import PapiServer
from .tds import BrowserServer, Encryption, SqlServerLab, TdsServer, tds_server
from .tns import TnsListener, vsnnum
from .vsphere import VsphereServer
from .winrm import WinRmServer

pytestmark = pytest.mark.timeout(60)

REPO_ROOT = Path(__file__).resolve().parents[3]
LOOPBACK = "127.0.0.1"
T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    """Each test runs its own event loop: independent of pytest-asyncio's settings."""

    async def wrapper() -> T:
        return await coro

    return asyncio.run(wrapper())


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ctx(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(LOOPBACK, "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_ctx(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@contextlib.asynccontextmanager
async def connect(
    host: str, port: int, tls: ssl.SSLContext | None = None
) -> Any:  # AsyncIterator[tuple[StreamReader, StreamWriter]]
    reader, writer = await asyncio.open_connection(host, port, ssl=tls, server_hostname=host if tls else None)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def read_to_eof(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Everything until the peer closes (bounded); raises TimeoutError if it never does."""
    data = bytearray()
    deadline = time.monotonic() + timeout
    while len(data) < 1 << 20:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
        except (ConnectionResetError, ssl.SSLError):
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def send_and_read_to_eof(host: str, port: int, payload: bytes, tls: ssl.SSLContext | None = None) -> bytes:
    async with connect(host, port, tls) as (reader, writer):
        writer.write(payload)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        return await read_to_eof(reader)


# --------------------------------------------------------------------------- WinRM

IDENTIFY_BODY = (
    b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
    b'xmlns:wsmid="http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd">'
    b"<s:Header/><s:Body><wsmid:Identify/></s:Body></s:Envelope>"
)
SOAP12 = {"Content-Type": "application/soap+xml;charset=UTF-8"}
WSMID = "{http://schemas.dmtf.org/wbem/wsman/identity/1/wsmanidentity.xsd}"


def test_winrm_post_without_credentials_offers_negotiate_and_kerberos() -> None:
    async def scenario() -> httpx.Response:
        async with WinRmServer() as srv, httpx.AsyncClient() as client:
            return await client.post(f"http://{srv.host}:{srv.port}/wsman", content=b"<x/>", headers=SOAP12)

    response = run(scenario())
    assert response.status_code == 401
    assert response.headers.get_list("www-authenticate") == ["Negotiate", "Kerberos"]
    assert response.headers["server"] == "Microsoft-HTTPAPI/2.0"
    assert response.content == b""


def test_winrm_unauthenticated_identify_answers_dsp0226_identify_response() -> None:
    async def scenario() -> httpx.Response:
        async with (
            WinRmServer(product_version="OS: 10.0.17763 SP: 0.0 Stack: 3.0") as srv,
            httpx.AsyncClient() as client,
        ):
            return await client.post(
                f"http://{srv.host}:{srv.port}/wsman",
                content=IDENTIFY_BODY,
                headers={**SOAP12, "WSMANIDENTIFY": "unauthenticated"},
            )

    response = run(scenario())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/soap+xml")
    root = ET.fromstring(response.content)
    answer = root.find(f".//{WSMID}IdentifyResponse")
    assert answer is not None
    assert answer.findtext(f"{WSMID}ProtocolVersion") == ("http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd")
    assert answer.findtext(f"{WSMID}ProductVendor") == "Microsoft Corporation"
    assert answer.findtext(f"{WSMID}ProductVersion") == "OS: 10.0.17763 SP: 0.0 Stack: 3.0"


@pytest.mark.parametrize(
    ("mode", "with_header", "expected"),
    [
        ("header", False, 401),  # Windows wants WSMANIDENTIFY: unauthenticated
        ("header", True, 200),
        ("any", False, 200),
        ("off", True, 401),
    ],
)
def test_winrm_identify_modes(mode: str, with_header: bool, expected: int) -> None:
    headers = dict(SOAP12)
    if with_header:
        headers["WSMANIDENTIFY"] = "unauthenticated"

    async def scenario() -> httpx.Response:
        async with WinRmServer(identify=mode) as srv, httpx.AsyncClient() as client:  # type: ignore[arg-type]
            return await client.post(
                f"http://{srv.host}:{srv.port}/wsman",
                content=IDENTIFY_BODY,
                headers=headers,
            )

    response = run(scenario())
    assert response.status_code == expected
    if expected == 401:
        assert "Negotiate" in response.headers.get_list("www-authenticate")


def test_winrm_identify_with_credentials_attempt_is_not_anonymous() -> None:
    async def scenario() -> httpx.Response:
        async with WinRmServer(identify="any") as srv, httpx.AsyncClient() as client:
            return await client.post(
                f"http://{srv.host}:{srv.port}/wsman",
                content=IDENTIFY_BODY,
                headers={**SOAP12, "Authorization": "Negotiate TlRMTVNTUAABAAAA"},
            )

    assert run(scenario()).status_code == 401


def test_winrm_other_paths_are_not_found() -> None:
    async def scenario() -> list[int]:
        async with WinRmServer() as srv, httpx.AsyncClient() as client:
            base = f"http://{srv.host}:{srv.port}"
            return [
                (await client.get(f"{base}/")).status_code,
                (await client.post(f"{base}/wsman-anon", content=IDENTIFY_BODY)).status_code,
            ]

    assert run(scenario()) == [404, 404]


def test_winrm_https_identify_over_tls(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    async def scenario() -> httpx.Response:
        async with (
            WinRmServer(ssl_context=server_ctx) as srv,
            httpx.AsyncClient(verify=client_ctx) as client,
        ):
            return await client.post(
                f"https://{srv.host}:{srv.port}/wsman",
                content=IDENTIFY_BODY,
                headers={**SOAP12, "WSMANIDENTIFY": "unauthenticated"},
            )

    response = run(scenario())
    assert response.status_code == 200
    assert b"IdentifyResponse" in response.content


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", b"400"),
        (b"POST /wsman HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", b"413"),
        (b"POST /wsman HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b"400"),
        (
            b"GET /wsman HTTP/1.1\r\n" + b"X-Flood: " + b"a" * 40000 + b"\r\n\r\n",
            b"431",
        ),
        (b"POST /wsman HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"400"),
    ],
    ids=["garbage", "oversized-length", "negative-length", "header-flood", "bad-chunk"],
)
def test_http_simulator_rejects_malformed_requests_and_keeps_serving(request_bytes: bytes, status: bytes) -> None:
    async def scenario() -> tuple[bytes, int, int]:
        async with WinRmServer() as srv:
            answer = await send_and_read_to_eof(srv.host, srv.port, request_bytes)
            async with httpx.AsyncClient() as client:
                after = await client.post(f"http://{srv.host}:{srv.port}/wsman")
            return answer, after.status_code, srv.errors

    answer, after, errors = run(scenario())
    assert answer.split(b" ")[1] == status
    assert after == 401
    assert errors >= 1


def test_http_simulator_closes_silent_and_truncated_clients_after_idle_timeout() -> None:
    async def scenario() -> tuple[bytes, bytes, float]:
        async with WinRmServer(idle_timeout=0.5) as srv:
            started = time.monotonic()
            async with connect(srv.host, srv.port) as (reader, _writer):
                silent = await read_to_eof(reader)
            async with connect(srv.host, srv.port) as (reader, writer):
                writer.write(b"POST /wsman HTTP/1.1\r\nContent-Length: 100\r\n\r\n<s:Env")
                truncated = await read_to_eof(reader)
            return silent, truncated, time.monotonic() - started

    silent, truncated, elapsed = run(scenario())
    assert silent == b""
    assert truncated == b""  # dropped without an answer, as HTTP.sys does
    assert elapsed < 5


def test_http_simulator_bounds_a_slow_drip_client() -> None:
    async def scenario() -> tuple[bytes, float]:
        async with WinRmServer(idle_timeout=0.5, connection_lifetime=1.5) as srv:
            started = time.monotonic()
            async with connect(srv.host, srv.port) as (reader, writer):

                async def drip() -> None:
                    with contextlib.suppress(ConnectionError):
                        for byte in b"POST /wsman HTTP/1.1\r\nX: " + b"a" * 100:
                            writer.write(bytes([byte]))
                            await writer.drain()
                            await asyncio.sleep(0.1)

                dripper = asyncio.create_task(drip())
                data = await read_to_eof(reader)
                dripper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await dripper
            return data, time.monotonic() - started

    data, elapsed = run(scenario())
    assert elapsed < 4  # the connection lifetime ended it, not the client
    assert data == b""


# --------------------------------------------------------------------------- TDS

# [MS-TDS] 4.1 sample PRELOGIN request: VERSION 9.0.0 sub 0, ENCRYPTION 0x01 (ON),
# INSTOPT "" (0x00), THREADID 0x00000DB8, MARS 0x01.
MS_TDS_4_1_PRELOGIN = bytes.fromhex(
    "1201002F0000010000001A00060100200001020021000103002200040400260001FF090000000000010000B80D000001".replace(" ", "")
)


def prelogin_request(
    encryption: int = 0,
    instance: bytes = b"\x00",
    extra: list[tuple[int, bytes]] | None = None,
) -> bytes:
    """PRELOGIN message per [MS-TDS] 2.2.6.5, as a client would send it."""
    options = [
        (0x00, bytes([0x0C, 0x00, 0x00, 0x00, 0x00, 0x00])),  # client "version" 12.0
        (0x01, bytes([encryption])),
        (0x02, instance),
        (0x03, struct.pack(">I", 4242)),
        (0x04, b"\x00"),
        *(extra or []),
    ]
    table, data = bytearray(), bytearray()
    offset = 5 * len(options) + 1
    for token, value in options:
        table += struct.pack(">BHH", token, offset + len(data), len(value))
        data += value
    payload = bytes(table) + b"\xff" + bytes(data)
    return struct.pack(">BBHHBB", 0x12, 0x01, 8 + len(payload), 0, 1, 0) + payload


async def read_tds_response(
    reader: asyncio.StreamReader,
) -> tuple[bytes, dict[int, bytes]]:
    header = await asyncio.wait_for(reader.readexactly(8), 5)
    _type, _status, length, _spid, _pid, _win = struct.unpack(">BBHHBB", header)
    payload = await asyncio.wait_for(reader.readexactly(length - 8), 5)
    options: dict[int, bytes] = {}
    pos = 0
    while payload[pos] != 0xFF:
        token, offset, size = struct.unpack_from(">BHH", payload, pos)
        options[token] = payload[offset : offset + size]
        pos += 5
    return header, options


async def prelogin(port: int, request: bytes = MS_TDS_4_1_PRELOGIN) -> tuple[bytes, dict[int, bytes]]:
    async with connect(LOOPBACK, port) as (reader, writer):
        writer.write(request)
        return await read_tds_response(reader)


def test_tds_answers_ms_tds_sample_prelogin_with_tabular_result() -> None:
    async def scenario() -> tuple[bytes, dict[int, bytes]]:
        async with TdsServer(version="15.0.2000") as srv:
            return await prelogin(srv.port)

    header, options = run(scenario())
    ptype, status, length, spid, packet_id, window = struct.unpack(">BBHHBB", header)
    assert (ptype, status, spid, packet_id, window) == (0x04, 0x01, 0, 1, 0)
    assert length == 8 + 5 * 5 + 1 + 6 + 1 + 1 + 0 + 1
    assert options[0x00] == bytes.fromhex("0f0007d00000")  # 15.0.2000, sub-build 0
    assert options[0x01] == b"\x01"  # ENCRYPT_OFF server, client asked ON: ON
    assert options[0x02] == b"\x00"  # instance valid
    assert options[0x03] == b""  # a server sends no thread id
    assert options[0x04] == b"\x00"


@pytest.mark.parametrize(
    ("server", "client", "answer"),
    [
        (Encryption.OFF, 0x00, 0x00),
        (Encryption.OFF, 0x01, 0x01),  # not forced, but the client asks: ON
        (Encryption.ON, 0x00, 0x01),
        (Encryption.NOT_SUP, 0x01, 0x02),
        (Encryption.REQ, 0x00, 0x03),
    ],
)
def test_tds_encryption_negotiation(server: Encryption, client: int, answer: int) -> None:
    async def scenario() -> dict[int, bytes]:
        async with TdsServer(encryption=server) as srv:
            return (await prelogin(srv.port, prelogin_request(encryption=client)))[1]

    assert run(scenario())[0x01] == bytes([answer])


def test_tds_version_is_configurable() -> None:
    async def scenario() -> dict[int, bytes]:
        async with TdsServer(version="13.0.6300") as srv:  # SQL Server 2016 SP2
            return (await prelogin(srv.port))[1]

    assert run(scenario())[0x00] == bytes([13, 0]) + struct.pack(">H", 6300) + b"\x00\x00"


def test_tds_instopt_reports_a_wrong_instance_name() -> None:
    async def scenario() -> tuple[bytes, bytes]:
        async with TdsServer(instance_name="SQLEXPRESS") as srv:
            good = await prelogin(srv.port, prelogin_request(instance=b"sqlexpress\x00"))
            bad = await prelogin(srv.port, prelogin_request(instance=b"OTHER\x00"))
            return good[1][0x02], bad[1][0x02]

    assert run(scenario()) == (b"\x00", b"\x01")


def test_tds_prelogin_split_over_two_packets_is_reassembled() -> None:
    whole = prelogin_request()
    payload = whole[8:]
    first = struct.pack(">BBHHBB", 0x12, 0x00, 8 + 10, 0, 1, 0) + payload[:10]
    second = struct.pack(">BBHHBB", 0x12, 0x01, 8 + len(payload) - 10, 0, 2, 0) + payload[10:]

    async def scenario() -> dict[int, bytes]:
        async with TdsServer() as srv:
            return (await prelogin(srv.port, first + second))[1]

    assert run(scenario())[0x00][:1] == b"\x0f"


@pytest.mark.parametrize(
    "hostile",
    [
        b"GET / HTTP/1.0\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # TDS 8 strict: TLS first
        b"\x12\x01\x00",  # truncated header
        b"\x12\x01\x00\x04\x00\x00\x01\x00",  # length shorter than the header
        b"\x12\x01\xff\xff\x00\x00\x01\x00" + b"\x00" * 64,  # length past the max
        b"\x12\x01\x00\x0d\x00\x00\x01\x00\x00\x00\x40\x00\x06",  # option beyond packet
        b"\x12\x01\x00\x0d\x00\x00\x01\x00\x01\x00\x05\x00\x00",  # no terminator
        b"\x12\x01\x00\x0e\x00\x00\x01\x00\x01\x00\x06\x00\x00\xff",  # VERSION not first
        b"\x12\x00\x00\x10\x00\x00\x01\x00" + b"\x00" * 8,  # never an EOM, then silence
    ],
    ids=["http", "tls", "short-header", "tiny-length", "huge-length", "bad-offset",
         "no-terminator", "version-not-first", "no-eom"],
)  # fmt: skip
def test_tds_closes_on_malformed_prelogin_and_keeps_serving(hostile: bytes) -> None:
    async def scenario() -> tuple[bytes, dict[int, bytes], int]:
        async with TdsServer(idle_timeout=0.5) as srv:
            answer = await send_and_read_to_eof(srv.host, srv.port, hostile)
            _, after = await prelogin(srv.port)
            return answer, after, srv.errors

    answer, after, errors = run(scenario())
    assert answer == b""  # closed without a PRELOGIN response
    assert 0x00 in after
    assert errors >= 1


# --------------------------------------------------------------------------- Browser


def parse_svr_resp(datagram: bytes) -> list[dict[str, str]]:
    """[MC-SQLR] 2.2.5: 0x05, RESP_SIZE (LE), then ``key;value;...;;`` per instance."""
    assert datagram[0] == 0x05
    (size,) = struct.unpack_from("<H", datagram, 1)
    text = datagram[3:].decode("latin-1")
    assert size == len(datagram) - 3
    instances = []
    for chunk in text.split(";;"):
        if not chunk:
            continue
        fields = chunk.split(";")
        instances.append(dict(zip(fields[::2], fields[1::2], strict=False)))
    return instances


async def udp_ask(port: int, payload: bytes, timeout: float = 1.0) -> bytes | None:
    loop = asyncio.get_running_loop()
    answers: asyncio.Queue[bytes] = asyncio.Queue()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            answers.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(LOOPBACK, port))
    try:
        transport.sendto(payload)
        try:
            return await asyncio.wait_for(answers.get(), timeout)
        except asyncio.TimeoutError:  # not the builtin on 3.10
            return None
    finally:
        transport.close()


BROWSER_INSTANCES = {"SQLEXPRESS": 50123, "SHAREPOINT": 50200}


@pytest.mark.parametrize("request_byte", [0x02, 0x03], ids=["BCAST_EX", "UCAST_EX"])
def test_browser_lists_every_instance(request_byte: int) -> None:
    async def scenario() -> bytes | None:
        async with BrowserServer(instances=BROWSER_INSTANCES, server_name="DB01") as srv:
            return await udp_ask(srv.port, bytes([request_byte]))

    answer = run(scenario())
    assert answer is not None
    instances = parse_svr_resp(answer)
    assert {i["InstanceName"]: int(i["tcp"]) for i in instances} == BROWSER_INSTANCES
    assert all(i["ServerName"] == "DB01" and i["IsClustered"] == "No" for i in instances)
    assert all(i["Version"] == "15.0.2000.5" for i in instances)


def test_browser_ucast_inst_returns_that_instance_only() -> None:
    async def scenario() -> tuple[bytes | None, bytes | None]:
        async with BrowserServer(instances=BROWSER_INSTANCES) as srv:
            known = await udp_ask(srv.port, b"\x04sqlexpress\x00")
            unknown = await udp_ask(srv.port, b"\x04NOSUCH\x00", timeout=0.3)
            return known, unknown

    known, unknown = run(scenario())
    assert known is not None
    assert [(i["InstanceName"], i["tcp"]) for i in parse_svr_resp(known)] == [("SQLEXPRESS", "50123")]
    assert unknown is None  # [MC-SQLR]: only "if available"


def test_browser_ignores_malformed_datagrams_and_keeps_answering() -> None:
    async def scenario() -> tuple[list[bytes | None], bytes | None, int]:
        async with BrowserServer(instances=BROWSER_INSTANCES) as srv:
            hostile = [
                await udp_ask(srv.port, payload, timeout=0.2)
                for payload in (b"\x00", b"\xff" * 50, b"\x04", b"\x04" + b"A" * 500,
                                b"\x03" + b"x" * 4000, b"\x0f\x02NAME")
            ]  # fmt: skip
            after = await udp_ask(srv.port, b"\x03")
            return hostile, after, srv.ignored

    hostile, after, ignored = run(scenario())
    assert hostile == [None] * 6
    assert after is not None and after[0] == 0x05
    assert ignored == 6


def test_sql_lab_instances_announced_by_browser_answer_prelogin() -> None:
    async def scenario() -> tuple[list[dict[str, str]], dict[str, bytes], bool]:
        async with tds_server(
            port=0,
            instances={"SQLEXPRESS": 0, "GHOST": 0},
            silent_instances=("GHOST",),
            browser_port=0,
        ) as srv:
            answer = await udp_ask(srv.browser_port, b"\x03")
            assert answer is not None
            listed = parse_svr_resp(answer)
            ports = {i["InstanceName"]: int(i["tcp"]) for i in listed}
            answers = {}
            for name in ("MSSQLSERVER", "SQLEXPRESS"):
                _, options = await prelogin(ports[name])
                answers[name] = options[0x00]
            ghost_refused = False
            try:
                async with connect(LOOPBACK, ports["GHOST"]):
                    pass
            except ConnectionRefusedError:
                ghost_refused = True
            return listed, answers, ghost_refused

    listed, answers, ghost_refused = run(scenario())
    assert {i["InstanceName"] for i in listed} == {"MSSQLSERVER", "SQLEXPRESS", "GHOST"}
    assert all(v == bytes.fromhex("0f0007d00000") for v in answers.values())
    assert ghost_refused


# --------------------------------------------------------------------------- TNS

DESCRIPTOR = (
    "(DESCRIPTION=(CONNECT_DATA=(SERVICE_NAME={service})"
    "(CID=(PROGRAM=portready)(HOST=lab)(USER=probe)))"
    "(ADDRESS=(PROTOCOL=TCP)(HOST=127.0.0.1)(PORT=1521)))"
)


def tns_connect(descriptor: str, version: int = 319, separate_data: bool | None = None) -> bytes:
    """A CONNECT as Oracle's thin client (python-oracledb connect.pyx) builds it."""
    data = descriptor.encode()
    separate = len(data) > 230 if separate_data is None else separate_data
    body = struct.pack(
        ">HHHHHHHHHHIBB24sIIII",
        version,  # version desired
        300,  # version compatible (minimum)
        0x0001,  # service options
        8192,  # SDU
        8192,  # TDU
        0x4F98,  # NT protocol characteristics
        0,  # line turnaround
        1,  # value of 1
        len(data),
        74,  # offset of the connect data from the start of the packet
        0,  # max receivable data
        0x84,
        0x84,  # NSI flags
        b"\x00" * 24,  # obsolete trace fields
        8192,  # SDU (large)
        8192,  # TDU (large)
        0,
        0,  # connect flags 1/2
    )
    assert 8 + len(body) == 74
    if separate:
        connect = struct.pack(">HHBBH", 8 + len(body), 0, 1, 0, 0) + body
        data_packet = struct.pack(">HHBBH", 8 + 2 + len(data), 0, 6, 0, 0) + b"\x00\x00" + data
        return connect + data_packet
    return struct.pack(">HHBBH", 8 + len(body) + len(data), 0, 1, 0, 0) + body + data


async def read_tns_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    header = await asyncio.wait_for(reader.readexactly(8), 5)
    length, _pck, ptype, _flags, _hck = struct.unpack(">HHBBH", header)
    return ptype, await asyncio.wait_for(reader.readexactly(length - 8), 5)


async def tns_exchange(port: int, payload: bytes, tls: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    async with connect(LOOPBACK, port, tls) as (reader, writer):
        writer.write(payload)
        return await read_tns_packet(reader)


def refuse_data(body: bytes) -> str:
    user_reason, system_reason, length = struct.unpack_from(">BBH", body)
    assert (user_reason, system_reason) == (0x22, 0x00)
    assert length == len(body) - 4
    return body[4:].decode()


def test_vsnnum_encodes_the_oracle_version() -> None:
    assert vsnnum("19.0.0.0.0") == 318767104
    assert vsnnum("10.2.0.1.0") == 169869568


def test_tns_known_service_gets_accept() -> None:
    async def scenario() -> tuple[int, bytes]:
        async with TnsListener(services={"ORCLPDB1"}) as srv:
            return await tns_exchange(srv.port, tns_connect(DESCRIPTOR.format(service="orclpdb1")))

    ptype, body = run(scenario())
    assert ptype == 2
    version, _options, sdu16 = struct.unpack_from(">HHH", body)
    assert version == 315  # a 19c listener answers 315 to a newer client
    assert sdu16 == 8192
    (sdu32,) = struct.unpack_from(">I", body, 24)  # where python-oracledb reads it
    assert sdu32 == 8192
    data_length, data_offset = struct.unpack_from(">HH", body, 10)
    assert (data_length, data_offset) == (0, 8 + len(body))


def test_tns_unknown_service_gets_refuse_12514_with_vsnnum() -> None:
    async def scenario() -> tuple[int, bytes]:
        async with TnsListener(services={"ORCLPDB1"}) as srv:
            return await tns_exchange(srv.port, tns_connect(DESCRIPTOR.format(service="NOPE")))

    ptype, body = run(scenario())
    assert ptype == 4
    assert refuse_data(body) == (
        "(DESCRIPTION=(TMP=)(VSNNUM=318767104)(ERR=12514)(ERROR_STACK=(ERROR=(CODE=12514)(EMFI=4))))"
    )


@pytest.mark.parametrize(
    ("descriptor", "err"),
    [
        (
            "(DESCRIPTION=(CONNECT_DATA=(SID=XE)(CID=(PROGRAM=x)))(ADDRESS=(PROTOCOL=TCP)))",
            12505,
        ),
        (
            "(DESCRIPTION=(CONNECT_DATA=(CID=(PROGRAM=x)))(ADDRESS=(PROTOCOL=TCP)))",
            12504,
        ),
        ("(DESCRIPTION=(CONNECT_DATA=(SERVICE_NAME=ORCLPDB1)", 1153),
    ],
    ids=["unknown-sid", "no-service", "unbalanced"],
)
def test_tns_refuse_reasons(descriptor: str, err: int) -> None:
    async def scenario() -> tuple[int, bytes]:
        async with TnsListener(services={"ORCLPDB1"}, version="21.0.0.0.0") as srv:
            return await tns_exchange(srv.port, tns_connect(descriptor))

    ptype, body = run(scenario())
    assert ptype == 4
    text = refuse_data(body)
    assert f"(ERR={err})" in text
    assert "(VSNNUM=352321536)" in text  # 21.0.0.0.0


def test_tns_refuse_matches_a_captured_21c_packet_length() -> None:
    # A 21c XE listener's 12514 refuse is 103 bytes with 91 bytes of data.
    async def scenario() -> tuple[int, bytes]:
        async with TnsListener(services={"XEPDB1"}, version="21.0.0.0.0") as srv:
            return await tns_exchange(srv.port, tns_connect(DESCRIPTOR.format(service="NOPE")))

    ptype, body = run(scenario())
    assert (ptype, 8 + len(body), len(refuse_data(body))) == (4, 103, 91)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("ping", "(DESCRIPTION=(TMP=)(VSNNUM=0)(ERR=0)(ALIAS=LISTENER))"),
        ("status", "(DESCRIPTION=(TMP=)(VSNNUM=318767104)(ERR=1189)(ERROR_STACK=(ERROR=(CODE=1189)(EMFI=4))))"),
    ],
)
def test_tns_listener_commands(command: str, expected: str) -> None:
    async def scenario() -> tuple[int, bytes]:
        async with TnsListener() as srv:
            descriptor = f"(CONNECT_DATA=(CID=(PROGRAM=)(HOST=)(USER=))(COMMAND={command})(ARGUMENTS=64))"
            return await tns_exchange(srv.port, tns_connect(descriptor))

    ptype, body = run(scenario())
    assert ptype == 4
    assert refuse_data(body) == expected


def test_tns_long_connect_data_in_a_following_data_packet_is_read() -> None:
    descriptor = DESCRIPTOR.format(service="ORCLPDB1").replace("portready", "p" * 300)

    async def scenario() -> tuple[tuple[int, bytes], list[str]]:
        async with TnsListener(services={"ORCLPDB1"}) as srv:
            answer = await tns_exchange(srv.port, tns_connect(descriptor))
            return answer, srv.descriptors

    (ptype, _), descriptors = run(scenario())
    assert ptype == 2
    assert descriptors == [descriptor]


def test_tns_resend_then_accept_when_configured() -> None:
    async def scenario() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        async with (
            TnsListener(services={"ORCLPDB1"}, resend=True) as srv,
            connect(LOOPBACK, srv.port) as (reader, writer),
        ):
            request = tns_connect(DESCRIPTOR.format(service="ORCLPDB1"))
            writer.write(request)
            first = await read_tns_packet(reader)
            writer.write(request)
            second = await read_tns_packet(reader)
            return first, second

    first, second = run(scenario())
    assert first == (11, b"")
    assert second[0] == 2


def test_tns_over_tls_on_2484_style_listener(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    async def scenario() -> tuple[int, bytes]:
        async with TnsListener(ssl_context=server_ctx, services={"ORCLPDB1"}) as srv:
            request = tns_connect(DESCRIPTOR.format(service="OTHER"))
            return await tns_exchange(srv.port, request, client_ctx)

    ptype, body = run(scenario())
    assert ptype == 4 and "(ERR=12514)" in refuse_data(body)


def test_tls_listener_survives_plaintext_and_garbage_clients(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async def scenario() -> tuple[list[bytes], int]:
        async with TnsListener(ssl_context=server_ctx, idle_timeout=0.5) as srv:
            answers = [
                await send_and_read_to_eof(srv.host, srv.port, payload)
                for payload in (
                    tns_connect(DESCRIPTOR.format(service="X")),
                    b"\x16\x03\x01\xff\xff" + b"\x00" * 64,
                    b"",
                )
            ]
            ptype, _ = await tns_exchange(srv.port, tns_connect(DESCRIPTOR.format(service="X")), client_ctx)
            return answers, ptype

    answers, ptype = run(scenario())
    assert all(b"DESCRIPTION" not in answer for answer in answers)
    assert ptype == 4


def test_connections_beyond_the_cap_are_closed_at_once() -> None:
    async def scenario() -> tuple[bytes, int]:
        async with TnsListener(max_connections=2) as srv:
            async with connect(srv.host, srv.port), connect(srv.host, srv.port):
                await asyncio.sleep(0.1)  # both held open, silent
                async with connect(srv.host, srv.port) as (reader, _writer):
                    third = await read_to_eof(reader, timeout=2)
            return third, srv.connections

    third, accepted = run(scenario())
    assert third == b""
    assert accepted == 2


@pytest.mark.parametrize(
    "hostile",
    [
        b"\x00\x00\x00\x00\x00\x00\x00\x00",  # length 0
        b"\x00\x3a\x00\x00\x06\x00\x00\x00" + b"\x00" * 50,  # DATA first
        b"\x00\x10\x00\x00\x01\x00\x00\x00" + b"\x01" * 8,  # CONNECT too short
        b"\xff\xff\x00\x00\x01\x00\x00\x00" + b"\x00" * 100,  # length larger than sent
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["zero-length", "not-connect", "short-connect", "truncated", "http"],
)
def test_tns_drops_malformed_packets_and_keeps_serving(hostile: bytes) -> None:
    async def scenario() -> tuple[bytes, int, int]:
        async with TnsListener(idle_timeout=0.5) as srv:
            answer = await send_and_read_to_eof(srv.host, srv.port, hostile)
            ptype, _ = await tns_exchange(srv.port, tns_connect(DESCRIPTOR.format(service="X")))
            return answer, ptype, srv.errors

    answer, ptype, errors = run(scenario())
    assert answer == b""
    assert ptype == 4
    assert errors >= 1


def test_tns_rejects_connect_data_offset_inside_fixed_fields() -> None:
    request = bytearray(tns_connect(DESCRIPTOR.format(service="ORCLPDB1")))
    struct.pack_into(">H", request, 8 + 18, 12)  # offset pointing into the header
    oversized = bytearray(tns_connect(DESCRIPTOR.format(service="ORCLPDB1")))
    struct.pack_into(">H", oversized, 8 + 16, 60000)  # connect data length far too long

    async def scenario() -> list[bytes]:
        async with TnsListener(idle_timeout=0.5) as srv:
            return [
                await send_and_read_to_eof(srv.host, srv.port, bytes(request)),
                await send_and_read_to_eof(srv.host, srv.port, bytes(oversized)),
            ]

    assert run(scenario()) == [b"", b""]


# --------------------------------------------------------------------------- vSphere

RETRIEVE_SERVICE_CONTENT = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
    b'<soapenv:Body><RetrieveServiceContent xmlns="urn:vim25">'
    b'<_this type="ServiceInstance">ServiceInstance</_this>'
    b"</RetrieveServiceContent></soapenv:Body></soapenv:Envelope>"
)
VIM = "{urn:vim25}"


def test_vsphere_serves_service_versions_wsdl_and_service_content(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async def scenario() -> list[httpx.Response]:
        async with (
            VsphereServer(ssl_context=server_ctx) as srv,
            httpx.AsyncClient(verify=client_ctx) as client,
        ):
            base = f"https://{srv.host}:{srv.port}"
            return [
                await client.get(f"{base}/sdk/vimServiceVersions.xml"),
                await client.get(f"{base}/sdk/vimService.wsdl"),
                await client.post(
                    f"{base}/sdk",
                    content=RETRIEVE_SERVICE_CONTENT,
                    headers={
                        "Content-Type": "text/xml; charset=utf-8",
                        "SOAPAction": "urn:vim25/8.0.2.0",
                    },
                ),
                await client.get(f"{base}/sdk/other"),
            ]

    versions, wsdl, content, other = run(scenario())
    assert versions.status_code == 200
    ns = ET.fromstring(versions.content)
    assert ns.tag == "namespaces" and ns.get("version") == "1.0"
    vim25 = ns.find("namespace")
    assert vim25 is not None and vim25.findtext("name") == "urn:vim25"
    assert vim25.findtext("version") == "8.0.2.0"
    assert "8.0.1.0" in [v.text for v in vim25.findall("priorVersions/version")]

    assert wsdl.status_code == 200
    assert ET.fromstring(wsdl.content).get("targetNamespace") == "urn:vim25Service"

    assert content.status_code == 200
    about = ET.fromstring(content.content).find(f".//{VIM}returnval/{VIM}about")
    assert about is not None
    assert about.findtext(f"{VIM}fullName") == "VMware vCenter Server 8.0.2 build-22385739"
    assert about.findtext(f"{VIM}apiType") == "VirtualCenter"
    assert about.findtext(f"{VIM}apiVersion") == "8.0.2.0"
    assert about.findtext(f"{VIM}vendor") == "VMware, Inc."

    assert other.status_code == 404


def test_vsphere_other_methods_and_garbage_get_soap_faults() -> None:
    login = RETRIEVE_SERVICE_CONTENT.replace(b"RetrieveServiceContent", b"RetrieveProperties")

    async def scenario() -> list[httpx.Response]:
        async with VsphereServer() as srv, httpx.AsyncClient() as client:
            base = f"http://{srv.host}:{srv.port}"
            return [
                await client.post(f"{base}/sdk", content=login),
                await client.post(f"{base}/sdk", content=b"\x00\xffnot xml"),
                await client.post(
                    f"{base}/sdk",
                    content=b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>',
                ),
            ]

    for response in run(scenario()):
        assert response.status_code == 500
        fault = ET.fromstring(response.content).find(".//{http://schemas.xmlsoap.org/soap/envelope/}Fault")
        assert fault is not None and fault.findtext("faultcode") == "ServerFaultCode"


# --------------------------------------------------------------------------- PAPI


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_papi_without_credentials_is_401_with_papi_error_and_basic_realm(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> None:
    async def scenario() -> httpx.Response:
        async with (
            PapiServer(ssl_context=server_ctx, password="lab-only") as srv,
            httpx.AsyncClient(verify=client_ctx) as client,
        ):
            return await client.get(f"https://{srv.host}:{srv.port}/platform/latest")

    response = run(scenario())
    assert response.status_code == 401
    assert response.json() == {"errors": [{"code": "AEC_UNAUTHORIZED", "message": "authorization required"}]}
    assert response.headers["www-authenticate"] == 'Basic realm="papi"'
    assert response.headers["server"] == "Apache"


def test_papi_basic_credentials_and_sessions() -> None:
    async def scenario() -> list[httpx.Response]:
        async with PapiServer(user="admin", password="lab-only") as srv:
            base = f"http://{srv.host}:{srv.port}"
            async with httpx.AsyncClient() as client:
                good = await client.get(f"{base}/platform/latest", headers=basic("admin", "lab-only"))
                wrong = await client.get(f"{base}/platform/latest", headers=basic("admin", "x"))
                session = await client.post(
                    f"{base}/session/1/session",
                    json={
                        "username": "admin",
                        "password": "lab-only",
                        "services": ["platform"],
                    },
                )
                by_cookie = await client.get(
                    f"{base}/platform/latest",
                    headers={"Cookie": f"isisessid={session.cookies['isisessid']}"},
                )
                bad_login = await client.post(
                    f"{base}/session/1/session",
                    json={"username": "admin", "password": "no"},
                )
                garbage = await client.post(f"{base}/session/1/session", content=b"{not json")
            return [good, wrong, session, by_cookie, bad_login, garbage]

    good, wrong, session, by_cookie, bad_login, garbage = run(scenario())
    assert (good.status_code, good.json()) == (200, {"latest": "16"})
    assert wrong.status_code == 401
    assert session.status_code == 201
    assert session.json()["username"] == "admin"
    assert "lab-only" not in session.text
    assert (by_cookie.status_code, by_cookie.json()) == (200, {"latest": "16"})
    assert bad_login.status_code == 401
    assert "lab-only" not in bad_login.text
    assert garbage.status_code == 400


# --------------------------------------------------------------------------- processes


@pytest.fixture(scope="module")
def pem_files(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("pem")
    cert = ca.issue_cert(LOOPBACK)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return str(cert_path), str(key_path)


@contextlib.contextmanager
def simulator_process(
    *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], str, int]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.lab.simulators", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().split()
        assert line[:1] == ["ready"], process.stderr.read() if process.stderr else line
        yield process, line[1], int(line[2])
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _tls_args(pem: tuple[str, str]) -> list[str]:
    return ["--cert", pem[0], "--key", pem[1]]


PROCESS_CHECKS: dict[str, Callable[[str, int, ssl.SSLContext], Awaitable[bool]]] = {}


def _check(name: str) -> Callable[[Any], Any]:
    def register(func: Any) -> Any:
        PROCESS_CHECKS[name] = func
        return func

    return register


@_check("winrm")
async def _winrm_ok(host: str, port: int, ctx: ssl.SSLContext) -> bool:
    async with httpx.AsyncClient(verify=ctx) as client:
        response = await client.post(f"https://{host}:{port}/wsman")
    return response.status_code == 401


@_check("tds")
async def _tds_ok(host: str, port: int, ctx: ssl.SSLContext) -> bool:
    _, options = await prelogin(port)
    return options[0x00][:1] == b"\x0f"


@_check("tns")
async def _tns_ok(host: str, port: int, ctx: ssl.SSLContext) -> bool:
    ptype, _ = await tns_exchange(port, tns_connect(DESCRIPTOR.format(service="ORCL")), ctx)
    return ptype == 2


@_check("vsphere")
async def _vsphere_ok(host: str, port: int, ctx: ssl.SSLContext) -> bool:
    async with httpx.AsyncClient(verify=ctx) as client:
        response = await client.get(f"https://{host}:{port}/sdk/vimServiceVersions.xml")
    return b"urn:vim25" in response.content


@_check("papi")
async def _papi_ok(host: str, port: int, ctx: ssl.SSLContext) -> bool:
    async with httpx.AsyncClient(verify=ctx) as client:
        response = await client.get(f"https://{host}:{port}/platform/latest", headers=basic("admin", "lab-only"))
    return bool(response.json() == {"latest": "16"})


@pytest.mark.parametrize(
    ("name", "extra", "tls"),
    [
        ("winrm", [], True),
        ("tds", ["--browser-port", "0", "--instance", "SQLEXPRESS=0"], False),
        ("tns", ["--service", "ORCL"], True),
        ("vsphere", [], True),
        ("papi", ["--user", "admin"], True),
    ],
)
def test_simulator_runs_as_a_process_and_prints_ready(
    name: str,
    extra: list[str],
    tls: bool,
    pem_files: tuple[str, str],
    client_ctx: ssl.SSLContext,
) -> None:
    args = [name, "--bind", LOOPBACK, "--port", "0", "--lifetime", "30", *extra]
    if tls:
        args += _tls_args(pem_files)
    with simulator_process(*args, env={"PAPI_PASSWORD": "lab-only"}) as (
        process,
        host,
        port,
    ):
        assert host == LOOPBACK and port > 0
        assert run(PROCESS_CHECKS[name](host, port, client_ctx))
    assert process.returncode == 0


def test_simulator_process_stops_by_itself_after_lifetime() -> None:
    started = time.monotonic()
    with simulator_process("tns", "--port", "0", "--lifetime", "0.5") as (
        process,
        _,
        _,
    ):
        process.wait(10)
    assert process.returncode == 0
    assert time.monotonic() - started < 10


def test_browser_process_answers_over_udp() -> None:
    with simulator_process("browser", "--port", "0", "--instance", "SQLEXPRESS=50123", "--lifetime", "30") as (
        _,
        _,
        port,
    ):
        answer = run(udp_ask(port, b"\x03"))
    assert answer is not None
    assert parse_svr_resp(answer)[0]["tcp"] == "50123"


def test_sql_lab_start_failure_releases_ports() -> None:
    async def scenario() -> bool:
        async with TdsServer() as taken:
            lab = SqlServerLab(port=0, instances={"A": taken.port}, browser_port=0)
            with pytest.raises(OSError):
                await lab.start()
            # the default instance started first and must have been stopped again
            return lab.default._server is None

    assert run(scenario())


def test_papi_password_is_not_in_process_arguments(pem_files: tuple[str, str]) -> None:
    args = ["papi", "--port", "0", "--lifetime", "30", *_tls_args(pem_files)]
    with simulator_process(*args, env={"PAPI_PASSWORD": "lab-only"}) as (process, _, _):
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
    assert b"lab-only" not in cmdline
