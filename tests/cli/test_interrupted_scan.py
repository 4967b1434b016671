"""An interrupted scan (Ctrl-C, SIGTERM, a CI timeout) still writes every report, marked.

Real signals to a real `portready scan` subprocess, while some checks have finished and
others wait on a peer that never answers (a silent loopback server, a dropped lab port).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.hostile import hostile_server
from tests.lab.loopback import LoopbackPeer
from tests.lab.netns import Host

_PROFILE = """\
id: slow-lab
title: Slow lab
section: Slow Lab
rows:
  - id: fast-open
    doc: {port: "8001", protocol: TCP, source: Netwrix Auditor Server, target: Lab hosts, purpose: answers at once}
    direction: outbound
    source: auditor-server
    target: monitored-computers
    checks:
      - {protocol: tcp, setting: lab-open-port, probe: tcp}
  - id: slow-http
    doc: {port: "8003", protocol: TCP, source: Netwrix Auditor Server, target: Lab hosts, purpose: never answers}
    direction: outbound
    source: auditor-server
    target: monitored-computers
    checks:
      - {protocol: tcp, setting: lab-slow-port, probe: http}
"""


class _CountingListener(LoopbackPeer):
    """A loopback port that counts connections the client opened and closed again."""

    def __init__(self) -> None:
        self.closed_by_client = threading.Semaphore(0)
        super().__init__(backlog=16)

    def handle(self, conn: socket.socket) -> None:
        with conn:
            while conn.recv(1024):
                pass
        self.closed_by_client.release()


@pytest.fixture
def listener() -> Iterator[_CountingListener]:
    server = _CountingListener()
    yield server
    server.close()


def _start_scan(tmp_path: Path, open_port: int, slow_port: int, *targets: str) -> subprocess.Popen[str]:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "slow-lab.yaml").write_text(_PROFILE)
    out = tmp_path / "out"  # reports go to a sub-folder, as CI jobs write them
    out.mkdir()
    argv = [
        sys.executable, "-m", "scanner", "scan", "--profiles", str(tmp_path / "profiles"), "--profile", "slow-lab",
        "--target", "monitored-computers=" + ",".join(targets),
        "--set", f"ports.lab-open-port={open_port}", "--set", f"ports.lab-slow-port={slow_port}",
        "--timeout", "60", "--retries", "2", "--quiet",
        "--json", str(out / "r.json"), "--junit", str(out / "r.xml"), "--html", str(out / "r.html"),
    ]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})  # fmt: skip


def _interrupt(proc: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)  # guards a hung test only; no timing is asserted
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"scan did not end after {sig.name}") from None
    return proc.returncode, err


def _reports(tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "out"
    doc = json.loads((out / "r.json").read_text())
    suites = ET.parse(out / "r.xml").getroot()
    assert suites.tag == "testsuites"
    assert "interrupted" in (out / "r.html").read_text()
    return doc


def _wait_for_finished_checks(listener: _CountingListener, count: int) -> None:
    for _ in range(count):
        assert listener.closed_by_client.acquire(timeout=60), "the fast checks never ran"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_scan_writes_every_report_with_what_finished(
    tmp_path: Path, listener: _CountingListener, sig: signal.Signals, code: int
) -> None:
    with hostile_server("silent", lifetime=120) as (_, slow_port):
        proc = _start_scan(tmp_path, listener.port, slow_port, "127.0.0.1")
        _wait_for_finished_checks(listener, 1)  # the tcp check connected and closed: it is done
        rc, err = _interrupt(proc, sig)
    assert rc == code, err
    assert "Traceback" not in err
    doc = _reports(tmp_path)
    assert doc["interrupted"] == {"signal": sig.name, "checks_done": 1, "checks_planned": 2}
    rows = {r["row"]: r for r in doc["rows"]}
    assert set(rows) == {"fast-open"}  # the silent peer's check never finished: left out
    assert rows["fast-open"]["status"] == "pass"
    assert any(f"interrupted by {sig.name}: 1 of 2 checks finished" in n for n in doc["notes"])


def test_an_uninterrupted_scan_says_so(tmp_path: Path, listener: _CountingListener) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    proc = _start_scan(tmp_path, listener.port, closed_port, "127.0.0.1")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err  # the refused http row fails
    doc = json.loads((tmp_path / "out" / "r.json").read_text())
    assert doc["interrupted"] is None
    assert {r["row"] for r in doc["rows"]} == {"fast-open", "slow-http"}


@pytest.mark.lab
def test_sigterm_while_lab_ports_are_dropped_keeps_the_loopback_results(
    tmp_path: Path, listener: _CountingListener, second_host: Host
) -> None:
    second_host.firewall.drop_all()  # h2 looks switched off: its checks wait out their timeouts
    with hostile_server("silent", lifetime=120) as (_, slow_port):
        proc = _start_scan(tmp_path, listener.port, slow_port, "127.0.0.1", second_host.ipv4)
        _wait_for_finished_checks(listener, 1)
        rc, err = _interrupt(proc, signal.SIGTERM)
    assert rc == 143, err
    doc = _reports(tmp_path)
    assert doc["interrupted"]["checks_planned"] == 4
    assert doc["interrupted"]["checks_done"] == 1
    (row,) = doc["rows"]
    assert (row["row"], row["target"]) == ("fast-open", "127.0.0.1")
    assert second_host.ipv4 not in {r["target"] for r in doc["rows"]}
