"""dns probe: UDP and TCP queries against the lab DC's DNS, hostile and crafted answers."""

from __future__ import annotations

import struct
import time

import pytest

from scanner.models import CheckResult, Reason, Status
from scanner.probes.base import Settings
from scanner.testing import make_context, run_probe
from tests.probes.test_ldap import canned_tcp, canned_udp


async def run_dns(address: str, port: int, proto: str = "udp", domain: str | None = None, **kw: object) -> CheckResult:
    settings = Settings(
        timeout=float(kw.pop("timeout", 2.0)),  # type: ignore[arg-type]
        retries=int(kw.pop("retries", 1)),  # type: ignore[call-overload]
        values={"domain": domain} if domain else {},
    )
    ctx = make_context("dc1", address, port, proto, probe="dns", settings=settings)
    return await run_probe("dns", ctx)


def looping_answer(query: bytes) -> bytes:
    """A response whose answer name is a compression pointer to itself."""
    header = query[:2] + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0)
    question = query[12:]
    answer = b"\xc0" + bytes([12 + len(question)]) + struct.pack(">HHIH", 1, 1, 60, 4) + b"\x7f\x00\x00\x01"
    return header + question + answer


async def test_compression_loop_in_an_answer_is_a_protocol_failure() -> None:
    async with canned_udp(looping_answer) as port:
        result = await run_dns("127.0.0.1", port)
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL)


async def test_refused_rcode_without_a_domain_still_proves_a_dns_server() -> None:
    async with canned_udp(lambda q: q[:2] + b"\x81\x05" + q[4:]) as port:
        result = await run_dns("127.0.0.1", port)
    assert result.status is Status.PASS
    assert result.evidence["rcode"] == "REFUSED"


async def test_refused_rcode_for_the_domain_is_a_warning_with_words() -> None:
    async with canned_udp(lambda q: q[:2] + b"\x81\x05" + q[4:]) as port:
        result = await run_dns("127.0.0.1", port, domain="lab.test")
    assert (result.status, result.reason) == (Status.WARN, Reason.PROTOCOL)
    assert "refuses" in result.detail


async def test_tcp_frame_shorter_than_a_header_fails_protocol() -> None:
    async with canned_tcp(lambda _r: b"\x00\x05hello") as port:
        result = await run_dns("127.0.0.1", port, "tcp")
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL)


@pytest.mark.parametrize("mode", ["garbage", "truncated", "oversized", "drip", "silent"])
async def test_hostile_tcp_peer_fails_cleanly_within_the_timeout(hostile, mode: str) -> None:
    address, port = hostile(mode, flavor="http", cap=8 * 1024 * 1024)
    started = time.monotonic()
    result = await run_dns(address, port, "tcp", timeout=1.0, retries=0)
    if mode in ("silent", "drip"):  # connected, then no (complete) answer: slowness, not a verdict
        assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
    else:
        assert result.status is Status.FAIL
        assert result.reason in (Reason.PROTOCOL, Reason.FILTERED)
    assert time.monotonic() - started < 4


@pytest.mark.parametrize("mode", ["udp-garbage", "udp-oversized"])
async def test_hostile_udp_peer_is_never_a_pass(hostile, mode: str) -> None:
    address, port = hostile(mode, cap=1024 * 1024)
    result = await run_dns(address, port, timeout=0.5, retries=0)
    # random bytes almost never carry our query id: ignored as strays (inconclusive); if one
    # does, it is judged as malformed (protocol)
    assert result.status in (Status.INCONCLUSIVE, Status.FAIL)
    assert result.status is not Status.PASS


@pytest.mark.lab
@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_dc_locator_srv_lists_the_dc(dc, proto: str) -> None:
    result = await run_dns(dc.address, 53, proto, domain="lab.test")
    assert result.status is Status.PASS, result.detail
    assert [d["target"] for d in result.evidence["domain_controllers"]] == [dc.fqdn]
    assert result.evidence["domain_controllers"][0]["port"] == 389


@pytest.mark.lab
async def test_without_a_domain_any_answer_proves_the_server(dc) -> None:
    result = await run_dns(dc.address, 53)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["rcode"]


@pytest.mark.lab
async def test_unknown_domain_is_a_warning(dc) -> None:
    result = await run_dns(dc.address, 53, domain="elsewhere.test")
    assert (result.status, result.reason) == (Status.WARN, Reason.PROTOCOL)


@pytest.mark.lab
async def test_dropped_udp_53_is_inconclusive_and_rejected_tcp_53_refused(dc, dc_firewall) -> None:
    dc_firewall.drop(53, "udp")
    dc_firewall.reject(53)
    udp = await run_dns(dc.address, 53, timeout=0.5, retries=0)
    tcp = await run_dns(dc.address, 53, "tcp", timeout=1.0, retries=0)
    assert (udp.status, udp.reason) == (Status.INCONCLUSIVE, Reason.NO_ANSWER)
    assert (tcp.status, tcp.reason) == (Status.FAIL, Reason.REFUSED)
