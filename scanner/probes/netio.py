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
import errno
import os
import socket
import ssl as ssl_module
import sys
import time
from typing import Any, Callable

from scanner.models import Reason, Transport
from scanner.probes.base import Outcome, ProbeContext, ProbeError, failed, inconclusive

# errno values (Linux, BSD/macOS) and Winsock codes that mean "no route".
_UNREACHABLE = {
    getattr(errno, "EHOSTUNREACH", 113),
    getattr(errno, "ENETUNREACH", 101),
    getattr(errno, "EHOSTDOWN", 112),
    10065,  # WSAEHOSTUNREACH
    10051,  # WSAENETUNREACH
}
_TIMEDOUT = {getattr(errno, "ETIMEDOUT", 110), 10060}  # WSAETIMEDOUT
_REFUSED = {getattr(errno, "ECONNREFUSED", 111), 10061, 10054}  # WSAECONNREFUSED, WSAECONNRESET

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


def outcome_for_oserror(ctx: ProbeContext, exc: BaseException, port: int | None = None) -> Outcome:
    """Map a socket-level error to the project's reasons, keeping the OS text as evidence."""
    if isinstance(exc, ConnectionRefusedError):
        return refused(ctx, port)
    if isinstance(exc, socket.gaierror):
        return failed(Reason.UNRESOLVED, f"unresolved: the name {ctx.host} does not resolve ({exc})")
    if isinstance(exc, ssl_module.SSLError):
        return failed(
            Reason.TLS,
            f"TLS handshake failed on {ctx.where(port)}: {exc.reason or exc}",
            error=str(exc),
        )
    code = getattr(exc, "errno", None) or getattr(exc, "winerror", None)
    if code in _REFUSED or isinstance(exc, ConnectionResetError):
        return refused(ctx, port)
    if code in _UNREACHABLE:
        return failed(
            Reason.UNREACHABLE,
            f"unreachable: no route to {ctx.host} ({exc.strerror if isinstance(exc, OSError) else exc})"
            " — a router or firewall answers 'host unreachable'; check routing and firewall rules",
            error=str(exc),
        )
    if code in _TIMEDOUT:
        return filtered(ctx, ctx.settings.timeout, port)
    return failed(
        Reason.PROTOCOL,
        f"connection to {ctx.where(port)} failed: {exc}",
        error=f"{type(exc).__name__}: {exc}",
    )


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

    A pending attempt sleeps until it completes, its budget runs out, or the host
    answers something for the first time (then the budget shrinks from the full
    timeout to a few round trips): no polling, so thousands can wait at once. The
    budget runs from the moment the SYN is sent, not from when the attempt was
    scheduled, so a busy event loop never eats into it. Raises ProbeError with
    reason refused, filtered or unreachable.
    """
    port = ctx.port if port is None else port
    if port is None:
        raise ValueError("connect_socket needs a port")
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _attempt in range(ctx.settings.retries + 1):
        sock, exc, sent = await _attempt_connect(ctx, port)
        if sock is None and exc is None:  # no answer within the budget
            if ctx.remaining() <= 0:
                break
            continue
        elapsed = loop.time() - sent
        if sock is not None:
            exact = kernel_rtt(sock)
            ctx.timing.observe(exact if exact is not None else elapsed, exact=exact is not None)
            return sock
        assert exc is not None
        if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) in _REFUSED:
            ctx.timing.observe(elapsed)
        if getattr(exc, "errno", None) in _TIMEDOUT:
            continue
        raise ProbeError(outcome_for_oserror(ctx, exc, port)) from None
    raise ProbeError(filtered(ctx, loop.time() - started, port))


async def _attempt_connect(
    ctx: ProbeContext, port: int
) -> tuple[socket.socket | None, BaseException | None, float]:
    """One SYN: (socket, None, sent) on success, (None, error, sent), or (None, None, sent) on silence."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in ctx.address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    sent = loop.time()
    timeout_at = getattr(asyncio, "timeout_at", None)
    try:
        if ctx.timing.answered and timeout_at is not None:
            # Fast path (Python 3.11+, host already answered): a fixed budget, no extra task.
            try:
                async with timeout_at(min(sent + ctx.timing.timeout(), ctx.deadline)):
                    await loop.sock_connect(sock, (ctx.address, port))
            except TimeoutError:
                sock.close()
                return None, None, sent
            return sock, None, sent
        task = asyncio.ensure_future(loop.sock_connect(sock, (ctx.address, port)))
        try:
            while not task.done():
                budget = min(sent + ctx.timing.timeout(), ctx.deadline) - loop.time()
                if budget <= 0:
                    break
                waiters: set[asyncio.Future[Any]] = {task}
                if not ctx.timing.answered:
                    waiters.add(ctx.timing.first_answer())
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
            return None, None, sent
        exc = task.exception()
        if exc is not None:
            sock.close()
            return None, exc, sent
        return sock, None, sent
    except OSError as exc:
        sock.close()
        return None, exc, sent
    except BaseException:
        sock.close()
        raise


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
            await asyncio.wait_for(start_tls(writer, ssl, server_hostname), ctx.step_timeout())
        except asyncio.TimeoutError:
            writer.close()
            raise ProbeError(
                failed(
                    Reason.TLS,
                    f"TLS handshake timed out on {ctx.where(port)}: the port accepts "
                    "connections but does not complete a TLS handshake",
                )
            ) from None
        except ssl_module.SSLError as tls_exc:
            writer.close()
            raise ProbeError(outcome_for_oserror(ctx, tls_exc, port)) from None
        except (OSError, EOFError) as tls_exc:
            writer.close()
            # The port accepted TCP, so a reset now is the TLS service failing, not a refusal.
            raise ProbeError(
                failed(
                    Reason.TLS,
                    f"TLS handshake failed on {ctx.where(port)}: the peer accepted TCP, then "
                    f"dropped the handshake ({tls_exc})",
                )
            ) from None
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


def _silent(ctx: ProbeContext, what: str) -> ProbeError:
    return ProbeError(
        failed(
            Reason.PROTOCOL,
            f"no {what} within {ctx.settings.timeout:g} s on {ctx.where()}: the port accepts "
            "connections but does not answer the documented protocol",
        )
    )


async def read_exactly(ctx: ProbeContext, reader: asyncio.StreamReader, n: int, what: str) -> bytes:
    """Read exactly n bytes (n is bounded by MAX_READ) or end the probe with a clear reason."""
    if n < 0 or n > MAX_READ:
        raise ProbeError(
            failed(Reason.PROTOCOL, f"the peer announced a {what} of {n} bytes, which is not plausible")
        )
    try:
        return await asyncio.wait_for(reader.readexactly(n), ctx.step_timeout())
    except asyncio.TimeoutError:
        raise _silent(ctx, what) from None
    except asyncio.IncompleteReadError as exc:
        raise ProbeError(
            failed(
                Reason.PROTOCOL,
                f"the peer closed the connection after {len(exc.partial)} of {n} bytes of the {what} "
                f"on {ctx.where()}",
            )
        ) from None
    except OSError as exc:
        raise ProbeError(outcome_for_oserror(ctx, exc)) from None


async def read_some(
    ctx: ProbeContext, reader: asyncio.StreamReader, what: str, max_bytes: int = 65536
) -> bytes:
    """Read whatever the peer sends first (at most max_bytes); empty means it closed."""
    try:
        return await asyncio.wait_for(reader.read(min(max_bytes, MAX_READ)), ctx.step_timeout())
    except asyncio.TimeoutError:
        raise _silent(ctx, what) from None
    except OSError as exc:
        raise ProbeError(outcome_for_oserror(ctx, exc)) from None


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
        writer.write(len(request).to_bytes(prefix, "big") + request)
        await asyncio.wait_for(writer.drain(), ctx.step_timeout())
        size = int.from_bytes(await read_exactly(ctx, reader, prefix, f"{what} length"), "big")
        if not min_size <= size <= max_size:
            raise ProbeError(
                failed(
                    Reason.PROTOCOL,
                    f"{ctx.host} answered on {ctx.where()} with a {what} frame of {size} bytes, which "
                    f"no such server sends — another service listens there",
                )
            )
        return await read_exactly(ctx, reader, size, what)
    except (asyncio.TimeoutError, OSError):
        raise ProbeError(failed(Reason.PROTOCOL, f"the peer on {ctx.where()} did not take our request")) from None
    finally:
        close_quietly(writer)


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
        for _attempt in range(ctx.settings.retries + 1):
            wait = min(ctx.step_timeout(), max(1.0, ctx.timing.timeout()))
            inflight = loop.run_in_executor(_udp_pool(), _udp_try_blocking, sock, payload, wait, accept)
            try:
                reply, took = await inflight
            except OSError as exc:
                if is_port_unreachable(exc):
                    raise ProbeError(refused(ctx, port, Transport.UDP)) from None
                raise ProbeError(outcome_for_oserror(ctx, exc, port)) from None
            if reply is not None:
                ctx.timing.observe(took)
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
        raise ProbeError(outcome_for_oserror(ctx, exc, port)) from None
    started = loop.time()
    try:
        for _attempt in range(ctx.settings.retries + 1):
            sent = loop.time()
            transport.sendto(payload)
            wait = min(ctx.step_timeout(), max(1.0, ctx.timing.timeout()))
            end = sent + wait
            while (left := end - loop.time()) > 0:
                try:
                    item = await asyncio.wait_for(proto.queue.get(), left)
                except asyncio.TimeoutError:
                    break
                if isinstance(item, BaseException):
                    if is_port_unreachable(item):
                        ctx.timing.observe(loop.time() - sent)
                        raise ProbeError(refused(ctx, port, Transport.UDP))
                    raise ProbeError(outcome_for_oserror(ctx, item, port))
                if accept is None or accept(item):
                    ctx.timing.observe(loop.time() - sent)
                    return item
            if ctx.remaining() <= 0:
                break
    finally:
        transport.close()
    raise _udp_silence(ctx, port, what, loop.time() - started)


def _udp_silence(ctx: ProbeContext, port: int, what: str, waited: float) -> ProbeError:
    return ProbeError(
        inconclusive(
            Reason.NO_ANSWER,
            f"no {what} on UDP {port} from {ctx.host} in {waited:.3g} s "
            f"({_tries(ctx)}): the port is open and ignoring us, or a firewall drops UDP {port} "
            f"between this host and {ctx.host} — UDP silence cannot tell which",
        )
    )
