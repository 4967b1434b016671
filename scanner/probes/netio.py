"""Network primitives for probes, and the one place OS errors become reasons.

Probes call these instead of asyncio directly, so every probe gets adaptive
timeouts, retries, bounded reads and the same words for the same failure:

    reader, writer = await connect_tcp(ctx)           # ProbeError on refused/filtered/...
    data = await read_exactly(ctx, reader, 4, "SMB negotiate response header")
    reply = await udp_exchange(ctx, payload)          # ProbeError on refused or silence

Portable by design (Linux and Windows): asyncio streams and datagram
endpoints only; ICMP port-unreachable on a connected UDP socket surfaces as
ConnectionRefusedError on Linux and ConnectionResetError (WSAECONNRESET) on
Windows, and both mean "refused" here. On Windows UDP exchanges take a worker-thread
path instead of the Proactor loop, which swallows that error (see `udp_strategy`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import errno
import ipaddress
import os
import socket
import ssl as ssl_module
import sys
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterator, NoReturn, TypeVar

from scanner.models import Reason, Transport
from scanner.probes.base import Outcome, ProbeContext, ProbeError, failed, inconclusive
from scanner.timing import SYN_RETRY, Pacer, ServiceLatency

_timeout_at = getattr(asyncio, "timeout_at", None)  # Python 3.11+
_timeout = getattr(asyncio, "timeout", None)  # Python 3.11+

_T = TypeVar("_T")


async def drain_within(writer: asyncio.StreamWriter, seconds: float) -> None:
    """writer.drain(), or TimeoutError after `seconds` while the peer does not read.

    drain waits only while the protocol is paused (its transport, or the socket under a TLS
    transport, is above the high-water mark); otherwise no timer is armed: most requests
    are small and leave at once. Where Python names that state differently, the timer is.
    """
    if getattr(getattr(writer, "_protocol", None), "_paused", None) is False:
        await writer.drain()
        return
    await within(writer.drain(), seconds)


async def within(awaitable: Awaitable[_T], seconds: float) -> _T:
    """`await awaitable`, or TimeoutError after `seconds` (asyncio.TimeoutError before 3.11).

    asyncio.timeout where Python has it: `wait_for` wraps every coroutine in a task of its
    own, and a check awaits dozens of reads and drains; data already buffered is returned
    without suspending. Python 3.10 keeps `wait_for`.
    """
    if _timeout is None:  # pragma: no cover - Python 3.10 only
        return await asyncio.wait_for(awaitable, seconds)
    async with _timeout(seconds):
        return await awaitable

# The one table of OS error codes, kept by meaning, not by platform: errno values (Linux,
# BSD/macOS), Winsock codes (WSAE*, which Python puts in errno and winerror on Windows) and
# the Win32 codes asyncio's proactor loop raises (in winerror only). Win32 codes live in
# their own range (_W + code), so ERROR_NETNAME_DELETED (64) never reads as Linux ENONET.
_W = 1 << 20


def _codes(*names_or_numbers: str | int) -> frozenset[int]:
    return frozenset(n if isinstance(n, int) else getattr(errno, n, -1) for n in names_or_numbers) - {-1}


def _win(*codes: int) -> frozenset[int]:
    return frozenset(_W + c for c in codes)


_UNREACHABLE = _codes("EHOSTUNREACH", "ENETUNREACH", "EHOSTDOWN", "ENETDOWN", 10065, 10051, 10064, 10050) | _win(
    10065,  # WSAEHOSTUNREACH
    10051,  # WSAENETUNREACH
    10064,  # WSAEHOSTDOWN
    10050,  # WSAENETDOWN
    1231,  # ERROR_NETWORK_UNREACHABLE (proactor)
    1232,  # ERROR_HOST_UNREACHABLE (proactor)
)  # fmt: skip
_TIMEDOUT = _codes("ETIMEDOUT", 10060) | _win(10060, 121)  # WSAETIMEDOUT, ERROR_SEM_TIMEOUT (proactor)
_REFUSED = _codes("ECONNREFUSED", 10061) | _win(10061, 1225)  # WSAECONNREFUSED, ERROR_CONNECTION_REFUSED
# A reset: "refused" before a connection exists (ICMP port-unreachable on a connected UDP
# socket surfaces as WSAECONNRESET on Windows), "closed" on an open connection.
_RESET = _codes("ECONNRESET", "ECONNABORTED", "EPIPE", "ESHUTDOWN", 10054, 10053, 10058) | _win(
    10054,  # WSAECONNRESET
    10053,  # WSAECONNABORTED
    10058,  # WSAESHUTDOWN
    64,  # ERROR_NETNAME_DELETED (proactor: the peer reset)
    1236,  # ERROR_CONNECTION_ABORTED (proactor)
)  # fmt: skip
_PERMISSION = _codes("EACCES", "EPERM", 10013) | _win(10013, 5)  # WSAEACCES, ERROR_ACCESS_DENIED


def _error_codes(exc: BaseException) -> set[int]:
    codes: set[int] = set()
    if isinstance(getattr(exc, "errno", None), int):
        codes.add(exc.errno)  # type: ignore[attr-defined]
    if isinstance(getattr(exc, "winerror", None), int):
        codes.add(_W + exc.winerror)  # type: ignore[attr-defined]
    return codes


def os_error_evidence(exc: BaseException) -> dict[str, Any]:
    """The OS error as evidence (aiohttp's `os_error`): the code and the system's words."""
    code = getattr(exc, "winerror", None) or getattr(exc, "errno", None)
    return {"os_error": {"errno": code, "strerror": str(getattr(exc, "strerror", None) or exc)[:200]}}


MAX_READ = 1 << 20  # no peer answer we parse needs more than 1 MiB


def _tries(ctx: ProbeContext) -> str:
    n = ctx.settings.retries + 1
    return f"{n} tries" if n > 1 else "1 try"


def refused(ctx: ProbeContext, port: int | None = None, proto: Transport | None = None) -> Outcome:
    proto = proto or ctx.protocol
    how = "a TCP reset" if proto is Transport.TCP else "ICMP port-unreachable"
    return failed(
        Reason.REFUSED,
        f"refused: {ctx.host} answered {how} on {(proto.value.upper())} "
        f"{port if port is not None else ctx.port} — no service listens there, "
        "or a firewall rejects it",
    )


def filtered(ctx: ProbeContext, waited: float, port: int | None = None) -> Outcome:
    return failed(
        Reason.FILTERED,
        f"filtered: no answer in {waited:.3g} s ({_tries(ctx)}; {ctx.timing.describe()}) — "
        f"a firewall drops {ctx.where(port)}",
    )


def no_reply(ctx: ProbeContext, what: str, waited: float | None = None, port: int | None = None) -> Outcome:
    """Connected, then no answer in time: slowness, never proof of a wrong protocol."""
    waited = ctx.settings.timeout if waited is None else waited
    ctx.timing.stalls += 1  # a sign of overload: the engine's windows shrink on it
    return inconclusive(
        Reason.NO_REPLY,
        f"no reply: the service on {ctx.where(port)} accepted the connection but sent no {what} "
        f"in {waited:.3g} s: overloaded or hung",
        waited_s=round(waited, 3),
    )


def tls_stalled(ctx: ProbeContext, port: int | None = None, **evidence: Any) -> Outcome:
    """TCP accepted, then no complete TLS handshake in time: overload, a hung service, or a
    service that is not TLS waiting for its own protocol. Silence proves none of them, so
    it is `no-reply` (inconclusive), never a TLS verdict; the engine asks again at lower load."""
    outcome = no_reply(ctx, "complete TLS handshake", port=port)
    return dataclasses.replace(
        outcome,
        detail=f"{outcome.detail}, or the port does not speak TLS",
        evidence={**outcome.evidence, "stalled": True, **evidence},
    )


_CLOSED_HINT = "it may require TLS, accept only listed client addresses (add the Auditor's), or be overloaded"
_TLS_CLOSED_HINT = (
    "it may not speak TLS on this port at all, accept only listed client addresses (add the Auditor's), "
    "want other TLS versions, or be overloaded"
)


def is_reset(exc: BaseException, *, os_only: bool = False) -> bool:
    """A reset or abort of an established connection (any platform's codes).

    `os_only`: only a reset the OS reported (with its code); asyncio's TLS layer raises a
    code-less ConnectionResetError for a plain close in mid-handshake, which is not one.
    """
    if os_only:
        return bool(_error_codes(exc) & _RESET)
    return isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)) or bool(
        _error_codes(exc) & _RESET
    )


def closed(ctx: ProbeContext, what: str, port: int | None = None, *, hint: str = _CLOSED_HINT, **evidence: Any) -> Outcome:
    """The service accepted the connection, then closed or reset it: it runs, but rejects us."""
    return failed(
        Reason.CLOSED,
        f"closed: {ctx.host} accepted the connection on {ctx.where(port)}, then closed or reset it before "
        f"the {what} — the service runs but rejects this client: {hint}",
        **evidence,
    )


def closed_in_handshake(ctx: ProbeContext, exc: BaseException, port: int | None = None, **evidence: Any) -> Outcome:
    """TCP was accepted, then the TLS handshake was reset: the service rejects this client."""
    return closed(ctx, "TLS handshake", port, hint=_TLS_CLOSED_HINT, **os_error_evidence(exc), **evidence)


def outcome_for_oserror(
    ctx: ProbeContext, exc: BaseException, port: int | None = None, *, connected: bool = False, what: str = "answer"
) -> Outcome:
    """Map a socket-level error to the project's reasons, keeping the OS error as evidence.

    `connected` says the TCP connection was established: a reset then means the service
    closed it on us (`closed`), not that nothing listens (`refused`).
    """
    if isinstance(exc, socket.gaierror):
        return failed(Reason.UNRESOLVED, f"unresolved: the name {ctx.host} does not resolve ({exc})")
    if isinstance(exc, ssl_module.SSLError):
        return failed(
            Reason.TLS,
            f"TLS handshake failed on {ctx.where(port)}: {exc.reason or exc}",
            error=str(exc),
        )
    codes = _error_codes(exc)
    evidence = os_error_evidence(exc)
    reset = is_reset(exc)
    if connected and reset:
        return closed(ctx, what, port, **evidence)
    if isinstance(exc, ConnectionRefusedError) or codes & _REFUSED or reset:
        outcome = refused(ctx, port)
        return dataclasses.replace(outcome, evidence={**outcome.evidence, **evidence})
    if codes & _UNREACHABLE:
        return failed(
            Reason.UNREACHABLE,
            f"unreachable: no route to {ctx.host} ({exc.strerror if isinstance(exc, OSError) else exc})"
            " — a router or firewall answers 'host unreachable'; check routing and firewall rules",
            error=str(exc), **evidence,
        )
    if codes & _TIMEDOUT:
        outcome = filtered(ctx, ctx.settings.timeout, port)
        return dataclasses.replace(outcome, evidence={**outcome.evidence, **evidence})
    if codes & _PERMISSION:
        return failed(
            Reason.PERMISSION,
            f"this host's operating system refused portready the traffic to {ctx.where(port)} "
            f"({getattr(exc, 'strerror', None) or exc}) — a local firewall or security policy blocks "
            "portready; allow it outbound, or run it where policy permits",
            **evidence,
        )
    return failed(
        Reason.PROTOCOL,
        f"connection to {ctx.where(port)} failed: {exc}",
        error=f"{type(exc).__name__}: {exc}",
        **evidence,
    )


@contextlib.contextmanager
def wire_errors(ctx: ProbeContext, what: str, *, port: int | None = None, started: bool = False) -> Iterator[None]:
    """The one mapping of what can go wrong on an open connection to the project's reasons.

        with wire_errors(ctx, "SMB negotiate response"):
            data = await within(reader.readexactly(n), ctx.step_timeout())

    Timeouts read as `no-reply` (the port accepts but does not answer in time), a short read as
    `closed` (nothing came) or `protocol` (a truncated answer), an over-long line as
    `protocol`, TLS errors as `tls` and OS errors through `outcome_for_oserror`
    (a reset is `closed`). `started`: part of the answer (a header) was already read, so
    a close now truncates it. Raises ProbeError `from` the original, which stays in the chain.
    """
    try:
        yield
    except ProbeError:
        raise
    except (asyncio.TimeoutError, TimeoutError) as exc:
        raise silent(ctx, what, port) from exc
    except asyncio.IncompleteReadError as exc:
        raise ProbeError(closed_early(ctx, what, len(exc.partial), exc.expected, port, started=started)) from exc
    except asyncio.LimitOverrunError as exc:
        raise ProbeError(oversized(ctx, what, port)) from exc
    except (OSError, EOFError) as exc:  # ssl.SSLError is an OSError: mapped to tls there
        if isinstance(exc, EOFError) and not isinstance(exc, OSError):
            raise ProbeError(closed(ctx, what, port)) from exc
        raise ProbeError(outcome_for_oserror(ctx, exc, port, connected=True, what=what)) from exc


def silent(ctx: ProbeContext, what: str, port: int | None = None) -> ProbeError:
    """The port accepted the connection but did not answer within the timeout: `no-reply`
    (overloaded or hung), never `protocol` — slowness is not a verdict on the protocol."""
    return ProbeError(no_reply(ctx, what, port=port))


def closed_early(
    ctx: ProbeContext, what: str, got: int, expected: int | None, port: int | None = None, *, started: bool = False
) -> Outcome:
    """The peer closed the connection: before answering (`closed`), or mid-answer (`protocol`)."""
    if got == 0 and not started:
        return closed(ctx, what, port)
    of = f" of {expected}" if expected is not None else ""
    return failed(
        Reason.PROTOCOL,
        f"the peer closed the connection in the middle of the {what} on {ctx.where(port)} "
        f"({got}{of} bytes after its header)" if started else
        f"the peer closed the connection after {got}{of} bytes of the {what} on {ctx.where(port)}",
    )  # fmt: skip


def oversized(ctx: ProbeContext, what: str, port: int | None = None) -> Outcome:
    return failed(
        Reason.PROTOCOL,
        f"the {what} on {ctx.where(port)} is longer than any such answer: another service answers there",
    )


@dataclass(frozen=True)
class Resolved:
    address: str | None
    addresses: tuple[str, ...] = ()
    error: str | None = None


async def resolve(host: str, timeout: float) -> Resolved:
    """Resolve a name once (IPv4 and IPv6); literals pass through untouched."""
    try:
        return Resolved(str(ipaddress.ip_address(host.strip("[]"))), (host,))
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), timeout)
    except asyncio.TimeoutError:
        return Resolved(None, error=f"name resolution of {host} timed out after {timeout:g} s")
    except (socket.gaierror, UnicodeError, OSError) as exc:
        return Resolved(None, error=f"{host} does not resolve ({getattr(exc, 'strerror', None) or exc})")
    addresses: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in addresses:
            addresses.append(addr)
    if not addresses:
        return Resolved(None, error=f"{host} resolves to no address")
    return Resolved(addresses[0], tuple(addresses))


def kernel_rtt(sock: Any) -> float | None:
    """The round trip the kernel measured for a connected TCP socket (Linux TCP_INFO), in s.

    Timing a connect in Python includes event-loop latency, which grows with the
    number of probes in flight; the kernel's own SYN/SYN-ACK measurement does not.
    Elsewhere (Windows) this returns None and the loop-measured time is used.
    """
    opt = getattr(socket, "TCP_INFO", None)
    if opt is None or sock is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, opt, 104)
    except (OSError, AttributeError):
        return None
    if len(info) < 72:
        return None
    rtt_us = int.from_bytes(info[68:72], sys.byteorder)  # struct tcp_info.tcpi_rtt
    return rtt_us / 1e6 if rtt_us else None


async def connect_socket(ctx: ProbeContext, port: int | None = None) -> socket.socket:
    """Connect a non-blocking TCP socket, with the host's adaptive timeout and the retries.

    One socket per check, so TCP itself sends the SYN again on its own schedule (Linux:
    after 1 s, then 2 s later): a SYN dropped by a full accept queue still gets its
    answer, and an overloaded listener is not sent duplicate handshakes. `retries`
    says how many of those retransmissions to wait for (SYN_RETRY * (2**retries - 1));
    after the last, the wait is the host's adaptive timeout: a few round trips once the
    host answers other ports, the full timeout until then (a waiting attempt wakes when
    the host first answers). No polling, so thousands can wait at once. Raises
    ProbeError with reason refused, filtered or unreachable.
    """
    port = ctx.port if port is None else port
    if port is None:
        raise ValueError("connect_socket needs a port")
    loop = asyncio.get_running_loop()
    started = loop.time()
    sock = _new_socket(ctx)
    address = (ctx.address, port)
    retransmits = SYN_RETRY * (2**ctx.settings.retries - 1)
    try:
        if _timeout_at is not None and _rearmable(loop) and (retransmits > 0 or ctx.timing.answered):
            # Fast path (Python 3.11+, selector loops): nearly every connect is accepted or
            # reset before the first retransmission; no extra task, no extra future.
            first = retransmits if retransmits > 0 else ctx.timing.timeout()
            try:
                async with _timeout_at(min(started + min(first, SYN_RETRY), ctx.deadline)):
                    await loop.sock_connect(sock, address)
            except TimeoutError:
                pass  # still in SYN-SENT: TCP sends the SYN again by itself
            else:
                _observe_connected(ctx, sock, loop.time() - started, late=False)
                return sock
        return await _connect_wait(ctx, sock, address, started, retransmits)
    except OSError as exc:
        sock.close()
        _raise_connect_error(ctx, exc, port, loop.time() - started)
    except BaseException:
        sock.close()
        raise


async def _connect_wait(
    ctx: ProbeContext, sock: socket.socket, address: tuple[str, int], started: float, retransmits: float
) -> socket.socket:
    """Wait on a pending connect until it is answered or TCP's retries had their chance."""
    loop = asyncio.get_running_loop()
    # On a socket already connecting, connect() says EALREADY and asyncio waits for it.
    task = asyncio.ensure_future(loop.sock_connect(sock, address))
    try:
        while not task.done():
            give_up = min(started + retransmits + ctx.timing.timeout(), ctx.deadline)
            budget = give_up - loop.time()
            if budget <= 0:
                break
            waiters: set[asyncio.Future[Any]] = {task}
            if not ctx.timing.answered:
                waiters.add(ctx.timing.first_answer())  # the budget shrinks when it answers
            await asyncio.wait(waiters, timeout=budget, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, OSError):
                pass
    if task.cancelled():
        sock.close()
        raise ProbeError(filtered(ctx, loop.time() - started, address[1]))
    exc = task.exception()
    if exc is not None and getattr(exc, "errno", None) != errno.EISCONN:
        raise exc  # the caller closes the socket and maps the error
    # Accepted after the first retransmission was due: a sign of a full queue or a congested path.
    _observe_connected(ctx, sock, loop.time() - started, late=loop.time() - started >= SYN_RETRY)
    return sock


def _rearmable(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether a cancelled sock_connect leaves the socket connecting (selector loops do).

    Windows' proactor cancels the overlapped ConnectEx itself, so there the connect is
    awaited once, in a task, from the start.
    """
    return isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop)


def _new_socket(ctx: ProbeContext) -> socket.socket:
    family = socket.AF_INET6 if ":" in ctx.address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock


def _observe_connected(ctx: ProbeContext, sock: socket.socket, elapsed: float, *, late: bool) -> None:
    exact = kernel_rtt(sock)
    ctx.timing.observe(exact if exact is not None else elapsed, exact=exact is not None)
    if late:
        ctx.timing.late += 1  # accepted only after TCP sent the SYN again: the engine slows down


def _raise_connect_error(ctx: ProbeContext, exc: BaseException, port: int, elapsed: float) -> NoReturn:
    """A connect ended with an error: refused and unreachable end the check; ETIMEDOUT is silence."""
    codes = _error_codes(exc)  # errno and Windows' codes alike
    if codes & _TIMEDOUT:
        raise ProbeError(filtered(ctx, elapsed, port)) from exc
    if isinstance(exc, ConnectionRefusedError) or codes & _REFUSED:
        ctx.timing.observe(elapsed)
    raise ProbeError(outcome_for_oserror(ctx, exc, port)) from exc


async def tcp_port_open(ctx: ProbeContext, port: int | None = None) -> None:
    """Prove a TCP port accepts connections, as cheaply as possible (port-level scans)."""
    sock = await connect_socket(ctx, port)
    sock.close()


async def connect_tcp(
    ctx: ProbeContext,
    port: int | None = None,
    *,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    limit: int = 1 << 16,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a TCP (optionally TLS) connection, with adaptive timeout and retries.

    Raises ProbeError with reason refused, filtered, unreachable or tls.
    """
    port = ctx.port if port is None else port
    if port is None:
        raise ValueError("connect_tcp needs a port")
    sock = await connect_socket(ctx, port)
    try:
        reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
    except BaseException:
        sock.close()
        raise
    if ssl is not None:
        try:
            await within(start_tls(writer, ssl, server_hostname), ctx.step_timeout())
        except asyncio.TimeoutError as exc:
            writer.close()
            raise ProbeError(tls_stalled(ctx, port)) from exc
        except ssl_module.SSLError as tls_exc:
            writer.close()
            raise ProbeError(outcome_for_oserror(ctx, tls_exc, port)) from tls_exc
        except (OSError, EOFError) as tls_exc:
            writer.close()
            # The port accepted TCP, so a reset now is the service rejecting us, not a refusal.
            if is_reset(tls_exc, os_only=True):
                raise ProbeError(closed_in_handshake(ctx, tls_exc, port)) from tls_exc
            raise ProbeError(
                failed(
                    Reason.TLS,
                    f"TLS handshake failed on {ctx.where(port)}: the peer accepted TCP, then "
                    f"dropped the handshake ({tls_exc})",
                )
            ) from tls_exc
    return reader, writer


async def start_tls(
    writer: asyncio.StreamWriter, context: ssl_module.SSLContext, server_hostname: str | None
) -> None:
    """Upgrade an open stream to TLS in place (also through a CONNECT tunnel).

    Python 3.11+ has StreamWriter.start_tls; on 3.10 the same steps are done by hand.
    """
    method = getattr(writer, "start_tls", None)
    if method is not None:
        await method(context, server_hostname=server_hostname)
        return
    loop = asyncio.get_running_loop()  # pragma: no cover - Python 3.10 only
    protocol: Any = writer.transport.get_protocol()
    await writer.drain()
    transport = await loop.start_tls(writer.transport, protocol, context, server_hostname=server_hostname)
    writer._transport = transport  # type: ignore[attr-defined]
    protocol._transport = transport
    protocol._over_ssl = True


def close_quietly(writer: asyncio.StreamWriter) -> None:
    try:
        writer.close()
    except Exception:  # noqa: BLE001 - closing a dead socket must never fail a probe
        pass


async def read_exactly(
    ctx: ProbeContext, reader: asyncio.StreamReader, n: int, what: str, *, started: bool = False
) -> bytes:
    """Read exactly n bytes (n is bounded by MAX_READ) or end the probe with a clear reason.

    `started`: these bytes continue an answer whose header was read (a close truncates it).
    """
    if n < 0 or n > MAX_READ:
        raise ProbeError(
            failed(Reason.PROTOCOL, f"the peer announced a {what} of {n} bytes, which is not plausible")
        )
    with wire_errors(ctx, what, started=started):
        if len(getattr(reader, "_buffer", b"")) >= n:  # already here: no timer to arm
            return await reader.readexactly(n)
        return await within(reader.readexactly(n), ctx.step_timeout())


async def read_some(
    ctx: ProbeContext, reader: asyncio.StreamReader, what: str, max_bytes: int = 65536
) -> bytes:
    """Read whatever the peer sends first (at most max_bytes); empty means it closed."""
    with wire_errors(ctx, what):
        return await within(reader.read(min(max_bytes, MAX_READ)), ctx.step_timeout())


async def framed_exchange(
    ctx: ProbeContext,
    request: bytes,
    *,
    prefix: int,
    min_size: int,
    max_size: int,
    what: str,
) -> bytes:
    """One request and its answer over TCP, each framed by a big-endian length prefix.

    DNS (2-byte prefix, RFC 1035 4.2.2) and Kerberos (4-byte, RFC 4120 7.2.2) use
    this framing; an announced length outside [min_size, max_size] means another
    service answered, and is refused before anything that large is read.
    """
    reader, writer = await connect_tcp(ctx)
    try:
        with wire_errors(ctx, f"{what} (sending our request)"):
            writer.write(len(request).to_bytes(prefix, "big") + request)
            await drain_within(writer, ctx.step_timeout())
        size = int.from_bytes(await read_exactly(ctx, reader, prefix, f"{what} length"), "big")
        if not min_size <= size <= max_size:
            raise ProbeError(
                failed(
                    Reason.PROTOCOL,
                    f"{ctx.host} answered on {ctx.where()} with a {what} frame of {size} bytes, which "
                    f"no such server sends — another service listens there",
                )
            )
        return await read_exactly(ctx, reader, size, what, started=True)
    finally:
        close_quietly(writer)


def _paced_answer(pacer: Pacer | None, attempt: int, epoch: int) -> None:
    """An answer: the rate may grow; one that came only on a later try proves a loss (nmap's signal).

    Silence on every try proves nothing (a firewall drops the port), so it never slows the scan.
    """
    if pacer is None:
        return
    if attempt > 0:
        pacer.silent(epoch)
    else:
        pacer.answered()


class _UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | BaseException] = asyncio.Queue(maxsize=64)

    def _put(self, item: bytes | BaseException) -> None:
        if not self.queue.full():
            self.queue.put_nowait(item)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._put(data)

    def error_received(self, exc: Exception) -> None:
        self._put(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._put(exc)


# ICMP port-unreachable on a connected UDP socket, as each OS reports it: ECONNREFUSED
# (Linux, BSD), WSAECONNRESET 10054 (Windows recv/recvfrom), ERROR_PORT_UNREACHABLE 1234
# (Windows overlapped I/O completions).
_UDP_PORT_UNREACHABLE = {getattr(errno, "ECONNREFUSED", 111), 10054, 10061, 1234}


def is_port_unreachable(exc: BaseException) -> bool:
    """Whether a UDP socket error is the peer's ICMP port-unreachable (reason refused)."""
    if isinstance(exc, (ConnectionRefusedError, ConnectionResetError)):
        return True
    codes = {getattr(exc, "errno", None), getattr(exc, "winerror", None)}
    return bool(codes & _UDP_PORT_UNREACHABLE)


def udp_strategy() -> str:
    """How UDP exchanges wait: "datagram-endpoint" (the event loop) or "thread".

    On Windows the default Proactor loop swallows ICMP port-unreachable on UDP
    (CPython gh-91227, gh-127057: the overlapped receive completes with
    ERROR_PORT_UNREACHABLE and the datagram transport drops it), so "refused" would
    never be seen and the check would sit out its whole timeout. SIO_UDP_CONNRESET
    cannot help: it only switches that report off (it is on by default). A
    SelectorEventLoop for the whole run would lose subprocesses (ping.exe) and is
    capped at 512 sockets by select(). So on Windows each UDP exchange runs on a
    plain connected socket in a worker thread, where recv() raises WSAECONNRESET
    (10054) exactly when the port-unreachable arrives. PORTREADY_UDP_STRATEGY
    overrides the choice (tests run the thread path on Linux against real peers).
    """
    forced = os.environ.get("PORTREADY_UDP_STRATEGY", "")
    if forced in ("thread", "datagram-endpoint"):
        return forced
    return "thread" if sys.platform == "win32" else "datagram-endpoint"


# Blocking UDP waits on Windows; each lasts at most one step timeout.
_UDP_THREADS: concurrent.futures.ThreadPoolExecutor | None = None
UDP_THREADS = 64


def _udp_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _UDP_THREADS
    if _UDP_THREADS is None:
        _UDP_THREADS = concurrent.futures.ThreadPoolExecutor(UDP_THREADS, thread_name_prefix="portready-udp")
    return _UDP_THREADS


def _udp_try_blocking(
    sock: socket.socket, payload: bytes, wait: float, accept: Callable[[bytes], bool] | None
) -> tuple[bytes | None, float]:
    """One try on a connected blocking socket: (reply or None on silence, seconds to the
    answer). OSError (port-unreachable included) propagates."""
    started = time.monotonic()
    end = started + wait
    sock.send(payload)
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(65535)
        except TimeoutError:
            break
        if accept is None or accept(data):
            return data, time.monotonic() - started
    return None, time.monotonic() - started


def _service_latency(ctx: ProbeContext, port: int) -> ServiceLatency:
    """The scan's answer-latency estimate for UDP `port`; outside a scan (no pacer), one of
    this exchange's own, which knows nothing and so adds nothing to the wait."""
    pacer = ctx.timing.pacer
    return pacer.service(port) if pacer is not None else ServiceLatency()


async def _udp_exchange_threaded(
    ctx: ProbeContext, payload: bytes, port: int, accept: Callable[[bytes], bool] | None
) -> bytes | None:
    """udp_exchange's tries on a connected socket in a worker thread (see udp_strategy)."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in ctx.address else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as exc:
        raise ProbeError(outcome_for_oserror(ctx, exc, port)) from None
    inflight: asyncio.Future[tuple[bytes | None, float]] | None = None
    try:
        try:
            sock.connect((ctx.address, port))
        except OSError as exc:
            raise ProbeError(outcome_for_oserror(ctx, exc, port)) from None
        service = _service_latency(ctx, port)
        sent = loop.time()
        for attempt in range(ctx.settings.retries + 1):
            if attempt == 1:
                service.resent(sent, loop.time())  # (only when a second datagram really goes)
            due = max(1.0, ctx.timing.timeout(), service.wait())
            wait = min(ctx.step_timeout(), due)
            sent = loop.time()
            inflight = loop.run_in_executor(_udp_pool(), _udp_try_blocking, sock, payload, wait, accept)
            try:
                reply, took = await inflight
            except OSError as exc:
                if is_port_unreachable(exc):
                    raise ProbeError(refused(ctx, port, Transport.UDP)) from None
                raise ProbeError(outcome_for_oserror(ctx, exc, port)) from None
            if reply is not None:
                ctx.timing.observe(took)
                if attempt == 0:
                    service.observe(took)
                return reply
            if ctx.remaining() <= 0:
                break
        return None
    finally:
        # Cancelled while the thread still waits in recv(): close once it returns (its
        # timeout bounds that), never under it, so the handle cannot be reused meanwhile.
        if inflight is not None and not inflight.done():
            inflight.add_done_callback(lambda _f: sock.close())
        else:
            sock.close()


async def udp_exchange(
    ctx: ProbeContext,
    payload: bytes,
    port: int | None = None,
    *,
    accept: Callable[[bytes], bool] | None = None,
    what: str = "answer",
) -> bytes:
    """Send a datagram (again on silence) and return the first acceptable reply.

    ICMP port-unreachable raises ProbeError(refused). Silence after every try
    raises ProbeError(inconclusive/no-answer): UDP silence means "open or
    filtered", never pass. Replies `accept` rejects are ignored (stray packets).
    """
    port = ctx.port if port is None else port
    if port is None:
        raise ValueError("udp_exchange needs a port")
    loop = asyncio.get_running_loop()
    started = loop.time()
    if udp_strategy() == "thread":
        reply = await _udp_exchange_threaded(ctx, payload, port, accept)
        if reply is not None:
            return reply
        raise _udp_silence(ctx, port, what, loop.time() - started)
    family = socket.AF_INET6 if ":" in ctx.address else socket.AF_INET
    try:
        transport, proto = await loop.create_datagram_endpoint(
            _UdpClient, remote_addr=(ctx.address, port), family=family
        )
    except OSError as exc:
        raise ProbeError(outcome_for_oserror(ctx, exc, port)) from exc
    started = loop.time()
    pacer = ctx.timing.pacer
    service = _service_latency(ctx, port)
    epoch = 0
    sent = started
    try:
        for attempt in range(ctx.settings.retries + 1):
            if pacer is not None and not (attempt == 0 and ctx.paced):
                # ICMP errors are rate-limited on the way back: send at the rate they return,
                # but never wait so long that no time is left to hear the answer (a first
                # datagram of the engine's checks was paced before the budget began).
                try:
                    await within(pacer.acquire(), max(0.0, ctx.remaining() - ctx.settings.timeout))
                except asyncio.TimeoutError:
                    pass
            if attempt == 0 and pacer is not None:
                epoch = pacer.epoch
            if attempt == 1:
                service.resent(sent, loop.time())  # (only when a second datagram really goes)
            sent = loop.time()
            transport.sendto(payload)
            # Back off like TCP: each silent try waits twice as long as the one before.
            # The first wait is the host's adaptive timeout (ICMP errors come back as fast as
            # SYN-ACKs do); a lost one is not late, it is gone: the next try asks again.
            step = ctx.step_timeout()
            while True:
                # Recomputed while waiting: once the host answers anything, the wait shrinks
                # from the full timeout to its adaptive one (checked every quarter second);
                # a service that answers late (queued on a loaded server) lengthens it.
                due = max(ctx.settings.min_timeout, ctx.timing.timeout(), service.wait())
                left = sent + min(step, due * (2**attempt)) - loop.time()
                if left <= 0:
                    break
                try:
                    item = await within(proto.queue.get(), left if ctx.timing.answered else min(left, 0.25))
                except asyncio.TimeoutError:
                    continue
                if isinstance(item, BaseException):
                    if is_port_unreachable(item):
                        ctx.timing.observe(loop.time() - sent)
                        _paced_answer(pacer, attempt, epoch)
                        raise ProbeError(refused(ctx, port, Transport.UDP))
                    raise ProbeError(outcome_for_oserror(ctx, item, port))
                if accept is None or accept(item):
                    ctx.timing.observe(loop.time() - sent)
                    if attempt == 0:
                        service.observe(loop.time() - sent)  # (a later try's answer is ambiguous: Karn)
                    _paced_answer(pacer, attempt, epoch)
                    return item
            if ctx.remaining() <= 0:
                break
    finally:
        transport.close()
    raise _udp_silence(ctx, port, what, loop.time() - started)


def _udp_silence(ctx: ProbeContext, port: int, what: str, waited: float) -> ProbeError:
    detail = (
        f"no {what} on UDP {port} from {ctx.host} in {waited:.3g} s "
        f"({_tries(ctx)}): the port is open and ignoring us, or a firewall drops UDP {port} "
        f"between this host and {ctx.host} — UDP silence cannot tell which"
    )
    busy = _service_latency(ctx, port).srtt
    if busy is not None and busy >= ctx.settings.min_timeout:
        # Slowness must not read as a firewall: say what the other answers of this scan showed.
        detail += (
            f"; other hosts of this scan answer on UDP {port} only after {busy:.2g} s on average, so a "
            "busy server may answer later than the timeout: scan again with a longer --timeout"
        )
    return ProbeError(inconclusive(Reason.NO_ANSWER, detail))
