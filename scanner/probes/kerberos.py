"""Kerberos (TCP and UDP 88): an AS-REQ that any KDC must answer.

What a pass proves: the KDC answered an AS-REQ for krbtgt/REALM with a
KRB-ERROR or an AS-REP (RFC 4120). The request carries no pre-authentication,
so the usual answers are KDC_ERR_PREAUTH_REQUIRED (the client exists),
KDC_ERR_C_PRINCIPAL_UNKNOWN or KDC_ERR_WRONG_REALM; each proves a KDC speaks
Kerberos on the port. No secret is ever sent, and nothing of an AS-REP but its
realm is kept.

The client is, in order: the option `client` / setting `kerberos_client`, the
role's account, the target's computer account (DC1$), else a made-up name;
see FOOTPRINT below for what each leaves in the DC's security log. The realm
is the inventory's `domain` upper-cased, else a placeholder (any KRB-ERROR
still proves the KDC). Evidence: error code and name, realm, `kdc_time` (the
KDC's clock, ISO-8601 UTC, for the time-skew check: Kerberos fails beyond 5
minutes), `asked_client`, `client_choice`.

The messages are encoded and decoded by the small DER codec in `scanner.wire.der`
(no ASN.1 library, no attack toolkit on the import path).
TCP frames carry a 4-byte length (RFC 4120 7.2.2); UDP is one datagram.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
from dataclasses import dataclass
from typing import Any

from scanner.models import Reason, Transport
from scanner.probes._options import option
from scanner.probes.base import Outcome, Probe, ProbeContext, failed, options_of, passed, register, stalled
from scanner.probes.ldap import generalized_time_to_iso, split_account, utc_now_iso
from scanner.probes.netio import framed_exchange, udp_exchange, within
from scanner.probes.udp import udp_payload
from scanner.wire import der

PLACEHOLDER_REALM = "PORTREADY.INVALID"
MAX_KERBEROS_MESSAGE = 64 * 1024  # KRB-ERROR and AS-REP without a PAC fit easily
KRB_ERROR_TAG = 0x7E  # [APPLICATION 30]
AS_REP_TAG = 0x6B  # [APPLICATION 11]


@dataclass(frozen=True)
class KerberosOptions:
    realm: str | None = option(None, "the realm asked; unset: the inventory's domain, upper-cased")
    client: str | None = option(None, "the client name in the AS-REQ; unset: kerberos_client, then the account")


def realm_for(ctx: ProbeContext) -> tuple[str, bool]:
    """(realm, known): the inventory's domain upper-cased, else the placeholder."""
    domain = options_of(ctx, KerberosOptions, foreign_ok=True).realm or ctx.settings.values.get("domain")
    if domain:
        return str(domain).upper(), True
    creds = ctx.credentials
    if creds is not None:
        _user, dom = split_account(creds.username, creds.domain)
        if "." in dom:
            return dom.upper(), True
    return PLACEHOLDER_REALM, False


# Which client name the AS-REQ carries decides what the DC's security log gets:
#
# * An unknown name is answered KDC_ERR_C_PRINCIPAL_UNKNOWN and logged as a failed
#   event 4768 "A Kerberos authentication ticket (TGT) was requested", Result Code 0x6
#   (learn.microsoft.com: event-4768, "Result Code" table), the very pattern detection
#   guides use for user enumeration (e.g. prosec-networks.com "Kerberos attacks":
#   search 4768 for "0x6").
# * An existing account that requires pre-authentication (every account by default) is
#   answered KDC_ERR_PREAUTH_REQUIRED (0x19). That answer is the first leg of every
#   ordinary logon (the client learns the salt and etypes from it, RFC 4120 3.1.1 /
#   MS-KILE 3.1.5.1), not an unknown-name or bad-password failure: no ticket is issued,
#   no password is tried, lockout counters do not move. event-4768's page routes the
#   pre-authentication failures (0x10/0x17/0x18) to event 4771; at worst a DC writes
#   a 4771 with Failure Code 0x19 and Pre-Authentication Type 0 naming that account
#   (such an entry is on record for a Windows Server 2008 DC: myeventlog.com event 492),
#   which names a fixed account an admin can filter, unlike 0x6 for a random name.
#
# So the default asks for an account that exists: the role's account when credentials are
# set, else the target's own computer account (DC1$ for dc1.corp.example: every DC has
# one), else (a target given by address) a made-up name, which still proves the KDC but
# costs one 4768/0x6 per target. An admin who wants a name to filter on sets the option
# `client` (profile) or the setting `kerberos_client` (inventory).
# Not verified on a Windows DC from this project's lab (Samba's KDC answers the same codes).
FOOTPRINT = (
    "an existing account (the DC's own DC1$ by default) is answered 0x19 PREAUTH_REQUIRED, the first "
    "step of every logon: nothing or at most a 4771 (0x19) naming it; a target given by IP without "
    "credentials: one failed event 4768 (0x6) per target"
)


def client_for(ctx: ProbeContext) -> tuple[str, str]:
    """(client name, how it was chosen): named / account / computer-account / unknown-name."""
    named = options_of(ctx, KerberosOptions, foreign_ok=True).client or ctx.settings.values.get("kerberos_client")
    if named:
        return str(named), "named"
    creds = ctx.credentials
    if creds is not None and creds.username:
        return split_account(creds.username, creds.domain)[0], "account"
    machine = netbios_name(ctx.host)
    if machine:
        return machine + "$", "computer-account"
    return _ANONYMOUS_CLIENT, "unknown-name"


def netbios_name(host: str) -> str | None:
    """The computer account a host name implies (first label, upper case, 15 chars); None for IPs."""
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
        return None
    except ValueError:
        pass
    label = host.split(".", 1)[0].upper()
    return label[:15] or None


# One made-up client name per run, for targets given by address without credentials.
_ANONYMOUS_CLIENT = "portready-" + os.urandom(4).hex()


# RFC 4120 7.5.9 (and MS-KILE 2.2.1) error codes a KDC answers an AS-REQ with.
ERROR_NAMES = {
    6: "KDC_ERR_C_PRINCIPAL_UNKNOWN", 7: "KDC_ERR_S_PRINCIPAL_UNKNOWN", 12: "KDC_ERR_POLICY",
    14: "KDC_ERR_ETYPE_NOSUPP", 18: "KDC_ERR_CLIENT_REVOKED", 23: "KDC_ERR_KEY_EXPIRED",
    24: "KDC_ERR_PREAUTH_FAILED", 25: "KDC_ERR_PREAUTH_REQUIRED", 37: "KRB_AP_ERR_SKEW",
    60: "KRB_ERR_GENERIC", 68: "KDC_ERR_WRONG_REALM", 16: "KDC_ERR_PADATA_TYPE_NOSUPP",
    1: "KDC_ERR_NAME_EXP", 3: "KDC_ERR_BAD_PVNO", 13: "KDC_ERR_BADOPTION", 41: "KRB_AP_ERR_MODIFIED",
    52: "KRB_ERR_RESPONSE_TOO_BIG",
}  # fmt: skip
NT_PRINCIPAL, NT_SRV_INST = 1, 2
ETYPES = (18, 17, 23)  # aes256-cts-hmac-sha1-96, aes128-cts-hmac-sha1-96, rc4-hmac
# What Windows clients put in `till` and `rtime`: a fixed time keeps the request free of
# the clock, so one encoding serves the whole run.
FAR_FUTURE = "20370913024805Z"
PA_PAC_REQUEST = 128  # MS-KILE 2.2.3


def _principal(name_type: int, *parts: str) -> bytes:
    return der.sequence(
        der.explicit(0, der.integer(name_type)),
        der.explicit(1, der.sequence_of(der.general_string(p) for p in parts)),
    )


@functools.lru_cache(maxsize=1024)  # one entry per (realm, client): a few per DC at most
def as_req(realm: str, client: str) -> bytes:
    """A DER AS-REQ (RFC 4120 5.4.1) for krbtgt/REALM without pre-authentication.

    PAC requested, AES/RC4 offered, options forwardable + renewable, as a Windows
    client's first AS-REQ. Cached per realm and client for the run: a probe that
    never completes a login gains nothing from a fresh nonce, so every target asked
    about the same client shares one encoding (about 20 µs each here; the computer-
    account default makes that one per DC).
    """
    pac_request = der.sequence(der.explicit(0, der.tlv(der.UNIVERSAL_BOOLEAN, b"\xff")))
    padata = der.sequence_of(
        [
            der.sequence(
                der.explicit(1, der.integer(PA_PAC_REQUEST)),
                der.explicit(2, der.tlv(der.UNIVERSAL_OCTET_STRING, pac_request)),
            )
        ]
    )
    # KDCOptions: a 32-bit BIT STRING; forwardable = bit 1, renewable = bit 8 (RFC 4120 5.4.1).
    options = der.tlv(der.UNIVERSAL_BIT_STRING, b"\x00\x40\x80\x00\x00")
    far = der.tlv(der.UNIVERSAL_GENERALIZED_TIME, FAR_FUTURE.encode("ascii"))
    body = der.sequence(
        der.explicit(0, options),
        der.explicit(1, _principal(NT_PRINCIPAL, client)),
        der.explicit(2, der.general_string(realm)),
        der.explicit(3, _principal(NT_SRV_INST, "krbtgt", realm)),
        der.explicit(5, far),
        der.explicit(6, far),
        der.explicit(7, der.integer(int.from_bytes(os.urandom(4), "big") >> 1)),
        der.explicit(8, der.sequence_of(der.integer(e) for e in ETYPES)),
    )
    req = der.sequence(
        der.explicit(1, der.integer(5)),
        der.explicit(2, der.integer(10)),
        der.explicit(3, padata),
        der.explicit(4, body),
    )
    return der.application(10, req)


class KerberosAnswerError(ValueError):
    """Not a KRB-ERROR or AS-REP."""


def parse_answer(data: bytes) -> dict[str, Any]:
    """Evidence from a KRB-ERROR or AS-REP (anything else raises KerberosAnswerError)."""
    if not data:
        raise KerberosAnswerError("empty answer")
    tag = data[0]
    if tag not in (KRB_ERROR_TAG, AS_REP_TAG):
        raise KerberosAnswerError(f"first byte 0x{tag:02x} is neither KRB-ERROR nor AS-REP")
    try:
        _tag, start, end = der.read_tlv(data)
        s, e = der.unwrap(data, start, end, der.UNIVERSAL_SEQUENCE)
        got = der.fields(data, s, e)
        if tag == KRB_ERROR_TAG:
            # KRB-ERROR (RFC 4120 5.9.1): stime [4], error-code [6], realm [9], e-text [11]
            if not {0, 1, 4, 6, 9} <= set(got):
                raise der.DerError("a KRB-ERROR without its required fields")
            if der.read_integer(data, *got[1]) != 30:
                raise der.DerError("msg-type is not KRB-ERROR")
            code = der.read_integer(data, *got[6])
            stime = der.read_string(data, *got[4], limit=32)
            out: dict[str, Any] = {
                "message": "KRB-ERROR",
                "error_code": code,
                "error_name": ERROR_NAMES.get(code, f"KRB error {code}"),
                "realm": der.read_string(data, *got[9], limit=256),
                "stime": stime,
                "kdc_time": generalized_time_to_iso(stime),
            }
            if 11 in got:
                out["e_text"] = der.read_string(data, *got[11], limit=200)
            return out
        # AS-REP (RFC 4120 5.4.2): msg-type [1] = 11, crealm [3]
        if not {0, 1, 3} <= set(got) or der.read_integer(data, *got[1]) != 11:
            raise der.DerError("an AS-REP without its required fields")
        return {"message": "AS-REP", "realm": der.read_string(data, *got[3], limit=256)}
    except (der.DerError, ValueError) as exc:
        raise KerberosAnswerError(f"malformed Kerberos message ({exc})") from None


@udp_payload(88)
def kerberos_payload(ctx: ProbeContext) -> bytes:
    """The port-level UDP 88 check sends a real AS-REQ."""
    # The quiet client (the DC's own computer account where known): encoded once per realm and client.
    return as_req(realm_for(ctx)[0], client_for(ctx)[0])


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
    footprint = FOOTPRINT

    Options = KerberosOptions

    async def run(self, ctx: ProbeContext) -> Outcome:
        realm, known = realm_for(ctx)
        client, chosen = client_for(ctx)
        request = as_req(realm, client)
        try:
            if ctx.protocol is Transport.UDP:
                reply = await udp_exchange(ctx, request, what="Kerberos answer")
            else:
                reply = await within(_over_tcp(ctx, request), max(0.05, ctx.remaining()))
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
        evidence["asked_client"] = client
        evidence["client_choice"] = chosen
        if chosen == "unknown-name" or evidence.get("error_code") == 6:
            evidence["footprint"] = "event 4768 failure 0x6 (unknown client) on the DC"
        said = evidence.get("error_name") or evidence["message"]
        return passed(f"the KDC answered an AS-REQ for krbtgt/{realm} with {said}", **evidence)
