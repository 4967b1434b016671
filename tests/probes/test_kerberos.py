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
    values: dict[str, object] = {"domain": domain} if domain else {}
    values.update(kw.pop("values", {}))  # type: ignore[call-overload]
    settings = Settings(
        timeout=float(kw.pop("timeout", 2.0)),  # type: ignore[arg-type]
        retries=int(kw.pop("retries", 1)),  # type: ignore[call-overload]
        values=values,
        credentials={"domain-controllers": creds} if creds else {},
    )
    host = str(kw.pop("host", "dc1"))
    options = kw.pop("options", None)
    ctx = make_context(host, address, port, proto, probe="kerberos", settings=settings, options=options)  # type: ignore[arg-type]
    return await run_probe("kerberos", ctx)


def test_as_req_is_application_10_der() -> None:
    assert as_req("LAB.TEST", "someone")[0] == 0x6A


def test_as_req_decodes_with_an_independent_asn1_codec() -> None:
    """impacket's pyasn1 schema (a test dependency only) reads our hand-built DER."""
    from impacket.krb5.asn1 import AS_REQ
    from pyasn1.codec.der import decoder

    req, rest = decoder.decode(as_req("LAB.TEST", "DC1$"), asn1Spec=AS_REQ())
    assert rest == b""
    assert (int(req["pvno"]), int(req["msg-type"])) == (5, 10)
    body = req["req-body"]
    assert str(body["cname"]["name-string"][0]) == "DC1$" and str(body["realm"]) == "LAB.TEST"
    assert [str(x) for x in body["sname"]["name-string"]] == ["krbtgt", "LAB.TEST"]
    assert [int(e) for e in body["etype"]] == [18, 17, 23]
    assert int(req["padata"][0]["padata-type"]) == 128


def test_krb_error_built_by_an_independent_codec_is_parsed() -> None:
    from impacket.krb5.asn1 import KRB_ERROR
    from pyasn1.codec.der import encoder

    err = KRB_ERROR()
    err["pvno"] = 5
    err["msg-type"] = 30
    err["stime"] = "20260102030405Z"
    err["susec"] = 0
    err["error-code"] = 25
    err["realm"] = "LAB.TEST"
    err["sname"]["name-type"] = 2
    err["sname"]["name-string"][0] = "krbtgt"
    err["sname"]["name-string"][1] = "LAB.TEST"
    err["e-text"] = "x" * 500
    ev = parse_answer(bytes(encoder.encode(err)))
    assert (ev["error_code"], ev["error_name"], ev["realm"]) == (25, "KDC_ERR_PREAUTH_REQUIRED", "LAB.TEST")
    assert ev["kdc_time"] == "2026-01-02T03:04:05Z" and len(ev["e_text"]) == 200


@pytest.mark.parametrize(
    "data",
    [
        b"\x7e\x80\x30\x00\x00\x00",  # indefinite length
        b"\x7e\x85\x01\x00\x00\x00\x00\x30",  # 5-byte length
        b"\x7e\x04\x30\x02\xa0\x7f",  # inner length beyond the outer
        b"\x7e\x03\x30\x01\x02",  # truncated field
        b"\x7e\x02\x30\x00",  # no fields at all
        b"\x7e\x07\x30\x05\xa6\x03\x02\x01\x19",  # error-code alone: required fields missing
        b"\x7e\x0e\x30\x0c\xa6\x0a\x02\x08" + b"\x7f" * 8,  # integer without the rest
        b"\x7e\x06\x30\x04\x1f\x81\x01\x00",  # high tag number
        b"\x6b\x07\x30\x05\xa1\x03\x02\x01\x0b",  # AS-REP without crealm
        b"\x7e" + b"\x84\x00\x00\xff\xf0" + b"\x30" * 64,  # length far past the data
    ],
)
def test_hostile_der_is_a_clear_error(data: bytes) -> None:
    with pytest.raises(KerberosAnswerError, match="malformed Kerberos message"):
        parse_answer(data)


async def test_the_as_req_is_encoded_once_per_realm_and_client_not_per_target() -> None:
    as_req.cache_clear()
    for _ in range(3):
        async with canned_tcp(lambda _r: b"\x00\x00\x00\x01\x00") as port:
            await run_krb("127.0.0.1", port, domain="corp.example", host="dc9.corp.example", retries=0)
    info = as_req.cache_info()
    assert (info.misses, info.hits) == (1, 2)


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
async def test_kdc_answers_the_computer_account_with_preauth_required_and_time(dc, proto: str) -> None:
    """The quiet default: the DC's own computer account (DC1$) exists, so the KDC answers
    PREAUTH_REQUIRED (no audit failure) instead of PRINCIPAL_UNKNOWN (event 4768, 0x6)."""
    result = await run_krb(dc.address, 88, proto, domain="lab.test", host=dc.fqdn)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["error_name"] == "KDC_ERR_PREAUTH_REQUIRED"
    assert (result.evidence["asked_client"], result.evidence["client_choice"]) == ("DC1$", "computer-account")
    assert "footprint" not in result.evidence
    assert result.evidence["realm"] == dc.realm
    assert result.evidence["kdc_time"].endswith("Z")


@pytest.mark.lab
async def test_target_by_address_falls_back_to_an_unknown_name_and_says_what_it_costs(dc) -> None:
    result = await run_krb(dc.address, 88, "tcp", domain="lab.test", host=dc.address)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["error_name"] == "KDC_ERR_C_PRINCIPAL_UNKNOWN"
    assert result.evidence["client_choice"] == "unknown-name"
    assert "4768" in result.evidence["footprint"]


@pytest.mark.lab
async def test_a_named_client_from_the_inventory_is_what_the_kdc_is_asked_about(dc) -> None:
    result = await run_krb(dc.address, 88, "tcp", domain="lab.test", host=dc.address, values={"kerberos_client": "Administrator"})
    assert result.status is Status.PASS, result.detail
    assert (result.evidence["asked_client"], result.evidence["client_choice"]) == ("Administrator", "named")
    assert result.evidence["error_name"] == "KDC_ERR_PREAUTH_REQUIRED"


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


def test_mutated_krb_errors_never_raise_anything_but_a_clear_error() -> None:
    """Every single-byte change and every truncation of a real KRB-ERROR: parsed or refused."""
    from impacket.krb5.asn1 import KRB_ERROR
    from pyasn1.codec.der import encoder

    err = KRB_ERROR()
    err["pvno"], err["msg-type"], err["stime"], err["susec"] = 5, 30, "20260102030405Z", 0
    err["error-code"], err["realm"] = 6, "LAB.TEST"
    err["sname"]["name-type"] = 2
    err["sname"]["name-string"][0] = "krbtgt"
    err["sname"]["name-string"][1] = "LAB.TEST"
    good = bytes(encoder.encode(err))
    variants = [good[:n] for n in range(len(good))]
    variants += [good[:i] + bytes([v]) + good[i + 1 :] for i in range(len(good)) for v in (0x00, 0x7F, 0x80, 0x84, 0xFF)]
    for data in variants:
        try:
            out = parse_answer(data)
        except KerberosAnswerError:
            continue
        assert out["message"] == "KRB-ERROR" and isinstance(out["error_code"], int)
