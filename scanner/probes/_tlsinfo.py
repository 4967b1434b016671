"""TLS handshakes that always get the certificate, and our own judgement of it.

A probe needs two answers from one TLS port: does the handshake work (else `fail tls`),
and would a careful client accept the certificate (else `warn certificate`, with the
reason in words). So::

    session = await open_tls(ctx)            # ProbeError(fail tls) if no handshake
    session.reader, session.writer           # the TLS stream (HTTP goes on it)
    outcome = judge(ctx, session, passed("HTTP answered"))   # pass -> warn on cert problems

How: the first handshake verifies the chain against the system store plus
``settings.ca_bundle`` (only the bundle with ``trust_private_ca``), ignoring dates
(OpenSSL's X509_V_FLAG_NO_CHECK_TIME) and names, which we judge ourselves with
``cryptography``. If OpenSSL rejects the chain, a second handshake with verification
off fetches the certificate anyway, so an untrusted one is still described. Valid
certificates cost one connection, untrusted ones two.

Certificate fields are peer-controlled text: they are kept as bounded data; reporters
escape them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import ipaddress
import ssl
import warnings
from dataclasses import dataclass
from typing import Any

from scanner.models import Reason, Status
from scanner.probes._http import HttpResponse, clip, close_writer, host_header, http_request
from scanner.probes._proxy import Stream, open_stream
from scanner.probes.base import Outcome, ProbeContext, ProbeError, failed
from scanner.probes.netio import start_tls

_NO_CHECK_TIME = 0x200000  # X509_V_FLAG_NO_CHECK_TIME: dates are judged by us, in words
_OLD_VERSIONS = ("SSLv3", "TLSv1", "TLSv1.1")
_MAX_SAN = 50
_SOON = 14  # days: an expiry this close is mentioned in the words


def _base_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    # Accept what old servers offer so we can *report* TLS 1.0/1.1 instead of failing blind
    # (Python flags the setting as deprecated; here it is deliberate and only for probing).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


@functools.lru_cache(maxsize=8)
def verifying_context(ca_bundle: str | None, only_bundle: bool) -> ssl.SSLContext:
    """Chain verification against system store + bundle (only the bundle if asked)."""
    context = _base_context()
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VerifyFlags(_NO_CHECK_TIME)
    if not (only_bundle and ca_bundle):
        context.load_default_certs()
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context


@functools.lru_cache(maxsize=1)
def unverified_context() -> ssl.SSLContext:
    context = _base_context()
    context.verify_mode = ssl.CERT_NONE
    return context


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


def parse_certificate(der: bytes) -> Certificate:
    """Parse DER with cryptography; raises ValueError on a certificate it cannot read."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    cert = x509.load_der_x509_certificate(der)

    def name_text(name: x509.Name) -> str:
        try:
            return clip(name.rfc4514_string(), 300)
        except ValueError:
            return "(unreadable name)"

    common_name: str | None = None
    try:
        attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if attrs:
            value = attrs[0].value
            common_name = clip(value if isinstance(value, str) else value.decode("latin-1"), 200)
    except ValueError:
        common_name = None
    dns_names: list[str] = []
    ip_addresses: list[str] = []
    has_san = False
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        ext = None
    except ValueError:  # a malformed extension: treated as no usable names
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
        sha256=cert.fingerprint(hashes.SHA256()).hex(),
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


@dataclass
class TlsSession:
    """An open TLS stream and what the handshake showed."""

    stream: Stream
    tls_version: str
    cipher: str
    certificate: Certificate | None
    certificate_error: str | None  # the certificate could not be parsed
    trusted: bool
    trust_error: str | None  # OpenSSL's verify message when the chain is not trusted
    trust_code: int | None

    @property
    def reader(self) -> asyncio.StreamReader:
        return self.stream.reader

    @property
    def writer(self) -> asyncio.StreamWriter:
        return self.stream.writer

    async def close(self) -> None:
        await close_writer(self.stream.writer)


def _handshake_failed(ctx: ProbeContext, port: int, stream: Stream, detail: str, **ev: Any) -> ProbeError:
    evidence = dict(ev)
    if stream.via_proxy:
        evidence["via_proxy"] = stream.via_proxy
    return ProbeError(failed(Reason.TLS, detail, **evidence))


async def _handshake(
    ctx: ProbeContext, port: int, context: ssl.SSLContext, sni: str | None
) -> Stream:
    stream = await open_stream(ctx, port)
    try:
        await asyncio.wait_for(start_tls(stream.writer, context, sni), ctx.step_timeout())
    except ssl.SSLCertVerificationError:
        await close_writer(stream.writer)
        raise
    except asyncio.TimeoutError:
        await close_writer(stream.writer)
        # Overload, or a service that is not TLS waiting for its own protocol: the retry pass
        # asks again at lower load (evidence `stalled`) before this verdict stands.
        ctx.timing.stalls += 1
        raise _handshake_failed(
            ctx, port, stream,
            f"TLS handshake timed out on {ctx.where(port)}: the port accepts connections but "
            f"does not complete a TLS handshake within {ctx.settings.timeout:g} s",
            stalled=True,
        ) from None  # fmt: skip
    except ssl.SSLError as exc:
        await close_writer(stream.writer)
        why = exc.reason or exc.strerror or str(exc)
        if isinstance(exc, ssl.SSLEOFError) or "EOF" in str(exc):
            why = "the peer closed the connection during the handshake"
        raise _handshake_failed(
            ctx, port, stream,
            f"TLS handshake failed on {ctx.where(port)}: {clip(str(why), 200)} — the port "
            "answers, but not with TLS this client accepts",
            error=clip(str(exc), 300),
        ) from None  # fmt: skip
    except (OSError, EOFError) as exc:
        await close_writer(stream.writer)
        raise _handshake_failed(
            ctx, port, stream,
            f"TLS handshake failed on {ctx.where(port)}: the connection broke "
            f"({type(exc).__name__}) — the port answers, but not with TLS",
            error=clip(f"{type(exc).__name__}: {exc}", 300),
        ) from None  # fmt: skip
    return stream


def _verifying(ctx: ProbeContext) -> ssl.SSLContext:
    settings = ctx.settings
    try:
        return verifying_context(settings.ca_bundle, settings.trust_private_ca)
    except (OSError, ssl.SSLError) as exc:
        raise ProbeError(
            Outcome(
                Status.ERROR,
                Reason.INTERNAL,
                f"cannot load the CA bundle {settings.ca_bundle!r}: {exc}",
            )
        ) from None


async def open_tls(ctx: ProbeContext, port: int | None = None) -> TlsSession:
    """A TLS session to ctx's target (directly or through the proxy), certificate judged."""
    port = ctx.port if port is None else port
    if port is None:
        raise ValueError("open_tls needs a port")
    host = ctx.host.strip("[]")
    sni = host or None
    trusted, trust_error, trust_code = True, None, None
    try:
        stream = await _handshake(ctx, port, _verifying(ctx), sni)
    except ssl.SSLCertVerificationError as exc:
        trusted = False
        trust_error = clip(str(exc.verify_message or exc.reason or exc), 200)
        trust_code = exc.verify_code
        stream = await _handshake(ctx, port, unverified_context(), sni)
    ssl_object = stream.writer.get_extra_info("ssl_object")
    version = ssl_object.version() if ssl_object is not None else None
    cipher = ssl_object.cipher() if ssl_object is not None else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    certificate: Certificate | None = None
    certificate_error: str | None = None
    if der:
        try:
            certificate = parse_certificate(der)
        except ValueError as exc:
            certificate_error = clip(f"the certificate cannot be parsed ({exc})", 200)
    else:
        certificate_error = "the server sent no certificate"
    return TlsSession(
        stream=stream,
        tls_version=str(version or "unknown"),
        cipher=str(cipher[0]) if cipher else "unknown",
        certificate=certificate,
        certificate_error=certificate_error,
        trusted=trusted,
        trust_error=trust_error,
        trust_code=trust_code,
    )


def _day(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


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
        bundle = ctx.settings.ca_bundle
        if ctx.settings.trust_private_ca and bundle:
            store = f"the CA bundle {bundle}"
        elif bundle:
            store = f"the system store or the CA bundle {bundle}"
        else:
            store = "the system store"
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


def tls_evidence(ctx: ProbeContext, session: TlsSession, now: dt.datetime | None = None) -> dict[str, Any]:
    """The documented evidence keys (JSON-ready, bounded)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    cert = session.certificate
    evidence: dict[str, Any] = {
        "tls_version": session.tls_version,
        "cipher": session.cipher,
        "trusted": session.trusted,
    }
    if session.trust_error:
        evidence["trust_error"] = session.trust_error
    if cert is not None:
        evidence.update(
            subject=cert.subject,
            issuer=cert.issuer,
            san=cert.san,
            not_before=cert.not_before.isoformat(),
            not_after=cert.not_after.isoformat(),
            days_left=cert.days_left(now),
            name_matches=name_matches(cert, ctx.host),
            sha256=cert.sha256,
        )
    else:
        evidence.update(name_matches=False, certificate_error=session.certificate_error)
    if session.stream.via_proxy:
        evidence["via_proxy"] = session.stream.via_proxy
    return evidence


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
    if session.tls_version in _OLD_VERSIONS:
        return Outcome(
            Status.WARN,
            Reason.TLS,
            f"{outcome.detail}; but the server negotiated {session.tls_version}, which current "
            "Windows and .NET clients disable — enable TLS 1.2 or later on it",
            evidence,
        )
    return Outcome(outcome.status, outcome.reason, outcome.detail, evidence)


class WebClient:
    """One request per connection over HTTP or HTTPS, for probes that ask several paths.

    The first HTTPS connection is judged (`open_tls`); later ones skip verification since
    the certificate has been judged already. `finish` adds the TLS evidence and turns a
    pass into warn on certificate problems::

        web = WebClient(ctx, tls=True)
        response = await web.request("GET", "/platform/latest")   # ProbeError on non-HTTP
        return web.finish(passed("PAPI answers"))
    """

    def __init__(self, ctx: ProbeContext, tls: bool = True, port: int | None = None) -> None:
        self.ctx = ctx
        self.tls = tls
        self.port = port if port is not None else (ctx.port or (443 if tls else 80))
        self.session: TlsSession | None = None
        self.via_proxy: str | None = None

    async def _stream(self) -> Stream:
        if not self.tls:
            stream = await open_stream(self.ctx, self.port)
        elif self.session is None:
            self.session = await open_tls(self.ctx, self.port)
            stream = self.session.stream
        else:
            stream = await _handshake(self.ctx, self.port, unverified_context(), self.ctx.host.strip("[]") or None)
        self.via_proxy = stream.via_proxy
        return stream

    async def request(
        self,
        method: str,
        path: str,
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
        max_body: int = 256 * 1024,
    ) -> HttpResponse:
        stream = await self._stream()
        try:
            return await http_request(
                self.ctx, stream.reader, stream.writer, method, path,
                host=host_header(self.ctx.host, self.port, 443 if self.tls else 80),
                headers=headers, body=body, max_body=max_body,
            )  # fmt: skip
        finally:
            await close_writer(stream.writer)

    def finish(self, outcome: Outcome) -> Outcome:
        if self.session is not None:
            return judge(self.ctx, self.session, outcome)
        if self.via_proxy:
            return Outcome(
                outcome.status, outcome.reason, outcome.detail,
                {**dict(outcome.evidence), "via_proxy": self.via_proxy},
            )  # fmt: skip
        return outcome


def safe_xml(body: bytes, limit: int = 256 * 1024, allow_doctype: bool = False) -> Any:
    """Parse a peer's XML safely: no ENTITY declarations (no entity expansion), bounded size.

    A DOCTYPE is refused too, unless `allow_doctype` (ONTAPI answers carry
    ``<!DOCTYPE netapp SYSTEM '...'>``): then only one without an internal subset
    passes — expat never fetches the external DTD, and without an internal subset no
    entity can be declared. Returns the root Element, or None.
    """
    import xml.etree.ElementTree as ET

    if not body or len(body) > limit:
        return None
    upper = body.upper()
    if b"<!ENTITY" in upper:
        return None
    at = upper.find(b"<!DOCTYPE")
    if at >= 0:
        end = upper.find(b">", at)
        if not allow_doctype or end < 0 or b"[" in upper[at:end] or upper.count(b"<!DOCTYPE") > 1:
            return None
    try:
        return ET.fromstring(body)
    except (ET.ParseError, ValueError):
        return None


def local_name(tag: str) -> str:
    """'{urn:vim25}about' -> 'about'."""
    return tag.rsplit("}", 1)[-1]
