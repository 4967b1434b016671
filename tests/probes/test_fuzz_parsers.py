"""Every parser of a peer's answer meets mutated input: it returns, or raises its own error.

A seeded mutator (the same inputs on every run, so a failure reproduces) turns valid answers
into truncated, grown, bit-flipped, length-lied and digit-swapped ones; a fixed number of
cases per parser keeps it bounded for CI. Any other exception (IndexError, struct.error,
TypeError, OverflowError...) would surface as `error internal`, so it fails the test.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

import pytest

from scanner.probes import cldap, kerberos, netbios_ns, quic
from scanner.probes import dns as dns_probe
from scanner.probes.base import ProbeError
from scanner.testing import make_context
from scanner.wire import ldap as ber
from scanner.wire import mcsqlr as _mcsqlr
from scanner.wire import rpc as _rpc
from scanner.wire import smb2 as _smb2
from scanner.wire import tds as _tds
from scanner.wire import tns as _tns

CASES = 4000
_DIGITS = ["²", "¹", "³", "٣", "9" * 30, "-1", "0"]


def mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:  # flip bits
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif op == 1:  # truncate
            del data[pos:]
        elif op == 2:  # insert random bytes
            data[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 3 and data:  # delete a span
            del data[pos : pos + rng.randint(1, 8)]
        elif op == 4:  # a length field that lies
            data[pos:pos + 2] = struct.pack(">H", rng.choice([0, 1, 0x7F, 0x80, 0xFF, 0xFFFF]))
        elif op == 5:  # repeat a chunk
            chunk = bytes(data[pos : pos + rng.randint(1, 32)])
            data[pos:pos] = chunk * rng.randint(1, 8)
        elif op == 6:  # non-ASCII digits where numbers go
            data[pos:pos] = rng.choice(_DIGITS).encode(rng.choice(["latin-1", "utf-8"]), "replace")
        else:  # high bytes
            data[pos:pos] = bytes([rng.choice([0x80, 0xFF, 0xB2, 0x00])]) * rng.randint(1, 4)
    return bytes(data[:8192])


def _fuzz(name: str, seeds: list[bytes], parse: Callable[[bytes], Any], allowed: tuple[type[BaseException], ...]) -> None:
    rng = random.Random(f"portready-{name}")
    outcomes: set[str] = set()
    for i in range(CASES):
        data = mutate(rng, rng.choice(seeds)) if i else seeds[0]
        try:
            parse(data)
            outcomes.add("parsed")
        except allowed:
            outcomes.add("rejected")
        except Exception as exc:  # noqa: BLE001 - the point: name the input that broke it
            raise AssertionError(f"{name}: {type(exc).__name__}: {exc} on {data[:200].hex()}") from exc
    if allowed:
        assert "rejected" in outcomes, f"{name}: no mutation was rejected: the mutator does not reach the parser"


def _tns_refuse(text: bytes) -> bytes:
    return struct.pack(">BBH", 0x22, 0, len(text)) + text


def test_tns_answers() -> None:
    refuse = _tns_refuse(b"(DESCRIPTION=(TMP=)(VSNNUM=318767104)(ERR=12514)(ERROR_STACK=(ERROR=(CODE=12514)(EMFI=4))))")
    accept = struct.pack(">HHHHHHH", 316, 0, 8192, 32767, 1, 0, 0) + b"\x00" * 20
    redirect = struct.pack(">H", 40) + b"(ADDRESS=(PROTOCOL=TCP)(HOST=h)(PORT=1521))"
    for ptype, seed in ((_tns.REFUSE, refuse), (_tns.ACCEPT, accept), (_tns.REDIRECT, redirect)):
        _fuzz(f"tns-{ptype}", [seed], lambda d, p=ptype: _tns.parse_answer(p, d), (_tns.TnsError,))
    _fuzz("tns-length", [bytes.fromhex("0040000002000000")], lambda d: _tns.packet_length(d[:8].ljust(8, b"\0"), bool(d[:1] == b"\0")), (_tns.TnsError,))


def test_sql_browser_answers() -> None:
    text = b"ServerName;SQL1;InstanceName;SQLEXPRESS;IsClustered;No;Version;15.0.2000.5;tcp;50123;np;\\\\SQL1\\pipe\\q;;"
    _fuzz("mcsqlr", [struct.pack("<BH", 5, len(text)) + text], _mcsqlr.parse_svr_resp, (_mcsqlr.McsqlrError,))


def test_ldap_messages() -> None:
    seed = ber.search_request(7, "", ["defaultNamingContext", "currentTime"], ber.present("objectClass"), 10)
    _fuzz("ldap-message", [seed], ber.parse_message, (ber.BerError,))
    _fuzz("ldap-split", [seed + seed], lambda d: list(ber.split_messages(d)), (ber.BerError,))
    _fuzz("ldap-result", [bytes.fromhex("0a0100040004 00".replace(" ", ""))], ber.parse_result, (ber.BerError,))
    _fuzz("ldap-entry", [bytes.fromhex("0400300c300a04017831050403" + "7a7a7a")], ber.parse_search_entry, (ber.BerError,))


def test_tds_prelogin() -> None:
    packet = _tds.build_prelogin("")
    _fuzz("tds-header", [b"\x04\x01\x00\x2f\x00\x00\x01\x00"], _tds.parse_header, (_tds.TdsError,))
    _fuzz("tds-prelogin", [packet[8:]], _tds.parse_prelogin_data, (_tds.TdsError,))


def test_rpc_answers() -> None:
    bind_ack = struct.pack("<HHI", 4280, 4280, 0x1234) + struct.pack("<H", 4) + b"135\x00" + b"\x00" * 2 + \
        struct.pack("<B3x", 1) + struct.pack("<HH", 0, 0) + b"\x00" * 20
    _fuzz("rpc-bind-ack", [bind_ack], lambda d: _rpc.parse_bind_ack(12, d), (ValueError,))
    _fuzz("rpc-tower", [struct.pack("<H", 1) + b"\x00" * 40], _rpc.parse_tower, (ValueError,))
    _fuzz("rpc-ept-lookup", [b"\x00" * 20 + struct.pack("<III", 1, 0, 1) + b"\x00" * 60], _rpc.parse_ept_lookup, (ValueError,))
    _fuzz("rpc-ept-map", [b"\x00" * 20 + struct.pack("<III", 1, 0, 1) + b"\x00" * 60], _rpc.parse_ept_map, (ValueError,))


def test_smb2_negotiate() -> None:
    header = b"\xfeSMB" + struct.pack("<H", 64) + b"\x00" * 6 + struct.pack("<H", 0) + b"\x00" * 50
    body = struct.pack("<HHH", 65, 1, 0x0311) + b"\x00" * 58 + b"\x00" * 16
    _fuzz("smb2-negotiate", [header + body], _smb2.parse_negotiate_response, (ValueError,))


def test_dns_kerberos_netbios_cldap_quic() -> None:
    import dns.message
    import dns.rrset

    query = dns_probe.build_query("lab.test")

    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "SRV", "0 100 389 dc1.lab.test."))
    _fuzz("dns", [response.to_wire()], lambda d: dns_srv(query, d), (ValueError,))
    _fuzz("kerberos", [bytes.fromhex("7e5a3058a003020105a10302011ea411180f32303236313230313030303030305a")],
          kerberos.parse_answer, (ValueError,))  # fmt: skip
    nbstat = b"\x12\x34\x84\x00\x00\x00\x00\x01\x00\x00\x00\x00" + b"\x20" + b"CK" + b"A" * 30 + b"\x00" + \
        b"\x00\x21\x00\x01\x00\x00\x00\x00\x00\x41\x01" + b"DC1            \x00\x04\x00" + b"\x00" * 46
    _fuzz("netbios-nbstat", [nbstat], netbios_ns.parse_nbstat, (ValueError,))
    netlogon = struct.pack("<HI", 23, 0x3FD) + b"\x00" * 16 + b"\x03lab\x04test\x00" + b"\xc0\x18" * 4 + b"\x00" * 20
    _fuzz("cldap-netlogon", [netlogon], cldap.parse_netlogon, (ValueError,))
    _fuzz("quic", [b"\xc0\x00\x00\x00\x00\x08" + b"\x01" * 8 + b"\x08" + b"\x02" * 8 + b"\x00\x00\x00\x01"],
          lambda d: quic.parse_reply(d, b"\x01" * 8, b"\x02" * 8), ())  # never raises: None  # fmt: skip


def dns_srv(query: Any, data: bytes) -> None:
    dns_probe.srv_targets(dns_probe.parse_response(query, data))


async def test_http_heads() -> None:
    from scanner.wire import http as _http

    ctx = make_context("h", "127.0.0.1", 80, probe="http")
    seed = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nServer: nginx\r\nLocation: /x\r\nTransfer-Encoding: chunked"
    _fuzz("http-head", [seed], lambda d: _http._parse_head(ctx, d, "GET /"), (ProbeError,))


@pytest.mark.parametrize("size", [0, 1, 7, 64, 4096])
def test_random_bytes_of_every_size(size: int) -> None:
    rng = random.Random(size)
    data = rng.randbytes(size)
    for parse, allowed in (
        (lambda d: _tns.parse_answer(_tns.REFUSE, d), (_tns.TnsError,)),
        (_mcsqlr.parse_svr_resp, (_mcsqlr.McsqlrError,)),
        (ber.parse_message, (ber.BerError,)),
        (_tds.parse_prelogin_data, (_tds.TdsError,)),
        (_smb2.parse_negotiate_response, (ValueError,)),
        (kerberos.parse_answer, (ValueError,)),
        (cldap.parse_netlogon, (ValueError,)),
    ):
        try:
            parse(data)
        except allowed:
            pass
