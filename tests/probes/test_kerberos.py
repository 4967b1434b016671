"""kerberos probe: AS-REQ over TCP and UDP against the lab KDC, hostile and crafted peers."""

from __future__ import annotations

import time

import pytest

from scanner.models import CheckResult, Reason, Status
from scanner.probes.base import Credentials, Settings
from scanner.probes.kerberos import KerberosAnswerError, as_req, parse_answer
from scanner.testing import make_context, run_probe
from tests.probes.test_ldap import canned_tcp, canned_udp


async def run_krb(address: str, port: int, proto: str = "tcp", domain: str | None = None, **kw: object) -> CheckResult:
    creds = kw.pop("credentials", None)
    settings = Settings(
        timeout=float(kw.pop("timeout", 2.0)),  # type: ignore[arg-type]
        retries=int(kw.pop("retries", 1)),  # type: ignore[call-overload]
        values={"domain": domain} if domain else {},
        credentials={"domain-controllers": creds} if creds else {},
    )
    ctx = make_context("dc1", address, port, proto, probe="kerberos", settings=settings)
    return await run_probe("kerberos", ctx)


def test_as_req_is_application_10_der() -> None:
    assert as_req("LAB.TEST", "someone")[0] == 0x6A


def test_garbage_and_truncated_answers_are_refused() -> None:
    for data in (b"", b"\x00garbage", as_req("X", "y"), b"\x7e\x84\x7f\xff\xff\xff\x30"):
        with pytest.raises(KerberosAnswerError):
            parse_answer(data)


async def test_length_prefix_of_two_gigabytes_is_a_protocol_failure() -> None:
    async with canned_tcp(lambda _r: b"\x7f\xff\xff\xff" + b"\x7e" * 64) as port:
        result = await run_krb("127.0.0.1", port)
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL)
    assert "2147483647" in result.detail


@pytest.mark.parametrize("mode", ["garbage", "truncated", "oversized", "drip", "silent"])
async def test_hostile_tcp_peer_fails_cleanly_within_the_timeout(hostile, mode: str) -> None:
    address, port = hostile(mode, flavor="tds", cap=8 * 1024 * 1024)
    started = time.monotonic()
    result = await run_krb(address, port, timeout=1.0, retries=0)
    if mode in ("silent", "drip"):  # connected, then no (complete) answer: slowness, not a verdict
        assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
    else:
        assert result.status is Status.FAIL
        assert result.reason in (Reason.PROTOCOL, Reason.FILTERED)
    assert time.monotonic() - started < 4


@pytest.mark.parametrize("mode", ["udp-garbage", "udp-oversized"])
async def test_hostile_udp_peer_fails_protocol(hostile, mode: str) -> None:
    address, port = hostile(mode, cap=1024 * 1024)
    result = await run_krb(address, port, "udp", timeout=1.0, retries=0)
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL)


async def test_udp_echo_of_our_request_is_not_kerberos() -> None:
    async with canned_udp(lambda data: data) as port:
        result = await run_krb("127.0.0.1", port, "udp")
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL)


@pytest.mark.lab
@pytest.mark.parametrize("proto", ["tcp", "udp"])
async def test_kdc_answers_unknown_client_with_krb_error_and_time(dc, proto: str) -> None:
    result = await run_krb(dc.address, 88, proto, domain="lab.test")
    assert result.status is Status.PASS, result.detail
    assert result.evidence["error_name"] == "KDC_ERR_C_PRINCIPAL_UNKNOWN"
    assert result.evidence["realm"] == dc.realm
    assert result.evidence["kdc_time"].endswith("Z")


@pytest.mark.lab
async def test_known_account_gets_preauth_required_and_no_secret_is_sent(dc) -> None:
    creds = Credentials(dc.admin_user, dc.admin_password, dc.realm.lower())
    result = await run_krb(dc.address, 88, "tcp", credentials=creds)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["error_name"] == "KDC_ERR_PREAUTH_REQUIRED"
    assert dc.admin_password not in str(result.to_dict())


@pytest.mark.lab
async def test_placeholder_realm_still_proves_the_kdc(dc) -> None:
    result = await run_krb(dc.address, 88, "tcp")
    assert result.status is Status.PASS, result.detail
    assert "placeholder" in result.evidence["asked_realm"]


@pytest.mark.lab
async def test_dropped_tcp_88_is_filtered_and_udp_88_inconclusive(dc, dc_firewall) -> None:
    dc_firewall.drop(88)
    dc_firewall.drop(88, "udp")
    tcp = await run_krb(dc.address, 88, "tcp", timeout=0.5, retries=0)
    udp = await run_krb(dc.address, 88, "udp", timeout=0.5, retries=0)
    assert (tcp.status, tcp.reason) == (Status.FAIL, Reason.FILTERED)
    assert (udp.status, udp.reason) == (Status.INCONCLUSIVE, Reason.NO_ANSWER)


@pytest.mark.lab
async def test_rejected_88_is_refused_on_both_transports(dc, dc_firewall) -> None:
    dc_firewall.reject(88)
    dc_firewall.reject(88, "udp")
    tcp = await run_krb(dc.address, 88, "tcp", timeout=1.0, retries=0)
    udp = await run_krb(dc.address, 88, "udp", timeout=1.0, retries=0)
    assert (tcp.status, tcp.reason) == (Status.FAIL, Reason.REFUSED)
    assert (udp.status, udp.reason) == (Status.FAIL, Reason.REFUSED)
