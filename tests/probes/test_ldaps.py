"""ldaps probe: TLS and certificate judgement, RootDSE over TLS (lab DC and loopback peers)."""

from __future__ import annotations

import json
import ssl

import pytest

from scanner.models import CheckResult, Reason, Status
from scanner.probes.base import Credentials, Settings
from scanner.testing import make_context, run_probe
from tests.probes.test_ldap import canned_tcp, rootdse_answer

ROOTDSE = {"defaultNamingContext": ["DC=lab,DC=test"], "dnsHostName": ["dc9.lab.test"],
           "isGlobalCatalogReady": ["TRUE"]}  # fmt: skip


async def run_ldaps(address: str, port: int, host: str = "dc1", **kw: object) -> CheckResult:
    ctx = make_context(host, address, port, probe="ldaps", **kw)  # type: ignore[arg-type]
    return await run_probe("ldaps", ctx)


def server_context(certs, kind: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.cert(kind), certs.key(kind))
    return context


async def test_trusted_certificate_for_the_name_passes_with_tls_evidence(loopback_tls_certs) -> None:
    settings = Settings(timeout=2.0, retries=1, ca_bundle=str(loopback_tls_certs.ca_bundle))
    async with canned_tcp(rootdse_answer(ROOTDSE), server_context(loopback_tls_certs, "valid")) as port:
        result = await run_ldaps("127.0.0.1", port, host="127.0.0.1", settings=settings)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["tls_version"].startswith("TLS")
    assert result.evidence["cert_trusted"] is True
    assert result.evidence["cert_days_left"] > 0
    # The kit's keys, and the pre-kit aliases beside them (same facts, old spelling).
    assert result.evidence["days_left"] == result.evidence["cert_days_left"]
    assert result.evidence["cert_not_after"].endswith("Z") and "127.0.0.1" in result.evidence["cert_names"]
    assert result.evidence["default_naming_context"] == "DC=lab,DC=test"
    # This peer answers one request per connection: the policy binds get no answer, so the
    # reading says it cannot tell rather than guess.
    assert result.evidence["channel_binding"] == "unknown"


@pytest.mark.parametrize(
    ("kind", "words"),
    [("expired", "expired"), ("self_signed", "self-signed"), ("wrong_name", "is issued for"),
     ("not_yet_valid", "not valid until")],
)  # fmt: skip
async def test_certificate_problem_is_a_warning_with_words(loopback_tls_certs, kind: str, words: str) -> None:
    settings = Settings(timeout=2.0, retries=1, ca_bundle=str(loopback_tls_certs.ca_bundle))
    async with canned_tcp(rootdse_answer(ROOTDSE), server_context(loopback_tls_certs, kind)) as port:
        result = await run_ldaps("127.0.0.1", port, host="127.0.0.1", settings=settings)
    assert (result.status, result.reason) == (Status.WARN, Reason.CERTIFICATE), result.detail
    assert words in result.detail


async def test_untrusted_ca_without_bundle_is_a_warning(loopback_tls_certs) -> None:
    async with canned_tcp(rootdse_answer(ROOTDSE), server_context(loopback_tls_certs, "valid")) as port:
        result = await run_ldaps("127.0.0.1", port, host="127.0.0.1")
    assert (result.status, result.reason) == (Status.WARN, Reason.CERTIFICATE)
    assert "not trusted" in result.detail and "--ca-bundle" in result.detail


@pytest.mark.parametrize("mode", ["garbage", "truncated", "drip", "silent"])
async def test_peer_that_does_not_complete_tls_fails_tls(hostile, mode: str) -> None:
    address, port = hostile(mode, flavor="tls")
    result = await run_ldaps(address, port, timeout=1.0, retries=0)
    if mode in ("silent", "drip"):  # accepted, then no complete handshake: slowness or not TLS, never a verdict
        assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
        assert "does not speak TLS" in result.detail
    else:
        assert (result.status, result.reason) == (Status.FAIL, Reason.TLS), result.detail
        assert result.evidence["channel_binding"] == "no-tls"


async def test_tls_peer_speaking_something_else_fails_protocol(loopback_tls_certs) -> None:
    async with canned_tcp(
        lambda _r: b"HTTP/1.1 400 Bad Request\r\n\r\n", server_context(loopback_tls_certs, "valid")
    ) as port:
        result = await run_ldaps("127.0.0.1", port, host="127.0.0.1", timeout=1.0, retries=0)
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL)


async def test_nothing_listening_on_the_ldaps_port_is_refused() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await run_ldaps("127.0.0.1", port, timeout=1.0, retries=0)
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED), result.detail


@pytest.mark.lab
async def test_samba_ldaps_works_but_its_self_made_certificate_is_flagged(dc) -> None:
    result = await run_ldaps(dc.address, 636, host=dc.fqdn)
    assert (result.status, result.reason) == (Status.WARN, Reason.CERTIFICATE), result.detail
    assert result.evidence["default_naming_context"] == dc.base_dn
    assert "Samba" in result.evidence["cert_issuer"]


@pytest.mark.lab
async def test_samba_ldaps_passes_once_its_ca_is_trusted(dc) -> None:
    ca = dc.root / "lib" / "private" / "tls" / "ca.pem"
    settings = Settings(timeout=2.0, retries=1, ca_bundle=str(ca))
    result = await run_ldaps(dc.address, 3269, host=dc.fqdn, options={"gc": True}, settings=settings)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["is_global_catalog_ready"] is True


@pytest.mark.lab
async def test_simple_bind_over_tls_succeeds_without_leaking_the_password(dc) -> None:
    creds = Credentials(dc.admin_user, dc.admin_password, dc.domain)
    result = await run_ldaps(dc.address, 636, host=dc.fqdn, credentials=creds)
    assert result.evidence["bind_result"] == "success", result.detail
    assert dc.admin_password not in json.dumps(result.to_dict())


@pytest.mark.lab
async def test_dropped_ldaps_port_is_filtered(dc, dc_firewall) -> None:
    dc_firewall.drop(636)
    result = await run_ldaps(dc.address, 636, timeout=1.0, retries=0)
    assert (result.status, result.reason) == (Status.FAIL, Reason.FILTERED)


@pytest.mark.lab
async def test_rejected_gc_ssl_port_is_refused(dc, dc_firewall) -> None:
    dc_firewall.reject(3269)
    result = await run_ldaps(dc.address, 3269, options={"gc": True}, timeout=1.0, retries=0)
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED)
