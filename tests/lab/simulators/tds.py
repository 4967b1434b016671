"""SQL Server simulator: stands in for Microsoft SQL Server (2019 by default) answering a
TDS 7.x PRELOGIN on TCP (1433 and each named instance's dynamic port), and for the SQL
Server Browser service on UDP 1434.

Bytes followed:

- [MS-TDS] 2.2.3.1 packet header: Type (0x12 PRELOGIN from the client, 0x04 tabular
  result for the answer), Status (0x01 = end of message), Length (big-endian, header
  included), SPID (big-endian), PacketID, Window. Messages split over several packets
  are reassembled until the EOM bit (bounded).
- [MS-TDS] 2.2.6.5 PRELOGIN: option table of PL_OPTION_TOKEN (1 byte), PL_OFFSET and
  PL_OPTION_LENGTH (big-endian USHORT, offsets from the start of the packet data),
  terminated by 0xFF; VERSION (0x00) must come first ([MS-TDS] 3.3.5.1: otherwise the
  server closes the connection). The answer carries VERSION (UL_VERSION = major, minor,
  build big-endian + US_SUBBUILD), ENCRYPTION (0x01), INSTOPT (0x02: 0x00 when the
  client's instance name is empty or matches, 0x01 otherwise), THREADID (0x03, empty
  from a server), MARS (0x04, 0x00), and FEDAUTHREQUIRED (0x06, 0x00) only when the
  client sent it; sample request bytes are in [MS-TDS] 4.1.
- ENCRYPTION values: ENCRYPT_OFF 0x00, ENCRYPT_ON 0x01, ENCRYPT_NOT_SUP 0x02,
  ENCRYPT_REQ 0x03. The configured value is answered as is, except that a server
  configured ENCRYPT_OFF (certificate present, not forced) answers ENCRYPT_ON to a
  client asking ENCRYPT_ON or ENCRYPT_REQ, per the negotiation table of 2.2.6.5.
  The TLS handshake that would follow is not simulated: the next packet ends the
  connection.
- [MC-SQLR] 2.2.1-2.2.5 Browser: CLNT_BCAST_EX (0x02) and CLNT_UCAST_EX (0x03) get every
  instance, CLNT_UCAST_INST (0x04 + instance name, up to 32 bytes, optional 0x00)
  gets that instance only and unknown instances get no answer (3.2.5 "Waiting For
  Request From Client": "the specified instance only (if available)"); the answer is SVR_RESP 0x05, RESP_SIZE (little-endian USHORT), RESP_DATA
  ``ServerName;H;InstanceName;I;IsClustered;No;Version;V;tcp;PORT;;`` per instance
  (at most 1,024 bytes for one instance, 65,535 for all). CLNT_UCAST_DAC (0x0F) gets
  the 2.2.6 DAC answer when a DAC port is configured. Anything else gets no answer.

    async with tds_server(port=0, instances={"SQLEXPRESS": 0}) as srv:
        srv.port, srv.browser_port, srv.instance_ports["SQLEXPRESS"]
    python -m tests.lab.simulators tds --bind ADDR --port 1433 --browser-port 1434 \
        --instance SQLEXPRESS=50123 --version 15.0.2000 --encryption off
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import struct
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

from . import Lifecycle, TcpSimulator, read_exactly

PACKET_PRELOGIN = 0x12
PACKET_TABULAR_RESULT = 0x04
STATUS_EOM = 0x01
HEADER = struct.Struct(">BBHHBB")  # type, status, length, spid, packet id, window
MAX_PACKET = 32767  # the largest packet size a client may negotiate (LOGIN7 PacketSize)
MAX_MESSAGE = 64 * 1024

PL_VERSION = 0x00
PL_ENCRYPTION = 0x01
PL_INSTOPT = 0x02
PL_THREADID = 0x03
PL_MARS = 0x04
PL_TRACEID = 0x05
PL_FEDAUTHREQUIRED = 0x06
PL_NONCEOPT = 0x07
PL_TERMINATOR = 0xFF

SVR_RESP = 0x05
CLNT_BCAST_EX = 0x02
CLNT_UCAST_EX = 0x03
CLNT_UCAST_INST = 0x04
CLNT_UCAST_DAC = 0x0F


class Encryption(enum.IntEnum):
    OFF = 0x00
    ON = 0x01
    NOT_SUP = 0x02
    REQ = 0x03

    @classmethod
    def parse(cls, text: str) -> Encryption:
        key = text.strip().upper().removeprefix("ENCRYPT_")
        return cls[key]


class TdsProtocolError(Exception):
    """The client's bytes are not a TDS PRELOGIN; the server closes the connection."""


def parse_version(text: str) -> tuple[int, int, int, int]:
    """``"15.0.2000"`` or ``"15.0.2000.5"`` → (major, minor, build, subbuild)."""
    parts = [int(p) for p in text.split(".")]
    if not 3 <= len(parts) <= 4:
        raise ValueError(f"version must be major.minor.build[.sub], not {text!r}")
    major, minor, build = parts[:3]
    sub = parts[3] if len(parts) == 4 else 0
    if not (0 <= major < 256 and 0 <= minor < 256 and 0 <= build < 65536 and 0 <= sub < 65536):
        raise ValueError(f"version out of range: {text!r}")
    return major, minor, build, sub


def encode_packet(packet_type: int, payload: bytes, packet_id: int = 1) -> bytes:
    return HEADER.pack(packet_type, STATUS_EOM, HEADER.size + len(payload), 0, packet_id, 0) + payload


def parse_prelogin(payload: bytes) -> dict[int, bytes]:
    """Option token → option data, validated against [MS-TDS] 2.2.6.5."""
    options: dict[int, bytes] = {}
    pos = 0
    while True:
        if pos >= len(payload):
            raise TdsProtocolError("option table has no terminator")
        token = payload[pos]
        if token == PL_TERMINATOR:
            break
        if pos + 5 > len(payload):
            raise TdsProtocolError("truncated option table")
        offset, length = struct.unpack_from(">HH", payload, pos + 1)
        if offset + length > len(payload):
            raise TdsProtocolError("option data beyond the packet")
        if token in options:
            raise TdsProtocolError("option repeated")
        options[token] = payload[offset : offset + length]
        pos += 5
    if not options or next(iter(options)) != PL_VERSION:
        raise TdsProtocolError("VERSION is not the first option")
    if len(options[PL_VERSION]) != 6:
        raise TdsProtocolError("VERSION is not 6 bytes")
    return options


def build_prelogin_response(
    request: Mapping[int, bytes],
    version: tuple[int, int, int, int],
    encryption: Encryption,
    instance_name: str,
) -> bytes:
    """The server's PRELOGIN structure (packet data only) for ``request``."""
    major, minor, build, sub = version
    client_enc = request.get(PL_ENCRYPTION, b"\x00")[:1] or b"\x00"
    answer = encryption
    if encryption is Encryption.OFF and client_enc[0] & 0x7F in (
        Encryption.ON,
        Encryption.REQ,
    ):
        answer = Encryption.ON
    client_instance = request.get(PL_INSTOPT, b"").split(b"\x00", 1)[0].decode("latin-1")
    # the default instance's name is MSSQLSERVER, which is also what clients send
    instance_ok = client_instance == "" or client_instance.upper() == instance_name.upper()
    options: list[tuple[int, bytes]] = [
        (PL_VERSION, struct.pack(">BBHH", major, minor, build, sub)),
        (PL_ENCRYPTION, bytes([answer])),
        (PL_INSTOPT, b"\x00" if instance_ok else b"\x01"),
        (PL_THREADID, b""),
        (PL_MARS, b"\x00"),
    ]
    if PL_FEDAUTHREQUIRED in request:
        options.append((PL_FEDAUTHREQUIRED, b"\x00"))
    table = bytearray()
    data = bytearray()
    offset = 5 * len(options) + 1
    for token, value in options:
        table += struct.pack(">BHH", token, offset + len(data), len(value))
        data += value
    table.append(PL_TERMINATOR)
    return bytes(table + data)


async def read_tds_message(reader: asyncio.StreamReader, timeout: float) -> tuple[int, bytes]:
    """Read packets until EOM; returns (type, payload). Bounded by MAX_MESSAGE."""
    payload = bytearray()
    first_type: int | None = None
    while True:
        head = await read_exactly(reader, HEADER.size, timeout)
        ptype, status, length, _spid, _pid, _window = HEADER.unpack(head)
        if first_type is None:
            first_type = ptype
        elif ptype != first_type:
            raise TdsProtocolError("packet type changed inside a message")
        if not HEADER.size <= length <= MAX_PACKET:
            raise TdsProtocolError(f"bad packet length {length}")
        if len(payload) + length > MAX_MESSAGE:
            raise TdsProtocolError("message too long")
        payload += await read_exactly(reader, length - HEADER.size, timeout)
        if status & STATUS_EOM:
            return first_type, bytes(payload)


class TdsServer(TcpSimulator):
    """Answers one TDS PRELOGIN per connection as SQL Server does."""

    name = "tds"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        version: str = "15.0.2000",
        encryption: Encryption | str = Encryption.OFF,
        instance_name: str = "MSSQLSERVER",
        **kwargs: Any,
    ) -> None:
        super().__init__(host, port, **kwargs)
        self.version = parse_version(version)
        self.encryption = encryption if isinstance(encryption, Encryption) else Encryption.parse(encryption)
        self.instance_name = instance_name
        self.prelogins = 0  # PRELOGIN messages answered

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ptype, payload = await read_tds_message(reader, self.idle_timeout)
        if ptype != PACKET_PRELOGIN:
            raise TdsProtocolError(f"first packet type 0x{ptype:02x} is not PRELOGIN")
        request = parse_prelogin(payload)
        response = build_prelogin_response(request, self.version, self.encryption, self.instance_name)
        writer.write(encode_packet(PACKET_TABULAR_RESULT, response))
        await asyncio.wait_for(writer.drain(), self.idle_timeout)
        self.prelogins += 1
        # What follows (TLS handshake in PRELOGIN packets, or LOGIN7) is not
        # simulated: wait for it, bounded, and close as a failed login would.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.read(MAX_PACKET), self.idle_timeout)


# --------------------------------------------------------------------------- Browser


def browser_instance_entry(server_name: str, instance: str, version: str, port: int) -> str:
    return f"ServerName;{server_name};InstanceName;{instance};IsClustered;No;Version;{version};tcp;{port};;"


class _BrowserProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: BrowserServer) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # the selector transport is not a DatagramTransport subclass, but is one
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            answer = self.owner.answer(data)
        except Exception:  # noqa: BLE001 - a hostile datagram never stops the Browser
            answer = None
        if answer is None:
            self.owner.ignored += 1
            return
        self.owner.answered += 1
        if self.transport is not None:
            self.transport.sendto(answer, addr)


class BrowserServer(Lifecycle):
    """SQL Server Browser ([MC-SQLR]) on UDP; ``instances`` maps name → TCP port."""

    name = "browser"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        instances: Mapping[str, int] | None = None,
        server_name: str = "SQLLAB",
        version: str = "15.0.2000.5",
        dac_ports: Mapping[str, int] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.instances: dict[str, int] = dict(instances or {})
        self.server_name = server_name
        self.version = version
        self.dac_ports = dict(dac_ports or {})
        self.answered = 0
        self.ignored = 0
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _BrowserProtocol(self), local_addr=(self.host, self.port)
        )
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])

    async def stop(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
            await asyncio.sleep(0)

    def _find(self, raw_name: bytes) -> str | None:
        name = raw_name.split(b"\x00", 1)[0].decode("latin-1")
        for known in self.instances:
            if known.upper() == name.upper():
                return known
        return None

    def answer(self, data: bytes) -> bytes | None:
        """The SVR_RESP for one request datagram, or None when the Browser stays silent."""
        if not data or len(data) > 1024:
            return None
        kind = data[0]
        if kind in (CLNT_BCAST_EX, CLNT_UCAST_EX):
            entries = [
                browser_instance_entry(self.server_name, name, self.version, port)
                for name, port in self.instances.items()
            ]
            text = ""
            for entry in entries:  # never exceed 65,535 bytes ([MC-SQLR] 2.2.5)
                if len(text) + len(entry) > 65535:
                    break
                text += entry
            if not text:
                return None
            return self._svr_resp(text)
        if kind == CLNT_UCAST_INST:
            raw = data[1:]
            if not raw or len(raw) > 33:
                return None
            name = self._find(raw)
            if name is None:
                return None
            entry = browser_instance_entry(self.server_name, name, self.version, self.instances[name])
            return self._svr_resp(entry[:1024])
        if kind == CLNT_UCAST_DAC:
            if len(data) < 3 or data[1] != 0x01:
                return None
            name = self._find(data[2:])
            if name is None or name not in self.dac_ports:
                return None
            return struct.pack("<BHBH", SVR_RESP, 6, 0x01, self.dac_ports[name])
        return None

    @staticmethod
    def _svr_resp(text: str) -> bytes:
        data = text.encode("latin-1", "replace")
        return struct.pack("<BH", SVR_RESP, len(data)) + data


# --------------------------------------------------------------------------- together


class SqlServerLab(Lifecycle):
    """A default instance on ``port``, named instances on their ports, and a Browser.

    ``instances`` maps a named instance to its TCP port (0 = pick a free one); every
    instance gets a TDS listener unless listed in ``silent_instances`` (announced by
    the Browser but not listening: the "dynamic port blocked" case).
    """

    name = "tds"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        instances: Mapping[str, int] | None = None,
        silent_instances: tuple[str, ...] | frozenset[str] = (),
        browser: bool = True,
        browser_port: int = 0,
        list_default_instance: bool = True,
        version: str = "15.0.2000",
        browser_version: str = "15.0.2000.5",
        encryption: Encryption | str = Encryption.OFF,
        server_name: str = "SQLLAB",
        **kwargs: Any,
    ) -> None:
        self.host = host
        self.port = port
        self.browser_port = browser_port
        self.default = TdsServer(host, port, version=version, encryption=encryption, **kwargs)
        self.named: dict[str, TdsServer] = {
            name: TdsServer(
                host,
                p,
                version=version,
                encryption=encryption,
                instance_name=name,
                **kwargs,
            )
            for name, p in (instances or {}).items()
            if name not in silent_instances
        }
        self.instance_ports: dict[str, int] = dict(instances or {})
        self._use_browser = browser
        self._list_default = list_default_instance
        self.browser = BrowserServer(host, browser_port, server_name=server_name, version=browser_version)

    async def start(self) -> None:
        started: list[TdsServer] = []
        try:
            await self.default.start()
            started.append(self.default)
            self.port = self.default.port
            for name, server in self.named.items():
                await server.start()
                started.append(server)
                self.instance_ports[name] = server.port
            announced: dict[str, int] = {}
            if self._list_default:
                announced["MSSQLSERVER"] = self.port
            announced.update(self.instance_ports)
            self.browser.instances = announced
            if self._use_browser:
                await self.browser.start()
                self.browser_port = self.browser.port
        except BaseException:
            for server in started:
                await server.stop()
            raise

    async def stop(self) -> None:
        await self.browser.stop()
        for server in [self.default, *self.named.values()]:
            await server.stop()


@contextlib.asynccontextmanager
async def tds_server(**kwargs: Any) -> AsyncIterator[SqlServerLab]:
    """``async with tds_server(port=0, instances={"SQLEXPRESS": 0}) as srv:``"""
    lab = SqlServerLab(**kwargs)
    await lab.start()
    try:
        yield lab
    finally:
        await lab.stop()
