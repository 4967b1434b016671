"""LDAPS (TCP 636) and Global Catalog over TLS (TCP 3269): TLS handshake, certificate, RootDSE.

What a pass proves: a TLS handshake completed, the certificate is valid for
the name the Auditor uses and chains to a trusted CA (the system store or
`settings.ca_bundle`), and an LDAP server answered a RootDSE search inside
the tunnel (with `gc: true`, isGlobalCatalogReady=TRUE). A certificate that is
expired, not yet valid, self-signed, from an unknown CA or for another name is
`warn`/`certificate`: the port works, but the Auditor may refuse the cert
(Samba's own certificate is self-signed). A failed handshake is `fail`/`tls`.

With credentials the probe binds inside TLS: a simple bind by default (the
documented "simple over TLS"), or `bind: ntlm` (GSS-SPNEGO with a
tls-server-end-point channel binding; Samba 4.17 refuses NTLM over TLS both
with and without signing, so it is not the default).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ipaddress
import ssl
import warnings
from datetime import datetime, timezone
from typing import Any, ClassVar, Mapping

from scanner.models import Reason, Status, Transport
from scanner.probes.base import Outcome, Probe, ProbeContext, evidence_text, register, warned
from scanner.probes.ldap import BIND_METHODS, directory_check, validate_directory_options, within_deadline
from scanner.probes.netio import connect_tcp


def _name_matches(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        return "." in host and host.split(".", 1)[1] == pattern[2:]
    return pattern == host


def certificate_facts(der: bytes, host: str, ca_bundle: str | None) -> tuple[dict[str, Any], list[str]]:
    """Evidence about the peer certificate and the problems an Auditor would see (in words)."""
    from cryptography import x509

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the peer's certificate may break RFC 5280 rules
        cert = x509.load_der_x509_certificate(der)
    now = datetime.now(timezone.utc)
    not_after = cert.not_valid_after_utc
    not_before = cert.not_valid_before_utc
    facts: dict[str, Any] = {
        "cert_subject": cert.subject.rfc4514_string(),
        "cert_issuer": cert.issuer.rfc4514_string(),
        "cert_not_before": not_before.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cert_not_after": not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cert_days_left": int((not_after - now).total_seconds() // 86400),
        "cert_sha256": hashlib.sha256(der).hexdigest(),
    }
    problems: list[str] = []
    if now > not_after:
        problems.append(f"the certificate expired on {facts['cert_not_after']}")
    elif now < not_before:
        problems.append(f"the certificate is not valid before {facts['cert_not_before']}")
    names: list[str] = []
    addresses: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
        addresses = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    facts["cert_names"] = (names + addresses)[:32]
    try:
        host_ip: str | None = str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        host_ip = None
    matches = host_ip in addresses if host_ip else any(_name_matches(n, host) for n in names)
    if not matches:
        problems.append(f"the certificate is not for {host} (it names {', '.join(facts['cert_names']) or 'nothing'})")
    trusted = _issuer_trusted(cert, ca_bundle)
    if not trusted:
        if cert.issuer == cert.subject:
            problems.append("the certificate is self-signed and not in the trusted CA store")
        else:
            problems.append(f"the issuer {facts['cert_issuer']} is not a trusted CA here")
    facts["cert_trusted"] = trusted
    return facts, problems


@functools.lru_cache(maxsize=8)
def _trusted_cas(ca_bundle: str | None) -> tuple[Any, ...]:
    """The system store plus ca_bundle, parsed once per run (parsing ~150 CAs takes ~0.2 s)."""
    from cryptography import x509

    context = ssl.create_default_context()
    if ca_bundle:
        try:
            context.load_verify_locations(cafile=ca_bundle)
        except (OSError, ssl.SSLError):
            pass
    out = []
    for der in context.get_ca_certs(binary_form=True):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # old store CAs with negative serials
                out.append(x509.load_der_x509_certificate(der))
        except ValueError:
            continue
    return tuple(out)


def _issuer_trusted(cert: Any, ca_bundle: str | None) -> bool:
    """Whether a CA from the system store or ca_bundle signed the leaf (or is the leaf)."""
    for ca in _trusted_cas(ca_bundle):
        if ca.subject != cert.issuer:
            continue
        if ca == cert:
            return True
        try:
            cert.verify_directly_issued_by(ca)
            return True
        except Exception:  # noqa: BLE001 - a bad signature or an unusable key type
            continue
    return False


def channel_binding_value(der: bytes) -> bytes:
    """MD5 of gss_channel_bindings_struct with tls-server-end-point (RFC 5929), as NTLM wants."""
    digest = hashlib.sha256(der).digest()  # SHA-256 for MD5/SHA-1/SHA-256-signed certs alike
    data = b"tls-server-end-point:" + digest
    struct = b"\x00" * 16 + len(data).to_bytes(4, "little") + data
    return hashlib.md5(struct).digest()  # noqa: S324 - the protocol defines MD5 here


async def start_tls(
    ctx: ProbeContext, tls: ssl.SSLContext, sni: str | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect, then handshake: a peer that accepts TCP and then resets or closes in the
    middle of the handshake is a TLS failure (the port is open), not "refused"."""
    return await connect_tcp(ctx, ssl=tls, server_hostname=sni)


@register
class LdapsProbe(Probe):
    name = "ldaps"
    transports = (Transport.TCP,)
    summary = "LDAPS/GC-SSL: TLS handshake and certificate, then RootDSE over TLS, optional bind"
    exchanges = 5
    footprint: ClassVar[str] = "with credentials: event 4624 (logon type 3), 4625 on a wrong password; RootDSE read logs nothing"

    @classmethod
    def validate(cls, options: Mapping[str, Any]) -> None:
        validate_directory_options(cls.name, options, BIND_METHODS)

    async def run(self, ctx: ProbeContext) -> Outcome:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE  # we judge the certificate ourselves, in words
        sni = None
        try:
            ipaddress.ip_address(ctx.host.strip("[]"))
        except ValueError:
            sni = ctx.host
        reader, writer = await start_tls(ctx, tls, sni)
        label = "Global Catalog over TLS" if ctx.options.get("gc") else "LDAPS"
        try:
            sslobj = writer.get_extra_info("ssl_object")
            der = sslobj.getpeercert(binary_form=True) if sslobj else None
            evidence: dict[str, Any] = {
                "tls_version": sslobj.version() if sslobj else None,
                "tls_cipher": (sslobj.cipher() or ("",))[0] if sslobj else None,
            }
            problems: list[str] = []
            cbt = b""
            if der:
                facts, problems = certificate_facts(der, ctx.host, ctx.settings.ca_bundle)
                evidence.update(facts)
                cbt = channel_binding_value(der)
            else:
                problems.append("the server sent no certificate")
            outcome = await within_deadline(
                ctx,
                directory_check(
                    ctx,
                    reader,
                    writer,
                    label=label,
                    default_bind="simple",
                    tls=True,
                    channel_binding=cbt,
                    extra=evidence,
                ),  # fmt: skip
                label,
            )
        finally:
            # abort, not close: a TLS close waits for the peer's close_notify, and a socket
            # left to that handshake outlives the probe (and the test's event loop).
            writer.transport.abort()
        if problems and outcome.status is Status.PASS:
            return warned(
                Reason.CERTIFICATE,
                f"{label} works on {ctx.where()}, but "
                + "; ".join(problems)
                + " — the Auditor may refuse this certificate: install one from a CA it trusts, "
                "or add the CA to its trusted store (portready: settings ca_bundle)",
                **outcome.evidence,
            )
        return outcome

    def summarize(self, evidence: Mapping[str, Any]) -> str:
        # This probe's own certificate keys (cert_*), until it uses the shared TLS kit.
        parts = [evidence_text(evidence, "tls_version", 20)]
        until = evidence_text(evidence, "cert_not_after", 40)
        if until:
            days = evidence.get("cert_days_left")
            parts.append(f"certificate {evidence_text(evidence, 'cert_subject', 120)} until {until[:10]}"
                         + (f" ({days} days)" if isinstance(days, int) else ""))
        return "; ".join(p for p in parts if p)
