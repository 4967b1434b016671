"""netbios-ns (UDP 137 node status) and netbios-dgm (UDP 138) against the lab's Samba DC,
its firewall (dropped, rejected) and hostile UDP peers."""

from __future__ import annotations

import re
import struct
import time

import pytest

from scanner.models import CheckResult, Reason, Status
from scanner.probes.netbios_dgm import probe_datagram
from scanner.probes.netbios_ns import nbstat_query, parse_nbstat
from scanner.testing import make_context, run_probe

TIMEOUT = 1.0
BOUND = TIMEOUT * 2 * 2 + 1.5  # two tries of one wait each, generous


async def probe(name: str, address: str, port: int, **kw: object) -> CheckResult:
    ctx = make_context("dc1", address, port, protocol="udp", probe=name, timeout=TIMEOUT, **kw)  # type: ignore[arg-type]
    return await run_probe(name, ctx)


def node_status_answer(tid: int, names: list[tuple[str, int, int]], mac: bytes) -> bytes:
    rdata = bytes([len(names)])
    for name, suffix, flags in names:
        rdata += name.encode().ljust(15, b" ") + bytes([suffix]) + struct.pack(">H", flags)
    rdata += mac + b"\x00" * 40
    header = struct.pack(">HHHHHH", tid, 0x8400, 0, 1, 0, 0)
    rr = b"\x20" + b"CK" + b"AA" * 15 + b"\x00" + struct.pack(">HHIH", 0x21, 1, 0, len(rdata))
    return header + rr + rdata


def test_nbstat_query_asks_for_the_node_status_of_star() -> None:
    query = nbstat_query(0x1234)
    tid, flags, qd, an, ns, ar = struct.unpack(">HHHHHH", query[:12])
    assert (tid, flags, qd, an, ns, ar) == (0x1234, 0, 1, 0, 0, 0)
    assert query[12] == 0x20 and query[13:45] == b"CK" + b"AA" * 15
    assert query[-4:] == b"\x00\x21\x00\x01"  # NBSTAT, IN


def test_node_status_parser_reads_names_groups_and_mac() -> None:
    answer = node_status_answer(7, [("FS1", 0x20, 0x0400), ("CORP", 0x00, 0x8400)], bytes.fromhex("0a0b0c0d0e0f"))
    status = parse_nbstat(answer, 7)
    assert [(n["name"], n["suffix"], n["group"]) for n in status.names] == [
        ("FS1", "<20>", False),
        ("CORP", "<00>", True),
    ]
    assert status.mac == "0A-0B-0C-0D-0E-0F"
    with pytest.raises(ValueError):
        parse_nbstat(answer, 8)  # another transaction
    with pytest.raises(ValueError):
        parse_nbstat(answer[:60], 7)  # the name table is cut short


def test_datagram_probe_is_a_direct_group_datagram_to_star() -> None:
    packet = probe_datagram()
    assert packet[0] == 0x11 and struct.unpack(">H", packet[8:10])[0] == 138
    assert struct.unpack(">H", packet[10:12])[0] == len(packet) - 14


@pytest.mark.lab
async def test_netbios_ns_lists_the_dc_name_table_and_mac(dc) -> None:  # type: ignore[no-untyped-def]
    result = await probe("netbios-ns", dc.address, 137)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["netbios_name"] == dc.hostname.upper()
    assert result.evidence["netbios_domain"] == dc.domain
    assert re.fullmatch(r"([0-9A-F]{2}-){5}[0-9A-F]{2}", result.evidence["mac"])
    assert any(n["suffix"] == "<1c>" and n["group"] for n in result.evidence["names"])  # domain controllers


@pytest.mark.lab
async def test_netbios_ns_rejected_is_refused(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.reject(137, "udp")
    result = await probe("netbios-ns", dc.address, 137)
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED), result.detail


@pytest.mark.lab
async def test_netbios_ns_dropped_is_inconclusive_not_pass(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.drop(137, "udp")
    started = time.monotonic()
    result = await probe("netbios-ns", dc.address, 137)
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_ANSWER), result.detail
    assert time.monotonic() - started < BOUND


@pytest.mark.lab
async def test_port_level_udp_137_uses_the_nbstat_query(dc) -> None:  # type: ignore[no-untyped-def]
    result = await probe("udp", dc.address, 137)
    assert result.status is Status.PASS, result.detail  # Samba answers only a real NetBIOS query


@pytest.mark.lab
async def test_netbios_dgm_silence_is_inconclusive_never_pass(dc) -> None:  # type: ignore[no-untyped-def]
    result = await probe("netbios-dgm", dc.address, 138)
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_ANSWER), result.detail
    assert "never answers" in result.detail


@pytest.mark.lab
async def test_netbios_dgm_rejected_is_refused(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.reject(138, "udp")
    result = await probe("netbios-dgm", dc.address, 138)
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED), result.detail


@pytest.mark.parametrize("mode", ["udp-garbage", "udp-oversized"])
async def test_hostile_udp_peer_on_137_fails_protocol(hostile, mode: str) -> None:  # type: ignore[no-untyped-def]
    address, port = hostile(mode)
    started = time.monotonic()
    result = await probe("netbios-ns", address, port)
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL), result.detail
    assert time.monotonic() - started < BOUND


async def test_hostile_udp_peer_on_138_stays_inconclusive(hostile) -> None:  # type: ignore[no-untyped-def]
    address, port = hostile("udp-garbage")
    result = await probe("netbios-dgm", address, port)
    assert result.status is Status.INCONCLUSIVE, result.detail


@pytest.mark.lab
@pytest.mark.parametrize(("name", "port"), [("netbios-ns", 137), ("netbios-dgm", 138)])
async def test_netbios_over_ipv6_is_not_verifiable_rather_than_refused(dc, name: str, port: int) -> None:  # type: ignore[no-untyped-def]
    result = await probe(name, dc.address6, port)
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NOT_VERIFIABLE), result.detail
    assert "IPv4 only" in result.detail
