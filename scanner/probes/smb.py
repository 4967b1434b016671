"""SMB (TCP 445 direct, TCP 139 over a NetBIOS session): SMB2 NEGOTIATE.

Proves that an SMB 2/3 server answers: the NEGOTIATE response names the dialect
(2.0.2 .. 3.1.1), whether signing is required, the server GUID and its clock
(`server_time`, ISO 8601 UTC, for clock-skew checks). A server that only speaks
SMB1 fails with reason `protocol`: the rows ask for SMB 2.0/3.0. On 139 the probe
first sends a NetBIOS SESSION REQUEST (called name *SMBSERVER, then the target's
NetBIOS name); a negative answer fails with the NetBIOS error in words.

With credentials for the target's role, a session setup and an IPC$ tree connect
follow (impacket's SMBConnection in a worker thread with its own socket timeout);
a rejected account fails with reason `auth`. The secret never reaches a result.

Options: ``netbios`` (bool; default: true on port 139) forces the session request,
``called_name`` sets the NetBIOS name to call.
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from collections.abc import Mapping
from typing import Any

from scanner.models import Reason, Transport
from scanner.probes._smb2 import (
    NBSS_ERRORS,
    SMB1_MAGIC,
    SMB2_MAGIC,
    NegotiateInfo,
    nbss_frame,
    negotiate_request,
    parse_negotiate_response,
    session_request,
    smb1_dialect_index,
    smb1_negotiate_request,
    status_name,
)
from scanner.probes.base import (
    Credentials,
    Outcome,
    Probe,
    ProbeContext,
    ProbeError,
    failed,
    passed,
    register,
    stalled,
)
from scanner.probes.netio import close_quietly, connect_tcp, no_reply, outcome_for_oserror, read_exactly

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
    writer.write(data)
    try:
        await asyncio.wait_for(writer.drain(), ctx.step_timeout())
    except asyncio.TimeoutError:
        raise ProbeError(stalled(ctx, what="reading our request and")) from None
    except OSError as exc:
        raise ProbeError(outcome_for_oserror(ctx, exc)) from None


async def _frame_header(ctx: ProbeContext, reader: asyncio.StreamReader, what: str) -> bytes:
    """The 4-byte session header; _Closed when the peer hangs up without a word."""
    try:
        return await asyncio.wait_for(reader.readexactly(4), ctx.step_timeout())
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise _Closed() from None
        raise ProbeError(
            failed(Reason.PROTOCOL, f"the peer closed the connection in the middle of the {what} on {ctx.where()}")
        ) from None
    except (ConnectionResetError, BrokenPipeError):
        raise _Closed() from None
    except asyncio.TimeoutError:
        # Connected, then silent: a busy or hung server, not proof that it does not speak SMB.
        raise ProbeError(no_reply(ctx, what)) from None
    except OSError as exc:
        raise ProbeError(outcome_for_oserror(ctx, exc)) from None


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
    return await read_exactly(ctx, reader, length, what)


async def _netbios_session(
    ctx: ProbeContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, called: str
) -> int | None:
    """Send a SESSION REQUEST; None when accepted, else the RFC 1002 error code."""
    await _send(ctx, writer, session_request(called))
    try:
        head = await _frame_header(ctx, reader, "NetBIOS session response")
    except _Closed:
        raise ProbeError(
            failed(Reason.PROTOCOL, f"{ctx.where()} closed the connection on a NetBIOS session request")
        ) from None
    kind, length = head[0], int.from_bytes(head[1:], "big")
    if kind == 0x82:
        return None
    if kind == 0x83 and length == 1:
        code = (await read_exactly(ctx, reader, 1, "NetBIOS error code"))[0]
        return code
    if kind == 0x84:
        return 0x84
    raise ProbeError(
        failed(
            Reason.PROTOCOL,
            f"{ctx.where()} answered bytes {head.hex()} to a NetBIOS session request: not a NetBIOS session service",
        )
    )


@register
class SmbNegotiateProbe(Probe):
    name = "smb"
    transports = (Transport.TCP,)
    summary = "SMB: SMB2 NEGOTIATE (dialect, signing, server time); 139 via NetBIOS session; optional login"
    exchanges = 4

    @classmethod
    def validate(cls, options: Mapping[str, Any]) -> None:
        extra = set(options) - {"netbios", "called_name"}
        if extra:
            raise ValueError(f"smb: unknown options {sorted(extra)}")
        if "netbios" in options and not isinstance(options["netbios"], bool):
            raise ValueError("smb: option 'netbios' must be true or false")

    async def run(self, ctx: ProbeContext) -> Outcome:
        use_netbios = bool(ctx.options.get("netbios", ctx.port == 139))
        evidence: dict[str, Any] = {"transport": "netbios-session" if use_netbios else "direct-tcp"}
        try:
            info = await self._negotiate(ctx, use_netbios, evidence)
        except _Closed:
            # Silence-then-hangup on an SMB2 NEGOTIATE: an SMB1-only server does exactly that.
            if await self._speaks_smb1(ctx, use_netbios, evidence):
                raise ProbeError(
                    failed(Reason.PROTOCOL, f"{ctx.host} on TCP {ctx.port} {SMB1_ONLY}", smb1=True, **evidence)
                ) from None
            raise ProbeError(
                failed(
                    Reason.PROTOCOL,
                    f"{ctx.where()} closed the connection on an SMB2 NEGOTIATE without answering: "
                    "not an SMB 2/3 server",
                    **evidence,
                )
            ) from None
        evidence = {**info.evidence(), **evidence}  # dialect and signing first: reports show the first keys
        detail = (
            f"SMB {info.dialect_name} negotiated with {ctx.host} on TCP {ctx.port} "
            f"(signing {'required' if info.signing_required else 'enabled' if info.signing_enabled else 'off'})"
        )
        creds = ctx.credentials
        if creds is not None:
            return await self._login(ctx, creds, detail, evidence)
        return passed(detail, **evidence)

    async def _open(
        self, ctx: ProbeContext, use_netbios: bool, evidence: dict[str, Any]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await connect_tcp(ctx)
        if not use_netbios:
            return reader, writer
        names = [str(ctx.options["called_name"])] if ctx.options.get("called_name") else ["*SMBSERVER"]
        alt = netbios_name(ctx.host)
        if alt and alt not in names and not ctx.options.get("called_name"):
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

    async def _negotiate(self, ctx: ProbeContext, use_netbios: bool, evidence: dict[str, Any]) -> NegotiateInfo:
        reader, writer = await self._open(ctx, use_netbios, evidence)
        try:
            await _send(ctx, writer, nbss_frame(negotiate_request()))
            msg = await _read_message(ctx, reader, "SMB2 NEGOTIATE response")
        finally:
            close_quietly(writer)
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

    async def _login(self, ctx: ProbeContext, creds: Credentials, detail: str, evidence: dict[str, Any]) -> Outcome:
        timeout = max(0.5, ctx.step_timeout())
        try:
            result = await ctx.in_thread(_session_setup, ctx.host, ctx.address, ctx.port or 445, creds, timeout)
        except ProbeError as exc:
            return failed(
                exc.outcome.reason, f"{detail}, but the login did not finish: {exc.outcome.detail}", **evidence
            )
        ok, kind, text = result
        evidence["login"] = kind
        if ok:
            return passed(f"{detail}; {creds} logged on and connected to IPC$", **evidence)
        reason = Reason.AUTH if kind == "rejected" else Reason.PROTOCOL
        return failed(reason, f"{detail}, but the login as {creds} failed: {text}", **evidence)


def _session_setup(host: str, address: str, port: int, creds: Credentials, timeout: float) -> tuple[bool, str, str]:
    """Blocking: NTLM session setup + IPC$ tree connect with impacket (runs in a thread).

    Returns (ok, kind, words); words never contain the password (impacket's errors
    name the NT status only, and we rebuild the text from the status code).
    """
    from impacket.smb import SessionError as Smb1SessionError
    from impacket.smbconnection import SessionError, SMBConnection

    name = netbios_name(host) or "*SMBSERVER"
    conn = None
    try:
        conn = SMBConnection(name if port == 139 else address, address, sess_port=port, timeout=timeout)
        conn.login(creds.username, creds.password, creds.domain)
        tid = conn.connectTree("IPC$")
        conn.disconnectTree(tid)
        return True, "ok", "session setup and IPC$ tree connect succeeded"
    except (SessionError, Smb1SessionError) as exc:
        code = int(exc.getErrorCode()) & 0xFFFFFFFF
        status = status_name(code)
        if code in (0xC000006D, 0xC000006A, 0xC0000064, 0xC0000072, 0xC0000234, 0xC000006E, 0xC0000071, 0xC0000193):
            return False, "rejected", f"the server rejected the account ({status})"
        if code == 0xC0000022:
            return False, "rejected", f"the account may not use IPC$ ({status})"
        return False, "error", f"the server answered {status}"
    except OSError as exc:
        return False, "error", f"the connection failed ({type(exc).__name__}: {exc.strerror or 'timed out'})"
    except Exception as exc:  # noqa: BLE001 - impacket raises many types; never leak arguments
        return False, "error", f"the login exchange failed ({type(exc).__name__})"
    finally:
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass
