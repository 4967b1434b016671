"""SMB (TCP 445 direct, TCP 139 over a NetBIOS session): SMB2 NEGOTIATE.

Proves that an SMB 2/3 server answers: the NEGOTIATE response names the dialect
(2.0.2 .. 3.1.1), whether signing is required, the server GUID and its clock
(`server_time`, ISO 8601 UTC, for clock-skew checks). A server that only speaks
SMB1 fails with reason `protocol`: the rows ask for SMB 2.0/3.0. On 139 the probe
first sends a NetBIOS SESSION REQUEST (called name *SMBSERVER, then the target's
NetBIOS name); a negative answer fails with the NetBIOS error in words.

With credentials for the target's role, a session setup and an IPC$ tree connect
follow on the same connection: our own SMB2 wire code (`_smb2`), the SPNEGO
tokens from pyspnego (`_auth.client_context`: NTLM, or Kerberos/SSPI where the
platform has it; integrated logon on Windows), the tree connect signed with the
key MS-SMB2 3.2.5.3.1 derives (HMAC-SHA256 for 2.x, AES-CMAC for 3.x, 3.1.1's
preauth hash) and the server's own signatures checked. A rejected account fails
with reason `auth`. The secret never reaches a result.

Signing evidence (`signing_required`, `signing_enabled`) is the server's own
NEGOTIATE SecurityMode, never a client library's default.

Options: ``netbios`` (bool; default: true on port 139) forces the session request,
``called_name`` sets the NetBIOS name to call.
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scanner.models import Reason, Status, Transport
from scanner.probes._options import option
from scanner.probes.base import (
    Credentials,
    Outcome,
    Probe,
    ProbeContext,
    ProbeError,
    evidence_text,
    failed,
    inconclusive,
    options_of,
    passed,
    register,
    stalled,
)
from scanner.probes.netio import close_quietly, closed, connect_tcp, drain_within, read_exactly, wire_errors, within
from scanner.wire.smb2 import (
    ACCOUNT_REJECTED,
    FLAG_ASYNC,
    FLAG_SIGNED,
    NBSS_ERRORS,
    PREAUTH_START,
    SESSION_ENCRYPT_DATA,
    SESSION_IS_GUEST,
    SESSION_IS_NULL,
    SMB1_MAGIC,
    SMB2_MAGIC,
    STATUS_MORE_PROCESSING,
    STATUS_PENDING,
    TREE_CONNECT,
    NegotiateInfo,
    nbss_frame,
    negotiate_request,
    parse_header,
    parse_negotiate_response,
    parse_session_setup_response,
    preauth_hash,
    session_request,
    session_setup_request,
    sign,
    signature_valid,
    signing_key,
    smb1_dialect_index,
    smb1_negotiate_request,
    status_name,
    tree_connect_request,
)

MAX_SMB_MESSAGE = 64 * 1024  # a NEGOTIATE response with its SPNEGO token is ~300 bytes
SMB1_ONLY = "speaks only SMB1; the rows need SMB 2.0/3.0"


class _Closed(Exception):
    """The peer closed (or reset) the connection before sending a byte."""


def netbios_name(host: str) -> str | None:
    """The NetBIOS name a host name implies (first label, upper case, 15 chars), or None for IPs."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return None
    except ValueError:
        pass
    label = host.split(".", 1)[0].upper()
    return label[:15] or None


async def _send(ctx: ProbeContext, writer: asyncio.StreamWriter, data: bytes) -> None:
    with wire_errors(ctx, "SMB request"):
        writer.write(data)
        try:
            await drain_within(writer, ctx.step_timeout())
        except asyncio.TimeoutError as exc:
            raise ProbeError(stalled(ctx, what="reading our request and")) from exc


async def _frame_header(ctx: ProbeContext, reader: asyncio.StreamReader, what: str) -> bytes:
    """The 4-byte session header; _Closed when the peer hangs up without a word."""
    with wire_errors(ctx, what):  # timeouts, truncation and OS errors; a clean hang-up is _Closed
        try:
            return await within(reader.readexactly(4), ctx.step_timeout())
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _Closed() from exc
            raise
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise _Closed() from exc


async def _read_message(ctx: ProbeContext, reader: asyncio.StreamReader, what: str) -> bytes:
    head = await _frame_header(ctx, reader, what)
    if head[0] != 0x00:
        raise ProbeError(
            failed(
                Reason.PROTOCOL,
                f"{ctx.where()} answered bytes {head.hex()} where an SMB message belongs: not an SMB server",
            )
        )
    length = int.from_bytes(head[1:], "big")
    if length < 4 or length > MAX_SMB_MESSAGE:
        raise ProbeError(
            failed(Reason.PROTOCOL, f"{ctx.where()} announced an SMB message of {length} bytes, which is not plausible")
        )
    return await read_exactly(ctx, reader, length, what, started=True)


async def _netbios_session(
    ctx: ProbeContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, called: str
) -> int | None:
    """Send a SESSION REQUEST; None when accepted, else the RFC 1002 error code."""
    await _send(ctx, writer, session_request(called))
    try:
        head = await _frame_header(ctx, reader, "NetBIOS session response")
    except _Closed as exc:
        raise ProbeError(closed(ctx, "NetBIOS session response")) from exc
    kind, length = head[0], int.from_bytes(head[1:], "big")
    if kind == 0x82:
        return None
    if kind == 0x83 and length == 1:
        code = (await read_exactly(ctx, reader, 1, "NetBIOS error code", started=True))[0]
        return code
    if kind == 0x84:
        return 0x84
    raise ProbeError(
        failed(
            Reason.PROTOCOL,
            f"{ctx.where()} answered bytes {head.hex()} to a NetBIOS session request: not a NetBIOS session service",
        )
    )


@dataclass(frozen=True)
class SmbOptions:
    netbios: bool | None = option(None, "over the NetBIOS session service; unset: on port 139")
    called_name: str | None = option(None, "the NetBIOS name to call; unset: *SMBSERVER, then the host's name")


@register
class SmbNegotiateProbe(Probe):
    name = "smb"
    transports = (Transport.TCP,)
    summary = "SMB: SMB2 NEGOTIATE (dialect, signing, server time); 139 via NetBIOS session; optional login"
    exchanges = 4
    clock_evidence = "server_time"  # the NEGOTIATE response's SystemTime
    # NEGOTIATE alone authenticates nobody, so Windows logs nothing for it; a login is a
    # network logon (MS docs: events 4624/4634 logon type 3, 4625 on failure; the DC that
    # validates NTLM logs 4776).
    footprint = (
        "none without credentials; with credentials: 4624 + 4634 (logon type 3) on the target, "
        "4776 (NTLM) or 4768 + 4769 (Kerberos, Windows) on the DC, 4625 when the account is rejected"
    )

    Options = SmbOptions

    async def run(self, ctx: ProbeContext) -> Outcome:
        netbios = options_of(ctx, SmbOptions).netbios
        use_netbios = ctx.port == 139 if netbios is None else netbios
        evidence: dict[str, Any] = {"transport": "netbios-session" if use_netbios else "direct-tcp"}
        creds = ctx.credentials
        conn: list[Any] | None = [] if creds is not None else None
        try:
            info = await self._negotiate(ctx, use_netbios, evidence, conn)
        except _Closed:
            # Silence-then-hangup on an SMB2 NEGOTIATE: an SMB1-only server does exactly that.
            if await self._speaks_smb1(ctx, use_netbios, evidence):
                raise ProbeError(
                    failed(Reason.PROTOCOL, f"{ctx.host} on TCP {ctx.port} {SMB1_ONLY}", smb1=True, **evidence)
                ) from None
            raise ProbeError(closed(ctx, "SMB2 NEGOTIATE response", **evidence)) from None
        evidence = {**info.evidence(), **evidence}  # dialect and signing first: reports show the first keys
        detail = (
            f"SMB {info.dialect_name} negotiated with {ctx.host} on TCP {ctx.port} "
            f"(signing {'required' if info.signing_required else 'enabled' if info.signing_enabled else 'off'})"
        )
        if creds is not None and conn:
            reader, writer, request, response = conn
            try:
                return await self._login(ctx, creds, detail, evidence, info, reader, writer, request, response)
            finally:
                close_quietly(writer)
        return passed(detail, **evidence)

    async def _open(
        self, ctx: ProbeContext, use_netbios: bool, evidence: dict[str, Any]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await connect_tcp(ctx)
        if not use_netbios:
            return reader, writer
        called_name = options_of(ctx, SmbOptions).called_name
        names = [called_name] if called_name else ["*SMBSERVER"]
        alt = netbios_name(ctx.host)
        if alt and alt not in names and not called_name:
            names.append(alt)
        code: int | None = None
        for i, called in enumerate(names):
            if i:
                reader, writer = await connect_tcp(ctx)
            try:
                code = await _netbios_session(ctx, reader, writer, called)
            except BaseException:
                close_quietly(writer)
                raise
            if code is None:
                evidence["called_name"] = called
                return reader, writer
            close_quietly(writer)
            if code != 0x82:  # only "called name not present" is worth another name
                break
        words = NBSS_ERRORS.get(code or 0, f"error 0x{code or 0:02x}")
        if code == 0x84:
            words = "the server asks to be called elsewhere (retarget), which SMB clients do not follow"
        raise ProbeError(
            failed(
                Reason.PROTOCOL,
                f"the NetBIOS session service on {ctx.where()} refused our session request "
                f"(called {', '.join(names)}): {words}",
                netbios_error=f"0x{code or 0:02x}",
                **evidence,
            )
        )

    async def _negotiate(
        self, ctx: ProbeContext, use_netbios: bool, evidence: dict[str, Any], keep: list[Any] | None = None
    ) -> NegotiateInfo:
        """NEGOTIATE on a fresh connection; with `keep`, the open connection and both
        messages are appended to it (reader, writer, request, response) for a login."""
        reader, writer = await self._open(ctx, use_netbios, evidence)
        request = negotiate_request()
        try:
            await _send(ctx, writer, nbss_frame(request))
            msg = await _read_message(ctx, reader, "SMB2 NEGOTIATE response")
        except BaseException:
            close_quietly(writer)
            raise
        if keep is None:
            close_quietly(writer)
        else:
            keep.extend((reader, writer, request, msg))
        try:
            return await self._checked(ctx, use_netbios, evidence, msg)
        except BaseException:
            close_quietly(writer)
            raise

    async def _checked(
        self, ctx: ProbeContext, use_netbios: bool, evidence: dict[str, Any], msg: bytes
    ) -> NegotiateInfo:
        if msg[:4] == SMB1_MAGIC:
            raise ProbeError(
                failed(Reason.PROTOCOL, f"{ctx.host} on TCP {ctx.port} {SMB1_ONLY}", smb1=True, **evidence)
            )
        if msg[:4] != SMB2_MAGIC:
            raise ProbeError(failed(Reason.PROTOCOL, f"{ctx.where()} answered {msg[:8].hex()}…, not SMB", **evidence))
        try:
            info = parse_negotiate_response(msg)
        except (ValueError, struct.error) as exc:
            raise ProbeError(
                failed(Reason.PROTOCOL, f"{ctx.where()} sent a malformed SMB2 NEGOTIATE response ({exc})", **evidence)
            ) from None
        if info.status != 0:
            if await self._speaks_smb1(ctx, use_netbios, evidence):
                raise ProbeError(
                    failed(Reason.PROTOCOL, f"{ctx.host} on TCP {ctx.port} {SMB1_ONLY}", smb1=True, **evidence)
                )
            raise ProbeError(
                failed(
                    Reason.PROTOCOL,
                    f"{ctx.where()} rejected the SMB2 NEGOTIATE with {status_name(info.status)}",
                    status=status_name(info.status),
                    **evidence,
                )
            )
        return info

    async def _speaks_smb1(self, ctx: ProbeContext, use_netbios: bool, evidence: dict[str, Any]) -> bool:
        """Whether the server answers an SMB1 NEGOTIATE (asked only after SMB2 failed)."""
        if ctx.remaining() < 0.1:
            return False
        try:
            reader, writer = await self._open(ctx, use_netbios, dict(evidence))
        except ProbeError:
            return False
        try:
            await _send(ctx, writer, nbss_frame(smb1_negotiate_request()))
            msg = await _read_message(ctx, reader, "SMB1 NEGOTIATE response")
        except (ProbeError, _Closed):
            return False
        finally:
            close_quietly(writer)
        return smb1_dialect_index(msg) is not None

    async def _login(
        self,
        ctx: ProbeContext,
        creds: Credentials,
        detail: str,
        evidence: dict[str, Any],
        info: NegotiateInfo,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: bytes,
        response: bytes,
    ) -> Outcome:
        """SESSION_SETUP (SPNEGO through pyspnego) + a signed TREE_CONNECT to IPC$, on the
        negotiated connection; the signing key is derived and the server's signature checked."""
        try:
            session = await _session_setup(ctx, creds, info, reader, writer, request, response)
        except ProbeError as exc:
            out = exc.outcome
            evidence.update(out.evidence)
            evidence.setdefault("login", "error")
            if out.status is Status.INCONCLUSIVE:
                return inconclusive(out.reason, f"{detail}; the login as {creds} was not tried: {out.detail}", **evidence)
            if out.reason is Reason.AUTH:
                return failed(Reason.AUTH, f"{detail}, but the login as {creds} failed: {out.detail}", **evidence)
            return failed(out.reason, f"{detail}, but the login did not finish: {out.detail}", **evidence)
        evidence.update(session.evidence)
        if session.encrypt:
            evidence["login"] = "ok"
            return passed(
                f"{detail}; {creds} logged on ({session.protocol}); IPC$ not tried: the server encrypts "
                "every message of this session, which portready does not implement",
                **evidence,
            )
        try:
            await _tree_connect(ctx, session, reader, writer)
        except ProbeError as exc:
            out = exc.outcome
            evidence.update(out.evidence)
            evidence["login"] = "rejected" if out.reason is Reason.AUTH else "error"
            return failed(out.reason, f"{detail}; {creds} logged on ({session.protocol}), but {out.detail}", **evidence)
        evidence.update(session.evidence)
        evidence["login"] = "ok"
        return passed(f"{detail}; {creds} logged on ({session.protocol}) and connected to IPC$", **evidence)

    def summarize(self, evidence: Mapping[str, Any]) -> str:
        dialect = evidence_text(evidence, "dialect", 20)
        if not dialect:
            return ""
        if evidence.get("signing_required") is True:
            return f"SMB {dialect} signing required"
        return f"SMB {dialect}" + (" signing enabled" if evidence.get("signing_enabled") is True else "")


@dataclass
class _Session:
    dialect: int
    session_id: int
    key: bytes  # signing key
    protocol: str  # "ntlm" / "kerberos"
    encrypt: bool
    next_id: int
    host: str
    evidence: dict[str, Any]


MAX_AUTH_ROUNDS = 4  # NTLM takes 2, Kerberos 1-2; a peer asking for more is not a real server


async def _exchange(ctx: ProbeContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, msg: bytes, what: str) -> bytes:
    """Send one request and return its final response (interim STATUS_PENDING skipped)."""
    await _send(ctx, writer, nbss_frame(msg))
    for _ in range(4):
        try:
            answer = await _read_message(ctx, reader, what)
        except _Closed:
            raise ProbeError(failed(Reason.PROTOCOL, f"the server closed the connection on our {what.split(' response')[0]}")) from None
        try:
            head = parse_header(answer)
        except ValueError as exc:
            raise ProbeError(failed(Reason.PROTOCOL, f"a malformed {what} ({exc})")) from None
        if not (head.status == STATUS_PENDING and head.flags & FLAG_ASYNC):
            return answer
    raise ProbeError(failed(Reason.PROTOCOL, f"the server kept answering STATUS_PENDING to our {what.split(' response')[0]}"))


async def _session_setup(
    ctx: ProbeContext,
    creds: Credentials,
    info: NegotiateInfo,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: bytes,
    response: bytes,
) -> _Session:
    from scanner.probes._auth import AuthSetupError, client_context, local_failure, note_rejected, rejected_before

    before = rejected_before(creds)
    if before is not None:  # one bad-password count per run, not one per target
        raise ProbeError(
            inconclusive(
                Reason.AUTH,
                f"{before} already rejected this account in this run, and every further attempt "
                "counts toward the domain's lockout threshold",
                login="not-tried",
            )
        )
    try:
        auth = client_context(creds, hostname=ctx.host, service="cifs")
    except AuthSetupError as exc:  # no means to authenticate here: the login cannot be judged
        raise ProbeError(inconclusive(Reason.PERMISSION, str(exc), login="not-tried")) from None
    import spnego.exceptions

    dialect = info.dialect
    charge = 0 if dialect == 0x0202 else 1
    preauth = preauth_hash(preauth_hash(PREAUTH_START, request), response) if dialect == 0x0311 else None
    session_id, mid, server_token = 0, 1, None
    for _round in range(MAX_AUTH_ROUNDS):
        try:
            # SSPI may talk to a KDC (Kerberos): off the event loop.
            token = await ctx.in_thread(auth.step, server_token)
        except spnego.exceptions.SpnegoError as exc:
            if server_token is None:  # nothing sent yet: no credential here, not a verdict on the account
                raise ProbeError(inconclusive(Reason.PERMISSION, local_failure(creds, exc), login="not-tried")) from None
            raise ProbeError(
                failed(Reason.AUTH, f"the authentication exchange failed ({type(exc).__name__})", login="rejected")
            ) from None
        if token is None:
            break
        msg = session_setup_request(token, mid, session_id, charge)
        mid += 1
        if preauth is not None:
            preauth = preauth_hash(preauth, msg)
        answer = await _exchange(ctx, reader, writer, msg, "SESSION_SETUP response")
        try:
            head, flags, server_token = parse_session_setup_response(answer)
        except ValueError as exc:
            raise ProbeError(failed(Reason.PROTOCOL, f"the server sent a malformed SESSION_SETUP response ({exc})")) from None
        session_id = head.session_id
        if head.status == STATUS_MORE_PROCESSING:
            if preauth is not None:
                preauth = preauth_hash(preauth, answer)
            continue
        if head.status != 0:
            status = status_name(head.status)
            if head.status in ACCOUNT_REJECTED:
                if head.status != 0xC0000022:
                    note_rejected(creds, f"{ctx.host} (SMB, {status})")
                raise ProbeError(failed(Reason.AUTH, f"the server rejected the account ({status})", login="rejected", status=status))
            raise ProbeError(failed(Reason.PROTOCOL, f"the server answered {status} to the session setup", status=status))
        if flags & (SESSION_IS_GUEST | SESSION_IS_NULL):
            raise ProbeError(
                failed(
                    Reason.AUTH,
                    "the server logged the session on as guest/anonymous: it did not accept the account",
                    login="rejected",
                    session_flags=f"0x{flags:04x}",
                )
            )
        if server_token and not auth.complete:
            try:  # the last SPNEGO leg (mechListMIC): proves the server holds the same key
                await ctx.in_thread(auth.step, server_token)
            except spnego.exceptions.SpnegoError as exc:
                raise ProbeError(
                    failed(Reason.PROTOCOL, f"the server's final authentication token did not verify ({type(exc).__name__})")
                ) from None
        if not auth.complete:
            raise ProbeError(
                failed(
                    Reason.PROTOCOL,
                    "the server declared the session set up before the authentication exchange finished: "
                    "not a Windows/Samba server, or a middlebox answering for it",
                )
            )
        key = signing_key(auth.session_key, dialect, preauth)
        verified: bool | None = None
        if head.flags & FLAG_SIGNED:
            verified = signature_valid(answer, key, dialect)
            if not verified:
                raise ProbeError(
                    failed(
                        Reason.PROTOCOL,
                        "the server's signature on the session setup does not verify: something between "
                        "this host and the server alters SMB traffic",
                        login_signed=False,
                    )
                )
        protocol = str(getattr(auth, "negotiated_protocol", "") or "negotiate")
        evidence: dict[str, Any] = {"auth_protocol": protocol}
        if verified is not None:
            evidence["login_signed"] = verified
        return _Session(dialect, session_id, key, protocol, bool(flags & SESSION_ENCRYPT_DATA), mid, ctx.host, evidence)
    raise ProbeError(failed(Reason.PROTOCOL, f"the session setup did not finish in {MAX_AUTH_ROUNDS} rounds"))


async def _tree_connect(
    ctx: ProbeContext, session: _Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """A signed TREE_CONNECT to \\host\\IPC$ (what RPC over named pipes needs); the
    response's signature must verify (signing really works end to end)."""
    charge = 0 if session.dialect == 0x0202 else 1
    msg = tree_connect_request(f"\\\\{session.host}\\IPC$", session.next_id, session.session_id, charge)
    answer = await _exchange(ctx, reader, writer, sign(msg, session.key, session.dialect), "TREE_CONNECT response")
    head = parse_header(answer)
    if head.status != 0:
        status = status_name(head.status)
        if head.status in ACCOUNT_REJECTED:
            raise ProbeError(failed(Reason.AUTH, f"the account may not use IPC$ ({status})", status=status))
        raise ProbeError(failed(Reason.PROTOCOL, f"the server answered {status} to a tree connect to IPC$", status=status))
    if head.command != TREE_CONNECT:
        raise ProbeError(failed(Reason.PROTOCOL, f"SMB2 command {head.command} where TREE_CONNECT belongs"))
    if head.flags & FLAG_SIGNED:
        if not signature_valid(answer, session.key, session.dialect):
            raise ProbeError(
                failed(
                    Reason.PROTOCOL,
                    "the server's signature on the tree connect does not verify: something between this "
                    "host and the server alters SMB traffic",
                    signed_reply=False,
                )
            )
        session.evidence["signed_reply"] = True
