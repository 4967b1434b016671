"""Oracle over TLS (TCPS, TCP 2484): the TLS handshake, then a TNS CONNECT inside it.

The handshake is first tried with verification (system CAs plus ``--ca-bundle``, or
the bundle only with the trust-private-CA flag, and the host name the user gave);
when only the certificate is the problem, the check reconnects without
verification, still requires the listener's answer, and ends `warn`/certificate
with the reason in words. A handshake that fails either way is `fail`/tls.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Mapping
from typing import Any

from scanner.models import Reason, Status, Transport
from scanner.probes._tns import certificate_info, client_context, exchange, outcome_for, service_name
from scanner.probes.base import Outcome, Probe, ProbeContext, ProbeError, failed, register, warned
from scanner.probes.netio import close_quietly, connect_tcp
from scanner.probes.tns import validate_tns_options


def _verify_problem(outcome: Outcome) -> str:
    """The verifier's words ("certificate has expired") from a failed handshake."""
    text = str(outcome.evidence.get("error") or outcome.detail)
    m = re.search(r"certificate verify failed: ([^(]+)", text)
    return (m.group(1).strip() if m else text)[:300]


async def _tls_connect(ctx: ProbeContext, verify: bool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """connect_tcp with TLS; a reset *during* the handshake is a TLS failure, not a refusal.

    connect_tcp reports a connection reset as refused whether it came for the SYN or
    in the middle of the handshake; a plain connect tells the two apart (only on
    that failure path, so a healthy listener costs one connection).
    """
    try:
        return await connect_tcp(ctx, ssl=client_context(ctx, verify), server_hostname=ctx.host)
    except ProbeError as exc:
        if exc.outcome.reason is not Reason.REFUSED:
            raise
        _reader, writer = await connect_tcp(ctx)  # raises refused again if TCP itself is refused
        close_quietly(writer)
        raise ProbeError(
            failed(
                Reason.TLS,
                f"TLS handshake failed on {ctx.where()}: the port accepts TCP connections but the "
                "peer closed the connection during the TLS handshake (not a TLS listener, or it "
                "rejects this client's TLS versions or ciphers)",
            )
        ) from None


@register
class TnsTlsProbe(Probe):
    name = "tns-tls"
    transports = (Transport.TCP,)
    summary = "Oracle TCPS: TLS handshake (certificate) then TNS CONNECT answered"
    exchanges = 3  # handshake (twice when the certificate fails verification) + CONNECT

    @classmethod
    def validate(cls, options: Mapping[str, Any]) -> None:
        validate_tns_options(cls.name, options)

    async def run(self, ctx: ProbeContext) -> Outcome:
        service, configured = service_name(ctx)
        problem: str | None = None
        try:
            reader, writer = await _tls_connect(ctx, verify=True)
        except ProbeError as exc:
            text = f"{exc.outcome.evidence.get('error', '')} {exc.outcome.detail}"
            if exc.outcome.reason is not Reason.TLS or "certificate verify failed" not in text.lower():
                raise
            problem = _verify_problem(exc.outcome)
            # Was it the certificate or the handshake itself? Try again without verification.
            reader, writer = await _tls_connect(ctx, verify=False)
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            tls: dict[str, Any] = {}
            if isinstance(ssl_object, ssl.SSLObject):
                tls["tls_version"] = ssl_object.version()
                tls.update(certificate_info(ssl_object.getpeercert(binary_form=True)))
            tls["certificate_trusted"] = problem is None
            answer = await exchange(ctx, reader, writer, service)
        finally:
            close_quietly(writer)
        outcome = outcome_for(ctx, answer, configured, service=service, **tls)
        if problem is None or outcome.status is not Status.PASS:
            return outcome
        return warned(
            Reason.CERTIFICATE,
            f"{outcome.detail}; but the TLS certificate does not verify: {problem} — the Auditor "
            "may refuse it (fix the certificate, or give its CA with --ca-bundle)",
            certificate_problem=problem,
            **outcome.evidence,
        )
