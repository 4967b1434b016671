"""The one TLS kit (scanner/probes/_tls.py): every TLS-speaking probe emits the same TLS
evidence keys with the same values against the same peer (openssl s_server on loopback);
the trust store is the platform's (truststore), --ca-bundle adds to it, certifi is the
fallback; certificates OpenSSL accepts but cryptography cannot read are a verdict."""

from __future__ import annotations

import asyncio
import json
import os
import random
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scanner.models import Reason, Status
from scanner.probes import _tls
from scanner.probes._web import safe_xml
from tests.lab.tls import TlsCerts, TlsPeer
from tests.probes.test_tls import probe, settings_for

# Every probe that speaks TLS, with the options that make it speak TLS on any port.
TLS_PROBES: dict[str, dict[str, object]] = {
    "https": {}, "tls": {}, "ldaps": {}, "winrm": {"tls": True}, "tns-tls": {},
    "papi": {}, "vsphere": {}, "ontap": {"tls": True},
}  # fmt: skip
# Keys a trusted certificate for the right name always carries (trust_error, certificate_error
# and via_proxy only appear when there is something to say).
ALWAYS = set(_tls.KEYS) - {"trust_error", "certificate_error", "via_proxy"}
SAME_VALUES = ("tls_version", "trusted", "trust_store", "subject", "issuer", "san", "not_after", "sha256", "name_matches")


@pytest.mark.parametrize("name", sorted(TLS_PROBES))
async def test_every_tls_probe_emits_the_same_tls_evidence(
    name: str, loopback_tls_peer: Callable[..., TlsPeer], loopback_tls_certs: TlsCerts
) -> None:
    peer = loopback_tls_peer("valid")
    settings = settings_for(loopback_tls_certs)
    reference = await probe("tls", peer.port, settings=settings)
    result = await probe(name, peer.port, settings=settings, options=TLS_PROBES[name])
    assert result.reason is not Reason.INTERNAL, result.detail
    keys = {k for k in result.evidence if k in _tls.KEYS}
    assert keys == ALWAYS, f"{name}: {sorted(keys ^ ALWAYS)}"
    for key in SAME_VALUES:
        assert result.evidence[key] == reference.evidence[key], (name, key)
    assert result.evidence["trust_store"] == "system+ca-bundle"


async def test_tls_1_0_only_ldaps_warns_like_every_other_tls_probe(loopback_tls_certs: TlsCerts) -> None:
    from tests.probes.test_ldap import canned_tcp, rootdse_answer

    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(loopback_tls_certs.cert("valid"), loopback_tls_certs.key("valid"))
    server.set_ciphers("DEFAULT:@SECLEVEL=0")
    try:
        with pytest.warns(DeprecationWarning):
            server.minimum_version = ssl.TLSVersion.TLSv1
            server.maximum_version = ssl.TLSVersion.TLSv1
    except ValueError:
        pytest.skip("this OpenSSL cannot serve TLS 1.0")
    answer = rootdse_answer({"defaultNamingContext": ["DC=lab,DC=test"]})
    async with canned_tcp(answer, server) as port:
        result = await probe("ldaps", port, settings=settings_for(loopback_tls_certs))
    if result.reason is Reason.TLS and result.status is Status.FAIL:
        pytest.skip(f"this OpenSSL refuses TLS 1.0 as a client: {result.detail}")
    assert (result.status, result.reason) == (Status.WARN, Reason.TLS), result.detail
    assert result.evidence["tls_version"] == "TLSv1"
    assert "enable TLS 1.2 or later" in result.detail


async def test_ldaps_honours_trust_private_ca(loopback_tls_certs: TlsCerts) -> None:
    from tests.probes.test_ldap import canned_tcp, rootdse_answer

    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(loopback_tls_certs.cert("valid"), loopback_tls_certs.key("valid"))
    answer = rootdse_answer({"defaultNamingContext": ["DC=lab,DC=test"]})
    async with canned_tcp(answer, server) as port:
        result = await probe("ldaps", port, settings=settings_for(loopback_tls_certs, trust_private_ca=True))
    assert result.status is Status.PASS, result.detail
    assert result.evidence["trust_store"] == "ca-bundle-only"
    assert result.evidence["cert_trusted"] is True  # the pre-kit alias still written


# -- the trust store -------------------------------------------------------------------------
@pytest.fixture
def fresh_contexts() -> Iterator[None]:
    _tls._verifying.cache_clear()
    yield
    _tls._verifying.cache_clear()


@pytest.mark.parametrize("platform", ["win32", "darwin"])
def test_windows_and_macos_judge_with_truststore(
    fresh_contexts: None, monkeypatch: pytest.MonkeyPatch, platform: str
) -> None:
    pytest.importorskip("truststore")
    monkeypatch.setattr(_tls.sys, "platform", platform)
    assert _tls.trust_store_name(None, False) == "system"
    assert type(_tls.verifying_context(None, False)).__module__.startswith("truststore")


def test_linux_judges_with_the_distribution_store_loaded_once(fresh_contexts: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_tls.sys, "platform", "linux")
    context = _tls.verifying_context(None, False)
    assert _tls.trust_store_name(None, False) == "system"
    assert type(context) is ssl.SSLContext and context.get_ca_certs()  # the distribution's CAs
    assert _tls.verifying_context(None, False) is context  # built once per run


def test_linux_without_any_ca_store_falls_back_to_certifi(
    fresh_contexts: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("certifi")
    monkeypatch.setattr(_tls.sys, "platform", "linux")
    monkeypatch.setattr(_tls, "_CA_FILES", ())
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))
    assert _tls.trust_store_name(None, False) == "certifi"


def test_bundle_only_with_trust_private_ca(fresh_contexts: None, loopback_tls_certs: TlsCerts) -> None:
    bundle = str(loopback_tls_certs.ca_bundle)
    assert _tls.trust_store_name(bundle, False) == "system+ca-bundle"
    assert _tls.trust_store_name(bundle, True) == "ca-bundle-only"
    only = _tls.verifying_context(bundle, True)
    assert isinstance(only, ssl.SSLContext) and len(only.get_ca_certs()) == 1


def test_certifi_is_the_fallback_without_truststore(fresh_contexts: None, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("certifi")
    monkeypatch.setattr(_tls.sys, "platform", "win32")
    monkeypatch.setitem(sys.modules, "truststore", None)  # import truststore -> ImportError
    assert _tls.trust_store_name(None, False) == "certifi"
    assert _tls.verifying_context(None, False).get_ca_certs()  # certifi's CAs loaded


async def test_untrusted_words_name_the_store_that_judged(
    fresh_contexts: None, monkeypatch: pytest.MonkeyPatch, loopback_tls_peer: Callable[..., TlsPeer]
) -> None:
    pytest.importorskip("certifi")
    monkeypatch.setattr(_tls.sys, "platform", "win32")
    monkeypatch.setitem(sys.modules, "truststore", None)
    peer = loopback_tls_peer("valid")
    result = await probe("tls", peer.port)
    assert (result.status, result.reason) == (Status.WARN, Reason.CERTIFICATE)
    assert result.evidence["trust_store"] == "certifi" and "the certifi bundle" in result.detail


_SUBPROCESS_PROBE = """
import asyncio, json, sys
from scanner.probes.base import Settings
from scanner.testing import make_context, run_probe
async def main():
    ctx = make_context(sys.argv[1], "127.0.0.1", int(sys.argv[2]), probe="tls", settings=Settings(timeout=2.0, retries=0))
    result = await run_probe("tls", ctx)
    print(json.dumps({"status": result.status.value, "evidence": result.evidence}))
asyncio.run(main())
"""


def _tls_in_subprocess(port: int, host: str, env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS_PROBE, host, str(port)],
        capture_output=True, text=True, env=env, timeout=60, check=True,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_a_ca_in_the_system_store_is_trusted_without_ca_bundle(
    loopback_tls_peer: Callable[..., TlsPeer], loopback_tls_certs: TlsCerts, tmp_path: Path
) -> None:
    """A lab CA 'installed' into a temporary system-style store (SSL_CERT_FILE/SSL_CERT_DIR of a
    subprocess: this machine's real store is never touched) is trusted with no --ca-bundle."""
    from tests.lab.tls import TLS_HOSTNAME

    peer = loopback_tls_peer("valid")
    empty = tmp_path / "empty-certs"
    empty.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith("SSL_CERT")}
    with_ca = _tls_in_subprocess(
        peer.port, TLS_HOSTNAME, {**base, "SSL_CERT_FILE": str(loopback_tls_certs.ca_bundle), "SSL_CERT_DIR": str(empty)}
    )
    assert with_ca["status"] == "pass", with_ca
    assert with_ca["evidence"]["trusted"] is True and with_ca["evidence"]["trust_store"] == "system"
    other = tmp_path / "other.pem"
    other.write_bytes(b"")
    without = _tls_in_subprocess(peer.port, TLS_HOSTNAME, {**base, "SSL_CERT_FILE": str(other), "SSL_CERT_DIR": str(empty)})
    assert without["evidence"]["trusted"] is False, without


# -- certificates cryptography cannot read ---------------------------------------------------
def _mutations(der: bytes, count: int, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    for _ in range(count):
        data = bytearray(der)
        for _flip in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.2:
            data = data[: rng.randrange(1, len(data))]
        yield bytes(data)


def test_parse_certificate_only_ever_raises_certificate_unreadable(loopback_tls_certs: TlsCerts) -> None:
    """Fuzz (bounded, seeded): any bytes either parse or raise CertificateUnreadable."""
    from cryptography.hazmat.primitives.serialization import Encoding

    der = loopback_tls_certs.certificate("valid").public_bytes(Encoding.DER)
    parsed = unreadable = 0
    for data in _mutations(der, 3000, seed=15):
        try:
            _tls.parse_certificate(data)
            parsed += 1
        except _tls.CertificateUnreadable:
            unreadable += 1
    assert parsed and unreadable  # both paths were exercised


def _version_4_certificate(certs: TlsCerts, directory: Path) -> Path:
    """The valid leaf with its version field set to 4 (v5 on the wire): OpenSSL serves and
    accepts it, cryptography raises InvalidVersion (not a ValueError)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    der = bytearray(certs.certificate("valid").public_bytes(Encoding.DER))
    marker = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2 (v3)
    at = der.find(marker)
    assert at > 0
    der[at + 4] = 4
    path = directory / "v5.pem"
    import base64

    body = base64.encodebytes(bytes(der)).decode()
    path.write_text(f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n")
    return path


async def test_a_certificate_cryptography_rejects_is_a_certificate_warning(
    loopback_tls_certs: TlsCerts, tmp_path: Path
) -> None:
    from cryptography import x509

    odd = _version_4_certificate(loopback_tls_certs, tmp_path)
    with pytest.raises(x509.InvalidVersion) as raised:
        x509.load_pem_x509_certificate(odd.read_bytes())
    assert not isinstance(raised.value, ValueError)  # what the old `except ValueError` let through
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        server.load_cert_chain(odd, loopback_tls_certs.key("valid"))
    except ssl.SSLError as exc:
        pytest.skip(f"this OpenSSL will not serve it: {exc}")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.read(1024), 2.0)
        except (OSError, asyncio.TimeoutError):
            pass
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server)
    try:
        port = listener.sockets[0].getsockname()[1]
        result = await probe("tls", port, settings=settings_for(loopback_tls_certs))
    finally:
        listener.close()
    assert result.status is not Status.ERROR, result.detail
    assert (result.status, result.reason) == (Status.WARN, Reason.CERTIFICATE), result.detail
    assert "cannot be parsed" in result.detail
    assert "certificate_error" in result.evidence


# -- XML from peers --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "encoding", ["bogus", "utf-7", "rot13", "hex", "base64", "zlib", "idna", "punycode", "mbcs", "utf-32"]
)
def test_an_unknown_or_odd_xml_encoding_is_no_answer_not_a_crash(encoding: str) -> None:
    body = f'<?xml version="1.0" encoding="{encoding}"?><Envelope><a>\x80\xff</a></Envelope>'.encode("latin-1")
    assert safe_xml(body) is None or safe_xml(body).tag  # never raises


async def test_winrm_peer_declaring_an_unknown_encoding_fails_protocol_not_internal() -> None:
    body = b'<?xml version="1.0" encoding="x-no-such-codec"?><s:Envelope/>'

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.read(65536), 2.0)
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body
            )  # fmt: skip
            await writer.drain()
        except (OSError, asyncio.TimeoutError):
            pass
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        port = listener.sockets[0].getsockname()[1]
        result = await probe("winrm", port, options={"tls": False})
    finally:
        listener.close()
    assert result.status is Status.FAIL and result.reason is Reason.PROTOCOL, result.detail


async def test_diff_and_html_see_a_replaced_dc_certificate_on_ldaps(loopback_tls_certs: TlsCerts) -> None:
    """The gap the kit closes: LDAPS evidence now carries the keys diff and the HTML read."""
    from scanner.diff import _cert_changes
    from scanner.probes.base import registry
    from tests.probes.test_ldap import canned_tcp, rootdse_answer

    answer = rootdse_answer({"defaultNamingContext": ["DC=lab,DC=test"]})
    results = []
    for kind in ("valid", "expired"):
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(loopback_tls_certs.cert(kind), loopback_tls_certs.key(kind))
        async with canned_tcp(answer, server) as port:
            results.append(await probe("ldaps", port, settings=settings_for(loopback_tls_certs)))
    before, after = (r.evidence for r in results)
    changes = {kind for kind, *_ in _cert_changes(before, after)}
    assert "certificate-replaced" in changes and "expires-sooner" in changes
    summary = registry()["ldaps"]().summarize(after)  # what every report prints for the check
    assert "certificate" in summary and after["not_after"][:10] in summary


def test_tls_contexts_are_built_in_one_module() -> None:
    """Only scanner/probes/_tls.py creates an SSLContext for a peer (issue 15's done-means)."""
    import re

    root = Path(__file__).resolve().parents[2] / "scanner"
    builders = re.compile(r"SSLContext\(|create_default_context\(|truststore\.SSLContext")
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "_tls.py" and builders.search(path.read_text())
    ]
    assert offenders == []


async def test_tls_probes_summarize_their_evidence_in_one_line(
    loopback_tls_peer: Callable[..., TlsPeer], loopback_tls_certs: TlsCerts
) -> None:
    from scanner.probes import registry

    REGISTRY = registry()

    peer = loopback_tls_peer("valid")
    result = await probe("tls", peer.port, settings=settings_for(loopback_tls_certs))
    line = REGISTRY["tls"]().summarize(result.evidence)  # type: ignore[attr-defined]
    assert line.startswith(result.evidence["tls_version"]) and line.endswith(", trusted")
    assert result.evidence["not_after"][:10] in line and f"({result.evidence['days_left']} days)" in line
    assert REGISTRY["https"]().summarize({}) == ""  # type: ignore[attr-defined]
    unreadable = {"tls_version": "TLSv1.2", "trusted": False, "certificate_error": "x"}
    assert REGISTRY["ldaps"]().summarize({**unreadable, "channel_binding": "never"}) == (  # type: ignore[attr-defined]
        "TLSv1.2, certificate unreadable, not trusted, channel binding never"
    )


def test_key_constants_are_record_fields() -> None:
    names = {_tls.TLS_VERSION, _tls.TRUSTED, _tls.TRUST_STORE, _tls.SUBJECT, _tls.SAN, _tls.NOT_AFTER,
             _tls.DAYS_LEFT, _tls.SHA256, _tls.CERTIFICATE_ERROR}  # fmt: skip
    assert names <= set(_tls.KEYS)
