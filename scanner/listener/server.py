"""The listener: binds the inbound ports (UDP and TCP, IPv4 and IPv6) and records arrivals.

    listener = Listener([Binding(Transport.UDP, 514, "0.0.0.0"), Binding(Transport.UDP, 514, "::")])
    await listener.start()               # failures per binding in listener.failed
    await listener.wait(until=lambda: ..., deadline=loop.time() + 60)
    await listener.stop()
    listener.store.records               # (protocol, port, source) -> SourceRecord

What it keeps is bounded and counted, whatever arrives. Expected sources (`store.expected`)
are always recorded; other addresses get at most `max_strangers` records, and the rest is
summed per port in `store.overflow`. A source keeps two raw samples of at most
`sample_bytes`, at most `max_tags_per_source` distinct test tags (every tagged message is
still counted in `tagged`). TCP connections are counted while OPEN: at most
`max_connections` at a time and `max_connections_per_source` from one address; at a cap,
the stalest connection (idle, or dripping a frame that never completes) is shed first and a
new one is refused (TCP reset) only when every open one is busy. A frame must complete
within `frame_timeout` and a connection may stay silent `idle_timeout`; a connection
holds at most one frame of `max_frame` bytes and all connections together `max_buffered`.
Every loss is counted in `store.drops` and on the affected source's record (`losses`).
Nothing received is executed or interpreted: it is framed, searched for a test tag and
kept as bytes; syslog fields are parsed only when a report asks (`SourceRecord.samples`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import socket
import struct
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable, Iterable

from scanner.listener.store import (  # noqa: F401 - re-exported: the listener's public names
    MAX_STRANGERS,
    ArrivalStore,
    Overflow,
    Sample,
    SourceRecord,
    TagSeen,
    normalize_address,
)
from scanner.listener.syslog import MAX_FRAME, TcpFramer
from scanner.models import Transport

UDP_RCVBUF = 16 * 1024 * 1024  # absorbs bursts while the loop is busy elsewhere
_UDP_BATCH = 1024  # datagrams read per wake-up before yielding to the loop
MAX_CONNECTIONS = 4096
MAX_CONNECTIONS_PER_SOURCE = 1024  # one address never takes more than a quarter
IDLE_TIMEOUT = 300.0  # a syslog sender may keep one connection open between rare events
FRAME_TIMEOUT = 10.0  # a started frame must be complete by then (one byte a second is not)
SHED_AFTER = 2.0  # at a cap, a connection without a complete frame for this long may be shed
MAX_BUFFERED = 64 * 1024 * 1024  # partial frames of all connections together
_SWEEP = 0.5  # seconds between deadline checks
_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None) if sys.platform.startswith("linux") else None
_TCP_CLOSE_WAIT = 8  # tcp_states.h


@dataclass(frozen=True)
class Binding:
    protocol: Transport
    port: int
    address: str  # "0.0.0.0", "::" or a specific local address

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.protocol.value.upper()} {host}:{self.port}"


def _open_socket(binding: Binding, rcvbuf: int, backlog: int = 4096) -> socket.socket:
    family = socket.AF_INET6 if ":" in binding.address else socket.AF_INET
    kind = socket.SOCK_DGRAM if binding.protocol is Transport.UDP else socket.SOCK_STREAM
    sock = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:
            # IPv4 gets its own socket, so "::" must not also claim IPv4.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM and sys.platform != "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if kind == socket.SOCK_DGRAM:
            force = getattr(socket, "SO_RCVBUFFORCE", None)
            try:
                sock.setsockopt(socket.SOL_SOCKET, force if force is not None else socket.SO_RCVBUF, rcvbuf)
            except OSError:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((binding.address, binding.port))
        if kind == socket.SOCK_STREAM:
            sock.listen(backlog)  # the kernel caps it at net.core.somaxconn
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_error_text(binding: Binding, exc: OSError) -> str:
    if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)):
        return f"{binding} is in use by another process"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{binding}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{binding}: this host has no such address"
    if exc.errno == errno.EAFNOSUPPORT:
        return f"{binding}: this host has no IPv6"
    return f"{binding}: {exc.strerror or exc}"


def udp_kernel_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped for this socket (receive buffer full); Linux only."""
    try:
        inode = os.fstat(sock.fileno()).st_ino
    except OSError:
        return None
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(path) as fh:
                next(fh, None)
                for line in fh:
                    cols = line.split()
                    if len(cols) >= 13 and cols[9] == str(inode):
                        return int(cols[12])
        except (OSError, ValueError):
            continue
    return None


class _UdpProtocol(asyncio.DatagramProtocol):
    """Fallback for loops without add_reader (Windows' proactor)."""

    def __init__(self, listener: Listener, binding: Binding) -> None:
        self.listener = listener
        self.binding = binding

    def datagram_received(self, data: bytes, addr: tuple[str, int] | tuple[str, int, int, int]) -> None:
        self.listener._datagram(self.binding, data, addr[0])


def _reset(transport: asyncio.BaseTransport) -> None:
    """Close with a TCP reset (SO_LINGER 0), so the sender learns its data was not taken."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    abort = getattr(transport, "abort", None)
    if abort is not None:
        abort()
    else:
        transport.close()


class _Connection(asyncio.Protocol):
    """One TCP connection: frames what arrives, records each message, keeps its deadlines."""

    def __init__(self, listener: Listener, binding: Binding) -> None:
        self.listener = listener
        self.binding = binding
        self.source = "?"
        self.transport: asyncio.Transport | None = None
        self.framer = TcpFramer(listener.max_frame)
        self.opened = self.last_data = self.last_frame = 0.0
        self.partial_since: float | None = None  # when the frame now arriving began
        self.buffered = 0
        self.done = False
        self.parked_at: float | None = None  # waiting for a slot, reading paused

    # -- asyncio callbacks ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream server gives a Transport
        peer = transport.get_extra_info("peername")
        self.source = normalize_address(str(peer[0])) if peer else "?"
        self.opened = self.last_data = self.last_frame = time.monotonic()
        self.listener._admit(self)

    def data_received(self, data: bytes) -> None:
        if self.done:
            return
        now = time.monotonic()
        self.last_data = now
        frames = self.framer.feed(data)
        if frames:
            self.last_frame = now
            self._record(frames)
        buffered = self.framer.buffered
        self.listener._buffered += buffered - self.buffered
        self.buffered = buffered
        if not self.framer.in_frame:
            self.partial_since = None
        elif self.partial_since is None or frames:
            self.partial_since = now
        if self.listener._buffered > self.listener.max_buffered:
            self.listener._relieve_memory()

    def eof_received(self) -> bool:
        self.finish()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.finish()

    # -- ours -------------------------------------------------------------------------
    def _record(self, frames: list[bytes]) -> None:
        record = self.listener.store.record
        wall = time.time()
        for frame in frames:
            record(Transport.TCP, self.binding.port, self.source, "message", frame, now=wall)

    def finish(self, cut: bool = False) -> None:
        """The stream ended (`cut`: we end it): what is whole is counted, what is cut is truncated."""
        if self.done:
            return
        self.done = True
        frames = self.framer.flush(cut=cut)
        if frames:
            self._record(frames)
        loss = functools.partial(self.listener.store.loss, Transport.TCP, self.binding.port, self.source)
        loss("frames_truncated", self.framer.truncated)
        loss("frames_miscounted", self.framer.miscounted)
        loss("tcp_bytes_discarded", self.framer.discarded_bytes)
        loss("lines_unterminated", self.framer.unterminated)  # counted as messages; said so
        self.listener._buffered -= self.buffered
        self.buffered = 0
        self.listener._release(self)

    def shed(self, why: str) -> None:
        """End this connection ourselves (deadline, cap, memory): reset, count why."""
        if self.done:
            return
        self.listener.store.loss(Transport.TCP, self.binding.port, self.source, why)
        self.finish(cut=True)
        if self.transport is not None:
            _reset(self.transport)

    def staleness(self, now: float) -> float:
        return now - self.last_frame

    def peer_closed(self) -> bool:
        """The sender already closed (TCP CLOSE_WAIT): its rest is in our buffer, being read.

        Such a connection no longer counts against a cap: a sender that reconnects at once
        must not find its own closed connections in the way. Linux only (TCP_INFO).
        """
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None or _TCP_INFO is None:
            return False
        try:
            return sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 1)[0] == _TCP_CLOSE_WAIT
        except (OSError, IndexError):
            return False


def _live(conns: Iterable[_Connection]) -> int:
    return sum(1 for c in conns if not c.peer_closed())


class Listener:
    """UDP and TCP listener with async start()/stop(); see the module docstring."""

    def __init__(
        self,
        bindings: list[Binding],
        *,
        store: ArrivalStore | None = None,
        max_connections: int = MAX_CONNECTIONS,
        max_connections_per_source: int = MAX_CONNECTIONS_PER_SOURCE,
        idle_timeout: float = IDLE_TIMEOUT,
        frame_timeout: float = FRAME_TIMEOUT,
        shed_after: float = SHED_AFTER,
        max_frame: int = MAX_FRAME,
        max_buffered: int = MAX_BUFFERED,
        rcvbuf: int = UDP_RCVBUF,
    ) -> None:
        self.bindings = list(dict.fromkeys(bindings))
        self.store = store or ArrivalStore()
        self.max_connections = max_connections
        self.max_connections_per_source = max_connections_per_source
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.shed_after = shed_after
        self.max_frame = max_frame
        self.max_buffered = max_buffered
        self.rcvbuf = rcvbuf
        self.bound: list[Binding] = []
        self.failed: dict[Binding, OSError] = {}
        self.notes: list[str] = []
        self.news = asyncio.Event()
        self.store.on_news = self.news.set
        self.kernel_drops: dict[Binding, int] = {}
        self.peak_connections = 0
        self.parked_total = 0  # connections that waited for a slot (not a loss)
        self._sockets: dict[Binding, socket.socket] = {}
        self._readers: list[int] = []
        self._udp_by_reader: set[Binding] = set()
        self._transports: list[asyncio.BaseTransport] = []
        self._servers: list[asyncio.AbstractServer] = []
        self._open: set[_Connection] = set()
        self._per_source: dict[str, set[_Connection]] = {}
        self._parked: deque[_Connection] = deque()
        # A parked connection costs a socket, no buffer; per source no more than it may open.
        self.max_parked = max(64, max_connections // 2)
        self.max_parked_per_source = max(16, max_connections_per_source)
        self._parked_per_source: Counter[str] = Counter()
        self._admitting = False
        self._buffered = 0
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def start(self) -> None:
        """Bind every binding; the ones that fail are in `failed` (the others still run)."""
        self._loop = loop = asyncio.get_running_loop()
        if any(b.protocol is Transport.TCP for b in self.bindings):
            self._fit_file_limit()
        for binding in self.bindings:
            try:
                sock = _open_socket(binding, self.rcvbuf, min(self.max_connections, 65535))
            except OSError as exc:
                self.failed[binding] = exc
                continue
            self._sockets[binding] = sock
            if binding.protocol is Transport.UDP:
                try:
                    loop.add_reader(sock.fileno(), self._udp_ready, sock, binding)
                    self._readers.append(sock.fileno())
                    self._udp_by_reader.add(binding)
                except NotImplementedError:
                    transport, _ = await loop.create_datagram_endpoint(
                        functools.partial(_UdpProtocol, self, binding), sock=sock
                    )
                    self._transports.append(transport)
            else:
                server = await loop.create_server(
                    functools.partial(_Connection, self, binding), sock=sock,
                    backlog=min(self.max_connections, 65535),
                )  # fmt: skip
                self._servers.append(server)
                if self._sweeper is None:
                    self._sweeper = asyncio.create_task(self._sweep())
            self.bound.append(binding)

    def _fit_file_limit(self) -> None:
        """Raise the soft open-files limit if we may; else take fewer connections, and say so."""
        if sys.platform == "win32":  # no such per-process limit on sockets (and no `resource`)
            return
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = self.max_connections + 256
        if soft != resource.RLIM_INFINITY and soft < need:
            target = need if hard == resource.RLIM_INFINITY else min(need, hard)
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
        if soft != resource.RLIM_INFINITY and soft < need:
            fit = max(16, soft - 256)
            self.notes.append(
                f"the open-files limit ({soft}) allows {fit} TCP connections, not {self.max_connections}: "
                "raise it (ulimit -n) to take more at once"
            )
            self.max_connections = fit
            self.max_connections_per_source = min(self.max_connections_per_source, fit)

    async def stop(self) -> None:
        """Stop listening, count what open connections hold, end them, record kernel drops."""
        loop = self._loop or asyncio.get_running_loop()
        for server in self._servers:
            server.close()  # no new connections; what the open ones hold is still read below
        for _ in range(3):
            await asyncio.sleep(0)  # let reads already signalled run (their data arrived before the stop)
        for binding, sock in self._sockets.items():
            if binding.protocol is Transport.UDP:
                if binding in self._udp_by_reader:
                    for _ in range(16):  # datagrams the kernel already holds arrived: count them
                        if not self._udp_ready(sock, binding):
                            break
                drops = udp_kernel_drops(sock)
                if drops:
                    self.kernel_drops[binding] = drops
                    self.store.loss(Transport.UDP, binding.port, None, "udp_kernel_drops", drops)
        for fd in self._readers:
            loop.remove_reader(fd)
        self._readers.clear()
        for transport in self._transports:
            transport.close()
        self._transports.clear()
        for server in self._servers:
            server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for conn in list(self._parked):
            self._unqueue(conn)
            self._refuse(conn, "connections_parked_at_stop")  # never read: the kernel held its data
        for conn in list(self._open):
            conn.finish(cut=True)  # whole frames still held are counted; a cut one is truncated
            if conn.transport is not None:
                conn.transport.abort()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        self._servers.clear()
        for binding, sock in self._sockets.items():
            if binding.protocol is Transport.UDP:
                sock.close()
        self._sockets.clear()

    async def __aenter__(self) -> Listener:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait(self, until: Callable[[], bool], deadline: float) -> bool:
        """Wait until `until()` holds (checked on every new source or tag) or the deadline."""
        loop = asyncio.get_running_loop()
        while True:
            if until():
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self.news.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.news.wait(), remaining)

    # -- receiving ---------------------------------------------------------------------
    def _datagram(self, binding: Binding, data: bytes, address: str) -> None:
        self.store.record(Transport.UDP, binding.port, normalize_address(address), "datagram", data)

    def _udp_ready(self, sock: socket.socket, binding: Binding) -> bool:
        record = self.store.record
        port = binding.port
        now = time.time()
        for _ in range(_UDP_BATCH):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                # ICMP errors surface here on some systems; they are not arrivals.
                self.store.drops["udp_receive_errors"] += 1
                return False
            record(Transport.UDP, port, normalize_address(addr[0]), "datagram", data, now=now)
        return True  # more may be waiting

    # -- connection accounting -----------------------------------------------------------
    def _admit(self, conn: _Connection) -> None:
        """Take a new connection; at a cap shed the stalest open one, else park this one.

        A sender that closes and reconnects at once can find its old connection still
        open here (its FIN not read yet): parking the new one with reading paused keeps
        its data in the kernel until a slot frees, so a cap costs time, not messages.
        Only when the parking is full too is the connection refused with a reset.
        """
        port, source = conn.binding.port, conn.source
        self.store.record(Transport.TCP, port, source, "connection")
        full = self._full(source)
        if full:
            victim = self._stalest(self._per_source.get(source, set()) if full.endswith("source_cap") else self._open)
            if victim is not None:
                self._admitting = True
                try:
                    victim.shed("connections_shed")
                finally:
                    self._admitting = False
            elif len(self._parked) < self.max_parked and self._parked_per_source[source] < self.max_parked_per_source:
                assert conn.transport is not None
                conn.transport.pause_reading()
                conn.parked_at = time.monotonic()
                self._parked.append(conn)
                self._parked_per_source[source] += 1
                self.parked_total += 1
                return
            else:
                self._refuse(conn, full)
                return
        self._register(conn)

    def _full(self, source: str) -> str:
        """Which cap a new connection from `source` meets, counting only OPEN connections."""
        mine = self._per_source.get(source, ())
        if len(mine) >= self.max_connections_per_source and _live(mine) >= self.max_connections_per_source:
            return "connections_over_source_cap"
        if len(self._open) >= self.max_connections and (
            len(self._open) >= 2 * self.max_connections or _live(self._open) >= self.max_connections
        ):
            return "connections_over_cap"
        return ""

    def _register(self, conn: _Connection) -> None:
        self._open.add(conn)
        self._per_source.setdefault(conn.source, set()).add(conn)
        self.peak_connections = max(self.peak_connections, len(self._open))

    def _refuse(self, conn: _Connection, why: str) -> None:
        """Nothing of it was read: a reset tells the sender, and the loss is counted."""
        conn.done = True
        self.store.loss(Transport.TCP, conn.binding.port, conn.source, why)
        if conn.transport is not None:
            _reset(conn.transport)

    def _release(self, conn: _Connection) -> None:
        if conn.parked_at is not None:
            self._unqueue(conn)
            return
        self._open.discard(conn)
        mine = self._per_source.get(conn.source)
        if mine is not None:
            mine.discard(conn)
            if not mine:
                del self._per_source[conn.source]
        if self._parked and not self._admitting:
            self._unpark()

    def _unqueue(self, conn: _Connection) -> None:
        with contextlib.suppress(ValueError):
            self._parked.remove(conn)
        conn.parked_at = None
        self._parked_per_source[conn.source] -= 1
        if self._parked_per_source[conn.source] <= 0:
            del self._parked_per_source[conn.source]

    def _unpark(self) -> None:
        """Give free slots to parked connections, oldest first."""
        for conn in list(self._parked):
            if len(self._open) >= self.max_connections:
                return
            if conn.done or self._full(conn.source):
                continue
            self._unqueue(conn)
            conn.last_frame = conn.last_data = time.monotonic()
            self._register(conn)
            if conn.transport is not None:
                conn.transport.resume_reading()

    def _stalest(self, conns: set[_Connection]) -> _Connection | None:
        """The connection longest without a complete frame, if that is over `shed_after`."""
        now = time.monotonic()
        best = max(conns, key=lambda c: c.staleness(now), default=None)
        return best if best is not None and best.staleness(now) >= self.shed_after else None

    def _relieve_memory(self) -> None:
        """Partial frames past `max_buffered`: shed the oldest partial frames until under."""
        holders = sorted((c for c in self._open if c.buffered), key=lambda c: c.partial_since or 0.0)
        for conn in holders:
            if self._buffered <= self.max_buffered * 3 // 4:
                break
            conn.shed("connections_shed_memory")

    async def _sweep(self) -> None:
        """Per-connection read deadlines: a frame must complete, silence must end."""
        while True:
            await asyncio.sleep(_SWEEP)
            now = time.monotonic()
            while self._parked and now - (self._parked[0].parked_at or now) > self.frame_timeout:
                conn = self._parked[0]
                self._unqueue(conn)
                self._refuse(conn, self._full(conn.source) or "connections_over_cap")
            for conn in list(self._open):
                if conn.partial_since is not None and now - conn.partial_since > self.frame_timeout:
                    conn.shed("connections_closed_slow")
                elif now - conn.last_data > self.idle_timeout:
                    conn.shed("connections_idle_closed")
