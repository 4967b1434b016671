"""Kerberos (TCP and UDP 88): an AS-REQ that any KDC must answer.

What a pass proves: the KDC answered an AS-REQ for krbtgt/REALM with a
KRB-ERROR or an AS-REP (RFC 4120). Without pre-authentication no KDC issues a
ticket, so the usual answers are KDC_ERR_PREAUTH_REQUIRED (the client exists),
KDC_ERR_C_PRINCIPAL_UNKNOWN (our random client name) or KDC_ERR_WRONG_REALM;
each proves a KDC speaks Kerberos on the port. No secret is ever sent.

The client is the role's account when credentials are set (expect
PREAUTH_REQUIRED), else a random unknown name. The realm is the inventory's
`domain` upper-cased, else a placeholder (any KRB-ERROR still proves the KDC).
Evidence: error code and name, realm, `kdc_time` (the KDC's clock, ISO-8601
UTC, for the time-skew check: Kerberos fails beyond 5 minutes).

TCP frames carry a 4-byte length (RFC 4120 7.2.2); UDP is one datagram.
"""

from __future__ import annotations

import asyncio
import functools
import os
from datetime import datetime, timedelta, timezone
from typing import Any

from scanner.models import Reason, Transport
from scanner.probes.base import Outcome, Probe, ProbeContext, failed, passed, register, stalled
from scanner.probes.ldap import generalized_time_to_iso, split_account, utc_now_iso
from scanner.probes.netio import framed_exchange, udp_exchange
from scanner.probes.udp import udp_payload

PLACEHOLDER_REALM = "PORTREADY.INVALID"
MAX_KERBEROS_MESSAGE = 64 * 1024  # KRB-ERROR and AS-REP without a PAC fit easily
KRB_ERROR_TAG = 0x7E  # [APPLICATION 30]
AS_REP_TAG = 0x6B  # [APPLICATION 11]


def realm_for(ctx: ProbeContext) -> tuple[str, bool]:
    """(realm, known): the inventory's domain upper-cased, else the placeholder."""
    domain = ctx.options.get("realm") or ctx.settings.values.get("domain")
    if domain:
        return str(domain).upper(), True
    creds = ctx.credentials
    if creds is not None:
        _user, dom = split_account(creds.username, creds.domain)
        if "." in dom:
            return dom.upper(), True
    return PLACEHOLDER_REALM, False


def client_for(ctx: ProbeContext) -> str:
    creds = ctx.credentials
    if creds is not None:
        return split_account(creds.username, creds.domain)[0]
    return _ANONYMOUS_CLIENT


# One made-up client name per run: the KDC answers "principal unknown", which is the proof.
_ANONYMOUS_CLIENT = "portready-" + os.urandom(4).hex()


@functools.lru_cache(maxsize=64)
def as_req(realm: str, client: str) -> bytes:
    """A DER AS-REQ for krbtgt/REALM without pre-authentication (PAC requested, AES/RC4).

    Cached per realm and client for the run: pyasn1 encoding costs milliseconds of event
    loop time, and a probe that never completes a login gains nothing from a fresh nonce.
    """
    from impacket.krb5 import constants
    from impacket.krb5.asn1 import AS_REQ, KERB_PA_PAC_REQUEST, seq_set, seq_set_iter
    from impacket.krb5.types import KerberosTime, Principal
    from pyasn1.codec.der import encoder
    from pyasn1.type.univ import noValue

    nt_principal = constants.PrincipalNameType.NT_PRINCIPAL.value
    server = Principal(f"krbtgt/{realm}", type=nt_principal)
    user = Principal(client, type=nt_principal)
    pac = KERB_PA_PAC_REQUEST()
    pac["include-pac"] = True
    req = AS_REQ()
    req["pvno"] = 5
    req["msg-type"] = int(constants.ApplicationTagNumbers.AS_REQ.value)
    req["padata"] = noValue
    req["padata"][0] = noValue
    req["padata"][0]["padata-type"] = int(constants.PreAuthenticationDataTypes.PA_PAC_REQUEST.value)
    req["padata"][0]["padata-value"] = encoder.encode(pac)
    body = seq_set(req, "req-body")
    body["kdc-options"] = constants.encodeFlags(
        [constants.KDCOptions.forwardable.value, constants.KDCOptions.renewable.value]
    )
    seq_set(body, "sname", server.components_to_asn1)
    seq_set(body, "cname", user.components_to_asn1)
    body["realm"] = realm
    till = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(days=1)
    body["till"] = KerberosTime.to_asn1(till)
    body["rtime"] = KerberosTime.to_asn1(till)
    body["nonce"] = int.from_bytes(os.urandom(4), "big") >> 1
    etypes = (constants.EncryptionTypes.aes256_cts_hmac_sha1_96, constants.EncryptionTypes.aes128_cts_hmac_sha1_96,
              constants.EncryptionTypes.rc4_hmac)  # fmt: skip
    seq_set_iter(body, "etype", tuple(int(e.value) for e in etypes))
    return bytes(encoder.encode(req))


class KerberosAnswerError(ValueError):
    """Not a KRB-ERROR or AS-REP."""


def parse_answer(data: bytes) -> dict[str, Any]:
    """Evidence from a KRB-ERROR or AS-REP (anything else raises KerberosAnswerError)."""
    from impacket.krb5 import constants
    from impacket.krb5.asn1 import AS_REP, KRB_ERROR
    from pyasn1.codec.der import decoder
    from pyasn1.error import PyAsn1Error

    if not data:
        raise KerberosAnswerError("empty answer")
    tag = data[0]
    if tag not in (KRB_ERROR_TAG, AS_REP_TAG):
        raise KerberosAnswerError(f"first byte 0x{tag:02x} is neither KRB-ERROR nor AS-REP")
    try:
        if tag == KRB_ERROR_TAG:
            err, _rest = decoder.decode(data, asn1Spec=KRB_ERROR())
            code = int(err["error-code"])
            try:
                name = constants.ErrorCodes(code).name
            except ValueError:
                name = f"KRB error {code}"
            stime = str(err["stime"])
            out: dict[str, Any] = {
                "message": "KRB-ERROR",
                "error_code": code,
                "error_name": name,
                "realm": str(err["realm"]),
                "stime": stime,
                "kdc_time": generalized_time_to_iso(stime),
            }
            if err["e-text"].hasValue():
                out["e_text"] = str(err["e-text"])[:200]
            return out
        rep, _rest = decoder.decode(data, asn1Spec=AS_REP())
        return {"message": "AS-REP", "realm": str(rep["crealm"])}
    except (PyAsn1Error, ValueError, TypeError, KeyError) as exc:
        raise KerberosAnswerError(f"malformed Kerberos message ({type(exc).__name__})") from None


@udp_payload(88)
def kerberos_payload(ctx: ProbeContext) -> bytes:
    """The port-level UDP 88 check sends a real AS-REQ."""
    return as_req(realm_for(ctx)[0], _ANONYMOUS_CLIENT)  # the run's made-up client: encoded once per realm


async def _over_tcp(ctx: ProbeContext, request: bytes) -> bytes:
    return await framed_exchange(
        ctx, request, prefix=4, min_size=1, max_size=MAX_KERBEROS_MESSAGE, what="Kerberos answer"
    )


@register
class KerberosProbe(Probe):
    name = "kerberos"
    transports = (Transport.TCP, Transport.UDP)
    summary = "Kerberos: AS-REQ for krbtgt; a KRB-ERROR or AS-REP proves the KDC answers"
    exchanges = 2

    option_types = {"realm": str}

    async def run(self, ctx: ProbeContext) -> Outcome:
        realm, known = realm_for(ctx)
        request = as_req(realm, client_for(ctx))
        try:
            if ctx.protocol is Transport.UDP:
                reply = await udp_exchange(ctx, request, what="Kerberos answer")
            else:
                reply = await asyncio.wait_for(_over_tcp(ctx, request), max(0.05, ctx.remaining()))
        except asyncio.TimeoutError:
            return stalled(ctx, what="its Kerberos")
        observed = utc_now_iso()
        try:
            evidence = parse_answer(reply)
        except KerberosAnswerError as exc:
            return failed(
                Reason.PROTOCOL,
                f"{ctx.host} answered on {ctx.where()}, but not with Kerberos ({exc}) — another "
                "service listens there, or a middlebox mangles it",
                reply_bytes=len(reply),
            )
        evidence["asked_realm"] = realm if known else f"{realm} (placeholder: no domain in the inventory)"
        evidence["observed_at"] = observed
        said = evidence.get("error_name") or evidence["message"]
        return passed(f"the KDC answered an AS-REQ for krbtgt/{realm} with {said}", **evidence)
