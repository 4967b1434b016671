"""A proxy that echoes our Proxy-Authorization must not put the credentials in any report.

A real hostile proxy on loopback answers every request by repeating what it was sent:
in the status line, in a Server header (a passing check), or as raw bytes (not HTTP).
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli._run import portready
from tests.lab.loopback import LoopbackPeer

USER, PASSWORD = "svc-proxy", "Pr0xy-S3cret-Passw0rd"
TOKEN = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

_PROFILE = """\
id: echo-test
title: Echo test
section: Echo Test
rows:
  - id: web
    doc: {{port: "80", protocol: TCP, source: Netwrix Auditor Server, target: Microsoft 365, purpose: web}}
    direction: outbound
    source: auditor-server
    target: exchange-online-endpoints
    checks:
      - {{protocol: tcp, port: 80, probe: http}}
      - {{protocol: tcp, port: 443, probe: {tls_probe}}}
"""


class EchoProxy(LoopbackPeer):
    """Answers each request with `style`: 'status' (407 + the auth line), 'header' (200 with
    the auth line in Server), 'raw' (the request bytes back, not HTTP)."""

    def __init__(self, style: str) -> None:
        self.style = style
        self.saw_credentials = False
        super().__init__(backlog=16)

    def handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(2)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            auth = next((line for line in data.split(b"\r\n") if line.lower().startswith(b"proxy-authorization")), b"")
            self.saw_credentials |= TOKEN.encode() in auth
            if self.style == "status":
                reply = b"HTTP/1.1 407 " + auth + b"\r\nContent-Length: 0\r\n\r\n"
            elif self.style == "header":
                reply = b"HTTP/1.1 200 OK\r\nServer: " + auth + b"\r\nX-Echo: " + auth.lower() + b"\r\n\r\n"
            else:
                reply = data
            conn.sendall(reply)


@pytest.fixture(params=["status", "header", "raw"])
def echo_proxy(request: pytest.FixtureRequest) -> Iterator[EchoProxy]:
    proxy = EchoProxy(request.param)
    yield proxy
    proxy.close()


@pytest.mark.parametrize("tls_probe", ["https", "tls"])
def test_echoed_proxy_credentials_reach_no_report(tmp_path: Path, echo_proxy: EchoProxy, tls_probe: str) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "echo-test.yaml").write_text(_PROFILE.format(tls_probe=tls_probe))
    out = tmp_path / "out"
    out.mkdir()
    reports = {"json": out / "r.json", "junit": out / "r.xml", "html": out / "r.html",
               "markdown": out / "r.md", "csv": out / "r.csv"}  # fmt: skip
    args = [f"--{fmt}={path}" for fmt, path in reports.items()]
    proc = portready(
        "scan", "--profiles", str(profiles), "--profile", "echo-test",
        "--target", "exchange-online-endpoints=outlook.echo.test",
        "--proxy", f"http://{USER}:{PASSWORD}@127.0.0.1:{echo_proxy.port}", "--timeout", "2", *args,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    assert echo_proxy.saw_credentials  # the proxy really was sent them, and echoed them
    texts = {fmt: path.read_text(encoding="utf-8-sig") for fmt, path in reports.items()}
    texts["console"] = proc.stdout + proc.stderr
    for fmt, text in texts.items():
        for secret in (PASSWORD, TOKEN, TOKEN[:12], TOKEN[-12:], PASSWORD.lower(), TOKEN.lower()):
            assert secret not in text, f"{secret!r} in the {fmt} report"
    if echo_proxy.style != "raw":  # raw: the echo starts with the request line, the words show less
        assert "[redacted]" in texts["json"]
