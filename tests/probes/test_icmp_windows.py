"""icmp-echo on Windows: ping.exe (no administrator rights), judged from samples of its real
output in several languages; the Windows path selection is exercised on Linux.

What was not run: ping.exe itself on a Windows host (this project's CI is Linux only); the
samples below are ping.exe's documented output forms (English, German, French; IPv4, IPv6;
reply, sub-millisecond reply, timeout, router "unreachable", "TTL expired").
"""

from __future__ import annotations

import sys

import pytest

from scanner.models import Reason, Status
from scanner.probes import icmp_echo
from scanner.probes.icmp_echo import judge_ping
from scanner.testing import make_context, run_probe

STATS_OK = b"\r\nPing statistics for {a}:\r\n    Packets: Sent = 1, Received = 1, Lost = 0 (0% loss),\r\n"
STATS_LOST = b"\r\nPing statistics for {a}:\r\n    Packets: Sent = 1, Received = 0, Lost = 1 (100% loss),\r\n"


def sample(line: bytes, address: bytes = b"10.0.0.5", lost: bool = False) -> bytes:
    head = b"\r\nPinging " + address + b" with 32 bytes of data:\r\n"
    return head + line + b"\r\n" + (STATS_LOST if lost else STATS_OK).replace(b"{a}", address)


@pytest.mark.parametrize(
    ("code", "out", "v6", "verdict", "rtt"),
    [
        (0, sample(b"Reply from 10.0.0.5: bytes=32 time=2ms TTL=128"), False, "reply", 2.0),
        (0, sample(b"Reply from 10.0.0.5: bytes=32 time<1ms TTL=128"), False, "reply", 1.0),
        (0, sample(b"Antwort von 10.0.0.5: Bytes=32 Zeit=14ms TTL=57"), False, "reply", 14.0),
        (0, sample("R\u00e9ponse de 10.0.0.5\u00a0: octets=32 temps=3 ms TTL=64".encode("cp850")), False, "reply", 3.0),
        (0, sample(b"Reply from fd00::5: time=3ms", b"fd00::5"), True, "reply", 3.0),
        (0, sample(b"Antwort von fd00::5: Zeit<1ms", b"fd00::5"), True, "reply", 1.0),
        (0, sample(b"Reply from 10.0.0.1: Destination host unreachable."), False, "unreachable", None),
        (0, sample(b"Reply from 10.0.0.1: TTL expired in transit."), False, "unreachable", None),
        (0, sample(b"Reply from fd00::1: Destination net unreachable.", b"fd00::5"), True, "unreachable", None),
        (1, sample(b"Request timed out.", lost=True), False, "silence", None),
        (1, b"PING: transmit failed. General failure. \r\n", False, "silence", None),
        (None, b"", False, "silence", None),
        (2, b"Bad parameter -x.\r\n", False, "error", None),
    ],
)
def test_windows_ping_output_is_judged_by_markers_not_words(
    code: int | None, out: bytes, v6: bool, verdict: str, rtt: float | None
) -> None:
    assert judge_ping("win32", code, out, v6) == (verdict, rtt)


def test_linux_ping_keeps_its_exit_code_meaning() -> None:
    out = b"64 bytes from 10.0.0.5: icmp_seq=1 ttl=64 time=0.045 ms\n"
    assert judge_ping("linux", 0, out, False) == ("reply", 0.045)
    assert judge_ping("linux", 1, b"From 10.0.0.1 icmp_seq=1 Destination Host Unreachable\n", False) == ("silence", None)


def test_hostile_ping_output_is_bounded_and_never_a_reply() -> None:
    assert judge_ping("win32", 0, b"\x00\xff" * 40000, False) == ("unreachable", None)
    assert judge_ping("win32", 0, b"TTL" * 10000, False)[0] == "unreachable"


def test_windows_ping_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(icmp_echo.sys, "platform", "win32")
    monkeypatch.setattr(icmp_echo.shutil, "which", lambda name: "C:\\Windows\\System32\\PING.EXE")
    assert icmp_echo.ping_command("10.0.0.5", 1.5) == ["C:\\Windows\\System32\\PING.EXE", "-n", "1", "-w", "1500", "10.0.0.5"]
    assert icmp_echo.ping_command("fd00::5", 0.2)[-2:] == ["-6", "fd00::5"]


def _fake_ping(output: bytes, code: int) -> list[str]:
    script = f"import sys; sys.stdout.buffer.write({output!r}); sys.exit({code})"
    return [sys.executable, "-c", script]


@pytest.mark.parametrize(
    ("output", "code", "status", "reason"),
    [
        (sample(b"Reply from 127.0.0.1: bytes=32 time<1ms TTL=128", b"127.0.0.1"), 0, Status.PASS, Reason.OK),
        (sample(b"Reply from 10.0.0.1: Destination host unreachable.", b"127.0.0.1"), 0, Status.FAIL, Reason.UNREACHABLE),
        (sample(b"Request timed out.", b"127.0.0.1", lost=True), 1, Status.FAIL, Reason.FILTERED),
    ],
)
async def test_on_windows_the_probe_uses_ping_exe_and_no_icmp_socket(
    monkeypatch: pytest.MonkeyPatch, output: bytes, code: int, status: Status, reason: Reason
) -> None:
    monkeypatch.setattr(icmp_echo.sys, "platform", "win32")
    monkeypatch.setattr(icmp_echo, "open_icmp_socket", lambda *a: pytest.fail("no ICMP socket on Windows"))
    monkeypatch.setattr(icmp_echo, "ping_command", lambda address, timeout: _fake_ping(output, code))
    ctx = make_context("127.0.0.1", "127.0.0.1", None, "icmp", probe="icmp-echo", timeout=1.0, retries=0)
    result = await run_probe("icmp-echo", ctx)
    assert (result.status, result.reason) == (status, reason), result.detail
    assert result.evidence["method"] == "ping command"
