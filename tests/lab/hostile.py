"""Hostile peers: servers that misbehave on purpose, for the probes' robustness tests.

Modes (TCP unless noted); each first reads what the client sends for up to 0.3 s, so
client-speaks-first protocols (TLS, SMB, HTTP) get their request out:

``garbage``        send 512 random bytes, close
``truncated``      send the start of a plausible answer (``flavor``) whose own length field
                   promises more, close
``oversized``      send random data as fast as the client reads, up to ``cap`` bytes
                   (64 MiB by default), close
``drip``           send the plausible answer one byte a second, never finishing
``silent``         accept, never send, never close (until the server's lifetime ends)
``ldap-echo``      an LDAP server whose every bind fails with invalidCredentials and a
                   diagnostic echoing the request in other cases and encodings (upper,
                   swapped case, base64, UTF-16, hex, percent-encoded): what a peer may do
                   with a password sent to it; RootDSE searches get a small entry
``ldap-flood``     an LDAP server answering a search with ``cap`` bytes of 500 KiB entries
                   for its message id (the DC-sized memory bomb), never a SearchResultDone
``udp-garbage``    (UDP) answer every datagram with 64..512 random bytes
``udp-oversized``  (UDP) answer every datagram with 8 datagrams of 65507 bytes

In-process (a thread with its own event loop; usable from sync and async tests)::

    with hostile_server("drip") as (host, port):
        ...                                   # connect to (host, port)

As a process inside a lab namespace::

    python -m tests.lab.hostile garbage --port 445 --bind 0.0.0.0 [--lifetime 120]
    proc = start_in_host(lab.hosts["h2"], "silent", 389)    # returns once it listens

Every server stops by itself after ``lifetime`` seconds (120 by default), so a test that
forgets one never leaves it running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from tests.lab.netns import Host

TCP_MODES = ("garbage", "truncated", "oversized", "drip", "silent", "ldap-echo", "ldap-flood")
LDAP_MODES = ("ldap-echo", "ldap-flood")
UDP_MODES = ("udp-garbage", "udp-oversized")
MODES = TCP_MODES + UDP_MODES
DEFAULT_CAP = 64 * 1024 * 1024
DEFAULT_LIFETIME = 120.0
UDP_MAX = 65507

# Starts of real answers whose own length fields promise more than is sent.
FLAVORS: dict[str, bytes] = {
    # TLS record, handshake type ServerHello, record length 0x4a: only 9 bytes follow.
    "tls": bytes.fromhex("160303004a020000460303") + b"\x00" * 4,
    # HTTP status line and headers announcing a 100000-byte body.
    "http": b"HTTP/1.1 200 OK\r\nServer: hostile\r\nContent-Length: 100000\r\n\r\n<html>",
    # NetBIOS session message of 0xf8 bytes carrying an SMB2 header: 12 bytes given.
    "smb": bytes.fromhex("000000f8fe534d4240000000"),
    # LDAPMessage SEQUENCE of 256 bytes, messageID 1, bindResponse tag.
    "ldap": bytes.fromhex("3084000001000201016184"),
    # TDS pre-login response header (type 4, status EOM, length 0x2f).
    "tds": bytes.fromhex("0401002f00000100"),
    # TNS packet header: length 0x40, type ACCEPT (2).
    "tns": bytes.fromhex("0040000002000000"),
}
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class HostileStats:
    connections: int = 0
    datagrams: int = 0
    bytes_sent: int = 0
    errors: list[str] = field(default_factory=list)


class HostileServer:
    """One hostile server; ``start()`` runs it in a thread, ``serve()`` in a running loop."""

    def __init__(
        self,
        mode: str,
        bind: str = "127.0.0.1",
        port: int = 0,
        udp: bool | None = None,
        lifetime: float = DEFAULT_LIFETIME,
        cap: int = DEFAULT_CAP,
        flavor: str = "tls",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {tuple(FLAVORS)}, not {flavor!r}")
        self.mode = mode
        self.udp = mode in UDP_MODES if udp is None else udp
        if self.udp != (mode in UDP_MODES):
            raise ValueError(f"mode {mode!r} is {'UDP' if mode in UDP_MODES else 'TCP'}")
        self.bind = bind
        self.port = port
        self.lifetime = lifetime
        self.cap = cap
        self.flavor = flavor
        self.stats = HostileStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- running ---------------------------------------------------------------------------
    async def serve(self, on_ready: Any = None) -> None:
        """Serve until ``stop()`` or the lifetime ends; ``on_ready(port)`` once bound."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        sock = self._socket()
        server: asyncio.base_events.Server | None = None
        transport: asyncio.DatagramTransport | None = None
        if self.udp:
            transport, _ = await self._loop.create_datagram_endpoint(lambda: _UdpHostile(self), sock=sock)
        else:
            server = await asyncio.start_server(self._handle, sock=sock)
        self.port = sock.getsockname()[1]
        if on_ready is not None:
            on_ready(self.port)
        self._ready.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), self.lifetime)
        if server is not None:
            server.close()
        if transport is not None:
            transport.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _socket(self) -> socket.socket:
        """The bound socket; ``::`` listens on IPv6 and IPv4 (dual stack)."""
        family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
        kind = socket.SOCK_DGRAM if self.udp else socket.SOCK_STREAM
        sock = socket.socket(family, kind)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, self.bind != "::")
            sock.bind((self.bind, self.port))
            if not self.udp:
                sock.listen(64)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def start(self, timeout: float = 5.0) -> tuple[str, int]:
        """Run in a daemon thread with its own event loop; returns (bind address, port)."""
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.serve()), name=f"hostile-{self.mode}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"hostile {self.mode} server did not start")
        return self.bind, self.port

    def stop(self, timeout: float = 5.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already finished
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- behaviour -------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self.stats.connections += 1
        try:
            if self.mode in LDAP_MODES:
                await _ldap_peer(self, reader, writer)
                return
            if self.mode != "silent":
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(reader.read(4096), 0.3)
            await getattr(self, "_tcp_" + self.mode)(writer)
        except (ConnectionError, OSError) as exc:
            self.stats.errors.append(type(exc).__name__)  # the client gave up: expected
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.stats.bytes_sent += len(data)

    async def _tcp_garbage(self, writer: asyncio.StreamWriter) -> None:
        await self._send(writer, os.urandom(512))

    async def _tcp_truncated(self, writer: asyncio.StreamWriter) -> None:
        await self._send(writer, FLAVORS[self.flavor])

    async def _tcp_oversized(self, writer: asyncio.StreamWriter) -> None:
        chunk = os.urandom(64 * 1024)
        sent = 0
        while sent < self.cap:
            piece = chunk[: self.cap - sent]
            await self._send(writer, piece)
            sent += len(piece)

    async def _tcp_drip(self, writer: asyncio.StreamWriter) -> None:
        payload = FLAVORS[self.flavor]
        i = 0
        while True:  # ends with the lifetime (task cancelled) or the client closing
            await self._send(writer, payload[i % len(payload) : i % len(payload) + 1])
            i += 1
            await asyncio.sleep(1.0)

    async def _tcp_silent(self, writer: asyncio.StreamWriter) -> None:
        assert self._stop is not None
        await self._stop.wait()


def _echoes(data: bytes) -> str:
    """`data` (a request that may hold a password) in the forms a careless server might echo."""
    import base64
    import urllib.parse

    text = data.decode("latin-1")
    return " | ".join((
        text.upper(), text.swapcase(), base64.b64encode(data).decode(), data.hex(), data.hex().upper(),
        data.decode("latin-1").encode("utf-16-le").decode("latin-1"), urllib.parse.quote(text),
        " ".join(text),
    ))  # fmt: skip


async def _ldap_peer(server: HostileServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The LDAP modes: read whole LDAPMessages, answer by protocolOp."""
    from scanner.wire import ldap as wire

    while True:
        try:
            head = await reader.readexactly(2)
            extra = b""
            if head[1] & 0x80:
                extra = await reader.readexactly(head[1] & 0x7F)
            length = int.from_bytes(extra, "big") if extra else head[1]
            request = head + extra + await reader.readexactly(min(length, 1 << 20))
            msg = wire.parse_message(request)
        except (asyncio.IncompleteReadError, wire.BerError):
            return  # the client went away or spoke no LDAP
        if msg.op == wire.SEARCH_REQUEST and server.mode == "ldap-flood":
            value = wire.octets(os.urandom(500 * 1024))
            attr = wire.sequence(wire.octets("junk"), wire.sequence(value, tag=0x31))
            entry = wire.message(msg.message_id, wire.tlv(wire.SEARCH_ENTRY, wire.octets("") + wire.sequence(attr)))
            sent = 0
            try:
                while sent < server.cap:
                    await server._send(writer, entry)
                    sent += len(entry)
                await asyncio.sleep(30)
            finally:
                writer.transport.abort()  # unsent megabytes: do not wait to flush them
            return
        if msg.op == wire.SEARCH_REQUEST:
            attrs = wire.sequence(wire.octets("defaultNamingContext"), wire.sequence(wire.octets("DC=h,DC=test"), tag=0x31))
            entry = wire.message(msg.message_id, wire.tlv(wire.SEARCH_ENTRY, wire.octets("") + wire.sequence(attrs)))
            done = wire.message(msg.message_id, wire.tlv(wire.SEARCH_DONE, wire.integer(0, 0x0A) + wire.octets("") * 2))
            await server._send(writer, entry + done)
        elif msg.op == wire.BIND_REQUEST:
            said = "80090308: LdapErr: DSID-0C09041C, comment: AcceptSecurityContext error, data 52e, v4563 " + _echoes(request)
            body = wire.integer(49, 0x0A) + wire.octets("") + wire.octets(said.encode("utf-8"))
            await server._send(writer, wire.message(msg.message_id, wire.tlv(wire.BIND_RESPONSE, body)))
        else:
            return


class _UdpHostile(asyncio.DatagramProtocol):
    def __init__(self, server: HostileServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        stats = self.server.stats
        stats.datagrams += 1
        assert self.transport is not None
        if self.server.mode == "udp-garbage":
            answers = [os.urandom(random.randint(64, 512))]
        else:
            answers = [os.urandom(UDP_MAX)] * 8
        for answer in answers:
            if stats.bytes_sent + len(answer) > self.server.cap:
                return
            self.transport.sendto(answer, addr)
            stats.bytes_sent += len(answer)

    def error_received(self, exc: Exception) -> None:
        self.server.stats.errors.append(type(exc).__name__)


@contextlib.contextmanager
def hostile_server(
    mode: str,
    port: int = 0,
    udp: bool | None = None,
    bind: str = "127.0.0.1",
    lifetime: float = DEFAULT_LIFETIME,
    cap: int = DEFAULT_CAP,
    flavor: str = "tls",
) -> Iterator[tuple[str, int]]:
    """An in-process hostile server on loopback; yields (address, port), stops on exit."""
    server = HostileServer(mode, bind, port, udp, lifetime, cap, flavor)
    address = server.start()
    try:
        yield address
    finally:
        server.stop()


def start_in_host(
    host: Host,
    mode: str,
    port: int,
    bind: str = "::",
    lifetime: float = DEFAULT_LIFETIME,
    flavor: str = "tls",
    timeout: float = 10.0,
) -> subprocess.Popen[bytes]:
    """Run ``python -m tests.lab.hostile`` inside a lab host; returns once it is bound."""
    argv = [
        sys.executable, "-m", "tests.lab.hostile", mode, "--port", str(port),
        "--bind", bind, "--lifetime", str(lifetime), "--flavor", flavor,
    ]  # fmt: skip
    proc = host.popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    ready: list[bytes] = []
    reader = threading.Thread(target=lambda: ready.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not ready or not ready[0].startswith(b"READY"):
        proc.kill()
        raise RuntimeError(f"hostile {mode} did not start in {host.netns}")
    return proc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.hostile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--lifetime", type=float, default=DEFAULT_LIFETIME)
    parser.add_argument("--cap", type=int, default=DEFAULT_CAP)
    parser.add_argument("--flavor", choices=tuple(FLAVORS), default="tls")
    args = parser.parse_args(argv)
    server = HostileServer(args.mode, args.bind, args.port, None, args.lifetime, args.cap, args.flavor)

    def ready(port: int) -> None:
        print(f"READY {port}", flush=True)

    asyncio.run(server.serve(on_ready=ready))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
