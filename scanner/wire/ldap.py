"""A tiny, bounded BER codec and the few LDAP messages the directory probes send.

Peers choose what they send us, so decoding never trusts a length: every TLV
must fit inside its parent, lengths use at most 4 bytes, indefinite lengths and
high tag numbers (which LDAP never uses) are refused, and nesting is capped.
Anything else raises `BerError`, which probes turn into reason `protocol`::

    request = search_request(1, "", ["namingContexts"], present("objectClass"))
    message = parse_message(data)            # LdapMessage(message_id, op, body)
    entry = parse_search_entry(message.body) # (dn, {attr: [bytes, ...]})

Stream helpers (`read_ldap_message`) read one LDAPMessage from an asyncio
stream through `netio.read_exactly`, so a 2^31-byte length ends the probe.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Iterator, NamedTuple

from scanner.models import Reason
from scanner.probes.base import ProbeContext, ProbeError, failed
from scanner.wire.der import DerError, read_tlv

MAX_LDAP_MESSAGE = 512 * 1024  # a RootDSE or bind answer is a few KiB
# What one exchange may hold in memory (all answers to one request together), and what it
# may read in all (answers to other message ids are read and dropped): one check stays
# bounded whatever a peer sends.
MAX_EXCHANGE_KEPT = 1024 * 1024
MAX_EXCHANGE_READ = 4 * 1024 * 1024
MAX_ANSWERS = 256
MAX_DEPTH = 16
MAX_ITEMS = 4096

# LDAP protocol operations (RFC 4511, [APPLICATION n]).
BIND_REQUEST = 0x60
BIND_RESPONSE = 0x61
SEARCH_REQUEST = 0x63
SEARCH_ENTRY = 0x64
SEARCH_DONE = 0x65
SEARCH_REFERENCE = 0x73
EXTENDED_REQUEST = 0x77
EXTENDED_RESPONSE = 0x78

RESULT_NAMES = {
    0: "success",
    1: "operationsError",
    2: "protocolError",
    7: "authMethodNotSupported",
    8: "strongerAuthRequired",
    13: "confidentialityRequired",
    14: "saslBindInProgress",
    32: "noSuchObject",
    48: "inappropriateAuthentication",
    49: "invalidCredentials",
    50: "insufficientAccessRights",
    51: "busy",
    52: "unavailable",
    53: "unwillingToPerform",
    80: "other",
}


class BerError(ValueError):
    """The bytes are not the BER we expect (message says where)."""


# -- encoding -------------------------------------------------------------------------------
def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


def integer(value: int, tag: int = 0x02) -> bytes:
    size = max(1, (value.bit_length() + 8) // 8)
    return tlv(tag, value.to_bytes(size, "big", signed=True))


def octets(value: bytes | str, tag: int = 0x04) -> bytes:
    return tlv(tag, value.encode() if isinstance(value, str) else value)


def sequence(*parts: bytes, tag: int = 0x30) -> bytes:
    return tlv(tag, b"".join(parts))


def present(attribute: str) -> bytes:
    """Filter `(attribute=*)`."""
    return octets(attribute, 0x87)


def equals(attribute: str, value: bytes | str) -> bytes:
    """Filter `(attribute=value)`."""
    return sequence(octets(attribute), octets(value), tag=0xA3)


def and_(*filters: bytes) -> bytes:
    return sequence(*filters, tag=0xA0)


def message(message_id: int, op: bytes) -> bytes:
    return sequence(integer(message_id), op)


def search_request(message_id: int, base: str, attributes: list[str], filter_: bytes, time_limit: int = 0) -> bytes:
    """A base-object search (the RootDSE read and the CLDAP ping)."""
    body = (
        octets(base)
        + integer(0, 0x0A)  # scope baseObject
        + integer(0, 0x0A)  # derefAliases never
        + integer(0)  # sizeLimit
        + integer(time_limit)
        + tlv(0x01, b"\x00")  # typesOnly FALSE
        + filter_
        + sequence(*(octets(a) for a in attributes))
    )
    return message(message_id, tlv(SEARCH_REQUEST, body))


def simple_bind_request(message_id: int, name: str, password: str) -> bytes:
    body = integer(3) + octets(name) + octets(password, 0x80)
    return message(message_id, tlv(BIND_REQUEST, body))


def sasl_bind_request(message_id: int, mechanism: str, credentials: bytes) -> bytes:
    sasl = sequence(octets(mechanism), octets(credentials), tag=0xA3)
    return message(message_id, tlv(BIND_REQUEST, integer(3) + octets("") + sasl))


def extended_request(message_id: int, oid: str, value: bytes | None = None) -> bytes:
    body = octets(oid, 0x80) + (octets(value, 0x81) if value is not None else b"")
    return message(message_id, tlv(EXTENDED_REQUEST, body))


WHOAMI_OID = "1.3.6.1.4.1.4203.1.11.3"


# -- decoding -------------------------------------------------------------------------------
class Tlv(NamedTuple):  # a tuple: a RootDSE answer is a few hundred of them
    tag: int
    value: bytes

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)


def span(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content stop) of the TLV at `pos`, which must fit before `end`:
    the one TLV reader (`der.read_tlv`, definite lengths only), its errors as BerError."""
    try:
        return read_tlv(data, pos, end)
    except DerError as exc:
        raise BerError(f"BER: {exc}") from None


def decode_one(data: bytes, pos: int = 0) -> tuple[Tlv, int]:
    """The TLV at `pos` and the position after it; it must fit inside `data`."""
    tag, start, stop = span(data, pos, len(data))
    return Tlv(tag, bytes(data[start:stop])), stop


def children(value: bytes) -> list[Tlv]:
    """The TLVs inside a constructed value; they must fill it exactly."""
    return [Tlv(tag, bytes(value[start:stop])) for tag, start, stop in _spans(value, 0, len(value))]


def _spans(data: bytes, pos: int, end: int) -> list[tuple[int, int, int]]:
    """`span` of each TLV filling data[pos:end], read in place (no copy per element)."""
    out: list[tuple[int, int, int]] = []
    while pos < end:
        if len(out) >= MAX_ITEMS:
            raise BerError("too many BER elements")
        item = span(data, pos, end)
        out.append(item)
        pos = item[2]
    return out


def as_int(item: Tlv) -> int:
    if item.tag not in (0x02, 0x0A) or not 1 <= len(item.value) <= 8:
        raise BerError(f"expected an INTEGER, got tag 0x{item.tag:02x} of {len(item.value)} bytes")
    return int.from_bytes(item.value, "big", signed=True)


def text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


@dataclass(frozen=True)
class LdapMessage:
    message_id: int
    op: int  # protocolOp tag, e.g. SEARCH_ENTRY
    body: bytes  # the protocolOp's content


@dataclass(frozen=True)
class LdapResult:
    code: int
    matched_dn: str
    diagnostic: str
    sasl_credentials: bytes | None = None  # bindResponse serverSaslCreds [7]
    extras: tuple[Tlv, ...] = ()

    @property
    def name(self) -> str:
        return RESULT_NAMES.get(self.code, f"code {self.code}")


def parse_message(data: bytes) -> LdapMessage:
    outer, end = decode_one(data)
    if outer.tag != 0x30 or end != len(data):
        raise BerError("not an LDAPMessage SEQUENCE")
    parts = children(outer.value)
    if len(parts) < 2:
        raise BerError("LDAPMessage without protocolOp")
    return LdapMessage(as_int(parts[0]), parts[1].tag, parts[1].value)


def split_messages(data: bytes) -> Iterator[LdapMessage]:
    """Several LDAPMessages back to back (a CLDAP datagram holds entry and done)."""
    pos = 0
    count = 0
    while pos < len(data):
        count += 1
        if count > 64:
            raise BerError("too many LDAP messages in one datagram")
        _, end = decode_one(data, pos)
        yield parse_message(data[pos:end])
        pos = end


def parse_result(body: bytes) -> LdapResult:
    parts = children(body)
    if len(parts) < 3 or parts[0].tag != 0x0A:
        raise BerError("malformed LDAPResult")
    sasl = next((p.value for p in parts[3:] if p.tag == 0x87), None)
    return LdapResult(as_int(parts[0]), text(parts[1].value), text(parts[2].value), sasl, tuple(parts[3:]))


def parse_search_entry(body: bytes) -> tuple[str, dict[str, list[bytes]]]:
    parts = _spans(body, 0, len(body))
    if len(parts) != 2 or parts[1][0] != 0x30:
        raise BerError("malformed SearchResultEntry")
    attributes: dict[str, list[bytes]] = {}
    for tag, start, stop in _spans(body, parts[1][1], parts[1][2]):
        pair = _spans(body, start, stop)
        if tag != 0x30 or len(pair) != 2 or pair[1][0] != 0x31:
            raise BerError("malformed PartialAttribute")
        (_, name_at, name_end), (_, values_at, values_end) = pair
        attributes[text(body[name_at:name_end])] = [body[a:b] for _t, a, b in _spans(body, values_at, values_end)]
    return text(body[parts[0][1] : parts[0][2]]), attributes


# -- streams --------------------------------------------------------------------------------
def _protocol(ctx: ProbeContext, what: str, problem: str) -> ProbeError:
    return ProbeError(
        failed(
            Reason.PROTOCOL,
            f"{ctx.host} answered on {ctx.where()} with something that is not LDAP ({what}: "
            f"{problem}) — another service listens on this port, or a middlebox mangles it",
        )
    )


async def read_ldap_message(ctx: ProbeContext, reader: asyncio.StreamReader, what: str = "LDAP answer") -> bytes:
    """One whole LDAPMessage (bytes), bounded by MAX_LDAP_MESSAGE."""
    from scanner.probes.netio import read_exactly

    head = await read_exactly(ctx, reader, 2, what)
    if head[0] != 0x30:
        raise _protocol(ctx, what, f"first byte 0x{head[0]:02x}, not an LDAPMessage SEQUENCE")
    extra = b""
    if head[1] & 0x80:
        count = head[1] & 0x7F
        if count == 0 or count > 4:
            raise _protocol(ctx, what, "unsupported BER length form")
        extra = await read_exactly(ctx, reader, count, what, started=True)
        length = int.from_bytes(extra, "big")
    else:
        length = head[1]
    if length > MAX_LDAP_MESSAGE:
        raise _protocol(ctx, what, f"announces a message of {length} bytes")
    body = await read_exactly(ctx, reader, length, what, started=True)
    return head + extra + body


async def exchange(
    ctx: ProbeContext,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: bytes,
    message_id: int,
    what: str,
) -> list[LdapMessage]:
    """Send a request, read answers to `message_id` up to its final one (Done/Bind/Extended)."""
    from scanner.probes.netio import drain_within, wire_errors

    with wire_errors(ctx, what):  # a peer that stops reading is `no-reply`, as silence is
        writer.write(request)
        await drain_within(writer, ctx.step_timeout())
    out: list[LdapMessage] = []
    kept = read = 0
    while True:
        raw = await read_ldap_message(ctx, reader, what)
        read += len(raw)
        if read > MAX_EXCHANGE_READ:
            raise _protocol(ctx, what, f"more than {MAX_EXCHANGE_READ // 1024} KiB of answers to one request")
        try:
            msg = parse_message(raw)
        except BerError as exc:
            raise _protocol(ctx, what, str(exc)) from None
        if msg.message_id == 0 and msg.op == EXTENDED_RESPONSE:
            # Notice of disconnection (RFC 4511 4.4.1): the server is dropping us.
            # Only the result name: the notice's text is the peer's and may echo what we sent.
            try:
                said = parse_result(msg.body).name
            except BerError:
                said = "unparsable notice"
            raise ProbeError(
                failed(
                    Reason.PROTOCOL,
                    f"{ctx.host} sent an LDAP notice of disconnection on {ctx.where()} ({said})",
                )
            )
        if msg.message_id != message_id:
            continue
        out.append(msg)
        kept += len(raw)
        if len(out) > MAX_ANSWERS or kept > MAX_EXCHANGE_KEPT:
            raise _protocol(ctx, what, f"too many answers (over {MAX_ANSWERS} or {MAX_EXCHANGE_KEPT // 1024} KiB)")
        if msg.op in (SEARCH_DONE, BIND_RESPONSE, EXTENDED_RESPONSE):
            return out
        if msg.op not in (SEARCH_ENTRY, SEARCH_REFERENCE):
            raise _protocol(ctx, what, f"unexpected protocolOp tag 0x{msg.op:02x}")
