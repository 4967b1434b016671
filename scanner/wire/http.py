"""A small, bounded HTTP/1.1 client over netio streams, shared by the web probes.

Why not httpx: the probes need the raw status line, headers and a few KiB of body as
evidence, over a stream that may already be a CONNECT tunnel or a TLS session the
probe judged itself; every read here is bounded in bytes and in time::

    response = await http_request(ctx, reader, writer, "GET", "/", host="ex.lab.test")
    response.status, response.header("server"), response.body

A peer that answers something other than HTTP ends the probe with reason `protocol`
and words saying what it sent instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from typing import Any

from scanner.models import Reason, Status
from scanner.probes._options import option
from scanner.probes.base import Outcome, ProbeContext, ProbeError, failed
from scanner.probes.netio import drain_within, no_reply, wire_errors

MAX_HEADERS = 100
MAX_BODY = 64 * 1024  # bodies are evidence only: the first 64 KiB are plenty
_EVIDENCE_TEXT = 200  # longest header value kept as evidence

_STATUS_LINE = re.compile(rb"^HTTP/(\d)\.(\d) (\d{3})(?: ([^\r\n]*))?$")


@dataclass(frozen=True)
class HttpResponse:
    """One HTTP response head, and as much of the body as was asked for (bounded)."""

    version: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]  # names lower-case, in the order sent
    body: bytes = b""
    body_complete: bool = True  # False: cut at the size bound, at the deadline or by a close
    body_note: str = ""  # why the body is incomplete, in words

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    def evidence(self) -> dict[str, Any]:
        """status, server (and location on redirects), clipped: peer text stays data."""
        out: dict[str, Any] = {"status": self.status}
        server = self.header("server")
        if server is not None:
            out["server"] = clip(server)
        location = self.header("location")
        if location is not None and 300 <= self.status < 400:
            out["location"] = clip(location)
        return out


def clip(text: str, limit: int = _EVIDENCE_TEXT) -> str:
    """Peer-controlled text as bounded data (reporters escape it; we only bound it)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_bytes(data: bytes) -> str:
    """What a non-HTTP answer looks like, for words an admin can act on."""
    if len(data) >= 3 and data[0] in (0x15, 0x16) and data[1] == 0x03:
        return "a TLS record (the port speaks TLS: this check should use HTTPS)"
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in data[:64])
    if data and printable == len(data[:64]):
        text = data[:40].decode("ascii", "replace").replace("\r", "\\r").replace("\n", "\\n")
        return f"text that is not HTTP ({text!r})"
    return f"{len(data)} bytes that are not HTTP (starting {data[:8].hex()})"


def _not_http(ctx: ProbeContext, what: str, data: bytes) -> ProbeError:
    return ProbeError(
        failed(
            Reason.PROTOCOL,
            f"not HTTP: {ctx.host} answered the {what} on {ctx.where()} with {describe_bytes(data)}",
            first_bytes=data[:16].hex(),
        )
    )


def build_request(
    method: str,
    target: str,
    host: str,
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> bytes:
    """An HTTP/1.1 request with `Connection: close` (one exchange per connection)."""
    if any(c in target for c in " \r\n") or any(c in host for c in " \r\n/"):
        raise ValueError("request target and host must not hold spaces, CR, LF or '/'")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    names = {name.lower() for name, _ in headers}
    if "user-agent" not in names:
        lines.append("User-Agent: portready")
    if "accept" not in names:
        lines.append("Accept: */*")
    lines.extend(f"{name}: {value}" for name, value in headers)
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def host_header(host: str, port: int, default_port: int) -> str:
    """The Host header for a name or address (IPv6 literals bracketed)."""
    name = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return name if port == default_port else f"{name}:{port}"


async def read_head(ctx: ProbeContext, reader: asyncio.StreamReader, what: str) -> HttpResponse:
    """Read one response head (skipping 1xx interim answers), bounded in size and time.

    The whole head must arrive within one step timeout, so a peer dripping a byte a
    second cannot hold the probe past its timeout.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + ctx.step_timeout()
    while True:
        response = await _read_one_head(ctx, reader, what, end)
        if not 100 <= response.status < 200:
            return response


async def _read_one_head(
    ctx: ProbeContext, reader: asyncio.StreamReader, what: str, end: float
) -> HttpResponse:
    loop = asyncio.get_running_loop()

    def left() -> float:
        remaining = end - loop.time()
        if remaining <= 0:
            raise asyncio.TimeoutError
        return remaining

    start = b""
    with wire_errors(ctx, what):  # resets and OS errors; the HTTP-specific cases below
        try:
            # Five bytes decide early: anything not starting like a status line is not HTTP.
            start = await asyncio.wait_for(reader.readexactly(5), left())
            if start != b"HTTP/":
                more = b""
                with contextlib.suppress(asyncio.TimeoutError, OSError):
                    more = await asyncio.wait_for(reader.read(59), 0.05)
                raise _not_http(ctx, what, start + more)
            # The reader's limit (64 KiB) bounds the head; a longer one is not plausible.
            head = start + await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), left())
        except asyncio.TimeoutError as exc:
            raise _incomplete(ctx, what, start) from exc
        except asyncio.IncompleteReadError as exc:
            got = start + exc.partial
            if not got:
                raise  # closed before answering: `closed`
            if not got.startswith(b"HTTP/"):
                raise _not_http(ctx, what, got) from exc
            raise ProbeError(
                failed(
                    Reason.PROTOCOL,
                    f"{ctx.host} closed the connection in the middle of the HTTP answer to the "
                    f"{what} on {ctx.where()} ({len(got)} bytes of headers)",
                )
            ) from exc
        except asyncio.LimitOverrunError as exc:
            raise ProbeError(
                failed(
                    Reason.PROTOCOL,
                    f"the HTTP answer from {ctx.host} on {ctx.where()} has a head of more than "
                    "64 KiB: not a plausible HTTP server",
                )
            ) from exc
    return _parse_head(ctx, head[:-4], what)


def _incomplete(ctx: ProbeContext, what: str, data: bytes) -> ProbeError:
    # Connected, then no (complete) answer in time: slowness, not proof of another protocol.
    got = f"complete answer (only {len(data)} bytes of an HTTP head)" if data else "answer"
    return ProbeError(no_reply(ctx, f"{got} to the {what}"))


def _parse_head(ctx: ProbeContext, head: bytes, what: str) -> HttpResponse:
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    match = _STATUS_LINE.match(lines[0])
    if match is None:
        raise _not_http(ctx, what, head)
    headers: list[tuple[str, str]] = []
    for raw in lines[1:]:
        if len(headers) >= MAX_HEADERS:
            break
        name, sep, value = raw.partition(b":")
        if not sep or not name.strip() or name != name.strip():
            continue  # a malformed header line: ignored, as lenient clients do
        headers.append(
            (name.decode("latin-1").lower(), value.strip().decode("latin-1"))
        )
    return HttpResponse(
        version=f"{match.group(1).decode()}.{match.group(2).decode()}",
        status=int(match.group(3)),
        reason=clip((match.group(4) or b"").decode("latin-1"), 100),
        headers=tuple(headers),
    )


async def read_body(
    ctx: ProbeContext,
    reader: asyncio.StreamReader,
    response: HttpResponse,
    method: str = "GET",
    max_body: int = MAX_BODY,
) -> HttpResponse:
    """The response with up to `max_body` bytes of body, read within one step timeout."""
    if method == "HEAD" or response.status in (204, 304):
        return response
    loop = asyncio.get_running_loop()
    end = loop.time() + ctx.step_timeout()
    body = bytearray()
    note = ""
    complete = True
    chunked = "chunked" in (response.header("transfer-encoding") or "").lower()
    length_text = response.header("content-length")
    length: int | None = None
    if not chunked and length_text is not None:
        digits = length_text.strip()  # ASCII and bounded: "²" passes isdigit(), 5000 digits overflow int()
        length = int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 18 else None
    try:
        if chunked:
            complete = await _read_chunked(reader, body, max_body, end)
        else:
            want = max_body if length is None else min(length, max_body)
            while len(body) < want:
                left = end - loop.time()
                if left <= 0:
                    raise asyncio.TimeoutError
                chunk = await asyncio.wait_for(reader.read(min(65536, want - len(body))), left)
                if not chunk:
                    break
                body += chunk
            complete = length is None and len(body) < max_body or len(body) == length
    except asyncio.TimeoutError:
        complete, note = False, f"the body did not finish within {ctx.settings.timeout:g} s"
    except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        complete, note = False, "the chunked body is malformed"
    except OSError as exc:
        complete, note = False, f"the connection broke during the body ({exc})"
    if not complete and not note:
        if length is not None and len(body) < min(length, max_body):
            note = f"the peer closed after {len(body)} of {length} announced body bytes"
        else:
            note = f"the body is longer than {max_body // 1024} KiB (only that much was read)"
    return HttpResponse(
        response.version,
        response.status,
        response.reason,
        response.headers,
        bytes(body),
        complete,
        note,
    )


async def _read_chunked(
    reader: asyncio.StreamReader, body: bytearray, max_body: int, end: float
) -> bool:
    loop = asyncio.get_running_loop()

    async def line() -> bytes:
        left = end - loop.time()
        if left <= 0:
            raise asyncio.TimeoutError
        return await asyncio.wait_for(reader.readuntil(b"\n"), left)

    while True:
        size_text = (await line()).split(b";", 1)[0].strip()
        if not size_text or len(size_text) > 8:
            raise ValueError("bad chunk size")
        size = int(size_text, 16)
        if size == 0:
            return True
        if len(body) + size > max_body:
            return False
        left = end - loop.time()
        if left <= 0:
            raise asyncio.TimeoutError
        body += await asyncio.wait_for(reader.readexactly(size), left)
        await line()


async def http_request(
    ctx: ProbeContext,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    method: str,
    target: str,
    *,
    host: str,
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
    read_response_body: bool = True,
    max_body: int = MAX_BODY,
) -> HttpResponse:
    """Send one request and read its answer (head always, body when asked; bounded)."""
    what = f"HTTP {method} {clip(target, 80)}"
    with wire_errors(ctx, what):
        try:
            writer.write(build_request(method, target, host, headers, body))
            await drain_within(writer, ctx.step_timeout())
        except asyncio.TimeoutError as exc:
            raise ProbeError(
                failed(
                    Reason.PROTOCOL,
                    f"{ctx.host} does not read the {what} on {ctx.where()} within "
                    f"{ctx.settings.timeout:g} s",
                )
            ) from exc
    response = await read_head(ctx, reader, what)
    if read_response_body:
        response = await read_body(ctx, reader, response, method, max_body)
    return response


@dataclass(frozen=True)
class ProxyOptions:
    """The option every proxy-aware probe takes (here, not in _proxy: _proxy speaks HTTP)."""

    via_proxy: bool | None = option(None, "through the HTTP proxy: true, false; unset: internet rows only")


@dataclass(frozen=True)
class HttpOptions(ProxyOptions):
    """Options of the HTTP-based probes."""

    path: str = option("/", "the absolute path asked for, e.g. /owa/")
    expect: Any = option(None, "the HTTP statuses that pass, e.g. [200, 401]; unset: any HTTP answer")

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or any(c in self.path for c in " \r\n"):
            raise ValueError("option 'path' must be an absolute path such as '/owa/' (no spaces)")
        expect = self.expect
        if expect is not None:
            if isinstance(expect, int) and not isinstance(expect, bool):
                expect = [expect]
            if (
                not isinstance(expect, list)
                or not expect
                or not all(isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in expect)
            ):
                raise ValueError("option 'expect' must be a list of HTTP statuses such as [200, 401]")


def expected_statuses(value: Any) -> list[int] | None:
    if value is None:
        return None
    return [value] if isinstance(value, int) else [int(s) for s in value]


def http_outcome(
    ctx: ProbeContext, response: HttpResponse, scheme: str, method: str, path: str, expect: Any
) -> Outcome:
    """Pass on any HTTP answer (or one of `expect`); fail protocol on an unexpected status."""
    statuses = expected_statuses(expect)
    said = f"{response.status} {response.reason}".strip()
    server = response.header("server")
    by = f" (Server: {clip(server, 80)})" if server else ""
    evidence = {**response.evidence(), "path": clip(path, 200)}
    if statuses is not None and response.status not in statuses:
        wanted = " or ".join(str(s) for s in statuses)
        return failed(
            Reason.PROTOCOL,
            f"{scheme} answers on {ctx.where()}, but {method} {clip(path, 80)} got {said}{by} "
            f"where {wanted} was expected — check that this is the documented server and port",
            **evidence,
        )
    return Outcome(
        Status.PASS, Reason.OK, f"{scheme} answers on {ctx.where()}: {method} {clip(path, 80)} → {said}{by}", evidence
    )


async def close_writer(writer: asyncio.StreamWriter, grace: float = 0.5) -> None:
    """Close a (TLS) stream and wait briefly for it, aborting if the peer stalls.

    A TLS close sends close_notify and waits for the transport; without waiting, the
    socket may outlive the probe.
    """
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), grace)
    except (asyncio.TimeoutError, OSError, ConnectionError):
        writer.transport.abort()
    except Exception:  # noqa: BLE001 - closing a dead stream must never fail a probe
        writer.transport.abort()
