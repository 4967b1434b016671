"""Credentialed RPC/DCOM checks end to end against the lab's Samba DC, through `portready scan`.

With the DC's admin password (and with a wrong one) the Windows Server profile runs
rpc-auth (Remote Registry over \\PIPE\\winreg, the SCM via 135) and dcom (WMI, PLA; Samba
has no DCOM, so those read not-registered). The password must appear in no output at all:
JSON, JUnit, HTML, Markdown, CSV and the console.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scanner.cli import main
from tests.lab.samba_dc import SambaDC

pytestmark = pytest.mark.lab

FORMATS = ("json", "junit", "html", "markdown", "csv")


def _scan(
    dc: SambaDC, tmp_path: Path, password: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> tuple[dict[str, Any], str]:
    monkeypatch.setenv("PORTREADY_TEST_DC_PASSWORD", password)
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "targets:\n"
        f"  monitored-computers: [{dc.address}]\n"
        "credentials:\n"
        f"  monitored-computers: {{username: {dc.admin_user}, domain: {dc.domain}, "
        "password_env: PORTREADY_TEST_DC_PASSWORD}\n"
    )
    outputs: list[str] = []
    for fmt in FORMATS:
        outputs += [f"--{fmt}", str(tmp_path / f"report.{fmt}")]
    main(["scan", "-i", str(inventory), "--profile", "windows-server", "--timeout", "2", *outputs])
    console = capsys.readouterr()
    doc = json.loads((tmp_path / "report.json").read_text())
    texts = "\n".join((tmp_path / f"report.{fmt}").read_text() for fmt in FORMATS) + console.out + console.err
    return doc, texts


def _check(doc: dict[str, Any], row: str, probe: str) -> dict[str, Any]:
    r = next(r for r in doc["rows"] if r["row"] == row)
    return next(c for c in r["checks"] if c["probe"] == probe)


def test_admin_password_proves_remote_registry_and_never_appears_in_any_output(
    dc: SambaDC, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    doc, texts = _scan(dc, tmp_path, dc.admin_password, monkeypatch, capsys)
    winreg = _check(doc, "winreg-139-445", "rpc-auth")
    assert winreg["status"] == "pass", winreg["detail"]
    assert winreg["evidence"]["interfaces"][0]["call"] == "OpenLocalMachine"
    wmi = _check(doc, "wmi-135-dynamic", "dcom")
    assert (wmi["status"], wmi["reason"]) == ("inconclusive", "not-registered"), wmi["detail"]
    scm = _check(doc, "scm-135", "rpc-auth")
    assert scm["reason"] == "not-registered", scm["detail"]  # Samba: svcctl on pipes only
    assert dc.admin_password not in texts


def test_wrong_password_fails_auth_and_neither_password_appears(
    dc: SambaDC, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    wrong = "Wrong-" + dc.admin_password[::-1]
    doc, texts = _scan(dc, tmp_path, wrong, monkeypatch, capsys)
    winreg = _check(doc, "winreg-139-445", "rpc-auth")
    assert (winreg["status"], winreg["reason"]) == ("fail", "auth"), winreg["detail"]
    assert wrong not in texts and dc.admin_password not in texts
