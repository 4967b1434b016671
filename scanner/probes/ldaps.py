"""LDAPS (TCP 636) and Global Catalog over TLS (TCP 3269): TLS handshake, certificate, RootDSE.

The TLS side is the shared kit (`_tls`): the same handshake, trust store (`--ca-bundle`,
`--trust-private-ca`), certificate words and evidence keys as every other TLS probe, so
`diff` and the HTML summary see a DC's replaced or expiring certificate, and a TLS 1.0-only
LDAPS warns as it does on HTTPS.

What a pass proves: a TLS handshake completed, the certificate is valid for the name the
Auditor uses and chains to a trusted CA, and an LDAP server answered a RootDSE search
inside the tunnel (with `gc: true`, isGlobalCatalogReady=TRUE). A certificate problem is
`warn`/`certificate` (Samba's own certificate is self-signed); a failed handshake is
`fail`/`tls`.

Channel binding policy (evidence `channel_binding`, see `ldap.read_channel_binding`) is
read without valid credentials, on the same connection before any real bind: NTLM binds
of a made-up account with no channel binding token and with a wrong one. With credentials the probe also binds inside TLS: a simple bind
by default (the documented "simple over TLS"), or `bind: ntlm` / `bind: negotiate`
(GSS-SPNEGO with the tls-server-end-point channel binding).
"""

from __future__ import annotations

from typing import Any, Mapping

from scanner.models import Reason, Transport
from scanner.probes._tls import TlsSession, judge, open_tls, summarize_evidence
from scanner.probes.base import Outcome, Probe, ProbeContext, ProbeError, options_of, register
from scanner.probes.ldap import (
    DirectoryOptions,
    directory_check,
    with_evidence,
    within_deadline,
)

# Keys this probe emitted before it used the kit; still written (same values) so saved
# reports and scripts reading them keep working. New readers use the kit's keys.
_LEGACY_KEYS = {
    "cert_subject": "subject",
    "cert_issuer": "issuer",
    "cert_sha256": "sha256",
    "cert_days_left": "days_left",
    "cert_trusted": "trusted",
    "tls_cipher": "cipher",
}


def legacy_keys(evidence: Mapping[str, Any], session: TlsSession) -> dict[str, Any]:
    """The pre-kit `cert_*` / `tls_cipher` aliases of the kit's evidence keys."""
    out = {old: evidence[new] for old, new in _LEGACY_KEYS.items() if new in evidence}
    for old, new in (("cert_not_before", "not_before"), ("cert_not_after", "not_after")):
        if isinstance(evidence.get(new), str):
            out[old] = evidence[new].replace("+00:00", "Z")
    cert = session.certificate
    if cert is not None:  # as before: the SAN names, or the subject CN without a SAN
        out["cert_names"] = (cert.san if cert.has_san else [n for n in [cert.common_name] if n])[:32]
    return out


@register
class LdapsProbe(Probe):
    name = "ldaps"
    transports = (Transport.TCP,)
    summary = "LDAPS/GC-SSL: TLS handshake and certificate, RootDSE over TLS, channel binding policy, optional bind"
    exchanges = 6  # TLS (twice if untrusted), RootDSE, two policy binds, the optional bind
    footprint = (
        "up to two failed NTLM logons of the made-up account portready-policy-check (events 4625, "
        "4776) per DC and scan, on the first of its addresses and TLS ports to answer, where channel "
        "binding is not enforced; with credentials, one logon of that account per check"
    )

    def summarize(self, evidence: Mapping[str, Any]) -> str:
        if "not_after" not in evidence and "cert_not_after" in evidence:  # a report saved before the kit
            evidence = {**evidence, **{new: evidence[old] for old, new in _LEGACY_KEYS.items() if old in evidence},
                        "not_after": evidence["cert_not_after"]}  # fmt: skip
        parts = [summarize_evidence(evidence)]
        if evidence.get("channel_binding"):
            parts.append(f"channel binding {evidence['channel_binding']}")
        return ", ".join(p for p in parts if p)

    Options = DirectoryOptions

    async def run(self, ctx: ProbeContext) -> Outcome:
        try:
            session = await open_tls(ctx)
        except ProbeError as exc:
            if exc.outcome.reason not in (Reason.TLS, Reason.CLOSED):
                raise
            # The port answers, but without TLS there is no channel to bind a token to.
            raise ProbeError(with_evidence(exc.outcome, {"channel_binding": "no-tls"})) from exc
        label = "Global Catalog over TLS" if options_of(ctx, DirectoryOptions).gc else "LDAPS"
        try:
            outcome = await self._directory(ctx, session, label)
        finally:
            # abort, not close: a TLS close waits for the peer's close_notify, and a socket
            # left to that handshake outlives the probe (and the test's event loop).
            session.abort()
        judged = judge(ctx, session, outcome)
        return with_evidence(judged, {**legacy_keys(judged.evidence, session), **dict(judged.evidence)})

    async def _directory(self, ctx: ProbeContext, session: TlsSession, label: str) -> Outcome:
        try:
            outcome = await within_deadline(
                ctx,
                directory_check(
                    ctx, session.reader, session.writer, label=label, default_bind="simple",
                    tls=True, channel_binding=session.channel_binding(),
                ),
                label,
            )  # fmt: skip
        except ProbeError as exc:
            return exc.outcome
        return outcome
