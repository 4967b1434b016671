"""Protocol simulators for the portready lab: peers that Debian does not ship.

Each simulator stands in for one real server and answers the first exchange of its
protocol byte for byte as that server does (the module docstrings name the server and
the specification sections):

- ``winrm``   Windows Remote Management (WS-Management over HTTP 5985 / HTTPS 5986)
- ``tds``     SQL Server TDS PRELOGIN (1433) and the SQL Server Browser (UDP 1434)
- ``tns``     Oracle TNS listener (1521, TLS on 2484)
- ``vsphere`` VMware vCenter vSphere Web Services SDK (HTTPS 443, ``/sdk``)
- ``papi``    Dell PowerScale (Isilon) OneFS Platform API (HTTPS 8080)

In process (tests bind 127.0.0.1, port 0 picks a free port)::

    async with TnsListener(services={"ORCL"}) as srv:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)

In a network namespace (prints ``ready HOST PORT`` once listening, exits after
``--lifetime`` seconds)::

    python -m tests.lab.simulators tns --bind 198.18.0.2 --port 1521 --service ORCL

This module holds what all simulators share: the server lifecycle with bounded
connections, bounded reads, and a small bounded HTTP/1.1 server used by the HTTP
based simulators. Hostile clients (garbage, truncated, oversized, slow drip, never
closing) end their own connection and never the simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing.Self is 3.11+; only annotations use it
    from typing_extensions import Self

__all__ = [
    "HttpError",
    "HttpRequest",
    "HttpResponse",
    "HttpSimulator",
    "Lifecycle",
    "TcpSimulator",
    "read_exactly",
    "server_ssl_context",
]

# Limits that keep a hostile client from costing more than a few KiB and seconds.
DEFAULT_IDLE_TIMEOUT = 10.0  # seconds a read may wait for the next bytes
DEFAULT_CONNECTION_LIFETIME = 60.0  # seconds a single connection may last in all
DEFAULT_MAX_CONNECTIONS = 256
MAX_HTTP_HEAD = 16 * 1024
MAX_HTTP_BODY = 256 * 1024


def server_ssl_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """A TLS server context from PEM files (tests make them with ``trustme``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context


async def read_exactly(reader: asyncio.StreamReader, size: int, timeout: float) -> bytes:
    """Read exactly ``size`` bytes or raise (IncompleteReadError / TimeoutError)."""
    return await asyncio.wait_for(reader.readexactly(size), timeout)


class Lifecycle:
    """``async with`` support for anything with ``start()`` / ``stop()``."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class TcpSimulator(Lifecycle):
    """An asyncio TCP (optionally TLS) server with ``start()`` / ``stop()``.

    Subclasses implement :meth:`handle`. Every connection runs under an overall
    deadline (``connection_lifetime``) and the number of simultaneous connections is
    capped, so slow-drip and never-closing clients cannot pile up. Exceptions raised
    by a handler end that connection only; they are counted in ``errors``.
    """

    name = "tcp"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        connection_lifetime: float = DEFAULT_CONNECTION_LIFETIME,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.idle_timeout = idle_timeout
        self.connection_lifetime = connection_lifetime
        self.max_connections = max_connections
        self.connections = 0  # connections accepted since start
        self.errors = 0  # connections that ended on malformed input or timeout
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._stopping = False

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve,
            self.host,
            self.port,
            ssl=self.ssl_context,
            ssl_handshake_timeout=self.idle_timeout if self.ssl_context else None,
            limit=MAX_HTTP_HEAD,
            reuse_address=True,
        )
        self._stopping = False
        sockname = self._server.sockets[0].getsockname()
        self.port = int(sockname[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        server.close()
        # Closing the transports ends every handler's pending read with EOF, so the
        # handlers finish by themselves; cancelling them instead races with reads that
        # complete at the same moment (Python 3.11 then logs lost exceptions).
        for writer in list(self._writers.values()):
            writer.close()
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=2)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._tasks) >= self.max_connections or task is None or self._stopping:
            writer.close()
            return
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        # The lifetime cancels this very task rather than wrapping handle() in wait_for:
        # no inner task whose result could be lost when both finish at once.
        timer = asyncio.get_running_loop().call_later(self.connection_lifetime, expire)
        self._tasks.add(task)
        self._writers[task] = writer
        self.connections += 1
        try:
            await self.handle(reader, writer)
        except asyncio.CancelledError:
            if not (expired or self._stopping):
                raise
            if expired:
                self.errors += 1
        except Exception:  # noqa: BLE001 - any client-made failure ends this connection only
            if not self._stopping:
                self.errors += 1
        finally:
            timer.cancel()
            self._tasks.discard(task)
            self._writers.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)


# --------------------------------------------------------------------------- HTTP


class HttpError(Exception):
    """A request the server rejects with ``status`` and then closes the connection."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass(frozen=True)
class HttpRequest:
    method: str
    target: str
    version: str
    headers: Mapping[str, list[str]]  # lower-case names
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


@dataclass
class HttpResponse:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False

    def encode(self, server: str | None, head_only: bool = False) -> bytes:
        try:
            reason = HTTPStatus(self.status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"HTTP/1.1 {self.status} {reason}"]
        names = {name.lower() for name, _ in self.headers}
        if server and "server" not in names:
            lines.append(f"Server: {server}")
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        lines.append(f"Content-Length: {len(self.body)}")
        if self.close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


async def read_http_request(
    reader: asyncio.StreamReader,
    timeout: float,
    max_body: int = MAX_HTTP_BODY,
) -> HttpRequest | None:
    """Read one HTTP/1.x request; ``None`` on a clean close before any byte.

    Bounded: the head may not exceed the reader's limit (431), the body
    ``max_body`` (413); chunked bodies are accepted within the same bound.
    """
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise HttpError(400) from exc
    except asyncio.LimitOverrunError as exc:
        raise HttpError(431) from exc
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes anything
        raise HttpError(400) from exc
    request_line, _, header_block = text[:-4].partition("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
        raise HttpError(400)
    method, target, version = parts
    headers: dict[str, list[str]] = {}
    for line in header_block.split("\r\n") if header_block else []:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400)
        headers.setdefault(name.lower(), []).append(value.strip())
    body = b""
    if "chunked" in ",".join(headers.get("transfer-encoding", [])).lower():
        body = await _read_chunked(reader, timeout, max_body)
    elif "content-length" in headers:
        raw = headers["content-length"][0]
        if not raw.isdigit() or len(set(headers["content-length"])) != 1:
            raise HttpError(400)
        length = int(raw)
        if length > max_body:
            raise HttpError(413)
        try:
            body = await read_exactly(reader, length, timeout)
        except asyncio.IncompleteReadError as exc:
            raise HttpError(400) from exc
    return HttpRequest(method.upper(), target, version, headers, body)


async def _read_chunked(reader: asyncio.StreamReader, timeout: float, max_body: int) -> bytes:
    body = bytearray()
    try:
        while True:
            size_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout)
            size_text = size_line.split(b";", 1)[0].strip()
            if not size_text or len(size_text) > 8:
                raise HttpError(400)
            size = int(size_text, 16)
            if len(body) + size > max_body:
                raise HttpError(413)
            if size == 0:
                # trailers end with an empty line
                while (await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout)) != b"\r\n":
                    pass
                return bytes(body)
            body += await read_exactly(reader, size, timeout)
            if await read_exactly(reader, 2, timeout) != b"\r\n":
                raise HttpError(400)
    except (asyncio.IncompleteReadError, ValueError) as exc:
        raise HttpError(400) from exc
    except asyncio.LimitOverrunError as exc:
        raise HttpError(431) from exc


async def _discard_briefly(reader: asyncio.StreamReader, budget: int = 256 * 1024) -> None:
    """Read what the client is still sending before closing after an error answer:
    closing with unread bytes makes the kernel send RST, which can destroy the answer
    before the client reads it (the "lingering close" of Apache and nginx). Bounded."""
    with contextlib.suppress(Exception):
        while budget > 0:
            chunk = await asyncio.wait_for(reader.read(min(budget, 65536)), 0.2)
            if not chunk:
                return
            budget -= len(chunk)


class HttpSimulator(TcpSimulator):
    """A bounded HTTP/1.1 server (keep-alive, Content-Length or chunked bodies).

    Subclasses implement :meth:`respond`; ``server_header`` names the product as the
    real server's ``Server`` header does. Malformed requests get 400/413/431 and
    the connection is closed, as HTTP.sys, Apache and envoy do.
    """

    name = "http"
    server_header: str | None = None
    max_body = MAX_HTTP_BODY
    max_requests_per_connection = 100

    def respond(self, request: HttpRequest) -> HttpResponse:
        raise NotImplementedError

    def error_response(self, status: int) -> HttpResponse:
        return HttpResponse(status, b"", [], close=True)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(self.max_requests_per_connection):
            try:
                request = await read_http_request(reader, self.idle_timeout, self.max_body)
            except HttpError as exc:
                self.errors += 1
                writer.write(self.error_response(exc.status).encode(self.server_header))
                await asyncio.wait_for(writer.drain(), self.idle_timeout)
                await _discard_briefly(reader)
                return
            if request is None:
                return
            response = self.respond(request)
            keep_alive = request.version == "HTTP/1.1" and (request.header("connection") or "").lower() != "close"
            if not keep_alive:
                response.close = True
            writer.write(response.encode(self.server_header, head_only=request.method == "HEAD"))
            await asyncio.wait_for(writer.drain(), self.idle_timeout)
            if response.close:
                return
