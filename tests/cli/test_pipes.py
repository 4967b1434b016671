"""A closed stdout (`| head`) ends quietly; Ctrl-C never prints a traceback; profile text stays text."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli._run import portready


def _read_a_little_then_close(*args: str) -> tuple[int, str]:
    """Like `portready ARGS | head -c 200`: the reader goes away after a few bytes."""
    proc = subprocess.Popen([sys.executable, "-m", "scanner", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert proc.stdout.read(200)
        proc.stdout.close()
        err = proc.stderr.read().decode()
        return proc.wait(timeout=60), err
    finally:
        proc.stderr.close()


@pytest.mark.parametrize(
    "args",
    [
        ("profiles", "--json"),
        ("profiles",),
        ("profiles", "--roles"),
        ("profiles", "--probes"),
        ("plan", "--target", "monitored-computers=192.0.2.0/26"),
        ("plan", "--target", "monitored-computers=192.0.2.0/26", "--json"),
        ("init", "-"),
    ],
)
def test_a_listing_into_a_closed_pipe_exits_0_quietly(args: tuple[str, ...]) -> None:
    code, err = _read_a_little_then_close(*args)
    assert code == 0, err
    assert err == ""


def test_a_scan_into_a_closed_pipe_keeps_its_verdict(tmp_path: Path) -> None:
    closed = __import__("socket").socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    # Many refused rows: the console table is long enough to outgrow the pipe.
    hosts = ",".join(f"127.0.0.{i}" for i in range(1, 40))
    code, err = _read_a_little_then_close(
        "scan", "--target", f"monitored-computers={hosts}", "--profile", "windows-server", "--depth", "port",
        "--timeout", "1", "--set", f"ports.sql-port={port}",
    )
    assert code == 1, err  # refused rows fail; a closed stdout does not turn that into a pass
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_ctrl_c_while_waiting_at_a_password_prompt_prints_no_traceback(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text("targets:\n  domain-controllers: [192.0.2.1]\n"
                   "credentials:\n  domain-controllers: {username: a, password_prompt: true}\n")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "scanner", "scan", "-i", str(inv), "--quiet"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})  # fmt: skip
    assert proc.stderr is not None
    # getpass falls back to stdin without a terminal and prints the prompt on stderr first.
    assert proc.stderr.read(8)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    proc.stdin.close()  # type: ignore[union-attr]
    assert proc.returncode == 130
    assert "Traceback" not in err and "interrupted" in err


def test_profiles_prints_no_markup_or_escapes_from_a_profile_file(tmp_path: Path) -> None:
    (tmp_path / "evil.yaml").write_text(
        "id: evil\ntitle: \"[bold red]EVIL[/bold red] \\e[31mred\"\nsection: \"\\e]0;pwned\\a sect\"\nrows:\n"
        "  - id: r1\n    doc: {port: '1', protocol: TCP, source: a, target: b, purpose: \"[link=http://x]click[/link] \\e[2J\"}\n"
        "    direction: outbound\n    source: auditor-server\n    target: domain-controllers\n"
        "    checks:\n      - {protocol: tcp, port: 1, probe: tcp}\n"
    )
    proc = portready("profiles", "evil", "--profiles", str(tmp_path), env={"COLUMNS": "300", "TERM": "xterm"})
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\a" not in proc.stdout
    assert "[link=http://x]click[/link]" in proc.stdout  # shown literally, not interpreted
