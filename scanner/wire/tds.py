"""SQL Server TDS PRELOGIN: the request we send, the answer we parse, and the exchange.

Bytes follow [MS-TDS] (Microsoft's open specification of the Tabular Data Stream):

- 2.2.3.1 packet header, 8 bytes: Type (0x12 PRELOGIN from the client, 0x04 "tabular
  result" for the server's answer), Status (bit 0x01 = end of message), Length
  (big-endian, header included), SPID (big-endian), PacketID, Window.
- 2.2.6.5 PRELOGIN: a table of options, each PL_OPTION_TOKEN (1 byte), PL_OFFSET and
  PL_OPTION_LENGTH (big-endian, offsets from the start of the packet data), ended by
  0xFF, then the option data. VERSION (0x00) comes first; from a server it is
  UL_VERSION (major, minor, build big-endian) + US_SUBBUILD. ENCRYPTION (0x01) is one
  byte: ENCRYPT_OFF 0, ENCRYPT_ON 1, ENCRYPT_NOT_SUP 2, ENCRYPT_REQ 3 (0x80 adds
  ENCRYPT_CLIENT_CERT). The sample in [MS-TDS] 4.1 is the request built here.

We ask ENCRYPT_OFF so that the server's answer states its own configuration: OFF
(login packet encrypted only), NOT_SUP, or REQ (Force Encryption) instead of echoing us.

    reply = await prelogin(ctx, port=50123, instance="SQLEXPRESS")
    reply.version_text, reply.product, reply.encryption   # "15.0.2000", "SQL Server 2019", "off"
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import struct
from dataclasses import dataclass
from typing import Any

from scanner.models import Reason
from scanner.probes.base import ProbeContext, ProbeError, failed
from scanner.probes.netio import close_quietly, closed, connect_tcp, no_reply, read_exactly, wire_errors

PACKET_PRELOGIN = 0x12
PACKET_REPLY = 0x04
STATUS_EOM = 0x01
HEADER = struct.Struct(">BBHHBB")  # type, status, length, spid, packet id, window
MAX_PACKET = 32768  # [MS-TDS] 2.2.6.4: packet sizes stop at 32767; allow the header rounding
MAX_MESSAGE = 64 * 1024  # a PRELOGIN answer is ~50 bytes; anything past 64 KiB is hostile
MAX_PACKETS = 8

PL_VERSION = 0x00
PL_ENCRYPTION = 0x01
PL_INSTOPT = 0x02
PL_THREADID = 0x03
PL_MARS = 0x04
PL_TERMINATOR = 0xFF

ENCRYPTION_NAMES = {0: "off", 1: "on", 2: "not supported", 3: "required"}

# Major.minor of the engine → product name (SQL Server's own build numbering).
_PRODUCTS: dict[tuple[int, int], str] = {
    (8, 0): "SQL Server 2000",
    (9, 0): "SQL Server 2005",
    (10, 0): "SQL Server 2008",
    (10, 50): "SQL Server 2008 R2",
    (11, 0): "SQL Server 2012",
    (12, 0): "SQL Server 2014",
    (13, 0): "SQL Server 2016",
    (14, 0): "SQL Server 2017",
    (15, 0): "SQL Server 2019",
    (16, 0): "SQL Server 2022",
    (17, 0): "SQL Server 2025",
}


class TdsError(ValueError):
    """The bytes are not a well-formed TDS PRELOGIN answer; the text says what is wrong."""


def product_name(major: int, minor: int) -> str | None:
    return _PRODUCTS.get((major, minor)) or _PRODUCTS.get((major, 0))


def build_prelogin(instance: str = "", thread_id: int = 0) -> bytes:
    """A complete PRELOGIN packet (header + data), as in [MS-TDS] 4.1.

    `instance` goes into INSTOPT so that a named instance's answer says whether the
    port really belongs to it (0x00 = match); empty asks nothing.
    """
    inst = instance.encode("ascii", "replace")[:255] + b"\x00"
    options = [
        (PL_VERSION, struct.pack(">BBHH", 9, 0, 0, 0)),  # client version: only informative
        (PL_ENCRYPTION, b"\x00"),  # ENCRYPT_OFF: see the module docstring
        (PL_INSTOPT, inst),
        (PL_THREADID, struct.pack(">I", thread_id & 0xFFFFFFFF)),
        (PL_MARS, b"\x00"),
    ]
    table = bytearray()
    data = bytearray()
    offset = 5 * len(options) + 1
    for token, value in options:
        table += struct.pack(">BHH", token, offset + len(data), len(value))
        data += value
    table.append(PL_TERMINATOR)
    payload = bytes(table + data)
    return HEADER.pack(PACKET_PRELOGIN, STATUS_EOM, HEADER.size + len(payload), 0, 1, 0) + payload


def parse_header(head: bytes) -> tuple[int, int, int]:
    """(type, status, length) of an 8-byte packet header, checked for plausibility."""
    if len(head) != HEADER.size:
        raise TdsError(f"a TDS header is 8 bytes, got {len(head)}")
    ptype, status, length, _spid, _pid, _window = HEADER.unpack(head)
    if ptype != PACKET_REPLY:
        raise TdsError(f"packet type 0x{ptype:02x} where SQL Server answers 0x04")
    if not HEADER.size <= length <= MAX_PACKET:
        raise TdsError(f"packet length {length} is outside 8..{MAX_PACKET}")
    return ptype, status, length


@dataclass(frozen=True)
class PreloginReply:
    """What the server's PRELOGIN answer says about it."""

    major: int
    minor: int
    build: int
    subbuild: int
    encryption_byte: int | None
    instance_ok: bool | None  # INSTOPT: True = the instance name we sent is this server's
    options: tuple[int, ...]
    strict_tls: str | None = None  # TLS version when the server wanted TDS 8.0 (TLS first)

    @property
    def version_text(self) -> str:
        return f"{self.major}.{self.minor}.{self.build}"

    @property
    def product(self) -> str | None:
        return product_name(self.major, self.minor)

    @property
    def encryption(self) -> str:
        if self.strict_tls:
            return f"strict (TDS 8.0, {self.strict_tls} before PRELOGIN)"
        if self.encryption_byte is None:
            return "not stated"
        base = ENCRYPTION_NAMES.get(self.encryption_byte & 0x7F, f"unknown (0x{self.encryption_byte:02x})")
        return base + (" + client certificate" if self.encryption_byte & 0x80 else "")

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "server_version": f"{self.version_text}.{self.subbuild}" if self.subbuild else self.version_text,
            "encryption": self.encryption,
        }
        if self.product:
            out["product"] = self.product
        if self.instance_ok is not None:
            out["instance_matches"] = self.instance_ok
        return out

    def describe(self) -> str:
        name = f"{self.product} ({self.version_text})" if self.product else f"SQL Server {self.version_text}"
        return f"{name}, encryption {self.encryption}"


def parse_prelogin_data(data: bytes) -> PreloginReply:
    """Parse the PRELOGIN option table of a server's answer (packet data, no header)."""
    options: dict[int, bytes] = {}
    pos = 0
    while True:
        if pos >= len(data):
            raise TdsError("the PRELOGIN option table has no terminator")
        token = data[pos]
        if token == PL_TERMINATOR:
            break
        if pos + 5 > len(data):
            raise TdsError("the PRELOGIN option table is truncated")
        offset, length = struct.unpack_from(">HH", data, pos + 1)
        if offset + length > len(data):
            raise TdsError(
                f"PRELOGIN option 0x{token:02x} points at bytes {offset}..{offset + length}, "
                f"past the end of the {len(data)}-byte answer"
            )
        if token in options:
            raise TdsError(f"PRELOGIN option 0x{token:02x} appears twice")
        options[token] = data[offset : offset + length]
        pos += 5
        if len(options) > 64:
            raise TdsError("more PRELOGIN options than the protocol defines")
    version = options.get(PL_VERSION)
    if version is None or len(version) < 6:
        raise TdsError("the PRELOGIN answer has no 6-byte VERSION")
    major, minor, build, sub = struct.unpack(">BBHH", version[:6])
    enc = options.get(PL_ENCRYPTION)
    inst = options.get(PL_INSTOPT)
    return PreloginReply(
        major=major,
        minor=minor,
        build=build,
        subbuild=sub,
        encryption_byte=enc[0] if enc else None,
        instance_ok=(inst[0] == 0) if inst else None,
        options=tuple(options),
    )


def _protocol_error(ctx: ProbeContext, port: int, why: str) -> ProbeError:
    return ProbeError(
        failed(
            Reason.PROTOCOL,
            f"TCP {port} on {ctx.host} answered, but not as SQL Server: {why} (expected a TDS PRELOGIN answer)",
        )
    )


class _MaybeStrict(Exception):
    """The server closed at once or spoke TLS: it may want TDS 8.0 (TLS before PRELOGIN)."""

    def __init__(self, error: ProbeError) -> None:
        super().__init__(str(error))
        self.error = error


def strict_context() -> ssl.SSLContext:
    """TLS for TDS 8.0 "strict" servers: ALPN tds/8.0, no verification (we only look)."""
    from scanner.probes._tls import alpn_context  # the one module that builds TLS contexts

    return alpn_context(["tds/8.0"])


async def _exchange(
    pctx: ProbeContext, port: int, instance: str, tls: ssl.SSLContext | None
) -> tuple[PreloginReply, str | None]:
    reader, writer = await connect_tcp(pctx, ssl=tls, server_hostname=pctx.host if tls else None)
    try:
        writer.write(build_prelogin(instance))
        data = bytearray()
        for index in range(MAX_PACKETS):
            if index == 0 and tls is None:
                with wire_errors(pctx, "TDS PRELOGIN answer"):
                    try:
                        head = await asyncio.wait_for(reader.readexactly(HEADER.size), pctx.step_timeout())
                    except asyncio.IncompleteReadError as exc:
                        if not exc.partial:  # accepted, then closed: maybe TDS 8.0 strict (TLS first)
                            raise _MaybeStrict(ProbeError(closed(pctx, "TDS PRELOGIN answer", port))) from exc
                        head = exc.partial  # parse_header explains what is wrong with it
                    except (ConnectionResetError, BrokenPipeError) as exc:
                        # Accepted, then reset before a word (our request arrived before its
                        # close): the same as closing without answering, not a refusal.
                        raise _MaybeStrict(ProbeError(closed(pctx, "TDS PRELOGIN answer", port))) from exc
                    except asyncio.TimeoutError as exc:  # connected, then silent: busy or hung
                        raise ProbeError(no_reply(pctx, "TDS PRELOGIN answer", port=port)) from exc
                if head[:1] in (b"\x15", b"\x16") and head[1:2] == b"\x03":
                    raise _MaybeStrict(_protocol_error(pctx, port, "the server answered with TLS"))
            else:
                head = await read_exactly(pctx, reader, HEADER.size, "TDS PRELOGIN answer", started=index > 0)
            try:
                _ptype, status, length = parse_header(head)
            except TdsError as exc:
                raise _protocol_error(pctx, port, str(exc)) from None
            if len(data) + length > MAX_MESSAGE:
                raise _protocol_error(pctx, port, "the answer grows past 64 KiB")
            data += await read_exactly(pctx, reader, length - HEADER.size, "TDS PRELOGIN answer", started=True)
            if status & STATUS_EOM:
                break
        else:
            raise _protocol_error(pctx, port, f"no end of message after {MAX_PACKETS} packets")
        try:
            reply = parse_prelogin_data(bytes(data))
        except TdsError as exc:
            raise _protocol_error(pctx, port, str(exc)) from None
        ssl_object = writer.get_extra_info("ssl_object")
        return reply, (ssl_object.version() if ssl_object is not None else None)
    finally:
        close_quietly(writer)


async def prelogin(ctx: ProbeContext, port: int | None = None, instance: str = "") -> PreloginReply:
    """Connect, send PRELOGIN, read and parse the answer (bounded); ProbeError otherwise.

    SQL Server 2022 with strict encryption (TDS 8.0) wants TLS before any TDS byte and
    drops a plain PRELOGIN; when the server closes at once or answers with TLS, the
    PRELOGIN is sent again inside TLS (ALPN tds/8.0) before deciding.
    """
    port = ctx.port if port is None else port
    if port is None:
        raise ValueError("prelogin needs a port")
    pctx = ctx.with_port(port)
    try:
        reply, _ = await _exchange(pctx, port, instance, None)
        return reply
    except _MaybeStrict as plain:
        try:
            reply, tls_version = await _exchange(pctx, port, instance, strict_context())
        except (ProbeError, _MaybeStrict):
            outcome = plain.error.outcome
            detail = outcome.detail + "; a TLS-first (TDS 8.0 strict) PRELOGIN got no answer either"
            raise ProbeError(dataclasses.replace(outcome, detail=detail)) from None
        return dataclasses.replace(reply, strict_tls=tls_version or "TLS")
