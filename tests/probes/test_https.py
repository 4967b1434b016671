"""The `https` probe: openssl s_server -www (tests/lab/tls.py) for real HTTPS, s_server
-rev for TLS that is not HTTP, hostile peers behind TLS and in the clear."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from scanner.models import Reason, Status
from tests.lab.simulators import server_ssl_context
from tests.lab.simulators.papi import PapiServer
from tests.lab.tls import TlsCerts, TlsPeer
from tests.probes.test_tls import closed_port, probe, settings_for, timed


async def test_https_answer_passes_with_status_and_tls_evidence(
    loopback_tls_peer: Callable[..., TlsPeer], loopback_tls_certs: TlsCerts
) -> None:
    peer = loopback_tls_peer("valid", http=True)
    result = await probe("https", peer.port, settings=settings_for(loopback_tls_certs))
    assert result.status is Status.PASS, result.detail
    assert result.evidence["status"] == 200
    assert result.evidence["path"] == "/"
    assert result.evidence["trusted"] is True and result.evidence["tls_version"].startswith("TLS")


async def test_certificate_problem_turns_the_https_pass_into_warn(
    loopback_tls_peer: Callable[..., TlsPeer], loopback_tls_certs: TlsCerts
) -> None:
    peer = loopback_tls_peer("expired", http=True)
    result = await probe("https", peer.port, settings=settings_for(loopback_tls_certs))
    assert result.status is Status.WARN and result.reason is Reason.CERTIFICATE
    assert result.evidence["status"] == 200 and "expired" in result.detail


async def test_expect_narrows_the_accepted_statuses(loopback_tls_certs: TlsCerts) -> None:
    context = server_ssl_context(str(loopback_tls_certs.cert("valid")), str(loopback_tls_certs.key("valid")))
    async with PapiServer(ssl_context=context) as srv:  # Apache-like: 404 on "/", 401 on /platform
        ok = await probe("https", srv.port, settings=settings_for(loopback_tls_certs),
                         options={"path": "/platform/latest", "expect": [401]})  # fmt: skip
        wrong = await probe("https", srv.port, settings=settings_for(loopback_tls_certs),
                            options={"path": "/", "expect": [200]})  # fmt: skip
        anything = await probe("https", srv.port, settings=settings_for(loopback_tls_certs))
    assert ok.status is Status.PASS and ok.evidence["status"] == 401 and ok.evidence["server"] == "Apache"
    assert wrong.status is Status.FAIL and wrong.reason is Reason.PROTOCOL
    assert "404" in wrong.detail and "200 was expected" in wrong.detail
    assert anything.status is Status.PASS and anything.evidence["status"] == 404


async def test_tls_service_that_is_not_http_fails_protocol(
    loopback_tls_peer: Callable[..., TlsPeer], loopback_tls_certs: TlsCerts
) -> None:
    peer = loopback_tls_peer("valid", http=False)  # s_server -rev echoes lines reversed
    result = await timed(probe("https", peer.port, settings=settings_for(loopback_tls_certs)), 4)
    assert result.status is Status.FAIL and result.reason is Reason.PROTOCOL, result.detail
    assert result.evidence["tls_version"]  # the handshake worked and is reported


async def test_closed_port_is_refused() -> None:
    result = await timed(probe("https", closed_port()), 3)
    assert result.status is Status.FAIL and result.reason is Reason.REFUSED


@pytest.mark.parametrize("mode", ["garbage", "truncated", "oversized", "drip", "silent"])
async def test_hostile_peer_fails_within_the_timeout(hostile: Callable[..., tuple[str, int]], mode: str) -> None:
    _, port = hostile(mode, flavor="tls", cap=8 * 1024 * 1024)
    result = await timed(probe("https", port), 5)
    if mode in ("silent", "drip"):  # accepted, then no complete handshake: slowness or not TLS, never a verdict
        assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
        assert "does not speak TLS" in result.detail
    else:
        assert result.status is Status.FAIL and result.reason is Reason.TLS, result.detail


def test_bad_options_are_rejected_when_profiles_load() -> None:
    from scanner.probes.https import HttpsProbe

    HttpsProbe.validate({"path": "/owa/", "expect": [200, 302], "via_proxy": False})
    bads: list[dict[str, object]] = [
        {"path": "owa"}, {"expect": ["200"]}, {"expect": []}, {"via_proxy": "yes"}, {"port": 1},
    ]  # fmt: skip
    for bad in bads:
        with pytest.raises(ValueError):
            HttpsProbe.validate(bad)


@pytest.mark.lab
async def test_lab_https_passes_and_dropped_port_is_filtered(
    tls_peer: Callable[..., TlsPeer], tls_certs: TlsCerts, second_host: object
) -> None:
    peer = tls_peer("valid", port=443, http=True)
    settings = settings_for(tls_certs, timeout=1.0)
    result = await probe("https", 443, address=peer.address, settings=settings)
    assert result.status is Status.PASS, result.detail
    second_host.firewall.drop(443)  # type: ignore[attr-defined]
    dropped = await timed(probe("https", 443, address=peer.address, settings=settings), 4)
    assert dropped.status is Status.FAIL and dropped.reason is Reason.FILTERED, dropped.detail
