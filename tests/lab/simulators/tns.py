"""Oracle TNS listener simulator: stands in for the Oracle Net listener (tnslsnr of
Oracle Database 19c by default) on 1521, and on 2484 wrapped in TLS (TCPS).

Bytes followed (Oracle Net "TNS" packets; Oracle publishes no specification, so the
layouts are those of Oracle's own thin client python-oracledb, ``connect.pyx``, and
Wireshark's ``packet-tns.c`` dissector):

- Header, 8 bytes: packet length (big-endian USHORT, header included), packet checksum
  (0), type, flags, header checksum (0). Types: CONNECT 1, ACCEPT 2, REFUSE 4, DATA 6,
  RESEND 11.
- CONNECT body: version, version compatible, service options, SDU, TDU, NT protocol
  characteristics, line turnaround, value of 1, connect data length, connect data
  offset (from the start of the packet), max receivable data (4), connect flags 0/1,
  then (12c+) trace and large SDU/TDU fields up to the offset. Connect data longer than
  fits (python-oracledb: > 230 bytes) comes in the following DATA packet (2 bytes of
  data flags, then the string); the simulator accepts both.
- Connect descriptor ``(DESCRIPTION=(CONNECT_DATA=(SERVICE_NAME=..)(CID=..))(ADDRESS=..))``:
  a known SERVICE_NAME (or SID) gets ACCEPT; an unknown one REFUSE with
  ``(DESCRIPTION=(TMP=)(VSNNUM=<n>)(ERR=12514)(ERROR_STACK=(ERROR=(CODE=12514)(EMFI=4))))``
  (12505 for an unknown SID, 12504 for neither, 1153 for unbalanced parentheses), the
  listener's own text. ``(CONNECT_DATA=(COMMAND=ping))`` (tnsping, tnscmd) gets
  ``(DESCRIPTION=(TMP=)(VSNNUM=0)(ERR=0)(ALIAS=LISTENER))``; other listener commands
  (status, version, services) from a remote host get ERR=1189, as 10g and later answer. REFUSE body: user reason 0x22, system reason 0x00, data length
  (USHORT), data.
- ACCEPT body: version (min of the client's and the server's, 315 for 19c), service
  options, SDU, TDU, value of 1, data length 0, data offset, connect flags 0/1, 8 bytes,
  SDU and TDU as ULONG, 1 byte, flags2 ULONG (python-oracledb reads SDU at body
  offset 24 and flags2 at 33).
- VSNNUM: major<<24 | minor<<20 | update<<12 | component<<8 | platform, so 19.0.0.0.0
  is 318767104 (0x13000000) and 10.2.0.1.0 is 169869568.
- ``resend=True`` first answers a header-only RESEND (type 11), as the listener does
  when it wants the CONNECT again, then handles the resent CONNECT normally.

    async with TnsListener(services={"ORCLPDB1"}) as srv: ...
    python -m tests.lab.simulators tns --bind ADDR --port 1521 --service ORCLPDB1 \
        [--sid ORCL] [--version 19.0.0.0.0] [--resend] [--cert C --key K]
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import struct
from collections.abc import Iterable
from typing import Any

from . import TcpSimulator, read_exactly

TNS_CONNECT = 1
TNS_ACCEPT = 2
TNS_REFUSE = 4
TNS_DATA = 6
TNS_RESEND = 11
# length, packet checksum, type, flags, header checksum
HEADER = struct.Struct(">HHBBH")
CONNECT_FIXED = struct.Struct(">HHHHHHHHHHIBB")  # body fields up to connect flags 1
MAX_CONNECT_DATA = 16 * 1024
ERR_NO_SERVICE_NAME = 12504
ERR_UNKNOWN_SID = 12505
ERR_UNKNOWN_SERVICE = 12514
ERR_SYNTAX = 1153
ERR_NOT_LOCAL = 1189  # remote listener commands (status, version, ...) need local OS auth

_KEY = r"\(\s*{}\s*=\s*([^()]*?)\s*\)"


class TnsProtocolError(Exception):
    """Bytes that are not a TNS CONNECT; the listener drops the connection."""


def vsnnum(version: str) -> int:
    """``"19.0.0.0.0"`` → 318767104, Oracle's packed version number."""
    parts = [int(p) for p in version.split(".")]
    parts += [0] * (5 - len(parts))
    major, minor, update, component, platform = parts[:5]
    return (major << 24) | (minor << 20) | (update << 12) | (component << 8) | platform


def refuse_text(err: int, vsn: int) -> str:
    return f"(DESCRIPTION=(TMP=)(VSNNUM={vsn})(ERR={err})(ERROR_STACK=(ERROR=(CODE={err})(EMFI=4))))"


def encode_packet(ptype: int, body: bytes, flags: int = 0) -> bytes:
    return HEADER.pack(HEADER.size + len(body), 0, ptype, flags, 0) + body


def encode_refuse(text: str) -> bytes:
    data = text.encode("ascii")
    return encode_packet(TNS_REFUSE, struct.pack(">BBH", 0x22, 0x00, len(data)) + data)


def encode_accept(version: int, sdu: int, tdu: int) -> bytes:
    body = struct.pack(
        ">HHHHHHHBB8sIIBI",
        version,
        0,  # service options
        min(sdu, 0xFFFF),
        min(tdu, 0xFFFF),
        1,  # value of 1 in hardware
        0,  # accept data length
        0,  # accept data offset: patched below
        0,  # connect flags 0 (no native network encryption required)
        0,  # connect flags 1
        b"\x00" * 8,
        sdu,
        tdu,
        0,
        0,  # flags2
    )
    packet = bytearray(encode_packet(TNS_ACCEPT, body))
    struct.pack_into(">H", packet, HEADER.size + 12, len(packet))
    return bytes(packet)


def descriptor_value(descriptor: str, key: str) -> str | None:
    match = re.search(_KEY.format(re.escape(key)), descriptor, re.IGNORECASE)
    return match.group(1) if match else None


def parentheses_balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += (char == "(") - (char == ")")
        if depth < 0:
            return False
    return depth == 0


class TnsListener(TcpSimulator):
    """Answers a TNS CONNECT with ACCEPT, REFUSE or RESEND as the listener does."""

    name = "tns"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        services: Iterable[str] = ("ORCLPDB1",),
        sids: Iterable[str] = (),
        version: str = "19.0.0.0.0",
        tns_version: int = 315,
        resend: bool = False,
        listener_name: str = "LISTENER",
        **kwargs: Any,
    ) -> None:
        super().__init__(host, port, ssl_context=ssl_context, **kwargs)
        self.services = {s.upper() for s in services}
        self.sids = {s.upper() for s in sids}
        self.vsnnum = vsnnum(version)
        self.tns_version = tns_version
        self.resend = resend
        self.listener_name = listener_name
        self.accepted = 0
        self.refused: list[int] = []  # ERR codes sent, in order
        self.descriptors: list[str] = []  # connect descriptors received

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connect, descriptor = await self._read_connect(reader)
        if self.resend:
            writer.write(encode_packet(TNS_RESEND, b""))
            await asyncio.wait_for(writer.drain(), self.idle_timeout)
            connect, descriptor = await self._read_connect(reader)
        self.descriptors.append(descriptor)
        writer.write(self.answer(connect, descriptor))
        await asyncio.wait_for(writer.drain(), self.idle_timeout)
        # Native network negotiation would follow an ACCEPT; it is not simulated.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(reader.read(4096), self.idle_timeout)

    def answer(self, connect: tuple[int, ...], descriptor: str) -> bytes:
        version, _compat, _opts, sdu, tdu = connect[:5]
        if not parentheses_balanced(descriptor) or not descriptor.strip().startswith("("):
            return self._refuse(ERR_SYNTAX)
        command = descriptor_value(descriptor, "COMMAND")
        if command is not None:
            if command.lower() == "ping":
                self.refused.append(0)
                return encode_refuse(f"(DESCRIPTION=(TMP=)(VSNNUM=0)(ERR=0)(ALIAS={self.listener_name}))")
            return self._refuse(ERR_NOT_LOCAL)
        service = descriptor_value(descriptor, "SERVICE_NAME")
        sid = descriptor_value(descriptor, "SID")
        if service is not None:
            if service.upper() not in self.services:
                return self._refuse(ERR_UNKNOWN_SERVICE)
        elif sid is not None:
            if sid.upper() not in self.sids:
                return self._refuse(ERR_UNKNOWN_SID)
        else:
            return self._refuse(ERR_NO_SERVICE_NAME)
        self.accepted += 1
        return encode_accept(min(version, self.tns_version), min(sdu or 8192, 8192), tdu or 8192)

    def _refuse(self, err: int) -> bytes:
        self.refused.append(err)
        return encode_refuse(refuse_text(err, self.vsnnum))

    async def _read_packet(self, reader: asyncio.StreamReader) -> tuple[int, bytes]:
        head = await read_exactly(reader, HEADER.size, self.idle_timeout)
        length, _pck, ptype, _flags, _hck = HEADER.unpack(head)
        if length < HEADER.size:
            raise TnsProtocolError(f"packet length {length}")
        body = await read_exactly(reader, length - HEADER.size, self.idle_timeout)
        return ptype, body

    async def _read_connect(self, reader: asyncio.StreamReader) -> tuple[tuple[int, ...], str]:
        ptype, body = await self._read_packet(reader)
        if ptype != TNS_CONNECT:
            raise TnsProtocolError(f"packet type {ptype} is not CONNECT")
        if len(body) < CONNECT_FIXED.size:
            raise TnsProtocolError("CONNECT shorter than its fixed fields")
        fields = CONNECT_FIXED.unpack_from(body)
        cd_len, cd_offset = fields[8], fields[9]
        if cd_len > MAX_CONNECT_DATA:
            raise TnsProtocolError("connect data too long")
        start = cd_offset - HEADER.size
        if cd_len == 0:
            data = b""
        elif start >= CONNECT_FIXED.size and start + cd_len <= len(body):
            data = body[start : start + cd_len]
        elif start >= len(body):
            # long connect data travels in the next DATA packet (2 bytes of data flags)
            dtype, dbody = await self._read_packet(reader)
            if dtype != TNS_DATA or len(dbody) < 2 + cd_len:
                raise TnsProtocolError("connect data packet missing or short")
            data = dbody[2 : 2 + cd_len]
        else:
            raise TnsProtocolError("connect data offset inside the fixed fields or truncated")
        return fields, data.decode("latin-1")
