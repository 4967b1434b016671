"""The `tls` probe against real TLS servers (openssl s_server via tests/lab/tls.py) on
loopback and in the lab, with certificates that are valid, expired, not yet valid,
self-signed and issued for another name, plus hostile peers (tests/lab/hostile.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from scanner.models import CheckResult, Reason, Status
from scanner.probes.base import Settings
from scanner.testing import make_context, run_probe
from tests.lab.tls import TLS_HOSTNAME, WRONG_HOSTNAME, TlsCerts, TlsPeer


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_for(certs: TlsCerts | None, timeout: float = 1.5, **kw: object) -> Settings:
    return Settings(
        timeout=timeout,
        retries=0,
        ca_bundle=str(certs.ca_bundle) if certs is not None else None,
        **kw,  # type: ignore[arg-type]
    )


async def probe(
    name: str,
    port: int,
    *,
    host: str = TLS_HOSTNAME,
    address: str = "127.0.0.1",
    settings: Settings | None = None,
    options: dict[str, object] | None = None,
    role: str = "vmware-servers",
    protocol: str = "tcp",
) -> CheckResult:
    ctx = make_context(
        host, address, port, protocol, probe=name, options=options, role=role,
        settings=settings or settings_for(None),
    )  # fmt: skip
    return await run_probe(name, ctx)


async def timed(coro: Coroutine[Any, Any, CheckResult], limit: float) -> CheckResult:
    """Await a probe run and assert it ended within `limit` seconds."""
    started = time.monotonic()
    result = await asyncio.wait_for(coro, limit + 2)
    assert time.monotonic() - started < limit, f"took {time.monotonic() - started:.1f} s"
    return result


async def test_valid_certificate_passes_with_full_evidence(
    loopback_tls_peer: Callable[..., TlsPeer], loopback_tls_certs: TlsCerts
) -> None:
    peer = loopback_tls_peer("valid", http=False)
    result = await probe("tls", peer.port, settings=settings_for(loopback_tls_certs))
    assert result.status is Status.PASS, result.detail
    ev = result.evidence
    expected = loopback_tls_certs.certificate("valid")
    assert ev["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert ev["cipher"]
    assert ev["trusted"] is True and ev["name_matches"] is True
    assert "CN=tls.lab.test" in ev["subject"] and "portready lab CA" in ev["issuer"]
    assert TLS_HOSTNAME in ev["san"] and "127.0.0.1" in ev["san"]
    assert ev["not_after"] == expected.not_valid_after_utc.isoformat()
    assert ev["not_before"] == expected.not_valid_before_utc.isoformat()
    assert 360 <= ev["days_left"] <= 365


async def test_address_target_matches_ip_san(
    loopback_tls_peer: Callable[..., TlsPeer], loopback_tls_certs: TlsCerts
) -> None:
    peer = loopback_tls_peer("valid", http=False)
    result = await probe("tls", peer.port, host="127.0.0.1", settings=settings_for(loopback_tls_certs))
    assert result.status is Status.PASS, result.detail
    assert result.evidence["name_matches"] is True


@pytest.mark.parametrize(
    ("kind", "words", "trusted", "name_matches"),
    [
        ("expired", "expired on", True, True),
        ("not_yet_valid", "not valid until", True, True),
        ("wrong_name", f"issued for {WRONG_HOSTNAME}, not {TLS_HOSTNAME}", True, False),
        ("self_signed", "self-signed", False, True),
    ],
)
async def test_bad_certificate_warns_with_the_reason_in_words(
    loopback_tls_peer: Callable[..., TlsPeer],
    loopback_tls_certs: TlsCerts,
    kind: str,
    words: str,
    trusted: bool,
    name_matches: bool,
) -> None:
    peer = loopback_tls_peer(kind, http=False)
    result = await probe("tls", peer.port, settings=settings_for(loopback_tls_certs))
    assert result.status is Status.WARN, result.detail
    assert result.reason is Reason.CERTIFICATE
    assert words in result.detail
    assert result.evidence["trusted"] is trusted
    assert result.evidence["name_matches"] is name_matches


async def test_expired_certificate_reports_negative_days_left(
    loopback_tls_peer: Callable[..., TlsPeer], loopback_tls_certs: TlsCerts
) -> None:
    peer = loopback_tls_peer("expired", http=False)
    result = await probe("tls", peer.port, settings=settings_for(loopback_tls_certs))
    not_after = loopback_tls_certs.certificate("expired").not_valid_after_utc
    assert result.evidence["days_left"] == (not_after - dt.datetime.now(dt.timezone.utc)) // dt.timedelta(days=1)
    assert result.evidence["days_left"] < 0


async def test_private_ca_is_untrusted_without_the_bundle(
    loopback_tls_peer: Callable[..., TlsPeer],
) -> None:
    peer = loopback_tls_peer("valid", http=False)
    result = await probe("tls", peer.port, settings=settings_for(None))
    assert result.status is Status.WARN and result.reason is Reason.CERTIFICATE
    assert result.evidence["trusted"] is False
    assert "--ca-bundle" in result.detail and "not trusted" in result.detail


async def test_trust_private_ca_trusts_only_the_bundle(
    loopback_tls_peer: Callable[..., TlsPeer], loopback_tls_certs: TlsCerts
) -> None:
    peer = loopback_tls_peer("valid", http=False)
    only = settings_for(loopback_tls_certs, trust_private_ca=True)
    assert (await probe("tls", peer.port, settings=only)).status is Status.PASS
    # A bundle that is a different CA (the self-signed leaf) makes the lab CA untrusted.
    other = Settings(
        timeout=1.5, retries=0, ca_bundle=str(loopback_tls_certs.cert("self_signed")), trust_private_ca=True
    )
    result = await probe("tls", peer.port, settings=other)
    assert result.status is Status.WARN and result.evidence["trusted"] is False


async def test_closed_port_is_refused() -> None:
    result = await timed(probe("tls", closed_port()), 3)
    assert result.status is Status.FAIL and result.reason is Reason.REFUSED


async def test_plain_http_server_is_a_tls_failure(hostile: Callable[..., tuple[str, int]]) -> None:
    _, port = hostile("truncated", flavor="http")
    result = await timed(probe("tls", port), 4)
    assert result.status is Status.FAIL and result.reason is Reason.TLS, result.detail


async def test_a_service_that_speaks_first_fails_tls_whenever_its_banner_arrives() -> None:
    """An SMTP-style banner sent on accept: it reaches us before or after our TLS takes the
    connection over (a race); either way it is a plain protocol, `fail tls`, never no-reply."""
    import threading

    from tests.lab.loopback import LoopbackPeer

    class Banner(LoopbackPeer):
        def handle(self, conn: socket.socket) -> None:
            conn.sendall(b"220 mail.example ESMTP ready\r\n")
            threading.Timer(4.0, conn.close).start()

    peer = Banner()
    try:
        for _ in range(6):
            result = await timed(probe("tls", peer.port, settings=settings_for(None, timeout=1.0)), 4)
            assert (result.status, result.reason) == (Status.FAIL, Reason.TLS), result.detail
    finally:
        peer.close()


@pytest.mark.parametrize(
    ("mode", "flavor"),
    [("garbage", "tls"), ("truncated", "tls"), ("oversized", "tls"), ("drip", "tls"), ("silent", "tls")],
)
async def test_hostile_peer_fails_tls_within_the_timeout(
    hostile: Callable[..., tuple[str, int]], mode: str, flavor: str
) -> None:
    _, port = hostile(mode, flavor=flavor, cap=8 * 1024 * 1024)
    result = await timed(probe("tls", port), 5)
    if mode in ("silent", "drip"):  # accepted, then no complete handshake: slowness or not TLS, never a verdict
        assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
        assert "does not speak TLS" in result.detail
    else:
        assert result.status is Status.FAIL, result.detail
        assert result.reason is Reason.TLS, result.detail
    assert "Traceback" not in result.detail


async def test_certificate_text_is_bounded_data(tmp_path: object) -> None:
    """A hostile certificate (huge, control characters in the subject) stays bounded data."""
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    evil = "<script>\x1b[31m" + "A" * 5000
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, evil)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=9))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"n{i}.lab.test") for i in range(300)]), False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    from pathlib import Path

    directory = Path(str(tmp_path))
    (directory / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "k.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "c.pem", directory / "k.pem")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await probe("tls", port)
    finally:
        server.close()
    assert result.status is Status.WARN and result.reason is Reason.CERTIFICATE
    assert len(result.evidence["subject"]) <= 300
    assert len(result.evidence["san"]) <= 50
    assert result.evidence["trusted"] is False and result.evidence["name_matches"] is False
    assert len(result.detail) < 4000


@pytest.mark.lab
@pytest.mark.parametrize(("rule", "port", "reason"), [("drop", 8443, Reason.FILTERED), ("reject", 8444, Reason.REFUSED)])
async def test_lab_peer_passes_then_a_dropped_port_is_filtered_and_a_rejected_one_refused(
    tls_peer: Callable[..., TlsPeer], tls_certs: TlsCerts, second_host: object, rule: str, port: int, reason: Reason
) -> None:
    peer = tls_peer("valid", port=port, http=False)
    settings = settings_for(tls_certs, timeout=1.0)
    result = await probe("tls", peer.port, address=peer.address, settings=settings)
    assert result.status is Status.PASS, result.detail
    getattr(second_host.firewall, rule)(port)  # type: ignore[attr-defined]
    blocked = await timed(probe("tls", peer.port, address=peer.address, settings=settings), 4)
    assert blocked.status is Status.FAIL and blocked.reason is reason, blocked.detail
