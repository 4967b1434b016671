"""LDAP (TCP 389) and Global Catalog (TCP 3268): anonymous RootDSE read, then an optional bind.

What a pass proves: the port accepts TCP and an LDAP server answered a RootDSE
search (every AD DC answers it anonymously). With `gc: true` the server must
also say isGlobalCatalogReady=TRUE. With credentials for the target's role,
the probe binds on the same connection:

* `bind: ntlm` (default): SASL GSS-SPNEGO carrying NTLMv2 with signing and
  sealing, the bind Windows clients (and the Auditor) use; impacket builds the
  NTLM messages, the I/O is ours. A sealed WhoAmI proves signing works.
* `bind: simple`: a simple bind; on 389 hardened DCs (and Samba by default)
  refuse it with strongerAuthRequired, which is reported as reason `policy`.

Result codes: invalidCredentials → `auth`; strongerAuthRequired,
confidentialityRequired, inappropriateAuthentication, authMethodNotSupported
(channel binding, signing policy) → `policy`: the port is fine, the method is not.
The password and NTLM messages never reach evidence, details or logs.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timezone
from typing import Any, Mapping

from scanner.models import Reason, Transport
from scanner.probes import _ldapwire as wire
from scanner.probes.base import (
    Outcome,
    Probe,
    ProbeContext,
    ProbeError,
    failed,
    passed,
    register,
    stalled,
    warned,
)
from scanner.probes.netio import close_quietly, connect_tcp, read_exactly

ROOTDSE_ATTRIBUTES = [
    "namingContexts",
    "defaultNamingContext",
    "rootDomainNamingContext",
    "dnsHostName",
    "serverName",
    "isGlobalCatalogReady",
    "supportedSASLMechanisms",
    "supportedLDAPVersion",
    "currentTime",
    "domainControllerFunctionality",
]
BIND_METHODS = ("ntlm", "simple")
_POLICY_CODES = {7, 8, 13, 48}  # authMethodNotSupported, strongerAuth, confidentiality, inappropriate
_AUTH_CODES = {49, 50}  # invalidCredentials, insufficientAccessRights


def validate_directory_options(name: str, options: Mapping[str, Any], binds: tuple[str, ...]) -> None:
    unknown = set(options) - {"gc", "bind"}
    if unknown:
        raise ValueError(f"probe {name!r} takes options gc, bind; got {sorted(unknown)}")
    if "gc" in options and not isinstance(options["gc"], bool):
        raise ValueError(f"probe {name!r}: option gc must be true or false")
    if "bind" in options and options["bind"] not in binds:
        raise ValueError(f"probe {name!r}: option bind must be one of {', '.join(binds)}")


def generalized_time_to_iso(value: str) -> str | None:
    """'20240102030405.0Z' (LDAP/Kerberos GeneralizedTime, UTC) → '2024-01-02T03:04:05Z'."""
    digits = value.strip().rstrip("Z").split(".")[0]
    try:
        when = datetime.strptime(digits[:14], "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class MessageIds:
    """Message ids of one connection (random start: stray answers never match)."""

    def __init__(self) -> None:
        self.value = int.from_bytes(os.urandom(2), "big") + 1

    def next(self) -> int:
        self.value += 1
        return self.value


async def read_rootdse(
    ctx: ProbeContext,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    ids: MessageIds,
) -> tuple[wire.LdapResult, dict[str, list[bytes]] | None]:
    """Search the RootDSE; returns the final result and the entry (None if none came)."""
    mid = ids.next()
    request = wire.search_request(mid, "", ROOTDSE_ATTRIBUTES, wire.present("objectClass"), 10)
    answers = await wire.exchange(ctx, reader, writer, request, mid, "LDAP RootDSE answer")
    entry: dict[str, list[bytes]] | None = None
    try:
        for msg in answers:
            if msg.op == wire.SEARCH_ENTRY:
                entry = wire.parse_search_entry(msg.body)[1]
        done = answers[-1]
        if done.op != wire.SEARCH_DONE:
            raise wire.BerError(f"search answered with protocolOp 0x{done.op:02x}")
        return wire.parse_result(done.body), entry
    except wire.BerError as exc:
        raise ProbeError(
            failed(
                Reason.PROTOCOL,
                f"{ctx.host} answered the RootDSE search on {ctx.where()} with malformed LDAP ({exc})",
            )
        ) from None


def rootdse_evidence(entry: Mapping[str, list[bytes]]) -> dict[str, Any]:
    """The RootDSE attributes an admin (and the time-skew check) reads."""
    lower = {k.lower(): v for k, v in entry.items()}

    def one(name: str) -> str | None:
        values = lower.get(name.lower())
        return wire.text(values[0]) if values else None

    def many(name: str) -> list[str]:
        return [wire.text(v) for v in lower.get(name.lower(), [])][:64]

    evidence: dict[str, Any] = {
        "naming_contexts": many("namingContexts"),
        "default_naming_context": one("defaultNamingContext"),
        "dns_host_name": one("dnsHostName"),
        "supported_sasl_mechanisms": many("supportedSASLMechanisms"),
        "supported_ldap_versions": many("supportedLDAPVersion"),
    }
    gc_ready = one("isGlobalCatalogReady")
    if gc_ready is not None:
        evidence["is_global_catalog_ready"] = gc_ready.upper() == "TRUE"
    level = one("domainControllerFunctionality")
    if level is not None:
        evidence["dc_functionality"] = level
    raw_time = one("currentTime")
    if raw_time is not None:
        evidence["current_time_raw"] = raw_time
        evidence["current_time"] = generalized_time_to_iso(raw_time)
        evidence["observed_at"] = utc_now_iso()  # our clock when the answer came
    return {k: v for k, v in evidence.items() if v is not None}


def split_account(username: str, domain: str) -> tuple[str, str]:
    """('user', 'DOMAIN') from user, DOMAIN\\user or user@domain."""
    if "\\" in username:
        dom, user = username.split("\\", 1)
        return user, dom
    if "@" in username and not domain:
        user, dom = username.rsplit("@", 1)
        return user, dom
    return username, domain


def bind_outcome(ctx: ProbeContext, method: str, result: wire.LdapResult, secret: str) -> Outcome | None:
    """None for success, else the outcome for a refused bind (never echoing the secret)."""
    if result.code == 0:
        return None
    said = result.diagnostic.replace(secret, "***") if secret else result.diagnostic
    said = said.strip()[:300]
    evidence = {"bind_method": method, "bind_result": result.name, "bind_result_code": result.code}
    if said:
        evidence["bind_diagnostic"] = said
    account = str(ctx.credentials) if ctx.credentials else "the account"
    if result.code in _POLICY_CODES:
        return failed(
            Reason.POLICY,
            f"LDAP on {ctx.where()} works, but the server refuses a {method} bind by policy "
            f"({result.name}{': ' + said if said else ''}) — use a method the DC allows "
            "(signing/sealing, channel binding or LDAPS) for the Auditor's account",
            **evidence,
        )
    if result.code in _AUTH_CODES:
        return failed(
            Reason.AUTH,
            f"LDAP on {ctx.where()} works, but the {method} bind as {account} was rejected "
            f"({result.name}) — check the account name, password and that it is not locked",
            **evidence,
        )
    return failed(
        Reason.PROTOCOL,
        f"the {method} bind on {ctx.where()} ended with {result.name}{': ' + said if said else ''}",
        **evidence,
    )


async def ntlm_bind(
    ctx: ProbeContext,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    ids: MessageIds,
    *,
    sign: bool,
    seal_check: bool,
    channel_binding: bytes = b"",
) -> tuple[wire.LdapResult, dict[str, Any]]:
    """SASL GSS-SPNEGO/NTLMv2 bind (as impacket's LDAPConnection.login, our own I/O)."""
    from impacket.ntlm import VERSION, NTLMAuthChallenge, getNTLMSSPType1, getNTLMSSPType3, hmac_md5
    from impacket.spnego import SPNEGO_NegTokenInit, SPNEGO_NegTokenResp, SPNEGOCipher, TypesMech

    creds = ctx.credentials
    assert creds is not None
    user, domain = split_account(creds.username, creds.domain)
    version = VERSION()
    version["ProductMajorVersion"], version["ProductMinorVersion"], version["ProductBuild"] = 10, 0, 19041
    negotiate = getNTLMSSPType1("", domain, signingRequired=sign, use_ntlmv2=True, version=version)
    init = SPNEGO_NegTokenInit()
    init["MechTypes"] = [TypesMech["NTLMSSP - Microsoft NTLM Security Support Provider"]]
    init["MechToken"] = negotiate.getData()
    mid = ids.next()
    first = await _bind_exchange(ctx, reader, writer, wire.sasl_bind_request(mid, "GSS-SPNEGO", init.getData()), mid)
    if first.code != 14 or not first.sasl_credentials:  # saslBindInProgress with a challenge
        return first, {}
    try:
        challenge = SPNEGO_NegTokenResp(first.sasl_credentials)["ResponseToken"]
        type3, session_key = getNTLMSSPType3(
            negotiate, challenge, user, creds.password, domain, "", "",
            service="ldap", version=version, use_ntlmv2=True, channel_binding_value=channel_binding,
        )  # fmt: skip
        type3["MIC"] = hmac_md5(
            session_key, negotiate.getData() + NTLMAuthChallenge(challenge).getData() + type3.getData()
        )
        resp = SPNEGO_NegTokenResp()
        resp["ResponseToken"] = type3.getData()
        cipher = None
        if sign:
            cipher = SPNEGOCipher(flags=negotiate["flags"], randomSessionKey=session_key)
            mech_list = b"0\x0c\x06\n+\x06\x01\x04\x01\x827\x02\x02\n"  # DER MechTypeList [NTLMSSP]
            resp["mechListMIC"] = cipher.sign(mech_list, 0, reset_cipher=True).getData()
    except ProbeError:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed challenge from the peer
        raise ProbeError(
            failed(
                Reason.PROTOCOL,
                f"{ctx.host} sent an NTLM challenge on {ctx.where()} that cannot be used ({type(exc).__name__})",
            )
        ) from None
    mid = ids.next()
    result = await _bind_exchange(ctx, reader, writer, wire.sasl_bind_request(mid, "GSS-SPNEGO", resp.getData()), mid)
    extra: dict[str, Any] = {"ntlm_signing": sign}
    if result.code == 0 and cipher is not None and seal_check:
        extra["sealed_search"] = await _sealed_search(ctx, reader, writer, ids, cipher)
    return result, extra


async def _bind_exchange(
    ctx: ProbeContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, mid: int
) -> wire.LdapResult:
    answers = await wire.exchange(ctx, reader, writer, request, mid, "LDAP bind answer")
    try:
        if answers[-1].op != wire.BIND_RESPONSE:
            raise wire.BerError("not a bindResponse")
        return wire.parse_result(answers[-1].body)
    except wire.BerError as exc:
        raise ProbeError(
            failed(Reason.PROTOCOL, f"{ctx.host} answered the bind on {ctx.where()} with malformed LDAP ({exc})")
        ) from None


async def _sealed_search(
    ctx: ProbeContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ids: MessageIds, cipher: Any
) -> bool:
    """A RootDSE search sealed with the session keys: proves the signed session really works.

    (WhoAmI would name the account, but Samba does not implement that extended operation.)
    """
    mid = ids.next()
    request = wire.search_request(mid, "", ["dnsHostName"], wire.present("objectClass"), 10)
    signature, sealed = cipher.encrypt(request)
    frame = signature.getData() + sealed
    writer.write(len(frame).to_bytes(4, "big") + frame)
    await asyncio.wait_for(writer.drain(), ctx.step_timeout())
    for _frame in range(8):
        size = int.from_bytes(await read_exactly(ctx, reader, 4, "sealed LDAP answer"), "big")
        if size < 16 or size > wire.MAX_LDAP_MESSAGE:
            raise ProbeError(
                failed(Reason.PROTOCOL, f"{ctx.host} sent a sealed LDAP frame of {size} bytes on {ctx.where()}")
            )
        payload = await read_exactly(ctx, reader, size, "sealed LDAP answer")
        try:
            _sig, plain = cipher.decrypt(payload)
            for msg in wire.split_messages(plain):
                if msg.message_id == mid and msg.op == wire.SEARCH_DONE:
                    return wire.parse_result(msg.body).code == 0
        except (wire.BerError, ValueError):
            return False
    return False


async def simple_bind(
    ctx: ProbeContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ids: MessageIds
) -> wire.LdapResult:
    creds = ctx.credentials
    assert creds is not None
    user, domain = split_account(creds.username, creds.domain)
    name = f"{user}@{domain}" if "." in domain else (f"{domain}\\{user}" if domain else user)
    mid = ids.next()
    return await _bind_exchange(ctx, reader, writer, wire.simple_bind_request(mid, name, creds.password), mid)


async def directory_check(
    ctx: ProbeContext,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    label: str,
    default_bind: str,
    tls: bool,
    channel_binding: bytes = b"",
    extra: Mapping[str, Any] | None = None,
) -> Outcome:
    """RootDSE, GC readiness and the optional bind: shared by `ldap` and `ldaps`."""
    ids = MessageIds()
    result, entry = await read_rootdse(ctx, reader, writer, ids)
    evidence: dict[str, Any] = dict(extra or {})
    evidence["rootdse_result"] = result.name
    if entry is None or result.code != 0:
        return warned(
            Reason.POLICY,
            f"{label} answers on {ctx.where()}, but refused the anonymous RootDSE read "
            f"({result.name}{': ' + result.diagnostic[:200] if result.diagnostic else ''}) — "
            "the service is there; the Auditor's bind was not tested",
            **evidence,
        )
    evidence.update(rootdse_evidence(entry))
    if ctx.options.get("gc"):
        if evidence.get("is_global_catalog_ready") is not True:
            return failed(
                Reason.PROTOCOL,
                f"{label} on {ctx.where()} answers, but the server is not a ready Global Catalog "
                f"(isGlobalCatalogReady={'FALSE' if 'is_global_catalog_ready' in evidence else 'absent'})"
                " — point the Auditor at a GC, or finish GC replication on this DC",
                **evidence,
            )
    what = f"{label}: RootDSE read"
    if evidence.get("default_naming_context"):
        what += f" (domain {evidence['default_naming_context']}"
        what += f", host {evidence['dns_host_name']})" if evidence.get("dns_host_name") else ")"
    creds = ctx.credentials
    if creds is None:
        return passed(what + "; no credentials for this role, so no bind was tried", **evidence)
    method = str(ctx.options.get("bind", default_bind))
    if method == "simple":
        bind = await simple_bind(ctx, reader, writer, ids)
        bind_extra: dict[str, Any] = {}
    else:
        # Signing is negotiated inside TLS too (Samba demands it); the sealed follow-up
        # search only makes sense without TLS (inside TLS the session is not wrapped).
        bind, bind_extra = await ntlm_bind(
            ctx, reader, writer, ids, sign=not tls, seal_check=not tls, channel_binding=channel_binding
        )
    refused = bind_outcome(ctx, method, bind, creds.password)
    if refused is not None:
        return with_evidence(refused, evidence)
    evidence.update(bind_extra)
    evidence["bind_method"] = method
    evidence["bind_result"] = bind.name
    return passed(f"{what}; {method} bind as {creds} succeeded", **evidence)


def with_evidence(outcome: Outcome, evidence: Mapping[str, Any]) -> Outcome:
    """`outcome` with the RootDSE evidence gathered before it."""
    merged = dict(evidence)
    merged.update(outcome.evidence)
    return Outcome(outcome.status, outcome.reason, outcome.detail, merged)


async def within_deadline(ctx: ProbeContext, work: Any, label: str) -> Outcome:
    """Run the exchange; a peer that dribbles or stalls ends at the deadline, with words."""
    try:
        result: Outcome = await asyncio.wait_for(work, max(0.05, ctx.remaining()))
        return result
    except asyncio.TimeoutError:
        return stalled(ctx, what=f"its {label}")


@register
class LdapProbe(Probe):
    name = "ldap"
    transports = (Transport.TCP,)
    summary = "LDAP/GC: anonymous RootDSE read (naming contexts, GC ready), optional NTLM or simple bind"
    exchanges = 4

    @classmethod
    def validate(cls, options: Mapping[str, Any]) -> None:
        validate_directory_options(cls.name, options, BIND_METHODS)

    async def run(self, ctx: ProbeContext) -> Outcome:
        reader, writer = await connect_tcp(ctx)
        label = "Global Catalog LDAP" if ctx.options.get("gc") else "LDAP"
        try:
            return await within_deadline(
                ctx, directory_check(ctx, reader, writer, label=label, default_bind="ntlm", tls=False), label
            )
        finally:
            close_quietly(writer)
