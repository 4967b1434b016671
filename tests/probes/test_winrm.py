"""winrm probe: WS-Management Identify against the lab's WinRM simulator
(tests/lab/simulators/winrm.py — Samba has no WinRM, so the simulator stands in for
WinRM 3.0 behind HTTP.sys), on loopback and inside a lab host behind its firewall;
TLS certificates from tests/lab/tls.py; hostile peers."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from scanner.models import CheckResult, Reason, Status
from scanner.probes.base import Settings
from scanner.probes.winrm import WinRmProbe, parse_identify
from scanner.testing import make_context, run_probe
from tests.lab.simulators.winrm import SERVER_2019_PRODUCT_VERSION, WinRmServer, identify_response_xml

TIMEOUT = 1.0
BOUND = TIMEOUT * (1 + 3) + 1.5


async def winrm(address: str, port: int, host: str = "localhost", settings: Settings | None = None,
                **options: Any) -> CheckResult:  # fmt: skip
    ctx = make_context(
        host, address, port, probe="winrm", options=options, timeout=TIMEOUT, retries=0, settings=settings
    )
    return await run_probe("winrm", ctx)


def tls_context(certs: Any, kind: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(certs.cert(kind)), str(certs.key(kind)))
    return context


@contextlib.asynccontextmanager
async def plain_http(status_line: str, body: bytes, extra: str = "") -> AsyncIterator[int]:
    """A web server that is not WinRM: the same canned answer to every request."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
            writer.write(
                f"HTTP/1.1 {status_line}\r\nServer: nginx\r\n{extra}Content-Length: {len(body)}\r\n\r\n".encode() + body
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


def test_identify_parser_reads_vendor_and_version_and_refuses_entities() -> None:
    found = parse_identify(identify_response_xml(SERVER_2019_PRODUCT_VERSION))
    assert found is not None
    assert found["ProductVendor"] == "Microsoft Corporation"
    assert found["ProductVersion"] == SERVER_2019_PRODUCT_VERSION
    assert parse_identify(b'<!DOCTYPE x [<!ENTITY a "b">]><Envelope/>') is None
    assert parse_identify(b"<html>not soap</html>") is None


def test_options_are_checked() -> None:
    WinRmProbe.validate({"tls": True, "path": "/wsman"})
    for bad in ({"tls": "yes"}, {"path": "wsman"}, {"port": 1}):
        with pytest.raises(ValueError):
            WinRmProbe.validate(bad)


async def test_identify_answered_passes_with_vendor_and_version() -> None:
    async with WinRmServer(port=0, product_version=SERVER_2019_PRODUCT_VERSION) as srv:
        result = await winrm(srv.host, srv.port)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["product_vendor"] == "Microsoft Corporation"
    assert result.evidence["product_version"] == SERVER_2019_PRODUCT_VERSION
    assert result.evidence["scheme"] == "http"


async def test_anonymous_identify_refused_with_negotiate_still_passes_with_the_schemes() -> None:
    async with WinRmServer(port=0, identify="off") as srv:
        result = await winrm(srv.host, srv.port)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["auth_schemes"] == ["Negotiate", "Kerberos"]
    assert result.evidence["status"] == 401


async def test_basic_only_401_cannot_confirm_winrm() -> None:
    async with WinRmServer(port=0, identify="off", auth_schemes=('Basic realm="x"',)) as srv:
        result = await winrm(srv.host, srv.port)
    assert result.status is Status.INCONCLUSIVE, result.detail


async def test_other_path_404_fails_protocol() -> None:
    async with WinRmServer(port=0) as srv:
        result = await winrm(srv.host, srv.port, path="/not-wsman")
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL), result.detail
    assert "without WS-Management" in result.detail


async def test_web_server_that_is_not_winrm_fails_protocol() -> None:
    async with plain_http("200 OK", b"<html>hello</html>") as port:
        result = await winrm("127.0.0.1", port)
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL), result.detail
    async with plain_http("404 Not Found", b"nope") as port:
        result = await winrm("127.0.0.1", port)
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL), result.detail


async def test_https_with_a_trusted_certificate_passes_with_tls_details(loopback_tls_certs) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(timeout=TIMEOUT, retries=0, ca_bundle=str(loopback_tls_certs.ca_bundle))
    async with WinRmServer(port=0, ssl_context=tls_context(loopback_tls_certs, "valid")) as srv:
        result = await winrm(srv.host, srv.port, host="tls.lab.test", settings=settings, tls=True)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["scheme"] == "https"
    assert result.evidence["tls_version"].startswith("TLSv1.")
    assert "not_after" in result.evidence and result.evidence["trusted"] is True


async def test_https_with_an_expired_certificate_warns_certificate(loopback_tls_certs) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(timeout=TIMEOUT, retries=0, ca_bundle=str(loopback_tls_certs.ca_bundle))
    async with WinRmServer(port=0, ssl_context=tls_context(loopback_tls_certs, "expired")) as srv:
        result = await winrm(srv.host, srv.port, host="tls.lab.test", settings=settings, tls=True)
    assert (result.status, result.reason) == (Status.WARN, Reason.CERTIFICATE), result.detail
    assert "product_vendor" in result.evidence  # WinRM itself answered


async def test_https_option_against_plain_http_reads_no_reply_that_names_not_tls() -> None:
    async with WinRmServer(port=0) as srv:  # plain HTTP: silence to our ClientHello
        result = await winrm(srv.host, srv.port, tls=True)
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
    assert "does not speak TLS" in result.detail


@pytest.mark.parametrize("mode", ["garbage", "truncated", "oversized", "drip", "silent"])
async def test_hostile_peer_fails_cleanly_within_the_timeout(hostile, mode: str) -> None:  # type: ignore[no-untyped-def]
    address, port = hostile(mode, flavor="http")
    started = time.monotonic()
    result = await winrm(address, port)
    if mode in ("silent", "drip"):  # connected, then no (complete) answer: slowness, not a verdict
        assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
    else:
        assert result.status is Status.FAIL, result.detail
        assert result.reason in (Reason.PROTOCOL, Reason.FILTERED), result.detail
    assert time.monotonic() - started < BOUND


# -- the simulator inside a lab host, behind that host's firewall ------------------------------------------


@pytest.fixture
def lab_winrm(second_host) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    proc = second_host.popen(
        [sys.executable, "-m", "tests.lab.simulators", "winrm", "--bind", second_host.ipv4, "--port", "5985",
         "--lifetime", "120", "--identify", "off"],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=str(__import__("pathlib").Path(__file__).parents[2]),
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith(b"ready"), line
    try:
        yield second_host
    finally:
        from tests.lab.netns import _kill_group

        _kill_group(proc, grace=1.0)
        proc.stdout.close()
        second_host.firewall.clear()


@pytest.mark.lab
async def test_lab_winrm_passes_then_dropped_is_filtered_and_rejected_is_refused(lab_winrm) -> None:  # type: ignore[no-untyped-def]
    address = lab_winrm.ipv4
    result = await winrm(address, 5985, host="h2")
    assert result.status is Status.PASS, result.detail
    lab_winrm.firewall.drop(5985)
    result = await winrm(address, 5985, host="h2")
    assert (result.status, result.reason) == (Status.FAIL, Reason.FILTERED), result.detail
    lab_winrm.firewall.clear()
    lab_winrm.firewall.reject(5985)
    result = await winrm(address, 5985, host="h2")
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED), result.detail
