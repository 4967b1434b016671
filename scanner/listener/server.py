"""The listener: binds the inbound ports (UDP and TCP, IPv4 and IPv6) and records arrivals.

    listener = Listener([Binding(Transport.UDP, 514, "0.0.0.0"), Binding(Transport.UDP, 514, "::")])
    await listener.start()               # failures per binding in listener.failed
    await listener.wait(until=lambda: ..., deadline=loop.time() + 60)
    await listener.stop()
    listener.store.records               # (protocol, port, source) -> SourceRecord

What it keeps is bounded and counted, whatever arrives: at most `max_sources` source
records, two raw samples of at most `sample_bytes` each per source, at most
`max_tags_per_source` / `max_tags_total` distinct test tags, `max_connections` TCP
connections at a time (`max_connections_per_source` from one address), one frame of
`max_frame` bytes per connection. What does not fit is counted in `store.drops`.
Nothing received is executed or interpreted: it is framed, searched for a test tag and
kept as bytes; syslog fields are parsed only when a report asks (`SourceRecord.samples`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import os
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from scanner.listener.syslog import MAX_FRAME, SyslogMessage, TcpFramer, parse_syslog
from scanner.listener.tag import SEARCH_WINDOW, Tag, find_tag
from scanner.models import Transport

UDP_RCVBUF = 16 * 1024 * 1024  # absorbs bursts while the loop is busy elsewhere
_UDP_BATCH = 1024  # datagrams read per wake-up before yielding to the loop


@dataclass(frozen=True)
class Binding:
    protocol: Transport
    port: int
    address: str  # "0.0.0.0", "::" or a specific local address

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.protocol.value.upper()} {host}:{self.port}"


@dataclass
class TagSeen:
    tag: Tag
    count: int
    first: float
    last: float


@dataclass
class Sample:
    time: float
    kind: str  # "datagram", "message" or "connection"
    size: int
    raw: bytes  # at most sample_bytes

    def syslog(self) -> SyslogMessage | None:
        if self.kind == "connection" or not self.raw:
            return None
        return parse_syslog(self.raw)


@dataclass
class SourceRecord:
    """Everything kept about one source address on one port."""

    protocol: Transport
    port: int
    source: str
    first: float
    last: float
    count: int = 0  # datagrams + messages + connections
    datagrams: int = 0
    connections: int = 0
    messages: int = 0
    byte_count: int = 0
    first_sample: Sample | None = None
    tags: dict[str, TagSeen] = field(default_factory=dict)
    via: str = "socket"  # "socket" or "capture"
    # The last arrival, kept as plain fields: building a Sample per datagram costs a flood dearly.
    last_raw: bytes | None = None
    last_kind: str = ""
    last_size: int = 0

    @property
    def last_sample(self) -> Sample | None:
        if self.last_raw is None:
            return None
        return Sample(self.last, self.last_kind, self.last_size, self.last_raw)

    @property
    def samples(self) -> list[Sample]:
        return [s for s in (self.first_sample, self.last_sample) if s is not None]


_NORMALIZED: dict[str, str] = {}


def normalize_address(address: str) -> str:
    """'::ffff:198.18.1.2' -> '198.18.1.2', 'fe80::1%eth0' -> 'fe80::1' (cached: floods repeat)."""
    cached = _NORMALIZED.get(address)
    if cached is not None:
        return cached
    if len(_NORMALIZED) >= 4096:
        _NORMALIZED.clear()
    _NORMALIZED[address] = result = _normalize(address)
    return result


def _normalize(address: str) -> str:
    address = address.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class ArrivalStore:
    """Bounded record of what arrived; safe to call from the event loop thread only."""

    def __init__(
        self,
        *,
        max_sources: int = 4096,
        max_tags_per_source: int = 1024,
        max_tags_total: int = 65536,
        sample_bytes: int = 2048,
        on_news: Callable[[], None] | None = None,
    ) -> None:
        self.max_sources = max_sources
        self.max_tags_per_source = max_tags_per_source
        self.max_tags_total = max_tags_total
        self.sample_bytes = sample_bytes
        self.records: dict[tuple[Transport, int, str], SourceRecord] = {}
        self.drops: Counter[str] = Counter()
        self.total = 0
        self.tags_kept = 0
        self.on_news = on_news  # called when a new source or a new tag appears

    def record(
        self,
        protocol: Transport,
        port: int,
        source: str,
        kind: str,
        data: bytes = b"",
        size: int | None = None,
        now: float | None = None,
        via: str = "socket",
    ) -> None:
        now = time.time() if now is None else now
        size = len(data) if size is None else size
        self.total += 1
        key = (protocol, port, source)
        rec = self.records.get(key)
        news = False
        if rec is None:
            if len(self.records) >= self.max_sources:
                self.drops["sources_over_cap"] += 1
                return
            rec = self.records[key] = SourceRecord(protocol, port, source, now, now, via=via)
            news = True
        rec.last = now
        rec.count += 1
        rec.byte_count += size
        if kind == "datagram":
            rec.datagrams += 1
        elif kind == "connection":
            rec.connections += 1
        else:
            rec.messages += 1
        first = rec.first_sample
        if first is None or (first.kind == "connection" and kind != "connection"):
            rec.first_sample = Sample(now, kind, size, bytes(data[: self.sample_bytes]))
        elif kind != "connection":
            rec.last_raw = data if len(data) <= self.sample_bytes else data[: self.sample_bytes]
            rec.last_kind = kind
            rec.last_size = size
        if data and b"portready-test" in data[:SEARCH_WINDOW]:
            tag = find_tag(data)
            if tag is not None:
                seen = rec.tags.get(tag.nonce)
                if seen is not None and seen.tag == tag:
                    seen.count += 1
                    seen.last = now
                elif len(rec.tags) >= self.max_tags_per_source or self.tags_kept >= self.max_tags_total:
                    self.drops["tags_over_cap"] += 1
                else:
                    rec.tags[tag.nonce] = TagSeen(tag, 1, now, now)
                    self.tags_kept += 1
                    news = True
        if news and self.on_news is not None:
            self.on_news()

    def tags(self) -> list[tuple[SourceRecord, TagSeen]]:
        return [(rec, seen) for rec in self.records.values() for seen in rec.tags.values()]


def _open_socket(binding: Binding, rcvbuf: int) -> socket.socket:
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
            sock.listen(256)
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


class Listener:
    """UDP and TCP listener with async start()/stop(); see the module docstring."""

    def __init__(
        self,
        bindings: list[Binding],
        *,
        store: ArrivalStore | None = None,
        max_connections: int = 256,
        max_connections_per_source: int = 32,
        idle_timeout: float = 30.0,
        max_frame: int = MAX_FRAME,
        rcvbuf: int = UDP_RCVBUF,
    ) -> None:
        self.bindings = list(dict.fromkeys(bindings))
        self.store = store or ArrivalStore()
        self.max_connections = max_connections
        self.max_connections_per_source = max_connections_per_source
        self.idle_timeout = idle_timeout
        self.max_frame = max_frame
        self.rcvbuf = rcvbuf
        self.bound: list[Binding] = []
        self.failed: dict[Binding, OSError] = {}
        self.news = asyncio.Event()
        self.store.on_news = self.news.set
        self.kernel_drops: dict[Binding, int] = {}
        self._sockets: dict[Binding, socket.socket] = {}
        self._readers: list[int] = []
        self._transports: list[asyncio.BaseTransport] = []
        self._servers: list[asyncio.AbstractServer] = []
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._per_source: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Bind every binding; the ones that fail are in `failed` (the others still run)."""
        self._loop = loop = asyncio.get_running_loop()
        for binding in self.bindings:
            try:
                sock = _open_socket(binding, self.rcvbuf)
            except OSError as exc:
                self.failed[binding] = exc
                continue
            self._sockets[binding] = sock
            if binding.protocol is Transport.UDP:
                try:
                    loop.add_reader(sock.fileno(), self._udp_ready, sock, binding)
                    self._readers.append(sock.fileno())
                except NotImplementedError:
                    transport, _ = await loop.create_datagram_endpoint(
                        functools.partial(_UdpProtocol, self, binding), sock=sock
                    )
                    self._transports.append(transport)
            else:
                server = await asyncio.start_server(
                    functools.partial(self._accept, binding), sock=sock, limit=self.max_frame
                )
                self._servers.append(server)
            self.bound.append(binding)

    async def stop(self) -> None:
        """Stop listening, end every connection, record kernel drop counts."""
        loop = self._loop or asyncio.get_running_loop()
        for binding, sock in self._sockets.items():
            if binding.protocol is Transport.UDP:
                drops = udp_kernel_drops(sock)
                if drops:
                    self.kernel_drops[binding] = drops
                    self.store.drops["udp_kernel_drops"] += drops
        for fd in self._readers:
            loop.remove_reader(fd)
        self._readers.clear()
        for transport in self._transports:
            transport.close()
        self._transports.clear()
        for server in self._servers:
            server.close()
        # Abort rather than cancel: a cancelled connection task makes asyncio's stream
        # callback log an error; an aborted transport ends the read loop cleanly.
        for writer in list(self._writers):
            writer.transport.abort()
        if self._conn_tasks:
            await asyncio.wait(set(self._conn_tasks), timeout=2.0)
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

    def _udp_ready(self, sock: socket.socket, binding: Binding) -> None:
        record = self.store.record
        port = binding.port
        now = time.time()
        for _ in range(_UDP_BATCH):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # ICMP errors surface here on some systems; they are not arrivals.
                self.store.drops["udp_receive_errors"] += 1
                return
            record(Transport.UDP, port, normalize_address(addr[0]), "datagram", data, now=now)

    async def _accept(self, binding: Binding, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        peer = writer.get_extra_info("peername")
        source = normalize_address(str(peer[0])) if peer else "?"
        self.store.record(Transport.TCP, binding.port, source, "connection")
        if (
            len(self._conn_tasks) >= self.max_connections
            or self._per_source[source] >= self.max_connections_per_source
        ):
            self.store.drops["connections_over_cap"] += 1
            writer.close()
            return
        if task is not None:
            self._conn_tasks.add(task)
        self._writers.add(writer)
        self._per_source[source] += 1
        framer = TcpFramer(self.max_frame)
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), self.idle_timeout)
                except asyncio.TimeoutError:
                    self.store.drops["connections_idle_closed"] += 1
                    break
                if not chunk:
                    last = framer.flush()
                    if last:
                        self.store.record(Transport.TCP, binding.port, source, "message", last)
                    break
                for frame in framer.feed(chunk):
                    self.store.record(Transport.TCP, binding.port, source, "message", frame)
        except (ConnectionError, OSError):
            pass
        finally:
            self.store.drops["frames_truncated"] += framer.truncated
            self.store.drops["tcp_bytes_discarded"] += framer.discarded_bytes
            self._per_source[source] -= 1
            if self._per_source[source] <= 0:
                del self._per_source[source]
            if task is not None:
                self._conn_tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
