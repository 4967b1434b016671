"""Authenticated DCE/RPC through impacket, with every failure mapped to a Reason in one place.

impacket is imported lazily (the optional extra ``portready[dcom]``): a simple command never
loads it, and a missing install reads as a skip that names the extra::

    if not load_impacket():
        return missing_extra("authenticated RPC to scm")
    sessions = Sessions()
    try:   # in a worker thread:
        dce = authenticated_dce(ctx, creds, r"ncacn_np:10.0.0.5[\\pipe\\svcctl]", 445, timeout, sessions)
        connect(dce)                   # NTLM at packet integrity; TCP answers capped at 4 MiB
    except Exception as exc:
        outcome = classify(ctx, exc, "scm")   # auth / policy / not-registered / network / protocol
    finally:
        sessions.cut()                 # from the event loop, at the deadline: the thread ends

impacket is blocking: callers run it in `ctx.in_thread`, and every socket gets the step
timeout so the worker thread ends soon after we stop waiting for it.
"""

from __future__ import annotations

import contextlib
import importlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

from scanner.models import Reason
from scanner.probes.base import Credentials, Outcome, ProbeContext, ProbeError, failed, inconclusive, skipped
from scanner.probes.netio import outcome_for_oserror

EXTRA_WORDS = "install portready[dcom] to add this check (it needs impacket)"

# NTSTATUS values an SMB session or pipe open ends with (MS-ERREF 2.3).
_AUTH_STATUS = {
    0xC000006D: "the logon failed: wrong user name or password",
    0xC000006E: "the account may not log on (account restriction)",
    0xC000006F: "the account may not log on at this time",
    0xC0000070: "the account may not log on from this workstation",
    0xC0000071: "the account's password has expired",
    0xC0000072: "the account is disabled",
    0xC0000193: "the account has expired",
    0xC0000224: "the account must change its password",
    0xC0000234: "the account is locked out",
    0xC000015B: "the account lacks the 'Access this computer from the network' right",
}
_POLICY_STATUS = {
    0xC0000022: "access denied: the account logged on but may not open this (rights or policy)",
}
# Win32 errors a call answers with in its out parameters (MS-ERREF 2.2).
_WIN32 = {
    5: (Reason.POLICY, "access denied: the account logged on but lacks the rights for this call"),
    15007: (Reason.NOT_REGISTERED, "no such event log (channel) there"),
    1722: (Reason.PROTOCOL, "the RPC server is unavailable"),
}
_MISSING_STATUS = {
    0xC0000034: "the named pipe does not exist: the service is not running or not installed",
    0xC00000AC: "the named pipe is not available: the service is not running",
    0xC00000BB: "the server does not offer this over SMB (not supported)",
    0xC0000039: "the object named does not exist there (e.g. no such event log)",
}


# Exceptions that mean a bug on our side, not a peer's answer.
BUGS = (RuntimeError, AssertionError, NameError, SyntaxError)


def load_impacket() -> bool:
    """Whether impacket can be imported (the `dcom` extra)."""
    try:
        importlib.import_module("impacket.dcerpc.v5.transport")
    except ImportError:
        return False
    return True


def missing_extra(what: str) -> Outcome:
    return skipped(Reason.NOT_CONFIGURED, f"{what}: {EXTRA_WORDS}")


def no_credentials(ctx: ProbeContext, adds: str) -> Outcome:
    return skipped(
        Reason.NOT_CONFIGURED,
        f"no credentials for role {ctx.target.role}: a credentialed run adds {adds} (give the role "
        "`credentials:` in the inventory); this row's other checks prove what can be proven anonymously",
    )


def integrated_unsupported(ctx: ProbeContext, what: str) -> Outcome | None:
    """A skip when the role logs on as the current Windows user (SSPI): impacket needs a password."""
    creds = ctx.credentials
    if creds is None or not getattr(creds, "integrated", False):
        return None
    return skipped(
        Reason.NOT_CONFIGURED,
        f"{what}: the role's credentials are `integrated` (the current Windows user), which this check "
        "cannot use yet; give the role a username and password_env to add it",
    )


class CallError(Exception):
    """A call answered with a Win32 error in its out parameters (not a fault)."""

    def __init__(self, call: str, code: int) -> None:
        super().__init__(f"{call} answered error {code}")
        self.call = call
        self.error_code = code


def _status_words(code: int) -> tuple[Reason, str] | None:
    if code in _AUTH_STATUS:
        return Reason.AUTH, _AUTH_STATUS[code]
    if code in _POLICY_STATUS:
        return Reason.POLICY, _POLICY_STATUS[code]
    if code in _MISSING_STATUS:
        return Reason.NOT_REGISTERED, _MISSING_STATUS[code]
    return None


def classify(ctx: ProbeContext, exc: BaseException, what: str, port: int | None = None) -> Outcome:
    """One impacket / socket error as an Outcome with words an admin can act on."""
    where = ctx.where(port)
    if isinstance(exc, ProbeError):
        return exc.outcome
    if isinstance(exc, BUGS):
        raise exc  # our bug, reported as an error by the engine, never dressed up as a reason
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return failed(Reason.FILTERED, f"filtered: no answer on {where} while opening {what} (a firewall drops it)")
    if isinstance(exc, ConnectionRefusedError):
        return failed(Reason.REFUSED, f"refused: {where} answered with a reset while opening {what}")
    if isinstance(exc, ConnectionResetError):
        return failed(Reason.PROTOCOL, f"{where} accepted, then reset the connection while opening {what}")
    if isinstance(exc, OSError) and exc.errno is not None:
        return outcome_for_oserror(ctx, exc, port)
    if isinstance(exc, CallError):
        reason, words = _WIN32.get(exc.error_code, (Reason.PROTOCOL, f"{exc.call} answered error {exc.error_code}"))
        make = inconclusive if reason is Reason.NOT_REGISTERED else failed
        return make(reason, f"{what} on {ctx.host}: {words} (error {exc.error_code})", win32_error=exc.error_code)
    code = _error_code(exc)
    text = _error_text(exc)
    if code is not None:
        mapped = _status_words(code)
        if mapped is not None:
            reason, words = mapped
            outcome = inconclusive if reason is Reason.NOT_REGISTERED else failed
            return outcome(reason, f"{what} on {ctx.host}: {words} (0x{code:08x})", status_code=f"0x{code:08x}")
    low = text.lower()
    if "abstract_syntax_not_supported" in low or "nca_s_unk_if" in low or "rpc_s_unknown_if" in low:
        return inconclusive(
            Reason.NOT_REGISTERED, f"{what} on {ctx.host}: the RPC server does not offer this interface"
        )
    if "rpc_s_access_denied" in low or "access_denied" in low or code == 5:
        return failed(
            Reason.POLICY if code == 5 else Reason.AUTH,
            f"{what} on {ctx.host}: access denied ({text}); the account is refused (wrong password, no network "
            "logon right, or it lacks the rights this call needs)",
        )
    if "authn_level" in low or "sec_pkg" in low:
        return failed(Reason.POLICY, f"{what} on {ctx.host}: the server refuses this authentication level ({text})")
    if isinstance(exc, OSError):
        return failed(Reason.PROTOCOL, f"{where} broke off while opening {what}: {exc.strerror or exc}")
    return failed(Reason.PROTOCOL, f"{where} answered, but {what} failed: {text[:200]}")


def _error_code(exc: BaseException) -> int | None:
    for attr in ("getErrorCode", "get_error_code"):
        fn = getattr(exc, attr, None)
        if callable(fn):
            try:
                value = fn()
            except Exception:  # noqa: BLE001 - a broken exception object is no reason to crash
                return None
            return int(value) & 0xFFFFFFFF if isinstance(value, int) else None
    value = getattr(exc, "error_code", None)
    return int(value) & 0xFFFFFFFF if isinstance(value, int) else None


def _error_text(exc: BaseException) -> str:
    try:
        return str(exc) or type(exc).__name__
    except Exception:  # noqa: BLE001
        return type(exc).__name__


@contextlib.contextmanager
def rpc_errors(ctx: ProbeContext, what: str, port: int | None = None) -> Iterator[None]:
    """Turn any impacket / socket error inside the block into ProbeError with our words."""
    try:
        yield
    except (ProbeError, *BUGS):
        raise
    except Exception as exc:  # noqa: BLE001 - every library error is mapped, none escapes as a crash
        raise ProbeError(classify(ctx, exc, what, port)) from None


def authenticated_dce(
    ctx: ProbeContext, creds: Credentials, binding: str, port: int, timeout: float, sessions: Sessions | None = None
) -> Any:
    """An impacket DCERPC_v5 over `binding` (ncacn_np / ncacn_ip_tcp), NTLM at packet integrity.

    `timeout` bounds every socket wait (taken from `ctx.step_timeout()` before the thread starts).
    """
    from impacket.dcerpc.v5 import transport
    from impacket.dcerpc.v5.rpcrt import RPC_C_AUTHN_LEVEL_PKT_INTEGRITY, RPC_C_AUTHN_WINNT

    rpct = transport.DCERPCTransportFactory(binding)
    rpct.set_dport(port)
    rpct.set_connect_timeout(max(0.1, timeout))
    if hasattr(rpct, "setRemoteName"):
        rpct.setRemoteName(ctx.address)
    rpct.set_credentials(creds.username, creds.password, creds.domain)
    dce = rpct.get_dce_rpc()
    dce.set_auth_type(RPC_C_AUTHN_WINNT)
    dce.set_auth_level(RPC_C_AUTHN_LEVEL_PKT_INTEGRITY)
    if sessions is not None:
        sessions.add(dce)
    return dce


def connect(dce: Any) -> None:
    """dce.connect(), then the answer cap on TCP associations."""
    dce.connect()
    bound_tcp_answers(dce)


def disconnect_quietly(dce: Any) -> None:
    """Close the association and its sockets; impacket leaves them open when a logon fails."""
    with contextlib.suppress(Exception):
        dce.disconnect()
    rpct = getattr(dce, "get_rpc_transport", lambda: None)()
    if rpct is None:
        return
    with contextlib.suppress(Exception):
        smb = rpct.get_smb_connection()
        if smb is not None:
            smb.close()
    with contextlib.suppress(Exception):
        sock = rpct.get_socket()
        if sock is not None and hasattr(sock, "close"):
            sock.close()


MAX_ANSWER = 4 << 20  # bytes one TCP association may receive: a hostile server cannot fill memory


class _BoundedSocket:
    """Delegates to a socket; recv fails once more than `limit` bytes came in (impacket reassembles
    fragments without a bound)."""

    def __init__(self, sock: socket.socket, limit: int) -> None:
        self._sock = sock
        self._left = limit

    def recv(self, size: int, *flags: int) -> bytes:
        data = self._sock.recv(size, *flags)
        self._left -= len(data)
        if self._left < 0:
            raise ConnectionAbortedError(f"an answer larger than {MAX_ANSWER >> 20} MiB")
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def bound_tcp_answers(dce: Any) -> None:
    """After connect: cap what this ncacn_ip_tcp association may receive."""
    rpct = dce.get_rpc_transport()
    sock = getattr(rpct, "_TCPTransport__socket", None)
    if isinstance(sock, socket.socket):
        rpct._TCPTransport__socket = _BoundedSocket(sock, MAX_ANSWER)


class Sessions:
    """The associations a worker thread opened, so the event loop can cut them at the deadline.

    A blocked recv in the thread wakes up when its socket is shut down; the thread then ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dces: list[Any] = []

    def add(self, dce: Any) -> Any:
        with self._lock:
            self._dces.append(dce)
        return dce

    def cut(self) -> None:
        with self._lock:
            dces, self._dces = self._dces, []
        for dce in dces:
            rpct = getattr(dce, "get_rpc_transport", lambda: None)()
            for getter in ("get_socket", "get_smb_server"):
                with contextlib.suppress(Exception):
                    obj = getattr(rpct, getter)()
                    sock = obj.get_socket() if getter == "get_smb_server" else obj
                    sock.shutdown(socket.SHUT_RDWR)
