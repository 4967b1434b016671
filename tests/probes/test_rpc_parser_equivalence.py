"""The endpoint-mapper parsers against a copy of their first, plain implementation.

`parse_tower` and `parse_ept_lookup` are the hottest Python of a DC scan, so they were
rewritten for speed (offset arithmetic, precompiled structs). The copy below (`_Old*`)
is the reference: on valid listings like Samba's, on random bytes and on seeded mutations
of valid answers, the new parser returns exactly what the old one returned, or raises the
same exception type with the same words.
"""

from __future__ import annotations

import random
import struct
import uuid as uuid_module
from collections.abc import Callable
from typing import Any

import pytest

from scanner.wire import rpc
from scanner.wire.rpc import Endpoint, Interface, build_tower

from .test_fuzz_parsers import mutate

# --------------------------------------------------------------------------- the old parsers, verbatim


# The old parsers read through rpc._Reader, which the bind_ack parser still uses unchanged.
_OldReader = rpc._Reader


def old_parse_tower(data: bytes, annotation: str = "") -> Endpoint:
    r = _OldReader(data)
    count = r.u16()
    if count < 3 or count > 16:
        raise ValueError(f"a tower of {count} floors")
    floors: list[tuple[bytes, bytes]] = []
    for _ in range(count):
        lhs = r.take(r.u16())
        rhs = r.take(r.u16())
        floors.append((lhs, rhs))
    lhs0, rhs0 = floors[0]
    if len(lhs0) != 19 or lhs0[0] != 0x0D or len(rhs0) < 2:
        raise ValueError("the first floor is not an interface identifier")
    uuid = str(uuid_module.UUID(bytes_le=lhs0[1:17]))
    major = int(struct.unpack("<H", lhs0[17:19])[0])
    minor = int(struct.unpack("<H", rhs0[:2])[0])
    protocol, port, address = "unknown", None, None
    for lhs, rhs in floors[3:]:
        if not lhs:
            continue
        kind = lhs[0]
        name = rpc._FLOOR_NAMES.get(kind)
        if kind in (0x07, 0x08, 0x1F) and len(rhs) >= 2:
            protocol, port = name or "tcp", int(struct.unpack(">H", rhs[:2])[0])
        elif kind == 0x09 and len(rhs) == 4:
            address = address or ".".join(str(b) for b in rhs)
        elif kind in (0x0F, 0x10) or (kind == 0x11 and protocol == "unknown"):
            protocol = name or "np"
            address = rhs.rstrip(b"\x00").decode("ascii", "replace")
    return Endpoint(uuid, major, minor, annotation, protocol, port, address)


def old_parse_ept_lookup(stub: bytes) -> tuple[bytes, list[Endpoint], int, int]:
    r = _OldReader(stub)
    handle = r.take(20)
    num = r.u32()
    if num > 4096:
        raise ValueError(f"{num} entries announced")
    entries: list[tuple[int, str]] = []
    if num or r.left > 4:
        _max, _offset, actual = r.u32(), r.u32(), r.u32()
        if actual != num:
            raise ValueError(f"{actual} entries sent, {num} announced")
        for _ in range(num):
            r.take(16)
            ref = r.u32()
            _off, length = r.u32(), r.u32()
            if length > 64:
                raise ValueError(f"an annotation of {length} bytes (at most 64)")
            text = r.take(length).split(b"\x00", 1)[0].decode("latin-1")
            r.align(4)
            entries.append((ref, text))
    endpoints: list[Endpoint] = []
    bad = 0
    for ref, text in entries:
        if not ref:
            continue
        _max = r.u32()
        length = r.u32()
        tower = r.take(length)
        r.align(4)
        try:
            endpoints.append(old_parse_tower(tower, text))
        except (ValueError, struct.error):
            bad += 1
    status = r.u32()
    return handle, endpoints, status, bad


# --------------------------------------------------------------------------- a listing like Samba's

_IFACES = list(rpc.KNOWN_INTERFACES)


def _floors(*floors: tuple[bytes, bytes]) -> bytes:
    out = struct.pack("<H", len(floors))
    for lhs, rhs in floors:
        out += struct.pack("<H", len(lhs)) + lhs + struct.pack("<H", len(rhs)) + rhs
    return out


def samba_tower(i: int) -> bytes:
    """The i-th tower of a Samba DC's listing: mostly ncacn_ip_tcp, some named pipes, lrpc, http."""
    iface = Interface(_IFACES[i % len(_IFACES)], i % 4, i % 2)
    head = build_tower(iface)[2:]  # floors 1-3: interface, NDR, rpc connection-oriented
    floors = []
    pos = 0
    for _ in range(3):
        lhs_len = struct.unpack_from("<H", head, pos)[0]
        lhs = head[pos + 2 : pos + 2 + lhs_len]
        pos += 2 + lhs_len
        rhs_len = struct.unpack_from("<H", head, pos)[0]
        floors.append((lhs, head[pos + 2 : pos + 2 + rhs_len]))
        pos += 2 + rhs_len
    kind = i % 6
    if kind == 3:
        return _floors(*floors, (b"\x0f", b"\\PIPE\\lsass\x00"), (b"\x11", b"\\\\DC1\x00"))
    if kind == 4:
        return _floors(*floors, (b"\x10", f"samba-{i}\x00".encode()))
    proto = b"\x1f" if kind == 5 else b"\x07"
    return _floors(*floors, (proto, struct.pack(">H", 49152 + i)), (b"\x09", bytes([198, 18, 0, 10])))


def samba_listing(n: int = 53, status: int = 0, handle: bytes = b"\x01" * 20) -> bytes:
    """An ept_lookup answer of `n` entries (annotations of several lengths, towers padded to 4)."""
    out = bytearray(handle + struct.pack("<IIII", n, n, 0, n))
    for i in range(n):
        note = (b"" if i % 5 == 0 else f"Impl friendly name {i}".encode()[: 1 + i % 40]) + b"\x00"
        out += bytes(range(i, i + 16)) + struct.pack("<III", 3 + i, 0, len(note)) + note
        out += b"\x00" * ((-len(out)) % 4)
    for i in range(n):
        tower = samba_tower(i)
        out += struct.pack("<II", len(tower), len(tower)) + tower
        out += b"\x00" * ((-len(out)) % 4)
    return bytes(out + struct.pack("<I", status))


# --------------------------------------------------------------------------- equivalence


def _outcome(parse: Callable[[bytes], Any], data: bytes) -> tuple[str, Any]:
    try:
        return "ok", parse(data)
    except Exception as exc:  # noqa: BLE001 - the exception itself is what is compared
        return type(exc).__name__, str(exc)


def _same(new: Callable[[bytes], Any], old: Callable[[bytes], Any], data: bytes) -> str:
    got, want = _outcome(new, data), _outcome(old, data)
    assert got == want, f"{data.hex()}: new {got!r}, old {want!r}"
    return got[0]


def test_a_samba_listing_parses_as_before() -> None:
    stub = samba_listing()
    handle, endpoints, status, bad = rpc.parse_ept_lookup(stub)
    assert (len(endpoints), status, bad) == (53, 0, 0)
    assert {e.protocol for e in endpoints} == {"tcp", "np", "lrpc", "http"}
    assert rpc.parse_ept_lookup(stub) == old_parse_ept_lookup(stub)
    for i in range(60):
        tower = samba_tower(i)
        assert rpc.parse_tower(tower, "note") == old_parse_tower(tower, "note")


@pytest.mark.parametrize("n", [0, 1, 2, 7, 53])
def test_mutated_listings_parse_or_fail_as_before(n: int) -> None:
    rng = random.Random(f"portready-epm-equivalence-{n}")
    seed = samba_listing(n, status=rng.choice([0, rpc.EPT_S_NOT_REGISTERED]))
    outcomes = set()
    for i in range(1500 if n < 53 else 600):
        data = mutate(rng, seed) if i else seed
        outcomes.add(_same(rpc.parse_ept_lookup, old_parse_ept_lookup, data))
    assert "ok" in outcomes and "ValueError" in outcomes


def test_mutated_towers_parse_or_fail_as_before() -> None:
    rng = random.Random("portready-tower-equivalence")
    seeds = [samba_tower(i) for i in range(12)]
    outcomes = set()
    for i in range(6000):
        data = mutate(rng, rng.choice(seeds)) if i else seeds[0]
        note = rng.choice(["", "Impl friendly name", "\xe9"])
        outcomes.add(_same(lambda d, a=note: rpc.parse_tower(d, a), lambda d, a=note: old_parse_tower(d, a), data))
    assert outcomes >= {"ok", "ValueError"}


def test_random_bytes_parse_or_fail_as_before() -> None:
    rng = random.Random("portready-epm-random")
    for i in range(4000):
        size = rng.choice([0, 1, 2, 3, 4, 19, 20, 23, 24, 27, 28, 36, 40, 64, 200, 1024])
        data = rng.randbytes(size)
        if i % 3 == 0 and size >= 24:  # a plausible count, so the entries are reached
            data = data[:20] + struct.pack("<I", rng.choice([0, 1, 2, 5, 4096, 4097])) + data[24:]
        if i % 5 == 0 and size >= 36:  # max/offset/actual agree
            count = struct.unpack_from("<I", data, 20)[0]
            data = data[:24] + struct.pack("<III", count, 0, count) + data[36:]
        _same(rpc.parse_ept_lookup, old_parse_ept_lookup, data)
        tower = rng.randbytes(rng.randint(0, 120))
        if i % 2 and len(tower) >= 2:
            tower = struct.pack("<H", rng.randint(3, 6)) + tower[2:]
        _same(rpc.parse_tower, old_parse_tower, tower)


def test_the_limits_are_the_same() -> None:
    for n in (4096, 4097, 0xFFFFFFFF):
        stub = b"\x00" * 20 + struct.pack("<IIII", n, n, 0, n) + b"\x00" * 40
        _same(rpc.parse_ept_lookup, old_parse_ept_lookup, stub)
    for length in (63, 64, 65, 0xFFFFFFFF):
        entry = b"\x00" * 16 + struct.pack("<III", 1, 0, length) + b"a" * min(length, 70)
        stub = b"\x00" * 20 + struct.pack("<IIII", 1, 1, 0, 1) + entry + b"\x00" * 12
        _same(rpc.parse_ept_lookup, old_parse_ept_lookup, stub)
    for floors in (2, 3, 16, 17):
        _same(rpc.parse_tower, old_parse_tower, struct.pack("<H", floors) + b"\x00" * 80)
