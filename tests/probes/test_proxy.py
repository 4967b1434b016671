"""Internet-bound rows through an HTTP proxy: CONNECT tunnel + TLS to the real name.

The proxy is a tiny real CONNECT proxy run in-process on 127.0.0.1 (`ConnectProxy`
below: RFC 9110 9.3.6 CONNECT, and absolute-form GET for plain HTTP); the "Microsoft
365" endpoints are loopback TLS peers with lab certificates for made-up names — no
real Microsoft name is resolved or contacted: the proxy maps every name to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from scanner.models import Reason, Status
from scanner.probes._proxy import _no_proxy_matches, parse_proxy
from scanner.probes.base import Settings
from tests.lab.tls import TLS_HOSTNAME, TlsCerts, TlsPeer
from tests.probes.test_tls import closed_port, probe, timed

M365_ROLE = "exchange-online-endpoints"


@dataclass
class ConnectProxy:
    """CONNECT / absolute-form GET proxy that sends every name to 127.0.0.1."""

    credentials: str | None = None  # "user:pass" → 407 without it
    refuse: bool = False  # 403 to every CONNECT
    host: str = "127.0.0.1"
    port: int = 0
    seen: list[str] = field(default_factory=list)
    _server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            self.seen.append(lines[0])
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            if self.credentials is not None:
                token = "Basic " + base64.b64encode(self.credentials.encode()).decode()
                if headers.get("proxy-authorization") != token:
                    writer.write(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                        b'Proxy-Authenticate: Basic realm="lab proxy"\r\nContent-Length: 0\r\n\r\n'
                    )
                    await writer.drain()
                    return
            if method == "CONNECT":
                if self.refuse:
                    writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
                    return
                _, _, port_text = target.rpartition(":")
                try:
                    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", int(port_text))
                except OSError:
                    writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
                    return
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            else:  # absolute-form GET http://name:port/path
                rest = target.split("://", 1)[1]
                hostport, _, path = rest.partition("/")
                port = int(hostport.rpartition(":")[2]) if ":" in hostport else 80
                try:
                    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
                    return
                up_writer.write(f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n".encode())
                try:
                    await _pipe(up_reader, writer)
                finally:
                    up_writer.close()
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
            pass
        finally:
            writer.close()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except OSError:
        pass
    finally:
        dst.close()


@pytest.fixture
async def proxy() -> AsyncIterator[Callable[..., ConnectProxy]]:
    proxies: list[ConnectProxy] = []

    async def make(**kw: object) -> ConnectProxy:
        p = ConnectProxy(**kw)  # type: ignore[arg-type]
        await p.start()
        proxies.append(p)
        return p

    yield make  # type: ignore[misc]
    for p in proxies:
        await p.stop()


def proxied(certs: TlsCerts, url: str) -> Settings:
    return Settings(timeout=1.5, retries=0, ca_bundle=str(certs.ca_bundle), proxy=url)


async def test_m365_row_goes_through_the_proxy_and_says_so(
    proxy: Callable[..., ConnectProxy], loopback_tls_peer: Callable[..., TlsPeer], loopback_tls_certs: TlsCerts
) -> None:
    p = await proxy()  # type: ignore[misc]
    peer = loopback_tls_peer("valid")
    # The address given is unroutable on purpose: only the proxy may be contacted.
    result = await probe("https", peer.port, address="192.0.2.1", role=M365_ROLE,
                         settings=proxied(loopback_tls_certs, p.url))  # fmt: skip
    assert result.status is Status.PASS, result.detail
    assert result.evidence["via_proxy"] == f"127.0.0.1:{p.port}"
    assert "through the proxy" in result.detail
    assert p.seen == [f"CONNECT {TLS_HOSTNAME}:{peer.port} HTTP/1.1"]
    assert result.evidence["name_matches"] is True  # TLS to the real name through the tunnel


async def test_proxy_credentials_are_sent_and_never_shown(
    proxy: Callable[..., ConnectProxy], loopback_tls_peer: Callable[..., TlsPeer], loopback_tls_certs: TlsCerts
) -> None:
    p = await proxy(credentials="auditor:s3cret-pw")  # type: ignore[misc]
    peer = loopback_tls_peer("valid", http=False)
    url = f"http://auditor:s3cret-pw@127.0.0.1:{p.port}"
    result = await probe("tls", peer.port, role=M365_ROLE, settings=proxied(loopback_tls_certs, url))
    assert result.status is Status.PASS, result.detail
    assert "s3cret" not in repr(result.to_dict())


async def test_proxy_authentication_required_is_auth_with_words(
    proxy: Callable[..., ConnectProxy], loopback_tls_peer: Callable[..., TlsPeer], loopback_tls_certs: TlsCerts
) -> None:
    p = await proxy(credentials="auditor:pw")  # type: ignore[misc]
    peer = loopback_tls_peer("valid", http=False)
    result = await probe("tls", peer.port, role=M365_ROLE, settings=proxied(loopback_tls_certs, p.url))
    assert result.status is Status.FAIL and result.reason is Reason.AUTH
    assert "407" in result.detail and "requires authentication" in result.detail
    assert result.evidence["via_proxy"] == f"127.0.0.1:{p.port}"


async def test_proxy_refusal_is_policy_and_unreachable_target_is_the_proxys_answer(
    proxy: Callable[..., ConnectProxy], loopback_tls_certs: TlsCerts
) -> None:
    refusing = await proxy(refuse=True)  # type: ignore[misc]
    result = await probe("tls", 443, role=M365_ROLE, settings=proxied(loopback_tls_certs, refusing.url))
    assert result.status is Status.FAIL and result.reason is Reason.POLICY
    assert "403" in result.detail
    plain = await proxy()  # type: ignore[misc]
    result = await probe("tls", closed_port(), role=M365_ROLE, settings=proxied(loopback_tls_certs, plain.url))
    assert result.status is Status.FAIL and result.reason is Reason.UNREACHABLE
    assert "could not reach" in result.detail and "502" in result.detail


async def test_unreachable_proxy_is_refused_and_named(loopback_tls_certs: TlsCerts) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = await timed(probe("tls", 443, role=M365_ROLE, settings=proxied(loopback_tls_certs, url)), 3)
    assert result.status is Status.FAIL and result.reason is Reason.REFUSED
    assert "cannot reach the proxy" in result.detail


async def test_on_premises_rows_do_not_use_the_proxy(
    proxy: Callable[..., ConnectProxy], loopback_tls_peer: Callable[..., TlsPeer], loopback_tls_certs: TlsCerts
) -> None:
    p = await proxy()  # type: ignore[misc]
    peer = loopback_tls_peer("valid", http=False)
    result = await probe("tls", peer.port, role="vmware-servers", settings=proxied(loopback_tls_certs, p.url))
    assert result.status is Status.PASS and "via_proxy" not in result.evidence
    forced = await probe("tls", peer.port, role="vmware-servers", options={"via_proxy": True},
                         settings=proxied(loopback_tls_certs, p.url))  # fmt: skip
    assert forced.evidence.get("via_proxy") == f"127.0.0.1:{p.port}"
    assert p.seen == [f"CONNECT {TLS_HOSTNAME}:{peer.port} HTTP/1.1"]


async def test_environment_proxy_and_no_proxy_are_honoured(
    proxy: Callable[..., ConnectProxy],
    loopback_tls_peer: Callable[..., TlsPeer],
    loopback_tls_certs: TlsCerts,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = await proxy()  # type: ignore[misc]
    peer = loopback_tls_peer("valid", http=False)
    settings = Settings(timeout=1.5, retries=0, ca_bundle=str(loopback_tls_certs.ca_bundle))
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", p.url)
    result = await probe("tls", peer.port, role=M365_ROLE, settings=settings)
    assert result.evidence.get("via_proxy") == f"127.0.0.1:{p.port}"
    monkeypatch.setenv("NO_PROXY", ".lab.test")
    direct = await probe("tls", peer.port, role=M365_ROLE, settings=settings)
    assert direct.status is Status.PASS and "via_proxy" not in direct.evidence


async def test_plain_http_row_uses_absolute_form_through_the_proxy(
    proxy: Callable[..., ConnectProxy], loopback_tls_peer: Callable[..., TlsPeer]
) -> None:
    from tests.lab.simulators.papi import PapiServer

    p = await proxy()  # type: ignore[misc]
    async with PapiServer() as web:  # a plain-HTTP server on loopback
        settings = Settings(timeout=1.5, retries=0, proxy=p.url)
        result = await probe("http", web.port, host="login.lab.test", role="entra-id-endpoints", settings=settings)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["via_proxy"] == f"127.0.0.1:{p.port}"
    assert result.evidence["server"] == "Apache"
    assert p.seen == [f"GET http://login.lab.test:{web.port}/ HTTP/1.1"]


def test_proxy_url_forms_and_labels_hide_credentials() -> None:
    parsed = parse_proxy("http://u%40x:p%3Aw@proxy.lab.test:3128")
    assert (parsed.host, parsed.port, parsed.username, parsed.password) == ("proxy.lab.test", 3128, "u@x", "p:w")
    assert parsed.label == "proxy.lab.test:3128" and "p:w" not in repr(parsed)
    assert parse_proxy("proxy.lab.test").port == 8080
    with pytest.raises(ValueError):
        parse_proxy("socks5://proxy.lab.test:1080")


@pytest.mark.parametrize(
    ("host", "port", "rule", "exempt"),
    [
        ("a.lab.test", 443, ".lab.test", True),
        ("lab.test", 443, "lab.test", True),
        ("notlab.test", 443, "lab.test", False),
        ("a.lab.test", 443, "*.lab.test", True),
        ("198.18.0.5", 443, "198.18.0.0/15", True),
        ("198.20.0.5", 443, "198.18.0.0/15", False),
        ("a.lab.test", 443, "a.lab.test:8443", False),
        ("anything", 443, "*", True),
    ],
)
def test_no_proxy_rules(host: str, port: int, rule: str, exempt: bool) -> None:
    assert _no_proxy_matches(host, port, rule) is exempt
