"""Oracle Net (TNS): the CONNECT we send, the listener's answers we parse, the exchange.

Oracle publishes no specification; the layouts follow Oracle's own thin client
(python-oracledb ``impl/thin/packet.pyx`` and ``connect``) and Wireshark's
``packet-tns.c``:

- Header, 8 bytes: packet length (big-endian USHORT, header included; from version 315
  on, packets *after* the ACCEPT may carry a 4-byte length), packet checksum, type,
  flags, header checksum. Types: CONNECT 1, ACCEPT 2, REFUSE 4, REDIRECT 5, DATA 6,
  RESEND 11, MARKER 12.
- CONNECT body: version 314, version compatible 300, service options, SDU 8192,
  TDU 32767, NT protocol characteristics, line turnaround, value of 1, connect data
  length, connect data offset (from the packet start), max receivable data (4 bytes),
  connect flags 0 and 1, then 24 bytes of trace fields up to the offset. Connect data
  over 230 bytes travels in a DATA packet right after (2 bytes of data flags first).
- ACCEPT body: version, service options, SDU, TDU, value of 1, data length, data offset,
  flags. REFUSE body: user reason, system reason, data length, data
  ``(DESCRIPTION=(TMP=)(VSNNUM=318767104)(ERR=12514)...)``. REDIRECT body: data length,
  data (the address to go to).
- VSNNUM = major<<24 | minor<<20 | update<<12 | component<<8 | platform.

Any of ACCEPT, REFUSE, REDIRECT or RESEND comes only from a TNS listener, so each
proves the listener; a REFUSE still says which service or SID it does not know.
"""

from __future__ import annotations

import asyncio
import re
import struct
from dataclasses import dataclass, field
from typing import Any

from scanner.models import Reason
from scanner.probes._options import option
from scanner.probes.base import Outcome, ProbeContext, ProbeError, failed, options_of, passed
from scanner.probes.netio import read_exactly

CONNECT = 1
ACCEPT = 2
REFUSE = 4
REDIRECT = 5
DATA = 6
RESEND = 11
MARKER = 12
TYPE_NAMES = {
    ACCEPT: "ACCEPT",
    REFUSE: "REFUSE",
    REDIRECT: "REDIRECT",
    RESEND: "RESEND",
    DATA: "DATA",
    MARKER: "MARKER",
}

HEADER = struct.Struct(">HHBBH")  # length, packet checksum, type, flags, header checksum
CONNECT_FIXED = struct.Struct(">HHHHHHHHHHIBB")
TRACE_BYTES = 24
VERSION = 314
VERSION_COMPATIBLE = 300
SERVICE_OPTIONS = 0x0C41
SDU = 8192
TDU = 32767
NT_CHARACTERISTICS = 0x7F08
MAX_INLINE_CONNECT_DATA = 230
MAX_PACKET = 65535  # a 2-byte length can say no more; 4-byte lengths are capped here too
PLACEHOLDER_SERVICE = "PORTREADY_PROBE"

ERROR_WORDS = {
    12504: "the listener wants a SERVICE_NAME or SID in the connect data",
    12505: "the listener does not know the SID given",
    12514: "the listener does not know the service name given",
    12516: "the listener has no handler with a matching protocol stack",
    12518: "the listener could not hand off the connection",
    12519: "no appropriate service handler found (the service may be blocked or at its limit)",
    12520: "the listener found no handler for the requested server type",
    12521: "the listener does not know the instance given",
    12526: "the instance is in restricted mode",
    12527: "the instance is in restricted mode or blocking new connections",
    12528: "the instance is blocking new connections",
    1153: "the listener found the connect data malformed",
}


class TnsError(ValueError):
    """Bytes that are not a TNS listener's answer; the text says what is wrong."""


def vsnnum_text(vsn: int) -> str:
    """318767104 → "19.0.0.0.0"."""
    return f"{(vsn >> 24) & 0xFF}.{(vsn >> 20) & 0xF}.{(vsn >> 12) & 0xFF}.{(vsn >> 8) & 0xF}.{vsn & 0xFF}"


def _clean(value: str, limit: int = 255) -> str:
    """Descriptor values come from us or a config: keep them from breaking the syntax."""
    return re.sub(r"[()=\s\x00-\x1f]", "", value)[:limit] or "unknown"


def connect_descriptor(service: str, target: str, port: int, local_host: str = "portready") -> str:
    return (
        f"(DESCRIPTION=(CONNECT_DATA=(SERVICE_NAME={_clean(service)})"
        f"(CID=(PROGRAM=portready)(HOST={_clean(local_host)})(USER=portready)))"
        f"(ADDRESS=(PROTOCOL=TCP)(HOST={_clean(target)})(PORT={int(port)})))"
    )


def build_connect(descriptor: str) -> bytes:
    """The CONNECT packet, plus a DATA packet when the descriptor is long."""
    data = descriptor.encode("ascii", "replace")
    body_fixed = CONNECT_FIXED.size + TRACE_BYTES
    offset = HEADER.size + body_fixed
    inline = len(data) <= MAX_INLINE_CONNECT_DATA
    body = (
        CONNECT_FIXED.pack(
            VERSION,
            VERSION_COMPATIBLE,
            SERVICE_OPTIONS,
            SDU,
            TDU,
            NT_CHARACTERISTICS,
            0,  # line turnaround
            1,  # value of 1 in hardware
            len(data),
            offset,
            0,  # max receivable connect data
            0x41,  # connect flags 0 (as the thin clients send)
            0x41,  # connect flags 1
        )
        + b"\x00" * TRACE_BYTES
    )
    if inline:
        body += data
        return HEADER.pack(HEADER.size + len(body), 0, CONNECT, 0, 0) + body
    connect = HEADER.pack(HEADER.size + len(body), 0, CONNECT, 0, 0) + body
    data_body = b"\x00\x00" + data
    return connect + HEADER.pack(HEADER.size + len(data_body), 0, DATA, 0, 0) + data_body


def packet_length(head: bytes, large: bool = False) -> int:
    """Total length from an 8-byte header; `large` = 4-byte length (version >= 315)."""
    (length,) = struct.unpack_from(">H", head, 0)
    if large or length == 0:
        # 4-byte length (negotiated version >= 315): a short packet starts with two zero bytes
        (length,) = struct.unpack_from(">I", head, 0)
    if length < HEADER.size or length > MAX_PACKET:
        raise TnsError(f"packet length {length} is outside {HEADER.size}..{MAX_PACKET}")
    return length


# Linear on any input: the value is greedy and cannot contain a parenthesis, so a failed
# match gives up at the next one (a lazy value followed by \s* backtracked quadratically on
# a peer's crafted REFUSE text, on the event loop). Spaces are stripped afterwards.
_KEY_RE = r"\(\s*{}\s*=([^()]*)\)"


def descriptor_value(text: str, key: str) -> str | None:
    m = re.search(_KEY_RE.format(re.escape(key)), text, re.IGNORECASE)
    return m.group(1).strip() if m else None


def _small_int(text: str | None, digits: int) -> int | None:
    """ASCII digits only (str.isdigit() accepts superscripts, which int() refuses), bounded."""
    if text and text.isascii() and text.isdigit() and len(text) <= digits:
        return int(text)
    return None


@dataclass(frozen=True)
class TnsAnswer:
    """What the listener answered, as evidence."""

    packet_type: int
    version: int | None = None  # TNS protocol version (ACCEPT)
    sdu: int | None = None
    vsnnum: int | None = None
    error: int | None = None
    text: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.packet_type, str(self.packet_type))

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"packet_type": self.type_name}
        if self.version is not None:
            out["tns_version"] = self.version
        if self.sdu is not None:
            out["sdu"] = self.sdu
        if self.vsnnum is not None:
            out["vsnnum"] = self.vsnnum
            out["version"] = vsnnum_text(self.vsnnum)
        if self.error is not None:
            out["error"] = self.error
            out["error_text"] = f"TNS-{self.error:05d}" + (
                f": {ERROR_WORDS[self.error]}" if self.error in ERROR_WORDS else ""
            )
        out.update(self.extra)
        return out


def parse_answer(ptype: int, body: bytes) -> TnsAnswer:
    """Parse an ACCEPT, REFUSE or REDIRECT body (RESEND has none)."""
    if ptype == ACCEPT:
        if len(body) < 16:
            raise TnsError(f"an ACCEPT body of {len(body)} bytes is too short")
        version, _opts, sdu, _tdu, _one, dlen, doff = struct.unpack_from(">HHHHHHH", body)
        text = ""
        start = doff - HEADER.size
        if dlen and 0 <= start and start + dlen <= len(body):
            text = body[start : start + dlen].decode("latin-1")
        if len(body) >= 28 and version >= 315:
            (big_sdu,) = struct.unpack_from(">I", body, 24)
            sdu = big_sdu or sdu
        return TnsAnswer(ACCEPT, version=version, sdu=sdu, text=text)
    if ptype == REFUSE:
        if len(body) < 4:
            raise TnsError(f"a REFUSE body of {len(body)} bytes is too short")
        user, system, dlen = struct.unpack_from(">BBH", body)
        text = body[4 : 4 + dlen].decode("latin-1")
        vsn = descriptor_value(text, "VSNNUM")
        err = descriptor_value(text, "ERR") or descriptor_value(text, "CODE")
        return TnsAnswer(
            REFUSE,
            vsnnum=_small_int(vsn, 10),
            error=_small_int(err, 6),
            text=text,
            extra={"refuse_reasons": [user, system]},
        )
    if ptype == REDIRECT:
        if len(body) < 2:
            raise TnsError("a REDIRECT without its data length")
        (dlen,) = struct.unpack_from(">H", body)
        text = body[2 : 2 + dlen].decode("latin-1")
        return TnsAnswer(REDIRECT, text=text, extra={"redirect": text})
    if ptype == RESEND:
        return TnsAnswer(RESEND)
    raise TnsError(f"packet type {ptype} is not an answer to CONNECT")


def _protocol_error(ctx: ProbeContext, why: str) -> ProbeError:
    return ProbeError(
        failed(
            Reason.PROTOCOL,
            f"TCP {ctx.port} on {ctx.host} answered, but not as an Oracle TNS listener: {why}",
        )
    )


async def read_packet(ctx: ProbeContext, reader: asyncio.StreamReader, large: bool = False) -> tuple[int, bytes]:
    head = await read_exactly(ctx, reader, HEADER.size, "TNS answer")
    try:
        length = packet_length(head, large)
    except TnsError as exc:
        raise _protocol_error(ctx, str(exc)) from None
    ptype = head[4]
    if ptype not in TYPE_NAMES and ptype != CONNECT:
        raise _protocol_error(ctx, f"packet type {ptype} is not a TNS packet type")
    body = await read_exactly(ctx, reader, length - HEADER.size, "TNS answer", started=True)
    return ptype, body


async def exchange(
    ctx: ProbeContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, service: str
) -> TnsAnswer:
    """Send CONNECT (again after one RESEND) and return the listener's answer."""
    assert ctx.port is not None
    packet = build_connect(connect_descriptor(service, ctx.host, ctx.port))
    resent = False
    while True:
        writer.write(packet)
        ptype, body = await read_packet(ctx, reader)
        if ptype == REDIRECT and len(body) >= 2 and struct.unpack_from(">H", body)[0] > len(body) - 2:
            # the redirect address may follow in a DATA packet (flag-dependent): take it, bounded
            dtype, dbody = await read_packet(ctx, reader)
            if dtype == DATA:
                body = body[:2] + dbody[2:]
        try:
            answer = parse_answer(ptype, body)
        except TnsError as exc:
            raise _protocol_error(ctx, str(exc)) from None
        if answer.packet_type == RESEND and not resent:
            resent = True
            continue
        if resent:
            answer = TnsAnswer(
                answer.packet_type,
                answer.version,
                answer.sdu,
                answer.vsnnum,
                answer.error,
                answer.text,
                {**answer.extra, "resend": True},
            )
        return answer


@dataclass(frozen=True)
class TnsOptions:
    """Options of the TNS and TCPS probes."""

    service: str | None = option(None, "the Oracle service name; unset: the inventory's oracle_service")


def service_name(ctx: ProbeContext) -> tuple[str, bool]:
    """(service name, whether it is configured): the row's option, else the inventory setting `oracle_service`."""
    configured = options_of(ctx, TnsOptions).service or ctx.settings.values.get("oracle_service")
    if configured:
        return str(configured), True
    return PLACEHOLDER_SERVICE, False


def outcome_for(ctx: ProbeContext, answer: TnsAnswer, configured: bool, **extra: Any) -> Outcome:
    """Every listener answer is a pass for reachability; the words say what it means."""
    ev = {**answer.evidence(), **extra}
    version = f" (Oracle {vsnnum_text(answer.vsnnum)})" if answer.vsnnum else ""
    where = f"the Oracle listener on TCP {ctx.port}"
    if answer.packet_type == ACCEPT:
        return passed(f"{where} accepted a TNS CONNECT (TNS version {answer.version})", **ev)
    if answer.packet_type == REFUSE:
        if answer.error == 12514 and not configured:
            why = (
                "it does not know the placeholder service name, as expected; set oracle_service in "
                "the inventory to check a real service"
            )
        elif answer.error is not None:
            why = ERROR_WORDS.get(answer.error, f"TNS-{answer.error:05d}")
        else:
            why = "no error code given"
        return passed(
            f"{where} answered{version} and refused the CONNECT ({why}); the listener is reachable",
            **ev,
        )
    if answer.packet_type == REDIRECT:
        return passed(
            f"{where} answered with a REDIRECT to {answer.text[:300]!r}; the listener is reachable, "
            "the redirect address must be reachable too",
            **ev,
        )
    # a second RESEND in a row
    return passed(f"{where} answered RESEND twice; the listener is reachable", **ev)
