"""A small, bounded DER codec: just what the Kerberos probe sends and reads (X.690).

Encoding builds definite-length TLVs; decoding walks one level at a time and
checks every length against what is left, so a hostile peer can make it raise
DerError but never read past its input, recurse, or allocate more than the input.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

UNIVERSAL_INTEGER = 0x02
UNIVERSAL_BIT_STRING = 0x03
UNIVERSAL_OCTET_STRING = 0x04
UNIVERSAL_BOOLEAN = 0x01
UNIVERSAL_GENERAL_STRING = 0x1B
UNIVERSAL_GENERALIZED_TIME = 0x18
UNIVERSAL_SEQUENCE = 0x30


class DerError(ValueError):
    """The bytes are not the DER this codec expects."""


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _length(len(content)) + content


def integer(value: int) -> bytes:
    size = max(1, (value.bit_length() + 8) // 8)  # room for the sign bit
    return tlv(UNIVERSAL_INTEGER, value.to_bytes(size, "big", signed=True))


def general_string(text: str) -> bytes:
    return tlv(UNIVERSAL_GENERAL_STRING, text.encode("utf-8"))


def sequence(*items: bytes) -> bytes:
    return tlv(UNIVERSAL_SEQUENCE, b"".join(items))


def sequence_of(items: Iterable[bytes]) -> bytes:
    return tlv(UNIVERSAL_SEQUENCE, b"".join(items))


def explicit(number: int, inner: bytes) -> bytes:
    """[number] EXPLICIT (context-specific, constructed); numbers below 31 only."""
    return tlv(0xA0 | number, inner)


def application(number: int, inner: bytes) -> bytes:
    """[APPLICATION number] (constructed); numbers below 31 only."""
    return tlv(0x60 | number, inner)


def read_tlv(data: bytes, pos: int = 0, end: int | None = None) -> tuple[int, int, int]:
    """(tag, start, end) of the element at `pos`: data[start:end] is its content.

    The element must fit before `end` (default: the end of data). Low-tag-number form
    and definite lengths only (DER); anything else raises DerError. No copies are made.
    """
    limit = len(data) if end is None else end
    if pos + 2 > limit:
        raise DerError("truncated header")
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise DerError(f"high tag number form (tag byte 0x{tag:02x}), which LDAP and Kerberos never use")
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0:
            raise DerError("indefinite length")
        if count > 4:
            raise DerError(f"a length field of {count} bytes")
        if pos + count > limit:
            raise DerError("truncated length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > limit:
        raise DerError(f"an element of {length} bytes where {limit - pos} are left")
    return tag, pos, pos + length


def children(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """The elements inside data[start:end], in order."""
    pos = start
    while pos < end:
        tag, s, e = read_tlv(data, pos, end)
        yield tag, s, e
        pos = e


def fields(data: bytes, start: int, end: int) -> dict[int, tuple[int, int]]:
    """A SEQUENCE's [n] EXPLICIT fields: {n: (start, end) of the wrapper's content}."""
    out: dict[int, tuple[int, int]] = {}
    for tag, s, e in children(data, start, end):
        if tag & 0xE0 != 0xA0:
            raise DerError(f"tag 0x{tag:02x} where a context field belongs")
        out[tag & 0x1F] = (s, e)  # the wrapper's content: one inner element
    return out


def unwrap(data: bytes, start: int, end: int, tag: int) -> tuple[int, int]:
    """The content of the element at data[start:end], which must carry `tag`."""
    got, s, e = read_tlv(data, start, end)
    if got != tag:
        raise DerError(f"tag 0x{got:02x} where 0x{tag:02x} belongs")
    return s, e


def read_integer(data: bytes, start: int, end: int) -> int:
    s, e = unwrap(data, start, end, UNIVERSAL_INTEGER)
    if not 1 <= e - s <= 8:
        raise DerError("an integer of implausible size")
    return int.from_bytes(data[s:e], "big", signed=True)


def read_string(data: bytes, start: int, end: int, limit: int = 1024) -> str:
    """A GeneralString / GeneralizedTime / KerberosString, cut at `limit` characters."""
    tag, s, e = read_tlv(data, start, end)
    if tag not in (UNIVERSAL_GENERAL_STRING, UNIVERSAL_GENERALIZED_TIME, 0x0C, 0x16, 0x13):
        raise DerError(f"tag 0x{tag:02x} where a string belongs")
    return data[s : min(e, s + limit)].decode("utf-8", "replace")
