"""The one TLS kit: contexts, handshake, certificate facts and our judgement of them.

Every TLS-speaking probe (tls, https, ldaps, winrm, tns-tls, papi, vsphere, ontap) is a
client of this module, so every TLS row judges certificates the same way and emits the
same evidence keys (`TlsEvidence`). A probe needs two answers from one TLS port: does
the handshake work (else `fail tls`), and would a careful client accept the certificate
(else `warn certificate`, with the reason in words)::

    session = await open_tls(ctx)            # ProbeError(fail tls) if no handshake
    session.reader, session.writer           # the TLS stream (HTTP, LDAP, TNS go on it)
    outcome = judge(ctx, session, passed("HTTP answered"))   # pass -> warn on cert problems

Trust: the chain is verified against the platform's own store (``truststore`` on
Windows and macOS: CryptoAPI, Security framework; the distribution's CA files on Linux),
so an enterprise CA that Windows already trusts (AD CS) is trusted here too;
``--ca-bundle`` adds to it, and with ``trust_private_ca`` the bundle alone is trusted.
Without truststore (or a Linux CA store) the certifi bundle is the fallback, and
evidence ``trust_store`` says which store judged. Dates (OpenSSL's X509_V_FLAG_NO_CHECK_TIME) and names are judged by us with
``cryptography``, in words. If the chain is rejected, a second handshake with
verification off fetches the certificate anyway, so an untrusted one is still described.
A chain is judged once per scan and trust store (`open_tls`): later checks that meet the
same chain (a DC under many addresses, one certificate on many hosts) take one handshake.

Certificate fields are peer-controlled text: they are kept as bounded data; reporters
escape them. A certificate OpenSSL accepts but ``cryptography`` cannot read is a
certificate problem (a verdict), never an internal error.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import ipaddress
import os
import re
import ssl
import sys
import warnings
from dataclasses import dataclass, fields
from typing import Any, Mapping

from scanner.models import Reason, Status
from scanner.probes._proxy import Stream, open_stream
from scanner.probes.base import Outcome, ProbeContext, ProbeError, failed
from scanner.probes.netio import closed_in_handshake, is_reset, start_tls, tls_stalled, within
from scanner.wire.http import clip, close_writer

_NO_CHECK_TIME = 0x200000  # X509_V_FLAG_NO_CHECK_TIME: dates are judged by us, in words
OLD_VERSIONS = ("SSLv3", "TLSv1", "TLSv1.1")
_MAX_SAN = 50
_SOON = 14  # days: an expiry this close is mentioned in the words

# Values of evidence `trust_store`: which store judged the chain.
STORE_SYSTEM = "system"  # the platform's store, through truststore
STORE_CERTIFI = "certifi"  # truststore unavailable: the certifi bundle
STORE_OPENSSL = "openssl-default"  # neither: OpenSSL's compiled-in paths
STORE_BUNDLE_ONLY = "ca-bundle-only"  # trust_private_ca: only --ca-bundle


# -- contexts (the only place portready builds an SSLContext for a peer) --------------------
def _lenient(context: ssl.SSLContext) -> ssl.SSLContext:
    context.check_hostname = False  # names are judged by us, in words
    # Accept what old servers offer so we can *report* TLS 1.0/1.1 instead of failing blind
    # (Python flags the setting as deprecated; here it is deliberate and only for probing).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


# Where Linux/BSD distributions keep their CA bundle when OpenSSL's compiled-in paths hold
# none (the list truststore uses).
_CA_FILES = (
    "/etc/ssl/cert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/cert.pem",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/ca-bundle.pem",
)


def _distribution_store(context: ssl.SSLContext) -> bool:
    """Load the distribution's CAs (SSL_CERT_FILE / SSL_CERT_DIR honoured); False if none."""
    defaults = ssl.get_default_verify_paths()
    capath = defaults.capath
    hashed = bool(capath) and os.path.isdir(capath) and any(
        re.fullmatch(r"[0-9a-fA-F]{8}\.[0-9]", name) for name in os.listdir(capath)
    )
    if defaults.cafile or hashed:
        context.load_default_certs()
        return True
    for cafile in _CA_FILES:
        if os.path.isfile(cafile):
            context.load_verify_locations(cafile=cafile)
            return True
    return False


def _system_store() -> tuple[ssl.SSLContext, str]:
    """A client context over the platform's store, else the certifi bundle, else OpenSSL's.

    Windows and macOS: truststore, which asks the OS verifier (CryptoAPI, Security
    framework) after each handshake. Linux/BSD: the distribution's CA files, loaded once;
    that is all truststore does there, but it reloads them for every handshake (about
    30 ms of CPU on the event loop each).
    """
    if sys.platform in ("win32", "darwin"):
        try:
            import truststore
        except ImportError:
            pass
        else:
            return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT), STORE_SYSTEM
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if _distribution_store(context):
            return context, STORE_SYSTEM
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        import certifi
    except ImportError:
        context.load_default_certs()
        return context, STORE_OPENSSL
    context.load_verify_locations(cafile=certifi.where())
    return context, STORE_CERTIFI


@functools.lru_cache(maxsize=8)
def _verifying(ca_bundle: str | None, only_bundle: bool) -> tuple[ssl.SSLContext, str]:
    if only_bundle and ca_bundle:
        context, store = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), STORE_BUNDLE_ONLY
    else:
        context, store = _system_store()
    _lenient(context)
    context.verify_mode = ssl.CERT_REQUIRED
    # OpenSSL verification (Linux, certifi, the bundle): dates are ours. On Windows/macOS
    # truststore asks the OS, which also rejects expired chains; our words still name the date.
    context.verify_flags |= ssl.VerifyFlags(_NO_CHECK_TIME)
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context, store


def verifying_context(ca_bundle: str | None, only_bundle: bool) -> ssl.SSLContext:
    """Chain verification against the platform store + bundle (only the bundle if asked)."""
    return _verifying(ca_bundle, only_bundle)[0]


def trust_store_name(ca_bundle: str | None, only_bundle: bool) -> str:
    """What judged the chain, for evidence `trust_store` (e.g. 'system+ca-bundle')."""
    store = _verifying(ca_bundle, only_bundle)[1]
    return f"{store}+ca-bundle" if ca_bundle and store != STORE_BUNDLE_ONLY else store


@functools.lru_cache(maxsize=1)
def unverified_context() -> ssl.SSLContext:
    """No verification: to describe a certificate that failed, or a second connection."""
    context = _lenient(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    context.verify_mode = ssl.CERT_NONE
    return context


def alpn_context(protocols: list[str]) -> ssl.SSLContext:
    """Unverified, with ALPN (e.g. TDS 8.0 'tds/8.0'): for probes that only look."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(protocols)
    return context


# -- certificate facts -----------------------------------------------------------------------
@dataclass(frozen=True)
class Certificate:
    """The facts of a server certificate that a client's decision depends on."""

    subject: str
    issuer: str
    common_name: str | None
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    has_san: bool
    not_before: dt.datetime
    not_after: dt.datetime
    self_issued: bool
    sha256: str

    @property
    def san(self) -> list[str]:
        return [*self.dns_names, *self.ip_addresses][:_MAX_SAN]

    def days_left(self, now: dt.datetime) -> int:
        return (self.not_after - now) // dt.timedelta(days=1)

    def names(self) -> list[str]:
        """The names a client could match, for words ("names a, b")."""
        found = self.san if self.has_san else ([self.common_name] if self.common_name else [])
        return [clip(n, 100) for n in found[:8]]


class CertificateUnreadable(ValueError):
    """cryptography cannot read a certificate OpenSSL accepted (message says why)."""


def parse_certificate(der: bytes) -> Certificate:
    """Parse DER with cryptography; raises CertificateUnreadable on anything it cannot read.

    cryptography raises ValueError, TypeError (e.g. an unsupported key or name type) and
    others on certificates OpenSSL accepted; a peer's bytes must only ever yield a verdict.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the peer's certificate may break RFC 5280 rules
            return _parse(der)
    except Exception as exc:  # noqa: BLE001 - any failure on peer bytes is a certificate problem
        raise CertificateUnreadable(clip(f"{type(exc).__name__}: {exc}", 160)) from exc


@functools.lru_cache(maxsize=64)  # frozen facts; one DC's certificate is met on every address and port
def _parse(der: bytes) -> Certificate:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_der_x509_certificate(der)

    def name_text(name: x509.Name) -> str:
        try:
            return clip(name.rfc4514_string(), 300)
        except Exception:  # noqa: BLE001 - an unreadable name is described, not fatal
            return "(unreadable name)"

    common_name: str | None = None
    try:
        attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if attrs:
            value = attrs[0].value
            common_name = clip(value if isinstance(value, str) else value.decode("latin-1"), 200)
    except Exception:  # noqa: BLE001
        common_name = None
    dns_names: list[str] = []
    ip_addresses: list[str] = []
    has_san = False
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        ext = None
    except Exception:  # noqa: BLE001 - a malformed extension: treated as no usable names
        ext = None
        has_san = True
    if ext is not None:
        has_san = True
        dns_names = [clip(n, 200) for n in ext.value.get_values_for_type(x509.DNSName)][:_MAX_SAN]
        ip_addresses = [str(a) for a in ext.value.get_values_for_type(x509.IPAddress)][:_MAX_SAN]
    return Certificate(
        subject=name_text(cert.subject),
        issuer=name_text(cert.issuer),
        common_name=common_name,
        dns_names=tuple(dns_names),
        ip_addresses=tuple(ip_addresses),
        has_san=has_san,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        self_issued=cert.subject == cert.issuer,
        sha256=hashlib.sha256(der).hexdigest(),
    )


def _dns_match(pattern: str, host: str) -> bool:
    """RFC 6125: case-insensitive; a wildcard only as the whole leftmost label."""
    pattern = pattern.lower().rstrip(".")
    if pattern == host:
        return True
    if not pattern.startswith("*."):
        return False
    suffix = pattern[2:]
    if "*" in suffix or suffix.count(".") < 1:
        return False  # no "*.com"-style wildcards
    head, _, rest = host.partition(".")
    return bool(head) and rest == suffix


def name_matches(cert: Certificate, host: str) -> bool:
    """Whether `host` (a name or an address) is one the certificate was issued for."""
    host = host.strip("[]").lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        return any(ipaddress.ip_address(a) == address for a in cert.ip_addresses)
    if cert.has_san:
        return any(_dns_match(n, host) for n in cert.dns_names)
    # No SAN extension at all: Windows/.NET still fall back to the subject CN.
    return cert.common_name is not None and _dns_match(cert.common_name, host)


def server_end_point(der: bytes) -> bytes:
    """RFC 5929 tls-server-end-point application data for channel bindings.

    The hash is the certificate's signature hash, SHA-256 when that is MD5 or SHA-1 (or
    unreadable, as Windows does for certificates it cannot classify).
    """
    algorithm = "sha256"
    try:
        from cryptography import x509

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            used = x509.load_der_x509_certificate(der).signature_hash_algorithm
        if used is not None and used.name in ("sha384", "sha512"):
            algorithm = used.name
    except Exception:  # noqa: BLE001 - unreadable: SHA-256, the common case
        pass
    return b"tls-server-end-point:" + hashlib.new(algorithm, der).digest()


# -- the handshake ---------------------------------------------------------------------------
@dataclass
class TlsSession:
    """An open TLS stream and what the handshake showed."""

    stream: Stream
    tls_version: str
    cipher: str
    certificate: Certificate | None
    certificate_error: str | None  # the certificate could not be parsed
    trusted: bool
    trust_error: str | None  # the verifier's message when the chain is not trusted
    trust_code: int | None
    trust_store: str = STORE_SYSTEM
    der: bytes | None = None  # the leaf certificate (channel bindings)
    handshakes: int = 1  # TLS handshakes this session took (2: one to judge, one to keep)

    @property
    def reader(self) -> asyncio.StreamReader:
        return self.stream.reader

    @property
    def writer(self) -> asyncio.StreamWriter:
        return self.stream.writer

    def channel_binding(self) -> bytes | None:
        """tls-server-end-point application data, or None without a certificate."""
        return server_end_point(self.der) if self.der else None

    async def close(self) -> None:
        await close_writer(self.stream.writer)

    def abort(self) -> None:
        """Drop the connection at once (no close_notify round trip)."""
        self.stream.writer.transport.abort()


def _handshake_failed(stream: Stream, detail: str, **ev: Any) -> ProbeError:
    evidence = dict(ev)
    if stream.via_proxy:
        evidence["via_proxy"] = stream.via_proxy
    return ProbeError(failed(Reason.TLS, detail, **evidence))


async def handshake(ctx: ProbeContext, port: int, context: ssl.SSLContext, sni: str | None) -> Stream:
    """TCP (or the proxy tunnel), then TLS; ProbeError(fail tls) on anything but a handshake.

    ssl.SSLCertVerificationError passes through: `open_tls` retries without verification.
    """
    stream = await open_stream(ctx, port)
    try:
        await within(start_tls(stream.writer, context, sni), ctx.step_timeout())
    except ssl.SSLCertVerificationError:
        await close_writer(stream.writer)
        raise
    except asyncio.TimeoutError as exc:
        early = spoke_first(stream)
        await close_writer(stream.writer)
        if early:
            # Its first bytes came before our TLS took the connection over, so the handshake
            # waited for an answer already given: a plain protocol's banner, not slowness.
            raise _handshake_failed(
                stream,
                f"TLS handshake failed on {ctx.where(port)}: the service spoke first ({clip(repr(early[:40]), 80)}), "
                "as a plain protocol does; a TLS server waits for the client — the port answers, but not with TLS",
                error="plain text before the TLS handshake",
            ) from None
        extra = {"via_proxy": stream.via_proxy} if stream.via_proxy else {}
        raise ProbeError(tls_stalled(ctx, port, **extra)) from exc
    except ssl.SSLError as exc:
        await close_writer(stream.writer)
        why = exc.reason or exc.strerror or str(exc)
        if isinstance(exc, ssl.SSLEOFError) or "EOF" in str(exc):
            why = "the peer closed the connection during the handshake"
        raise _handshake_failed(
            stream,
            f"TLS handshake failed on {ctx.where(port)}: {clip(str(why), 200)} — the port "
            "answers, but not with TLS this client accepts",
            error=clip(str(exc), 300),
        ) from None
    except (OSError, EOFError) as exc:
        await close_writer(stream.writer)
        if is_reset(exc, os_only=True):  # accepted, then reset: the service rejects us (`closed`, not `tls`)
            extra = {"via_proxy": stream.via_proxy} if stream.via_proxy else {}
            raise ProbeError(closed_in_handshake(ctx, exc, port, **extra)) from exc
        raise _handshake_failed(
            stream,
            f"TLS handshake failed on {ctx.where(port)}: the connection broke "
            f"({type(exc).__name__}) — the port answers, but not with TLS",
            error=clip(f"{type(exc).__name__}: {exc}", 300),
        ) from None
    return stream


def spoke_first(stream: Stream) -> bytes:
    """What the peer sent before the TLS upgrade (left in the plain reader's buffer); b"" if
    nothing. asyncio keeps it there, out of the TLS layer's sight."""
    buffered = getattr(stream.reader, "_buffer", None)
    return bytes(buffered[:256]) if buffered else b""


def _settings_context(ctx: ProbeContext) -> tuple[ssl.SSLContext, str]:
    settings = ctx.settings
    try:
        return (
            verifying_context(settings.ca_bundle, settings.trust_private_ca),
            trust_store_name(settings.ca_bundle, settings.trust_private_ca),
        )
    except (OSError, ssl.SSLError) as exc:
        raise ProbeError(
            Outcome(
                Status.ERROR,
                Reason.INTERNAL,
                f"cannot load the CA bundle {settings.ca_bundle!r}: {clip(str(exc), 200)} — "
                "give a PEM file of CA certificates with --ca-bundle",
            )
        ) from None


def sni_for(ctx: ProbeContext) -> str | None:
    return ctx.host.strip("[]") or None


@dataclass(frozen=True)
class ChainVerdict:
    """What the verifier said of one chain against one trust store."""

    trusted: bool
    error: str | None = None
    code: int | None = None


_DER = getattr(getattr(ssl, "_ssl", None), "ENCODING_DER", 2)


def sent_chain(ssl_object: Any) -> tuple[bytes, ...] | None:
    """The certificates the server sent, leaf first, as DER; None where Python cannot say.

    `get_unverified_chain` is public from Python 3.13 (DER bytes); 3.10-3.12 have the same
    call on the private `_sslobj` (certificate objects).
    """
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if getter is None:
        return None
    try:
        chain = getter() or []
        out = tuple(c if isinstance(c, bytes) else c.public_bytes(_DER) for c in list(chain)[:16])
    except Exception:  # noqa: BLE001 - an internal API that changed: judge by handshake
        return None
    return out or None


def _chain_key(ctx: ProbeContext, chain: tuple[bytes, ...] | None) -> tuple[Any, ...] | None:
    if chain is None:
        return None
    digest = hashlib.sha256(b"".join(len(c).to_bytes(4, "big") + c for c in chain)).hexdigest()
    return ("tls-chain", ctx.settings.ca_bundle, ctx.settings.trust_private_ca, digest)


def _remember(ctx: ProbeContext, port: int, chain: tuple[bytes, ...] | None, verdict: ChainVerdict) -> None:
    key = _chain_key(ctx, chain)
    if key is not None:
        ctx.memo.put(key, verdict)
    ctx.memo.count(("tls-verdicts", port, verdict.trusted))


def _describe_first(ctx: ProbeContext, port: int) -> bool:
    """Whether this port's certificates have mostly been untrusted in this scan so far.

    Then a first handshake without verification is the one the probe keeps, and a chain
    already judged in this scan is not judged again: one handshake per check instead of
    a refused one and a second (a DC's own certificate on 636/3269, an appliance's
    self-signed one). Otherwise the verifying handshake comes first, as a client does.
    """
    untrusted, trusted = _tallies(ctx, port)
    return untrusted > trusted


def _tallies(ctx: ProbeContext, port: int) -> tuple[int, int]:
    """(untrusted, trusted) chain verdicts on this port so far in the scan."""
    return ctx.memo.tally(("tls-verdicts", port, False)), ctx.memo.tally(("tls-verdicts", port, True))


async def _judged_by_handshake(ctx: ProbeContext, port: int, context: ssl.SSLContext, sni: str | None) -> ChainVerdict:
    """The verifier's verdict from a handshake of its own (closed at once)."""
    try:
        stream = await handshake(ctx, port, context, sni)
    except ssl.SSLCertVerificationError as exc:
        return _refused(exc)
    stream.writer.transport.abort()
    return ChainVerdict(True)


def _refused(exc: ssl.SSLCertVerificationError) -> ChainVerdict:
    error = clip(str(getattr(exc, "verify_message", None) or exc.reason or exc), 200)
    return ChainVerdict(False, error, getattr(exc, "verify_code", None))


_SCOUT_WAIT = 1.0  # at most this long for the first verdict on a port (then each judges alone)


async def _judged_session(
    ctx: ProbeContext, port: int, context: ssl.SSLContext, sni: str | None, describe_first: bool
) -> tuple[Stream, ChainVerdict, int]:
    """The session's stream, its chain's verdict and the handshakes that took."""
    if describe_first:
        stream = await handshake(ctx, port, unverified_context(), sni)
        chain = sent_chain(stream.writer.get_extra_info("ssl_object"))
        key = _chain_key(ctx, chain)
        known = ctx.memo.get(key) if key is not None else None
        if isinstance(known, ChainVerdict):
            return stream, known, 1
        try:
            verdict = await _judged_by_handshake(ctx, port, context, sni)
        except BaseException:
            stream.writer.transport.abort()
            raise
        _remember(ctx, port, chain, verdict)
        return stream, verdict, 2
    try:
        stream = await handshake(ctx, port, context, sni)
        verdict, handshakes = ChainVerdict(True), 1
    except ssl.SSLCertVerificationError as exc:
        verdict, handshakes = _refused(exc), 2
        stream = await handshake(ctx, port, unverified_context(), sni)
    _remember(ctx, port, sent_chain(stream.writer.get_extra_info("ssl_object")), verdict)
    return stream, verdict, handshakes


async def open_tls(ctx: ProbeContext, port: int | None = None) -> TlsSession:
    """A TLS session to ctx's target (directly or through the proxy), certificate judged.

    The chain is judged by the verifier of a real handshake, once per chain and trust store
    in a scan (`ctx.memo`); see `_describe_first` for the order of the handshakes.
    """
    port = ctx.port if port is None else port
    if port is None:
        raise ValueError("open_tls needs a port")
    sni = sni_for(ctx)
    context, store = _settings_context(ctx)
    mine: list[tuple[Stream, ChainVerdict, int]] = []
    if not any(_tallies(ctx, port)):
        # No verdict on this port yet: the first check finds which order fits it while the
        # checks that arrive meanwhile wait a moment, instead of all guessing the same way.
        async def scout() -> bool:
            mine.append(await _judged_session(ctx, port, context, sni, describe_first=False))
            return True

        await ctx.memo.once(("tls-scout", port), scout, wait=min(ctx.step_timeout(), _SCOUT_WAIT))
    stream, verdict, handshakes = mine[0] if mine else await _judged_session(
        ctx, port, context, sni, _describe_first(ctx, port)
    )
    ssl_object = stream.writer.get_extra_info("ssl_object")
    version = ssl_object.version() if ssl_object is not None else None
    cipher = ssl_object.cipher() if ssl_object is not None else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    certificate: Certificate | None = None
    certificate_error: str | None = None
    if der:
        try:
            certificate = parse_certificate(der)
        except CertificateUnreadable as exc:
            certificate_error = clip(f"the certificate cannot be parsed ({exc})", 200)
    else:
        certificate_error = "the server sent no certificate"
    return TlsSession(
        stream=stream,
        tls_version=str(version or "unknown"),
        cipher=str(cipher[0]) if cipher else "unknown",
        certificate=certificate,
        certificate_error=certificate_error,
        trusted=verdict.trusted,
        trust_error=verdict.error,
        trust_code=verdict.code,
        trust_store=store,
        der=der or None,
        handshakes=handshakes,
    )


# -- judgement and evidence ------------------------------------------------------------------
def _day(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _store_words(ctx: ProbeContext, session: TlsSession) -> str:
    bundle = ctx.settings.ca_bundle
    if ctx.settings.trust_private_ca and bundle:
        return f"the CA bundle {bundle}"
    system = "the certifi bundle" if session.trust_store.startswith(STORE_CERTIFI) else "the system store"
    return f"{system} or the CA bundle {bundle}" if bundle else system


def certificate_problems(ctx: ProbeContext, session: TlsSession, now: dt.datetime | None = None) -> list[str]:
    """Why a careful client would refuse this certificate, each in words; [] if none."""
    now = now or dt.datetime.now(dt.timezone.utc)
    cert = session.certificate
    host = ctx.host.strip("[]")
    if cert is None:
        return [f"{session.certificate_error or 'no certificate'} — clients will refuse it"]
    problems: list[str] = []
    if now > cert.not_after:
        ago = (now - cert.not_after) // dt.timedelta(days=1)
        problems.append(
            f"the certificate expired on {_day(cert.not_after)} ({ago} day{'s' if ago != 1 else ''} ago) — renew it on {host}"
        )
    elif now < cert.not_before:
        problems.append(
            f"the certificate is not valid until {_day(cert.not_before)} — check the clocks of "
            f"this host and of {host}, or install a currently valid certificate"
        )
    if not name_matches(cert, host):
        names = ", ".join(cert.names()) or "no names"
        problems.append(
            f"the certificate is issued for {names}, not {host} — use a name the certificate "
            f"carries, or reissue it with {host} in its subject alternative names"
        )
    if not session.trusted:
        store = _store_words(ctx, session)
        if cert.self_issued or session.trust_code in (18, 19):
            problems.append(
                f"the certificate is self-signed and not in {store} — "
                "install a CA-issued certificate, or give it with --ca-bundle if it is trusted here"
            )
        else:
            problems.append(
                f"the certificate is not trusted ({session.trust_error}): its issuer "
                f"{clip(cert.issuer, 120)} does not chain to {store} — give the issuing CA "
                "with --ca-bundle (a private enterprise CA is common for Exchange and labs)"
            )
    return problems


@dataclass(frozen=True)
class TlsEvidence:
    """The documented TLS evidence keys: one record for every TLS-speaking probe.

    Field names are the JSON keys; None fields are left out (`to_evidence`). `diff`, the
    HTML summary and `summarize()` read these keys (see `KEYS`).
    """

    tls_version: str
    cipher: str
    trusted: bool
    trust_store: str
    name_matches: bool
    trust_error: str | None = None
    subject: str | None = None
    issuer: str | None = None
    san: tuple[str, ...] | None = None
    not_before: str | None = None
    not_after: str | None = None
    days_left: int | None = None
    sha256: str | None = None
    certificate_error: str | None = None
    via_proxy: str | None = None

    @classmethod
    def of(cls, ctx: ProbeContext, session: TlsSession, now: dt.datetime | None = None) -> TlsEvidence:
        now = now or dt.datetime.now(dt.timezone.utc)
        cert = session.certificate
        return cls(
            tls_version=session.tls_version,
            cipher=session.cipher,
            trusted=session.trusted,
            trust_store=session.trust_store,
            name_matches=cert is not None and name_matches(cert, ctx.host),
            trust_error=session.trust_error,
            subject=cert.subject if cert else None,
            issuer=cert.issuer if cert else None,
            san=tuple(cert.san) if cert else None,
            not_before=cert.not_before.isoformat() if cert else None,
            not_after=cert.not_after.isoformat() if cert else None,
            days_left=cert.days_left(now) if cert else None,
            sha256=cert.sha256 if cert else None,
            certificate_error=session.certificate_error if cert is None else None,
            via_proxy=session.stream.via_proxy,
        )

    def to_evidence(self) -> dict[str, Any]:
        # KEYS, not asdict(): the fields are flat, and asdict's deep copy costs every TLS check.
        out = {k: v for k in KEYS if (v := getattr(self, k)) is not None}
        if "san" in out:
            out["san"] = list(out["san"])
        return out


KEYS: tuple[str, ...] = tuple(f.name for f in fields(TlsEvidence))
# The key names as constants, for readers outside this module (diff, reports, summaries).
TLS_VERSION, TRUSTED, TRUST_STORE, SUBJECT, SAN = "tls_version", "trusted", "trust_store", "subject", "san"
NOT_AFTER, DAYS_LEFT, SHA256, CERTIFICATE_ERROR = "not_after", "days_left", "sha256", "certificate_error"


def tls_evidence(ctx: ProbeContext, session: TlsSession, now: dt.datetime | None = None) -> dict[str, Any]:
    """The documented evidence keys (JSON-ready, bounded)."""
    return TlsEvidence.of(ctx, session, now).to_evidence()


def summarize_evidence(evidence: Mapping[str, Any]) -> str:
    """One line from the TLS evidence keys (for `Probe.summarize`): 'TLSv1.3, certificate
    dc1.corp.example until 2027-03-01 (120 days), trusted'; '' without TLS evidence."""
    version = evidence.get(TLS_VERSION)
    if not isinstance(version, str):
        return ""
    parts = [version]
    not_after = evidence.get(NOT_AFTER)
    if isinstance(not_after, str):
        san = evidence.get(SAN)
        names = ", ".join(str(n) for n in san[:2]) if isinstance(san, list) and san else str(evidence.get(SUBJECT, ""))
        days = evidence.get(DAYS_LEFT)
        parts.append(f"certificate {clip(names, 120)} until {not_after[:10]}" + (f" ({days} days)" if isinstance(days, int) else ""))
    elif evidence.get(CERTIFICATE_ERROR):
        parts.append("certificate unreadable")
    parts.append("trusted" if evidence.get(TRUSTED) is True else "not trusted")
    return ", ".join(parts)


def tls_summary(ctx: ProbeContext, session: TlsSession, now: dt.datetime | None = None) -> str:
    """'TLSv1.3 (TLS_AES_256_GCM_SHA384), certificate for x valid until ... (N days)'."""
    now = now or dt.datetime.now(dt.timezone.utc)
    text = f"{session.tls_version} ({session.cipher})"
    cert = session.certificate
    if cert is not None:
        days = cert.days_left(now)
        text += f", certificate {', '.join(cert.names()[:3]) or cert.subject} until {_day(cert.not_after)}"
        if 0 <= days <= _SOON:
            text += f" — expires in {days} days, renew it soon"
    if session.stream.via_proxy:
        text += f", through the proxy {session.stream.via_proxy}"
    return text


def judge(ctx: ProbeContext, session: TlsSession, outcome: Outcome, now: dt.datetime | None = None) -> Outcome:
    """Add TLS evidence to a probe's outcome; a pass becomes warn on certificate problems.

    A worse outcome (fail, inconclusive) keeps its status and gains the evidence.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    evidence = {**tls_evidence(ctx, session, now), **dict(outcome.evidence)}
    if outcome.status is not Status.PASS:
        return Outcome(outcome.status, outcome.reason, outcome.detail, evidence)
    problems = certificate_problems(ctx, session, now)
    if problems:
        return Outcome(
            Status.WARN,
            Reason.CERTIFICATE,
            f"{outcome.detail}; but {'; and '.join(problems)}",
            evidence,
        )
    if session.tls_version in OLD_VERSIONS:
        return Outcome(
            Status.WARN,
            Reason.TLS,
            f"{outcome.detail}; but the server negotiated {session.tls_version}, which current "
            "Windows and .NET clients disable — enable TLS 1.2 or later on it",
            evidence,
        )
    return Outcome(outcome.status, outcome.reason, outcome.detail, evidence)
