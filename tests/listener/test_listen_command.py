"""The real `portready listen` command: reports on any stop, bind failures, console summary.

Each test runs the command as a subprocess with real files and real signals.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lab.netns import Host, Lab
from tests.listener.test_listener_lab import ENV, REPO, free_port

LISTEN = [sys.executable, "-m", "scanner", "listen"]


def spawn(*args: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([*LISTEN, *args], cwd=REPO, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)  # fmt: skip


def bound(port: int, proto: str = "u") -> bool:
    out = subprocess.run(["ss", "-H", f"-ln{proto}", f"sport = :{port}"], capture_output=True, text=True).stdout
    return bool(out.strip())


def wait_bound(port: int, proto: str = "u") -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not bound(port, proto):
        time.sleep(0.05)


def catching(pid: int, sig: signal.Signals) -> bool:
    """Whether the process has a handler for `sig` (SigCgt in /proc): the earliest a report is possible."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next((int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:")), 0)
    return bool(mask >> (sig - 1) & 1)


@pytest.mark.parametrize("phase", ["start-up", "listening"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_report_is_written_whenever_a_signal_stops_it(tmp_path: Path, sig: signal.Signals, phase: str) -> None:
    out = tmp_path / "deep" / "report.json"
    out.parent.mkdir()
    port = free_port()
    proc = spawn("--port", f"{port}/udp", "--duration", "120", "--json", str(out))
    deadline = time.monotonic() + 30
    # Python catches SIGINT from birth; SIGTERM only once portready's handler is in.
    while time.monotonic() < deadline and not catching(proc.pid, signal.SIGTERM):
        time.sleep(0.001)  # the signal goes the moment the handler exists: profiles still loading
    if phase == "listening":
        wait_bound(port)
    os.kill(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr
    doc = json.loads(out.read_text())
    assert doc["interrupted"]["signal"] == sig.name
    assert doc["interrupted"]["checks_planned"] == 1
    (row,) = doc["rows"]
    assert row["status"] == "inconclusive"  # stopped early is not "not seen"
    assert row["detail"].startswith(f"interrupted by {sig.name}")
    assert ("before the listener was ready" in row["detail"]) is (phase == "start-up")
    assert f"interrupted by {sig.name}" in stdout


@pytest.mark.lab
def test_interrupted_after_arrivals_keeps_what_was_seen(lab: Lab, second_host: Host, tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "r.json"
    proc = spawn("--profile", "qumulo", "--source", f"monitored-file-servers={second_host.ipv4},198.18.{lab.subnet}.250",
                 "--port", f"514/udp={port}", "--port", f"514/tcp={port}", "--duration", "120", "--json", str(out))  # fmt: skip
    wait_bound(port)
    second_host.run(["logger", "-d", "-n", lab.gateway4, "-P", str(port), "-t", "qumulo", "seen"], check=True)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    doc = json.loads(out.read_text())
    rows = {r["target"]: r for r in doc["rows"]}
    assert rows[second_host.ipv4]["status"] == "pass"
    silent = rows[f"198.18.{lab.subnet}.250"]
    assert silent["status"] == "inconclusive" and silent["reason"] == "not-seen"
    assert doc["interrupted"] == {"signal": "SIGINT", "checks_done": 1, "checks_planned": 3}


def test_a_port_held_by_another_process_fails_and_names_it(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("0.0.0.0", port))
        proc = subprocess.run([*LISTEN, "--port", f"{port}/udp", "--bind", "0.0.0.0", "--duration", "1", "--json", "-"],
                              cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    (row,) = json.loads(proc.stdout)["rows"]
    assert (row["status"], row["reason"]) == ("fail", "port-in-use")
    assert "in use by another process" in row["detail"] and f"pid {os.getpid()}" in row["detail"]
    assert "--capture" in row["detail"]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("capsh") is None,
                    reason="needs root and capsh (libcap2-bin) to drop a capability")
def test_a_port_it_may_not_bind_fails_with_the_fix(tmp_path: Path) -> None:
    cmd = " ".join([*LISTEN, "--port", "514/udp", "--bind", "127.0.0.1", "--duration", "1", "--json", "-"])
    proc = subprocess.run(["capsh", "--drop=cap_net_bind_service", "--", "-c", cmd], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    (row,) = json.loads(proc.stdout)["rows"]
    assert (row["status"], row["reason"]) == ("fail", "permission")
    assert "elevated" in row["detail"] and "CAP_NET_BIND_SERVICE" in row["detail"]


@pytest.mark.lab
def test_console_shows_unexpected_sources_and_losses(lab: Lab, second_host: Host, third_host: Host,
                                                      tmp_path: Path) -> None:  # fmt: skip
    port = free_port()
    out = tmp_path / "r.json"
    proc = spawn("--profile", "qumulo", "--source", f"monitored-file-servers={second_host.ipv4}",
                 "--port", f"514/udp={port}", "--port", f"514/tcp={port}", "--duration", "30",
                 "--frame-timeout", "1", "--json", str(out))  # fmt: skip
    wait_bound(port)
    wait_bound(port, "t")
    third_host.run(["logger", "-d", "--rfc3164", "-n", lab.gateway4, "-P", str(port), "-t", "natbox", "hi"], check=True)
    drip = second_host.popen([sys.executable, "-m", "tests.listener._sender", "drip", lab.gateway4, str(port),
                              "--connections", "2", "--seconds", "10"], env=ENV, stdout=subprocess.DEVNULL)  # fmt: skip
    stdout, stderr = proc.communicate(timeout=60)
    drip.kill()
    assert proc.returncode == 0, stdout + stderr
    flat = " ".join(stdout.split())  # the console wraps long lines
    assert f"unexpected source {third_host.ipv4} on UDP {port}" in flat and "natbox" in flat
    assert "listener losses and repairs:" in flat and "truncated" in flat
    doc = json.loads(out.read_text())
    (row,) = doc["rows"]
    tcp = next(c for c in row["checks"] if c["protocol"] == "tcp")
    assert tcp["status"] == "pass" and "lost or altered: " in tcp["detail"]
    assert tcp["evidence"]["losses"]["frames_truncated"] == 2
    assert doc["unexpected"][0]["source_address"] == third_host.ipv4
