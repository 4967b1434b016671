"""cldap probe: the netlogon LDAP ping against the lab DC, hostile peers and crafted names."""

from __future__ import annotations

import struct
import time

import pytest

from scanner.models import CheckResult, Reason, Status
from scanner.probes.base import Settings
from scanner.probes.cldap import NetlogonError, parse_netlogon, read_name
from scanner.testing import make_context, run_probe
from scanner.wire import ldap as wire
from tests.probes.test_ldap import canned_udp, request_id


async def run_cldap(address: str, port: int, domain: str | None = None, **kw: object) -> CheckResult:
    values = {"domain": domain} if domain else {}
    settings = Settings(timeout=float(kw.pop("timeout", 2.0)), retries=int(kw.pop("retries", 1)), values=values)  # type: ignore[call-overload]
    ctx = make_context("dc1", address, port, "udp", probe="cldap", settings=settings)
    return await run_probe("cldap", ctx)


def netlogon_blob(names: bytes) -> bytes:
    return struct.pack("<HHI", 23, 0, 0x1FD) + b"\x11" * 16 + names


def test_compressed_names_follow_backward_pointers() -> None:
    names = (
        b"\x03lab\x04test\x00"
        + b"\xc0\x18"
        + b"\x03dc1\xc0\x18"
        + b"\x03LAB\x00"
        + b"\x03DC1\x00"
        + b"\x00"
        + b"\x07Default\x00"
        + b"\xc0\x2e"
    )
    out = parse_netlogon(netlogon_blob(names))
    assert (out["forest"], out["domain"], out["dc_name"]) == ("lab.test", "lab.test", "dc1.lab.test")
    assert "pdc" in out["flags"] and "gc" in out["flags"]


@pytest.mark.parametrize(
    "names",
    [b"\xc0\x18", b"\x03abc\xc0\x18", b"\x3fabc", b"\x03ab", b"\x80\x00"],
    ids=["self-pointer", "loop", "label-past-end", "truncated", "bad-length-byte"],
)
def test_hostile_compressed_names_are_refused(names: bytes) -> None:
    with pytest.raises(NetlogonError):
        parse_netlogon(netlogon_blob(names))


def test_names_longer_than_255_bytes_are_refused() -> None:
    blob = b"\x3f" + b"a" * 63
    blob = blob * 5 + b"\x00"
    with pytest.raises(NetlogonError):
        read_name(blob, 0)


@pytest.mark.parametrize("mode", ["udp-garbage", "udp-oversized"])
async def test_hostile_udp_answers_fail_protocol(hostile, mode: str) -> None:
    address, port = hostile(mode, cap=1024 * 1024)
    result = await run_cldap(address, port, timeout=1.0, retries=0)
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL)


async def test_ldap_answer_without_netlogon_for_a_domain_is_a_warning() -> None:
    def answer(request: bytes) -> bytes:
        mid = request_id(request)
        return wire.message(mid, wire.tlv(wire.SEARCH_DONE, wire.integer(0, 0x0A) + wire.octets("") + wire.octets("")))

    async with canned_udp(answer) as port:
        result = await run_cldap("127.0.0.1", port, domain="other.test")
    assert (result.status, result.reason) == (Status.WARN, Reason.PROTOCOL)
    assert "other.test" in result.detail


async def test_silence_is_inconclusive_never_pass() -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
        quiet.bind(("127.0.0.1", 0))  # bound, never answers
        started = time.monotonic()
        result = await run_cldap("127.0.0.1", quiet.getsockname()[1], timeout=0.5, retries=1)
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_ANSWER)
    assert time.monotonic() - started < 3


@pytest.mark.lab
@pytest.mark.parametrize("domain", [None, "lab.test"])
async def test_dc_answers_the_ping_with_forest_domain_and_site(dc, domain: str | None) -> None:
    result = await run_cldap(dc.address, 389, domain=domain)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["dc_name"] == dc.fqdn
    assert result.evidence["domain"] == dc.realm.lower()
    assert result.evidence["netbios_domain"] == dc.domain
    assert result.evidence["dc_site"]


@pytest.mark.lab
async def test_dropped_udp_389_is_inconclusive(dc, dc_firewall) -> None:
    dc_firewall.drop(389, "udp")
    result = await run_cldap(dc.address, 389, timeout=0.5, retries=1)
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_ANSWER)


@pytest.mark.lab
async def test_rejected_udp_389_is_refused(dc, dc_firewall) -> None:
    dc_firewall.reject(389, "udp")
    result = await run_cldap(dc.address, 389, timeout=1.0, retries=0)
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED)
