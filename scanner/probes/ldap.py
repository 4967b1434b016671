"""LDAP (TCP 389) and Global Catalog (TCP 3268): anonymous RootDSE read, the DC's LDAP
policy, then an optional bind.

What a pass proves: the port accepts TCP and an LDAP server answered a RootDSE
search (every AD DC answers it anonymously). With `gc: true` the server must
also say isGlobalCatalogReady=TRUE.

Policy as evidence, without valid credentials (as NetExec and LdapRelayScan read it):

* `ldap_signing` (389, 3268): `required` / `not-required` / `unknown`, from a simple
  bind of a made-up account (`POLICY_ACCOUNT`) on the same connection: a DC that requires
  signing refuses it with strongerAuthRequired (00002028) before weighing credentials.
* `channel_binding` (636, 3269, probe `ldaps`): `always` / `when-supported` / `never` /
  `no-tls` / `unknown`, from NTLM binds of the made-up account over TLS without a channel
  binding token and with a wrong one (80090346 = the DC checks the token).

With credentials for the target's role, the probe binds on the same connection the way
the Auditor does, through pyspnego:

* `bind: negotiate` (default): SASL GSS-SPNEGO, Kerberos for ldap/<host name> where this
  host can get a ticket (Windows SSPI; the target must be named, not an address), NTLMv2
  otherwise, with signing and sealing; a sealed RootDSE search proves the session works.
  Evidence `bind_method` says which mechanism was used (`kerberos` or `ntlm`).
* `bind: ntlm`: the same, NTLM only.
* `bind: simple`: a simple bind; on 389 hardened DCs (and Samba by default)
  refuse it with strongerAuthRequired, which is reported as reason `policy`.

Result codes: invalidCredentials → `auth`; strongerAuthRequired, 00002028 (signing),
80090346 (channel binding), confidentialityRequired, inappropriateAuthentication,
authMethodNotSupported → `policy`, in those words: the port is fine, the method is not.
The password and the SPNEGO messages never reach evidence, details or logs; of a peer's
bind diagnostic only the error codes are kept (it may echo what we sent).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import re
import secrets
import sys
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, TypeVar

from scanner.models import Reason, Transport
from scanner.probes._options import option
from scanner.probes.base import (
    Outcome,
    Probe,
    ProbeContext,
    ProbeError,
    failed,
    inconclusive,
    options_of,
    passed,
    register,
    stalled,
    warned,
)
from scanner.probes.netio import close_quietly, connect_tcp, drain_within, read_exactly, within
from scanner.wire import ldap as wire

T = TypeVar("T")

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
BIND_METHODS = ("negotiate", "ntlm", "simple")
_POLICY_CODES = {7, 8, 13, 48}  # authMethodNotSupported, strongerAuth, confidentiality, inappropriate
_AUTH_CODES = {49, 50}  # invalidCredentials, insufficientAccessRights


@dataclass(frozen=True)
class DirectoryOptions:
    """Options of the LDAP and LDAPS probes."""

    gc: bool = option(False, "a Global Catalog port: the server must be a ready GC")
    bind: str | None = option(None, f"the bind tried with credentials: {', '.join(BIND_METHODS)}; unset: negotiate")

    def __post_init__(self) -> None:
        if self.bind is not None and self.bind not in BIND_METHODS:
            raise ValueError(f"option bind must be one of {', '.join(BIND_METHODS)}")


def generalized_time_to_iso(value: str) -> str | None:
    """'20240102030405.0Z' (LDAP/Kerberos GeneralizedTime, UTC) → '2024-01-02T03:04:05Z'."""
    digits = value.strip().rstrip("Z").split(".")[0][:14]
    # By hand, not strptime (a tenth of a millisecond each, once per LDAP check): ASCII
    # digits only, and datetime() checks the calendar.
    if len(digits) != 14 or not digits.isascii() or not digits.isdigit():
        return None
    try:
        datetime(int(digits[:4]), int(digits[4:6]), int(digits[6:8]), int(digits[8:10]), int(digits[10:12]),
                 int(digits[12:14]))  # fmt: skip
    except ValueError:
        return None
    return f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}T{digits[8:10]}:{digits[10:12]}:{digits[12:14]}Z"


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


@dataclass(frozen=True)
class RootDseEvidence:
    """What a DC's RootDSE showed; field names are the documented evidence keys (the
    time-skew check in `local` reads `current_time` and `observed_at`)."""

    naming_contexts: tuple[str, ...]
    default_naming_context: str | None
    dns_host_name: str | None
    supported_sasl_mechanisms: tuple[str, ...]
    supported_ldap_versions: tuple[str, ...]
    is_global_catalog_ready: bool | None = None
    dc_functionality: str | None = None
    current_time_raw: str | None = None
    current_time: str | None = None
    observed_at: str | None = None  # our clock when the answer came

    @classmethod
    def of(cls, entry: Mapping[str, list[bytes]]) -> RootDseEvidence:
        lower = {k.lower(): v for k, v in entry.items()}

        def one(name: str) -> str | None:
            values = lower.get(name.lower())
            return wire.text(values[0]) if values else None

        def many(name: str) -> tuple[str, ...]:
            return tuple(wire.text(v) for v in lower.get(name.lower(), []))[:64]

        gc_ready = one("isGlobalCatalogReady")
        raw_time = one("currentTime")
        return cls(
            naming_contexts=many("namingContexts"),
            default_naming_context=one("defaultNamingContext"),
            dns_host_name=one("dnsHostName"),
            supported_sasl_mechanisms=many("supportedSASLMechanisms"),
            supported_ldap_versions=many("supportedLDAPVersion"),
            is_global_catalog_ready=None if gc_ready is None else gc_ready.upper() == "TRUE",
            dc_functionality=one("domainControllerFunctionality"),
            current_time_raw=raw_time,
            current_time=None if raw_time is None else generalized_time_to_iso(raw_time),
            observed_at=None if raw_time is None else utc_now_iso(),
        )

    def to_evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in _ROOTDSE_FIELDS:  # not asdict(): its deep copy is most of this call's cost
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out


_ROOTDSE_FIELDS = tuple(f.name for f in fields(RootDseEvidence))


def dc_identity(entry: Mapping[str, list[bytes]]) -> tuple[str, str] | None:
    """Who answered, as the DC says it (serverName, else dnsHostName + its domain); None if
    it does not say. The key of the policy read once per DC (`directory_check`)."""
    lower = {k.lower(): v for k, v in entry.items()}

    def first(name: str) -> str | None:
        values = lower.get(name)
        return wire.text(values[0])[:512] if values and values[0] else None

    server = first("servername")
    if server:
        return server, ""
    host = first("dnshostname")
    return (host, first("defaultnamingcontext") or "") if host else None


def rootdse_evidence(entry: Mapping[str, list[bytes]]) -> dict[str, Any]:
    """The RootDSE attributes an admin (and the time-skew check) reads."""
    return RootDseEvidence.of(entry).to_evidence()


def split_account(username: str, domain: str) -> tuple[str, str]:
    """('user', 'DOMAIN') from user, DOMAIN\\user or user@domain."""
    if "\\" in username:
        dom, user = username.split("\\", 1)
        return user, dom
    if "@" in username and not domain:
        user, dom = username.rsplit("@", 1)
        return user, dom
    return username, domain


# Windows' own codes inside a bind diagnostic are the only parts of a peer's diagnostic text
# we keep, and only codes from this fixed list: nothing a hostile peer echoes (our password
# in any case or encoding, even one that looks like a code) can reach a report. Redaction
# by construction, not by search-and-replace.
_CODE = re.compile(r"\b(?:[0-9A-Fa-f]{8}|data [0-9A-Fa-f]{1,8})\b")
CHANNEL_BINDING_REQUIRED = "80090346"  # SEC_E_BAD_BINDINGS
SIGNING_REQUIRED = "00002028"  # the DC requires integrity (LDAP signing) without TLS
_CODE_WORDS = {
    CHANNEL_BINDING_REQUIRED: "the DC requires LDAP channel binding (80090346)",
    SIGNING_REQUIRED: "the DC requires LDAP signing (00002028)",
    "00002029": "the DC refuses signing or sealing over TLS (00002029)",
    "8009030c": "the logon was refused (8009030C)",
    "80090308": "the security token was refused (80090308)",
    "data 52e": "unknown account or wrong password (data 52e)",
    "data 525": "unknown account (data 525)",
    "data 530": "the account may not log on at this time (data 530)",
    "data 531": "the account may not log on from this workstation (data 531)",
    "data 532": "the password has expired (data 532)",
    "data 533": "the account is disabled (data 533)",
    "data 701": "the account has expired (data 701)",
    "data 773": "the password must be changed (data 773)",
    "data 775": "the account is locked out (data 775)",
    "data 57": "the bind parameters were refused (data 57)",
    "data 80090346": "the channel binding token was refused (data 80090346)",
}


def diagnostic_codes(diagnostic: str) -> list[str]:
    """The known error codes in a peer's diagnostic ('80090346', 'data 52e'); no free text."""
    found: list[str] = []
    for match in _CODE.finditer(diagnostic[:4096]):
        code = match.group(0).lower()
        if code in _CODE_WORDS and code not in found:
            found.append(code)
    return found


def _code_words(diagnostic: str) -> str:
    """': <words for the known codes>' of a peer's diagnostic, or ''; never its own text."""
    words = [_CODE_WORDS[c] for c in diagnostic_codes(diagnostic)]
    return ": " + "; ".join(words) if words else ""


def bind_outcome(ctx: ProbeContext, method: str, result: wire.LdapResult) -> Outcome | None:
    """None for success, else the outcome for a refused bind.

    Never echoes the peer's diagnostic text (it may carry what we sent): only the result
    name and the error codes found in it, each with fixed words.
    """
    if result.code == 0:
        return None
    codes = diagnostic_codes(result.diagnostic)
    evidence: dict[str, Any] = {"bind_method": method, "bind_result": result.name, "bind_result_code": result.code}
    if codes:
        evidence["bind_diagnostic_codes"] = codes
        # The pre-existing key, kept for saved scripts: now only the known codes, never the peer's text.
        evidence["bind_diagnostic"] = ", ".join(codes)
    said = f" ({result.name}{_code_words(result.diagnostic)})"
    account = str(ctx.credentials) if ctx.credentials else "the account"
    if CHANNEL_BINDING_REQUIRED in codes or "data 80090346" in codes:
        return failed(
            Reason.POLICY,
            f"LDAP on {ctx.where()} works, but the DC refuses the {method} bind by policy: it "
            f"requires LDAP channel binding{said} — the Auditor must bind over LDAPS with a "
            "channel binding token (current Windows does), or relax 'LDAP server channel binding "
            "token requirements' on the DC",
            **evidence,
        )
    if result.code in _POLICY_CODES or SIGNING_REQUIRED in codes:
        why = "it requires LDAP signing" if result.code == 8 or SIGNING_REQUIRED in codes else "of its policy"
        return failed(
            Reason.POLICY,
            f"LDAP on {ctx.where()} works, but the DC refuses a {method} bind because {why}{said} "
            "— use a method the DC allows (signing/sealing, channel binding or LDAPS) for the "
            "Auditor's account",
            **evidence,
        )
    if result.code in _AUTH_CODES:
        return failed(
            Reason.AUTH,
            f"LDAP on {ctx.where()} works, but the {method} bind as {account} was rejected{said} "
            "— check the account name, password and that it is not locked",
            **evidence,
        )
    return failed(Reason.PROTOCOL, f"the {method} bind on {ctx.where()} ended with{said}", **evidence)


def kerberos_possible(host: str, account: str, *, integrated: bool = False) -> bool:
    """Whether a Negotiate bind may try Kerberos: the target is named (a ticket is for
    ldap/<name>, never an address) and, off Windows, the account is in a DNS domain (else
    MIT krb5 would look for the KDC of a realm that does not exist) or the logon is
    integrated (the user's ticket cache names its realm). Else NTLM only."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return False
    except ValueError:
        pass
    return sys.platform == "win32" or integrated or "@" in account and "." in account.rsplit("@", 1)[1]


def _spnego_client(
    ctx: ProbeContext, *, protocol: str, sign: bool, channel_binding: bytes | None,
    username: str | None = None, password: str | None = None,
) -> Any:  # fmt: skip
    """A pyspnego client context for service ldap/<host> (SSPI on Windows)."""
    import spnego
    from spnego.channel_bindings import GssChannelBindings

    integrated = False
    if username is None:
        creds = ctx.credentials
        assert creds is not None
        if creds.integrated:  # the current user's logon (SSPI; a ticket cache elsewhere): no password
            integrated, username, password = True, creds.username or None, None
        else:
            user, domain = split_account(creds.username, creds.domain)
            # A DNS domain makes a UPN (the principal Kerberos needs; NTLM takes it too).
            account = f"{user}@{domain.upper()}" if "." in domain else (f"{domain}\\{user}" if domain else user)
            username, password = account, creds.password
    host = ctx.host.strip("[]")
    bindings = GssChannelBindings(application_data=channel_binding) if channel_binding else None
    # Unsigned binds ask for no integrity at all (SSPI would add it otherwise).
    flags = spnego.ContextReq.default if sign else spnego.ContextReq.no_integrity
    if protocol == "negotiate" and kerberos_possible(host, username or "", integrated=integrated):
        options = spnego.NegotiateOptions.none  # Kerberos where this host can, NTLM otherwise
    else:
        options = spnego.NegotiateOptions.use_ntlm  # NTLMSSP, which GSS-SPNEGO also carries bare
    client = spnego.client(
        username, password, hostname=host, service="ldap",
        protocol="negotiate", channel_bindings=bindings, context_req=flags, options=options,
    )  # fmt: skip
    if not sign:
        _without_key_exchange(client)
    return client


def _without_key_exchange(client: Any) -> None:
    """An unsigned NTLM bind asks for no session key exchange.

    pyspnego keeps NTLMSSP_NEGOTIATE_KEY_EXCH without signing or sealing and then sends a
    1-byte EncryptedRandomSessionKey, which Samba refuses (invalidCredentials, data 57) even
    for a correct password. Without signing there is no key to exchange.
    """
    try:
        from spnego._ntlm_raw.messages import NegotiateFlags
    except ImportError:  # another pyspnego layout: leave it as it is
        return
    if type(client).__name__ == "NTLMProxy" and isinstance(getattr(client, "_context_req", None), int):
        client._context_req &= ~NegotiateFlags.key_exch


async def _off_loop(ctx: ProbeContext, work: Callable[[], T]) -> T:
    """Run a pyspnego call in a thread: Kerberos asks the KDC (AS-REQ, TGS-REQ) synchronously,
    which must never stall the event loop; the wait ends at the check's deadline."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(work), max(0.05, ctx.remaining()))
    except asyncio.TimeoutError:
        raise ProbeError(
            inconclusive(
                Reason.AUTH,
                f"no answer from the Kerberos KDC for ldap/{ctx.host} in time — check that this host "
                "reaches a domain controller on TCP/UDP 88, or bind with NTLM (bind: ntlm)",
            )
        ) from None


async def sasl_bind(
    ctx: ProbeContext,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    ids: MessageIds,
    *,
    protocol: str,
    sign: bool,
    seal_check: bool,
    channel_binding: bytes | None = None,
    username: str | None = None,
    password: str | None = None,
) -> tuple[wire.LdapResult, dict[str, Any]]:
    """SASL GSS-SPNEGO bind through pyspnego (`protocol` 'ntlm', or 'negotiate': Kerberos
    by host name where the platform has it, NTLM otherwise); our own I/O."""
    try:
        client = await _off_loop(
            ctx,
            lambda: _spnego_client(
                ctx, protocol=protocol, sign=sign, channel_binding=channel_binding, username=username, password=password
            ),
        )
        token = await _off_loop(ctx, client.step)
    except ProbeError:
        raise
    except Exception as exc:  # noqa: BLE001 - no usable mechanism / credentials here
        raise ProbeError(
            inconclusive(
                Reason.AUTH,
                f"cannot start a {protocol} bind to {ctx.where()} from this host ({type(exc).__name__}) — "
                "check the account name and domain in the inventory",
            )
        ) from None
    result = wire.LdapResult(14, "", "")
    for _round in range(4):  # NTLM needs 2, Kerberos 1-2
        mid = ids.next()
        result = await _bind_exchange(ctx, reader, writer, wire.sasl_bind_request(mid, "GSS-SPNEGO", token or b""), mid)
        if result.code != 14:
            break
        try:
            challenge = result.sasl_credentials or b""
            token = await _off_loop(ctx, functools.partial(client.step, challenge))
        except ProbeError:
            raise
        except Exception as exc:  # noqa: BLE001 - a malformed challenge from the peer
            raise ProbeError(
                failed(
                    Reason.PROTOCOL,
                    f"{ctx.host} sent a bind challenge on {ctx.where()} that cannot be used ({type(exc).__name__})",
                )
            ) from None
    if result.code == 0 and not client.complete and result.sasl_credentials:
        try:  # Kerberos' mutual authentication: the server's AP-REP rides on the success
            await _off_loop(ctx, functools.partial(client.step, result.sasl_credentials))
        except Exception:  # noqa: BLE001 - a bad final token: the session cannot be proven
            pass
    extra: dict[str, Any] = {"bind_mechanism": client.negotiated_protocol or protocol, "ntlm_signing": sign}
    if result.code == 0 and sign and seal_check:
        extra["sealed_search"] = await _sealed_search(ctx, reader, writer, ids, client)
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
    ctx: ProbeContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ids: MessageIds, client: Any
) -> bool:
    """A RootDSE search sealed with the session keys: proves the signed session really works.

    (WhoAmI would name the account, but Samba does not implement that extended operation.)
    """
    mid = ids.next()
    request = wire.search_request(mid, "", ["dnsHostName"], wire.present("objectClass"), 10)
    try:
        frame = client.wrap(request, encrypt=True).data
    except Exception:  # noqa: BLE001 - no usable session keys: the signed session is not proven
        return False
    writer.write(len(frame).to_bytes(4, "big") + frame)
    await drain_within(writer, ctx.step_timeout())
    for _frame in range(8):
        size = int.from_bytes(await read_exactly(ctx, reader, 4, "sealed LDAP answer"), "big")
        if size < 16 or size > wire.MAX_LDAP_MESSAGE:
            raise ProbeError(
                failed(Reason.PROTOCOL, f"{ctx.host} sent a sealed LDAP frame of {size} bytes on {ctx.where()}")
            )
        payload = await read_exactly(ctx, reader, size, "sealed LDAP answer", started=True)
        try:
            _expect_sequence(client, payload)
            plain = client.unwrap(payload).data
            for msg in wire.split_messages(plain):
                if msg.message_id == mid and msg.op == wire.SEARCH_DONE:
                    return wire.parse_result(msg.body).code == 0
        except Exception:  # noqa: BLE001 - a frame that does not unseal: the session does not work
            return False
    return False


def _expect_sequence(client: Any, payload: bytes) -> None:
    """NTLM only: take the sequence number the server signed with.

    After SPNEGO's mechListMIC, Samba signs its first sealed answer with sequence number 1
    where pyspnego expects 0 (MS-SPNG resets the RC4 state, not the counters). The number
    is covered by the HMAC that unwrap still verifies, so taking it proves as much.
    """
    ntlm = getattr(client, "_context", None)
    if getattr(client, "negotiated_protocol", None) == "ntlm" and hasattr(ntlm, "_NTLMProxy__seq_num_in"):
        ntlm._NTLMProxy__seq_num_in = int.from_bytes(payload[12:16], "little")  # type: ignore[union-attr]


async def simple_bind(
    ctx: ProbeContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ids: MessageIds
) -> wire.LdapResult:
    creds = ctx.credentials
    assert creds is not None
    if creds.integrated:
        raise ProbeError(inconclusive(
            Reason.AUTH, f"LDAP on {ctx.where()}: a simple bind needs a password, and the credentials are "
            "`integrated` (the current Windows user); use bind: negotiate or ntlm for this role",
        ))  # fmt: skip
    user, domain = split_account(creds.username, creds.domain)
    name = f"{user}@{domain}" if "." in domain else (f"{domain}\\{user}" if domain else user)
    mid = ids.next()
    return await _bind_exchange(ctx, reader, writer, wire.simple_bind_request(mid, name, creds.password), mid)


# -- LDAP policy, read without valid credentials ---------------------------------------------
# A made-up account: its binds prove the DC's policy and never touch a real account (a DC
# that weighs the credentials logs one failed logon for it: event 4625/4776).
POLICY_ACCOUNT = "portready-policy-check"


def _made_up_password() -> str:
    return "pr-" + secrets.token_urlsafe(12)


def signing_reading(result: wire.LdapResult | None) -> str:
    """`ldap_signing` from a simple bind of a made-up account over plain LDAP.

    A DC that requires signing refuses any bind without integrity before it looks at the
    credentials (strongerAuthRequired / 00002028, Windows LDAPServerIntegrity=2, Samba
    'ldap server require strong auth = yes'); one that weighs the credentials
    (invalidCredentials) accepts binds without signing.
    """
    if result is None:
        return "unknown"
    codes = diagnostic_codes(result.diagnostic)
    if result.code == 8 or SIGNING_REQUIRED in codes:
        return "required"
    if result.code in (0, 49):
        return "not-required"
    return "unknown"


def channel_binding_reading(without: wire.LdapResult | None, wrong: wire.LdapResult | None) -> str:
    """`channel_binding` from two NTLM binds of a made-up account over TLS.

    Without a token, 80090346 means the DC demands one (Always). Otherwise a wrong token
    tells the rest: refused with 80090346 when the DC checks tokens clients send (When
    supported), weighed like any bind when it ignores them (Never). Anything else, e.g.
    a DC that refuses NTLM inside TLS outright, cannot decide: unknown.
    """

    def verdict(result: wire.LdapResult | None) -> str:
        if result is None:
            return "none"
        codes = diagnostic_codes(result.diagnostic)
        if CHANNEL_BINDING_REQUIRED in codes or "data 80090346" in codes:
            return "binding"
        return "weighed" if result.code in (0, 49) else "other"

    first = verdict(without)
    if first == "binding":
        return "always"
    if first != "weighed":
        return "unknown"
    second = verdict(wrong)
    if second == "binding":
        return "when-supported"
    return "never" if second == "weighed" else "unknown"


def _policy_domain(ctx: ProbeContext) -> str:
    if ctx.credentials is not None:
        return split_account(ctx.credentials.username, ctx.credentials.domain)[1]
    return str(ctx.settings.values.get("domain", "") or "")


async def read_ldap_signing(
    ctx: ProbeContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ids: MessageIds
) -> dict[str, Any]:
    """Evidence `ldap_signing` (+ `ldap_signing_result`) on this plain LDAP connection."""
    domain = _policy_domain(ctx)
    name = f"{POLICY_ACCOUNT}@{domain}" if domain else POLICY_ACCOUNT
    mid = ids.next()
    result = await _bind_exchange(ctx, reader, writer, wire.simple_bind_request(mid, name, _made_up_password()), mid)
    return {"ldap_signing": signing_reading(result), "ldap_signing_result": result.name}


async def read_channel_binding(
    ctx: ProbeContext,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    ids: MessageIds,
    token: bytes | None,
) -> dict[str, Any]:
    """Evidence `channel_binding` on this (still anonymous) TLS connection.

    `token` is the session's tls-server-end-point data; None (no certificate) reads unknown.
    Failed binds leave an LDAP connection anonymous, so the credentialed bind may follow.
    """
    if token is None:
        return {"channel_binding": "unknown"}
    domain = _policy_domain(ctx)

    async def bind(binding: bytes | None) -> wire.LdapResult:
        result, _ = await sasl_bind(
            ctx, reader, writer, ids, protocol="ntlm", sign=False, seal_check=False,
            channel_binding=binding, username=f"{domain}\\{POLICY_ACCOUNT}" if domain else POLICY_ACCOUNT,
            password=_made_up_password(),
        )  # fmt: skip
        return result

    without = await bind(None)
    wrong: wire.LdapResult | None = None
    if channel_binding_reading(without, None) == "unknown" and without.code in (0, 49):
        wrong = await bind(b"tls-server-end-point:" + bytes(len(token) - len(b"tls-server-end-point:")))
    return {
        "channel_binding": channel_binding_reading(without, wrong),
        "channel_binding_results": [r.name for r in (without, wrong) if r is not None],
    }


async def directory_check(
    ctx: ProbeContext,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    label: str,
    default_bind: str,
    tls: bool,
    channel_binding: bytes | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Outcome:
    """RootDSE, GC readiness, the signing policy (plain LDAP) and the optional bind."""
    ids = MessageIds()
    result, entry = await read_rootdse(ctx, reader, writer, ids)
    evidence: dict[str, Any] = dict(extra or {})
    evidence["rootdse_result"] = result.name
    if entry is None or result.code != 0:
        return warned(
            Reason.POLICY,
            f"{label} answers on {ctx.where()}, but refused the anonymous RootDSE read "
            f"({result.name}{_code_words(result.diagnostic)}) — "
            "the service is there; the Auditor's bind was not tested",
            **evidence,
        )
    evidence.update(rootdse_evidence(entry))
    if options_of(ctx, DirectoryOptions).gc:
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
    # The DC's policy, read with a made-up account before any real bind on this connection,
    # once per DC and scan: every address and LDAP port of one DC has the same policy.
    key = "channel_binding" if tls else "ldap_signing"

    async def read_policy() -> tuple[dict[str, Any], str]:
        try:
            if tls:
                found = await read_channel_binding(ctx, reader, writer, ids, channel_binding)
            else:
                found = await read_ldap_signing(ctx, reader, writer, ids)
        except ProbeError:  # the peer spoke no LDAP to the policy bind: it cannot tell
            found = {key: "unknown"}
        return found, f"{ctx.address} TCP {ctx.port}"

    identity = dc_identity(entry)
    if identity is None:
        (policy, source), reused = await read_policy(), False
    else:
        (policy, source), reused = await ctx.memo.once(
            ("ldap-policy", key, identity), read_policy,
            keep=lambda value: value[0].get(key) != "unknown", wait=ctx.step_timeout(),
        )  # fmt: skip
    evidence.update(policy)
    if reused:  # read on another address or port of this DC in this scan
        evidence[f"{key}_read_on"] = source
    what += f", {'channel binding' if tls else 'LDAP signing'} {evidence[key]}"
    creds = ctx.credentials
    if creds is None:
        return passed(what + "; no credentials for this role, so no bind was tried", **evidence)
    method = options_of(ctx, DirectoryOptions).bind or default_bind
    if method == "simple":
        bind = await simple_bind(ctx, reader, writer, ids)
        bind_extra: dict[str, Any] = {}
    else:
        # Signing is negotiated on plain LDAP (the Auditor's bind); inside TLS the session
        # is not wrapped (DCs refuse sign/seal over TLS), the channel binding token counts.
        bind, bind_extra = await sasl_bind(
            ctx, reader, writer, ids, protocol=method, sign=not tls, seal_check=not tls,
            channel_binding=channel_binding if tls else None,
        )  # fmt: skip
        bind_extra["bind_requested"] = method
    used = str(bind_extra.get("bind_mechanism", method))
    refused = bind_outcome(ctx, used, bind)
    if refused is not None:
        return with_evidence(refused, {**evidence, **bind_extra})
    evidence.update(bind_extra)
    evidence["bind_method"] = used
    evidence["bind_result"] = bind.name
    return passed(f"{what}; {used} bind as {creds} succeeded", **evidence)


def with_evidence(outcome: Outcome, evidence: Mapping[str, Any]) -> Outcome:
    """`outcome` with the RootDSE evidence gathered before it."""
    merged = dict(evidence)
    merged.update(outcome.evidence)
    return Outcome(outcome.status, outcome.reason, outcome.detail, merged)


async def within_deadline(ctx: ProbeContext, work: Any, label: str) -> Outcome:
    """Run the exchange; a peer that dribbles or stalls ends at the deadline, with words."""
    try:
        result: Outcome = await within(work, max(0.05, ctx.remaining()))
        return result
    except asyncio.TimeoutError:
        return stalled(ctx, what=f"its {label}")


@register
class LdapProbe(Probe):
    name = "ldap"
    transports = (Transport.TCP,)
    summary = "LDAP/GC: anonymous RootDSE read (naming contexts, GC ready), signing policy, optional bind"
    exchanges = 5  # connect, RootDSE, the signing policy bind, the optional bind (2 rounds)
    clock_evidence = "current_time"  # the RootDSE currentTime
    footprint = (
        "one failed simple bind of the made-up account portready-policy-check (event 4625) per DC "
        "and scan, on the first of its addresses and LDAP ports to answer, where LDAP signing is "
        "not required; with credentials, one logon of that account per check"
    )

    def summarize(self, evidence: Mapping[str, Any]) -> str:
        parts = []
        if evidence.get("default_naming_context"):
            parts.append(str(evidence["default_naming_context"]))
        if evidence.get("ldap_signing"):
            parts.append(f"LDAP signing {evidence['ldap_signing']}")
        if evidence.get("bind_method") and evidence.get("bind_result") == "success":
            parts.append(f"{evidence['bind_method']} bind")
        return ", ".join(parts)

    Options = DirectoryOptions

    async def run(self, ctx: ProbeContext) -> Outcome:
        reader, writer = await connect_tcp(ctx)
        label = "Global Catalog LDAP" if options_of(ctx, DirectoryOptions).gc else "LDAP"
        try:
            return await within_deadline(
                ctx, directory_check(ctx, reader, writer, label=label, default_bind="negotiate", tls=False), label
            )
        finally:
            close_quietly(writer)
