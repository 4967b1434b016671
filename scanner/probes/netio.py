"""Network primitives for probes, and the one place OS errors become reasons.

Probes call these instead of asyncio directly, so every probe gets adaptive
timeouts, retries, bounded reads and the same words for the same failure:

    reader, writer = await connect_tcp(ctx)           # ProbeError on refused/filtered/...
    data = await read_exactly(ctx, reader, 4, "SMB negotiate response header")
    reply = await udp_exchange(ctx, payload)          # ProbeError on refused or silence

Portable by design (Linux and Windows): asyncio streams and datagram
endpoints only; ICMP port-unreachable on a connected UDP socket surfaces as
ConnectionRefusedError on Linux and ConnectionResetError (WSAECONNRESET) on
Windows, and both mean "refused" here.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import ssl as ssl_module
import sys
from dataclasses import dataclass
from typing import Any, Callable, NoReturn

from scanner.models import Reason, Transport
from scanner.probes.base import Outcome, ProbeContext, ProbeError, failed, inconclusive
from scanner.timing import SYN_RETRY, Pacer

_timeout_at = getattr(asyncio, "timeout_at", None)  # Python 3.11+

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
    code = getattr(exc, "errno", None)
    if code in _TIMEDOUT:
        raise ProbeError(filtered(ctx, elapsed, port)) from None
    if isinstance(exc, ConnectionRefusedError) or code in _REFUSED:
        ctx.timing.observe(elapsed)
    raise ProbeError(outcome_for_oserror(ctx, exc, port)) from None


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
            # Overload, or a service that is not TLS waiting for its own protocol: the retry
            # pass asks again at lower load (evidence `stalled`) before this verdict stands.
            ctx.timing.stalls += 1
            raise ProbeError(
                failed(
                    Reason.TLS,
                    f"TLS handshake timed out on {ctx.where(port)}: the port accepts "
                    "connections but does not complete a TLS handshake",
                    stalled=True,
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
    return ProbeError(no_reply(ctx, what))


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
    except asyncio.TimeoutError:
        raise ProbeError(no_reply(ctx, "acknowledgement of our request")) from None
    except OSError:
        raise ProbeError(failed(Reason.PROTOCOL, f"the peer on {ctx.where()} did not take our request")) from None
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
    family = socket.AF_INET6 if ":" in ctx.address else socket.AF_INET
    try:
        transport, proto = await loop.create_datagram_endpoint(
            _UdpClient, remote_addr=(ctx.address, port), family=family
        )
    except OSError as exc:
        raise ProbeError(outcome_for_oserror(ctx, exc, port)) from None
    started = loop.time()
    pacer = ctx.timing.pacer
    epoch = 0
    try:
        for attempt in range(ctx.settings.retries + 1):
            if pacer is not None:
                # ICMP errors are rate-limited on the way back: send at the rate they return,
                # but never wait so long that no time is left to hear the answer.
                try:
                    await asyncio.wait_for(pacer.acquire(), max(0.0, ctx.remaining() - ctx.settings.timeout))
                except asyncio.TimeoutError:
                    pass
            if attempt == 0 and pacer is not None:
                epoch = pacer.epoch
            sent = loop.time()
            transport.sendto(payload)
            # Back off like TCP: each silent try waits twice as long as the one before.
            # The first wait is the host's adaptive timeout (ICMP errors come back as fast as
            # SYN-ACKs do); a lost one is not late, it is gone: the next try asks again.
            step = ctx.step_timeout()
            while True:
                # Recomputed while waiting: once the host answers anything, the wait shrinks
                # from the full timeout to its adaptive one (checked every quarter second).
                wanted = max(ctx.settings.min_timeout, ctx.timing.timeout()) * (2**attempt)
                left = sent + min(step, wanted) - loop.time()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(proto.queue.get(), left if ctx.timing.answered else min(left, 0.25))
                except asyncio.TimeoutError:
                    continue
                if isinstance(item, BaseException):
                    if isinstance(item, (ConnectionRefusedError, ConnectionResetError)):
                        ctx.timing.observe(loop.time() - sent)
                        _paced_answer(pacer, attempt, epoch)
                        raise ProbeError(refused(ctx, port, Transport.UDP))
                    raise ProbeError(outcome_for_oserror(ctx, item, port))
                if accept is None or accept(item):
                    ctx.timing.observe(loop.time() - sent)
                    _paced_answer(pacer, attempt, epoch)
                    return item
            if ctx.remaining() <= 0:
                break
    finally:
        transport.close()
    raise ProbeError(
        inconclusive(
            Reason.NO_ANSWER,
            f"no {what} on UDP {port} from {ctx.host} in {loop.time() - started:.3g} s "
            f"({_tries(ctx)}): the port is open and ignoring us, or a firewall drops UDP {port} "
            f"between this host and {ctx.host} — UDP silence cannot tell which",
        )
    )
