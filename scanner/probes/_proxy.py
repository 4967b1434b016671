"""Opening a TCP stream to the target, directly or through an HTTP proxy (CONNECT tunnel).

Internet-bound rows (Microsoft 365, partner portal, Meraki dashboard) leave a company
network through its proxy, so that is how they must be proven::

    stream = await open_stream(ctx)          # direct, or CONNECT host:port via the proxy
    stream.reader, stream.writer, stream.via_proxy   # via_proxy: "proxy.lab.test:3128" or None

Which rows use the proxy: the check option ``via_proxy`` (true/false) decides when a
profile sets it; otherwise rows whose target role is an internet endpoint do (``internet:
true`` in ``profiles/roles.yaml``: Microsoft 365, the partner portal, Meraki). The proxy is
``settings.proxy`` (the inventory / ``--proxy``), else ``HTTPS_PROXY`` / ``https_proxy``
from the environment; ``NO_PROXY`` / ``no_proxy`` exempts hosts. Proxy credentials may
be given in the URL (``http://user:pass@proxy:3128``); they are sent as Basic
Proxy-Authorization and never appear in evidence or words.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import unquote, urlsplit

from scanner.models import Reason, Status
from scanner.probes.base import Outcome, ProbeContext, ProbeError, failed, options_of
from scanner.probes.netio import connect_tcp, drain_within, no_reply, wire_errors
from scanner.timing import HostTiming
from scanner.wire.http import HttpResponse, ProxyOptions, clip, close_writer, read_head


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)

    @property
    def label(self) -> str:
        """host:port — what reports show; never the credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def authorization(self) -> str | None:
        if self.username is None:
            return None
        token = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(token).decode("ascii")


@dataclass
class Stream:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    via_proxy: str | None = None


def parse_proxy(url: str) -> Proxy:
    """`http://[user:pass@]host:port` or `host:port` (port 8080 when omitted)."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme.lower() != "http":
        raise ValueError(
            f"proxy scheme {parts.scheme!r} is not supported: give an http:// proxy "
            "(the tunnel to the target is TLS end to end anyway)"
        )
    if not parts.hostname:
        raise ValueError("the proxy address has no host name")
    try:
        port = parts.port or 8080
    except ValueError as exc:
        raise ValueError(f"the proxy port is not a number ({exc})") from None
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return Proxy(parts.hostname, port, username, password)


def internet_bound(ctx: ProbeContext) -> bool:
    """Whether the row goes to the internet by its nature (the default for proxying): its target
    role says so in the role list (`internet: true`), which the profile loader puts on the row."""
    return ctx.row.internet


def _no_proxy_matches(host: str, port: int, no_proxy: str) -> bool:
    host = host.strip("[]").lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.replace(" ", ",").split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry_port: int | None = None
        if entry.count(":") == 1 or (entry.startswith("[") and "]:" in entry):
            name, _, port_text = entry.rpartition(":")
            if port_text.isascii() and port_text.isdigit() and len(port_text) <= 5:
                entry, entry_port = name, int(port_text)
        entry = entry.strip("[]")
        if entry_port is not None and entry_port != port:
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        suffix = entry.lstrip("*").lstrip(".")
        if suffix and (host == suffix or host.endswith("." + suffix)):
            return True
    return False


def proxy_for(ctx: ProbeContext, port: int | None = None) -> Proxy | None:
    """The proxy this check goes through, or None for a direct connection.

    Raises ProbeError (status error, reason internal: a local configuration problem)
    when the configured proxy address cannot be understood.
    """
    choice = options_of(ctx, ProxyOptions, foreign_ok=True).via_proxy  # probes without the option: unset
    if choice is False or (choice is None and not internet_bound(ctx)):
        return None
    url = ctx.settings.proxy
    if url is None:
        url = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if not url or url.strip().lower() in ("none", "direct", "off"):
        return None
    no_proxy = os.environ.get("NO_PROXY") or os.environ.get("no_proxy") or ""
    if no_proxy and _no_proxy_matches(ctx.host, port or ctx.port or 0, no_proxy):
        return None
    try:
        return parse_proxy(url)
    except ValueError as exc:
        raise ProbeError(
            Outcome(Status.ERROR, Reason.INTERNAL, f"the proxy setting cannot be used: {exc}")
        ) from None


def _connect_target(host: str, port: int) -> str:
    name = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{name}:{port}"


async def _proxy_address(ctx: ProbeContext, proxy: Proxy) -> str:
    try:
        return str(ipaddress.ip_address(proxy.host))
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM),
            ctx.step_timeout(),
        )
    except (asyncio.TimeoutError, OSError, UnicodeError) as exc:
        raise ProbeError(
            failed(
                Reason.UNRESOLVED,
                f"the proxy {proxy.label} does not resolve ({exc or 'timed out'}): check the "
                "proxy setting",
                via_proxy=proxy.label,
            )
        ) from None
    return str(infos[0][4][0])


def proxy_answer(proxy: Proxy, target: str, status: int, text: str, verb: str = "CONNECT") -> Outcome:
    said = f"{status} {text}".strip()
    if status == 407:
        how = (
            "the credentials in the proxy URL were rejected"
            if proxy.username is not None
            else "give credentials in the proxy URL (http://user:password@proxy:port) or "
            "exempt the Auditor host on the proxy"
        )
        return failed(
            Reason.AUTH,
            f"the proxy {proxy.label} requires authentication for {verb} {target} "
            f"({said}): {how}",
            via_proxy=proxy.label,
            proxy_status=status,
        )
    if status in (403, 405):
        return failed(
            Reason.POLICY,
            f"the proxy {proxy.label} refuses {verb} {target} ({said}): its policy blocks "
            f"this destination or port — allow {target} for the Auditor host on the proxy",
            via_proxy=proxy.label,
            proxy_status=status,
        )
    if status in (502, 503, 504):
        reason = Reason.FILTERED if status == 504 else Reason.UNREACHABLE
        return failed(
            reason,
            f"the proxy {proxy.label} could not reach {target} ({said}): the proxy's own "
            "connection to the target failed — check the proxy's outbound firewall and DNS",
            via_proxy=proxy.label,
            proxy_status=status,
        )
    return failed(
        Reason.PROTOCOL,
        f"the proxy {proxy.label} did not pass {verb} {target} on ({said})",
        via_proxy=proxy.label,
        proxy_status=status,
    )


async def connect_proxy(ctx: ProbeContext, proxy: Proxy) -> tuple[ProbeContext, Stream]:
    """A TCP stream to the proxy itself, and a context whose words name the proxy."""
    address = await _proxy_address(ctx, proxy)
    proxy_ctx = dataclasses.replace(
        ctx,
        host=f"the proxy {proxy.label}",
        address=address,
        port=proxy.port,
        timing=HostTiming(ctx.settings.timeout, ctx.settings.min_timeout),
    )
    try:
        reader, writer = await connect_tcp(proxy_ctx, proxy.port)
    except ProbeError as exc:
        raise ProbeError(_via(exc.outcome, proxy, "cannot reach the proxy: ")) from None
    return proxy_ctx, Stream(reader, writer, proxy.label)


def _via(outcome: Outcome, proxy: Proxy, prefix: str) -> Outcome:
    return dataclasses.replace(
        outcome,
        detail=prefix + outcome.detail,
        evidence={**outcome.evidence, "via_proxy": proxy.label},
    )


async def open_tunnel(ctx: ProbeContext, proxy: Proxy, port: int) -> Stream:
    """CONNECT host:port through the proxy; the returned stream carries the tunnel."""
    proxy_ctx, stream = await connect_proxy(ctx, proxy)
    reader, writer = stream.reader, stream.writer
    target = _connect_target(ctx.host, port)
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}", "User-Agent: portready"]
    auth = proxy.authorization()
    if auth is not None:
        lines.append(f"Proxy-Authorization: {auth}")
    try:
        with wire_errors(proxy_ctx, f"answer to CONNECT {target}"):
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            try:
                await drain_within(writer, ctx.step_timeout())
            except asyncio.TimeoutError as exc:
                raise ProbeError(no_reply(proxy_ctx, "read of our CONNECT request")) from exc
            response: HttpResponse = await read_head(proxy_ctx, reader, f"CONNECT {target}")
    except ProbeError as exc:
        await close_writer(writer)
        prefix = f"the proxy {proxy.label} did not answer CONNECT {target} properly: "
        raise ProbeError(_via(exc.outcome, proxy, prefix)) from exc
    if not 200 <= response.status < 300:
        await close_writer(writer)
        raise ProbeError(proxy_answer(proxy, target, response.status, clip(response.reason, 80)))
    return stream


async def open_stream(ctx: ProbeContext, port: int | None = None) -> Stream:
    """A TCP stream to ctx's target: directly, or tunnelled through the proxy."""
    port = ctx.port if port is None else port
    if port is None:
        raise ValueError("open_stream needs a port")
    proxy = proxy_for(ctx, port)
    if proxy is None:
        reader, writer = await connect_tcp(ctx, port)
        return Stream(reader, writer, None)
    return await open_tunnel(ctx, proxy, port)


class ProxyAware:
    """Mixin for probes that may go through a proxy: the proxy resolves the target's name.

    On networks where only the proxy resolves internet names, a Microsoft 365 row
    must not fail as 'unresolved' on the Auditor host before the proxy is asked.
    Its probes take `via_proxy` (ProxyOptions) unless they declare richer options.
    """

    Options: ClassVar[type | None] = ProxyOptions

    @classmethod
    def needs_address(cls, ctx: ProbeContext) -> bool:
        try:
            return proxy_for(ctx) is None
        except ProbeError:
            return True
