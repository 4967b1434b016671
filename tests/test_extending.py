"""Adding a probe is its module and its test: the README's example probe, dropped into a temporary
folder of the probe package, is used by a profile row through the real loader, engine and reports,
next to a throwaway report format, with no other file edited."""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Mapping, TextIO

import pytest

import scanner.probes
from scanner.cli import main
from scanner.probes import _discovery, base
from scanner.reporters import RenderOptions, reporter, reporters, unregister

ROOT = Path(__file__).resolve().parents[1]
MODULE = "scanner.probes.greeting"


def readme_block(first_line: str) -> str:
    """The fenced code block of README.md that starts with `first_line`."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index(first_line)
    return readme[start : readme.index("\n```", start)] + "\n"


@pytest.fixture
def greeting_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The README's probe module in a folder the probe package searches, found by the real discovery."""
    assert not (ROOT / "scanner" / "probes" / "greeting.py").exists(), "the example must not be a real probe"
    base.registry()
    saved = dict(base._REGISTRY)
    folder = tmp_path / "dropped-in"
    folder.mkdir()
    (folder / "greeting.py").write_text(readme_block("# scanner/probes/greeting.py"), encoding="utf-8")
    monkeypatch.setattr(scanner.probes, "__path__", [*scanner.probes.__path__, str(folder)])
    monkeypatch.setattr(_discovery, "_loaded", False)
    try:
        yield
    finally:
        base._REGISTRY.clear()
        base._REGISTRY.update(saved)
        sys.modules.pop(MODULE, None)


@pytest.fixture
def greeting_lines() -> Iterator[str]:
    """A throwaway format: one line per row x target with the check summaries."""

    def render(doc: Mapping[str, Any], out: TextIO, options: RenderOptions) -> None:
        for row in doc["rows"]:
            summaries = "; ".join(c.get("summary") or "-" for c in row["checks"])
            out.write(f"{row['row']} {row['status']} {row['reason']} {summaries}\n")

    reporters()
    reporter("greeting-lines", flag="--greeting-lines", help="test format")(render)
    try:
        yield "--greeting-lines"
    finally:
        unregister("greeting-lines")


class _Greeter:
    """A loopback service that sends one greeting to every connection, then closes."""

    def __init__(self, greeting: bytes) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.greeting = greeting
        self.sock.settimeout(0.1)  # accept() wakes up to see the stop flag
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                try:
                    conn.sendall(self.greeting)
                except OSError:  # the client read its fill and reset the connection
                    pass

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def greeters() -> Iterator[tuple[int, int, int]]:
    mail = _Greeter(b"220 mail.lab.test ESMTP ready\r\n")
    other = _Greeter(b"SSH-2.0-OpenSSH_9.2\r\n" + b"x" * 100_000)  # another service, and a flood
    spare = socket.create_server(("127.0.0.1", 0))
    refused = spare.getsockname()[1]
    spare.close()
    try:
        yield mail.port, other.port, refused
    finally:
        mail.close()
        other.close()


PROFILE = """\
id: greeting-lab
title: Greeting lab
section: Greeting Lab
rows:
{rows}
"""
ROW = """\
  - id: {id}
    doc: {{port: "25", protocol: TCP, source: Netwrix Auditor Server, target: Lab hosts, purpose: {id}}}
    direction: outbound
    source: auditor-server
    target: monitored-computers
    checks:
      - {{protocol: tcp, port: 25, setting: {id}-port, probe: greeting, options: {{expect: "220"}}}}
"""


def test_the_readme_probe_and_a_throwaway_format_work_with_nothing_else_edited(
    tmp_path: Path, greeting_probe: None, greeting_lines: str, greeters: tuple[int, int, int]
) -> None:
    mail, other, refused = greeters
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "greeting-lab.yaml").write_text(
        PROFILE.format(rows="".join(ROW.format(id=i) for i in ("mail", "other", "nobody"))), encoding="utf-8"
    )
    out, lines = tmp_path / "r.json", tmp_path / "r.txt"
    code = main([
        "scan", "--profiles", str(profiles), "--profile", "greeting-lab", "--target", "monitored-computers=127.0.0.1",
        "--set", f"ports.mail-port={mail}", "--set", f"ports.other-port={other}", "--set", f"ports.nobody-port={refused}",
        "--timeout", "2", "--quiet", "--json", str(out), greeting_lines, str(lines),
    ])  # fmt: skip
    assert code == 1  # two rows fail
    rows = {r["row"]: r for r in json.loads(out.read_text(encoding="utf-8"))["rows"]}
    assert (rows["mail"]["status"], rows["mail"]["reason"]) == ("pass", "ok")
    assert rows["mail"]["checks"][0]["probe"] == "greeting"
    assert rows["mail"]["checks"][0]["summary"] == "greets '220 mail.lab.test ESMTP ready'"
    assert (rows["other"]["status"], rows["other"]["reason"]) == ("fail", "protocol")
    assert "another service answers there" in rows["other"]["detail"]
    assert (rows["nobody"]["status"], rows["nobody"]["reason"]) == ("fail", "refused")
    written = lines.read_text(encoding="utf-8").splitlines()
    assert "mail pass ok greets '220 mail.lab.test ESMTP ready'" in written
    assert "nobody fail refused -" in written
    # a saved run re-renders through the same format
    again = tmp_path / "again.txt"
    assert main(["report", str(out), greeting_lines, str(again), "-q"]) == 1
    assert again.read_text(encoding="utf-8") == lines.read_text(encoding="utf-8")


def test_the_readme_probe_options_are_checked_when_the_profile_loads(tmp_path: Path, greeting_probe: None) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    bad = ROW.format(id="mail").replace('{expect: "220"}', "{expect: 220}")
    (profiles / "greeting-lab.yaml").write_text(PROFILE.format(rows=bad), encoding="utf-8")
    assert main(["profiles", "--profiles", str(profiles), "greeting-lab"]) == 2


def test_the_probe_list_shows_the_dropped_in_probe_and_its_options(
    greeting_probe: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # one table line per probe line
    assert main(["profiles", "--probes"]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if " greeting " in ln]
    assert "expect ('220'): how the greeting line starts" in line


def test_without_the_module_no_profile_can_use_the_probe(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "greeting-lab.yaml").write_text(PROFILE.format(rows=ROW.format(id="mail")), encoding="utf-8")
    assert main(["profiles", "--profiles", str(profiles), "greeting-lab"]) == 2
