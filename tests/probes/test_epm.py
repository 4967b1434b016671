"""epm probe: bind to the RPC endpoint mapper of the lab's Samba DC and list its endpoints;
dropped/rejected 135; hostile peers; a DCE/RPC server that is not an endpoint mapper.

``FakeRpcServer`` (also used by test_rpc_dynamic) is a small DCE/RPC server written from
C706 12.6 (bind_ack / bind_nak / response PDUs) and the ept_map NDR layout of C706 appendix O,
byte for byte as Samba 4.17 answers them (checked against the lab DC's answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator

import pytest

from scanner.models import CheckResult, Reason, Status
from scanner.testing import make_context, run_probe
from scanner.wire.rpc import (
    ALTER_CONTEXT,
    ALTER_CONTEXT_RESP,
    BIND,
    BIND_ACK,
    BIND_NAK,
    EPT_S_NOT_REGISTERED,
    FAULT,
    REQUEST,
    RESPONSE,
    Interface,
    build_tower,
    parse_ept_lookup,
    parse_tower,
    uuid_text,
)

TIMEOUT = 1.0
NETLOGON = "12345678-1234-abcd-ef00-01234567cffb"


async def epm(address: str, port: int = 135) -> CheckResult:
    return await run_probe("epm", make_context("dc1", address, port, probe="epm", timeout=TIMEOUT, retries=0))


def _pdu(ptype: int, body: bytes, call_id: int) -> bytes:
    return struct.pack("<BBBB4sHHI", 5, 0, ptype, 3, b"\x10\x00\x00\x00", 16 + len(body), 0, call_id) + body


def tcp_tower(iface: Interface, port: int) -> bytes:
    """build_tower with the port filled in (what a mapper answers)."""
    tower = bytearray(build_tower(iface))
    # floor 4 (TCP) is lhs_len=1, 0x07, rhs_len=2, then the port (big-endian)
    at = tower.index(b"\x01\x00\x07\x02\x00") + 5
    tower[at : at + 2] = struct.pack(">H", port)
    return bytes(tower)


class FakeRpcServer:
    """Accepts binds to `accept` interfaces (or any when None), answers ept_map from `ports`.

    `alter` says what an alter_context gets: "answer" (an alter_context_resp accepting or,
    like Samba, rejecting the interface by `accept`), "fault", "silent", "close" or "garbage".
    """

    def __init__(self, ports: dict[str, int] | None = None, accept: set[str] | None = None, alter: str = "answer") -> None:
        self.ports = ports or {}
        self.accept = accept
        self.alter = alter
        self.binds: list[str] = []
        self.alters: list[str] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(16), 3)
                frag_len, call_id = struct.unpack("<H", head[8:10])[0], struct.unpack("<I", head[12:16])[0]
                body = await reader.readexactly(frag_len - 16)
                if head[2] == ALTER_CONTEXT:
                    uuid = uuid_text(body[16:32])
                    self.alters.append(uuid)
                    if self.alter == "close":
                        return
                    if self.alter == "silent":
                        await asyncio.sleep(5)
                        return
                    if self.alter == "fault":
                        writer.write(_pdu(FAULT, struct.pack("<IHBBI", 0, 0, 0, 0, 0x1C010002) + b"\x00" * 4, call_id))
                    elif self.alter == "garbage":
                        writer.write(_pdu(ALTER_CONTEXT_RESP, b"\xff" * 6, call_id))
                    else:
                        rejected = self.accept is not None and uuid not in self.accept
                        resp = struct.pack("<HHIH", 5840, 5840, 0x1234, 0) + b"\x00\x00"  # no secondary address
                        resp += struct.pack("<B3xHH", 1, 2 if rejected else 0, 1 if rejected else 0)
                        resp += b"\x00" * 20 if rejected else body[36:56]
                        writer.write(_pdu(ALTER_CONTEXT_RESP, resp, call_id))
                elif head[2] == BIND:
                    uuid = uuid_text(body[16:32])
                    self.binds.append(uuid)
                    if self.accept is not None and uuid not in self.accept:
                        writer.write(_pdu(BIND_NAK, struct.pack("<H", 0) + b"\x00\x00", call_id))
                    else:
                        ack = struct.pack("<HHIH", 5840, 5840, 0x1234, 4) + b"135\x00" + b"\x00\x00"
                        ack += struct.pack("<B3xHH", 1, 0, 0) + body[36:56]  # the transfer syntax offered
                        writer.write(_pdu(BIND_ACK, ack, call_id))
                elif head[2] == REQUEST:
                    opnum = struct.unpack("<H", body[6:8])[0]
                    stub = self.ept_map(body[8:]) if opnum == 3 else self.ept_lookup()
                    writer.write(_pdu(RESPONSE, struct.pack("<IHBB", len(stub), 0, 0, 0) + stub, call_id))
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
            pass
        finally:
            writer.close()

    def ept_map(self, stub: bytes) -> bytes:
        tower = parse_tower(stub[16:])  # object NULL (4) + referent, max_count, length (12)
        port = self.ports.get(tower.uuid)
        out = b"\x00" * 20
        if port is None:
            return out + struct.pack("<IIII", 0, 4, 0, 0) + struct.pack("<I", EPT_S_NOT_REGISTERED)
        t = tcp_tower(Interface(tower.uuid, tower.major, tower.minor), port)
        out += struct.pack("<IIIII", 1, 4, 0, 1, 3) + struct.pack("<II", len(t), len(t)) + t
        out += b"\x00" * ((-len(out)) % 4)
        return out + struct.pack("<I", 0)

    def ept_lookup(self) -> bytes:
        """Every mapped interface as one entry (a null handle ends the listing)."""
        entries, towers = b"", b""
        for i, (uuid, port) in enumerate(self.ports.items()):
            name = b"fake\x00"
            entries += b"\x00" * 16 + struct.pack("<III", i + 1, 0, len(name)) + name
            entries += b"\x00" * ((-len(entries)) % 4)
            t = tcp_tower(Interface(uuid, 1, 0), port)
            towers += struct.pack("<II", len(t), len(t)) + t + b"\x00" * ((-len(t)) % 4)
        n = len(self.ports)
        status = 0 if n else EPT_S_NOT_REGISTERED
        return b"\x00" * 20 + struct.pack("<IIII", n, 100, 0, n) + entries + towers + struct.pack("<I", status)


@contextlib.asynccontextmanager
async def serve(server: FakeRpcServer) -> AsyncIterator[int]:
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()


# -- packets -------------------------------------------------------------------------------------


def test_tower_round_trip_keeps_interface_version_and_port() -> None:
    endpoint = parse_tower(tcp_tower(Interface(NETLOGON, 1, 0), 49152))
    assert (endpoint.uuid, endpoint.major, endpoint.minor) == (NETLOGON, 1, 0)
    assert (endpoint.protocol, endpoint.port) == ("tcp", 49152)


def test_ept_lookup_answer_with_impossible_counts_is_rejected() -> None:
    bogus = b"\x00" * 20 + struct.pack("<IIII", 0xFFFFFF, 0xFFFFFF, 0, 0xFFFFFF) + b"\x00" * 8
    with pytest.raises(ValueError):
        parse_ept_lookup(bogus)
    truncated = b"\x00" * 20 + struct.pack("<IIII", 2, 2, 0, 2) + b"\x00" * 10
    with pytest.raises(ValueError):
        parse_ept_lookup(truncated)


# -- the lab's Samba DC ----------------------------------------------------------------------------


@pytest.mark.lab
async def test_epm_binds_and_lists_the_dc_endpoints(dc) -> None:  # type: ignore[no-untyped-def]
    result = await epm(dc.address)
    assert result.status is Status.PASS, result.detail
    ev = result.evidence
    assert ev["endpoint_count"] >= ev["tcp_endpoint_count"] > 0
    netlogon = [e for e in ev["endpoints"] if e["uuid"] == NETLOGON and e["protocol"] == "tcp"]
    assert netlogon and netlogon[0]["port"] >= 1024 and netlogon[0]["name"] == "netlogon"
    assert any(p >= 49152 for p in ev["tcp_ports"])


@pytest.mark.lab
async def test_dropped_135_is_filtered_and_smb_answering_says_it_is_a_firewall(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.drop(135)
    result = await epm(dc.address)
    assert (result.status, result.reason) == (Status.FAIL, Reason.FILTERED), result.detail
    # Stealth mode: silence could be "blocked" or "unused"; SMB answering decides it.
    assert "stealth mode" in result.detail
    assert "answers SMB (TCP 445)" in result.detail and "a firewall drops it" in result.detail


@pytest.mark.lab
async def test_silent_host_says_both_are_possible_and_that_nothing_else_answers(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.drop_all()
    result = await epm(dc.address)
    assert (result.status, result.reason) == (Status.FAIL, Reason.FILTERED), result.detail
    assert "stealth mode" in result.detail and "nothing else answered either" in result.detail


@pytest.mark.lab
async def test_rejected_135_is_refused(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.reject(135)
    result = await epm(dc.address)
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED), result.detail


async def test_nothing_listening_on_135_is_refused() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await epm("127.0.0.1", port)
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED), result.detail


@pytest.mark.lab
async def test_epm_still_passes_when_only_the_dynamic_range_is_dropped(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.drop_range(49152, 65535)
    result = await epm(dc.address)
    assert result.status is Status.PASS, result.detail


# -- peers that are not endpoint mappers -------------------------------------------------------------


async def test_rpc_server_without_the_mapper_interface_fails_protocol() -> None:
    async with serve(FakeRpcServer(accept={NETLOGON})) as port:
        result = await epm("127.0.0.1", port)
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL)
    assert "not an endpoint mapper" in result.detail


async def test_mapper_with_no_entries_still_passes_with_zero_endpoints() -> None:
    async with serve(FakeRpcServer()) as port:
        result = await epm("127.0.0.1", port)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["endpoint_count"] == 0


@pytest.mark.parametrize("mode", ["garbage", "truncated", "oversized", "drip", "silent"])
async def test_hostile_peer_on_135_fails_cleanly_within_the_timeout(hostile, mode: str) -> None:  # type: ignore[no-untyped-def]
    address, port = hostile(mode, flavor="smb")
    result = await epm(address, port)
    if mode in ("silent", "drip"):  # connected, then no (complete) answer: slowness, not a verdict
        assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
    else:
        assert result.status is Status.FAIL, result.detail
        assert result.reason in (Reason.PROTOCOL, Reason.FILTERED), result.detail
