"""`fix` after a credentialed scan of the lab's Samba DC with 135 and 445 dropped.

The dcom checks (WMI, PLA) and the rpc-auth checks (SCM via 135, Remote Registry over
\\PIPE\\winreg on 445) fail `filtered` at the network, before any answer; their evidence
still names what they asked for, and `fix` enables the rule group of each: WMI and PLA for
the dynamic range, Remote Service Management on 135, File and Printer Sharing on 445.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scanner.cli import main
from scanner.remediation import plan_fixes
from tests.lab.firewall import Firewall
from tests.lab.samba_dc import SambaDC

pytestmark = pytest.mark.lab


def _check(doc: dict[str, Any], row: str, probe: str) -> dict[str, Any]:
    r = next(r for r in doc["rows"] if r["row"] == row)
    return next(c for c in r["checks"] if c["probe"] == probe)


def test_fix_names_the_rule_group_of_each_failed_dcom_and_rpc_auth_check(
        dc: SambaDC, dc_firewall: Firewall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PORTREADY_TEST_DC_PASSWORD", dc.admin_password)
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "targets:\n"
        f"  monitored-computers: [{dc.address}]\n"
        "credentials:\n"
        f"  monitored-computers: {{username: {dc.admin_user}, domain: {dc.domain}, "
        "password_env: PORTREADY_TEST_DC_PASSWORD}\n"
    )
    dc_firewall.drop(135, "tcp")
    dc_firewall.drop(445, "tcp")
    report = tmp_path / "report.json"
    assert main(["scan", "-i", str(inventory), "--profile", "windows-server", "--timeout", "1", "--retries", "0",
                 "--json", str(report), "--quiet"]) == 1
    doc = json.loads(report.read_text())
    wmi, pla = _check(doc, "wmi-135-dynamic", "dcom"), _check(doc, "pla-135-dynamic", "dcom")
    scm, winreg = _check(doc, "scm-135", "rpc-auth"), _check(doc, "winreg-139-445", "rpc-auth")
    for check, key, value in ((wmi, "server", "wmi"), (pla, "server", "pla"), (scm, "asked", ["scm"]),
                              (winreg, "asked", ["winreg"])):
        assert (check["status"], check["reason"]) == ("fail", "filtered"), check["detail"]
        assert check["evidence"][key] == value
    by_port = {f.port: f for f in plan_fixes(doc) if f.opens}
    assert set(by_port["1024-65535"].groups) == {"Windows Management Instrumentation (WMI)", "Performance Logs and Alerts"}
    assert "Remote Service Management" in by_port["135"].groups
    assert by_port["445"].groups == ("File and Printer Sharing",)
    capsys.readouterr()
    assert main(["fix", str(report), "--format", "powershell", "--output", str(tmp_path / "fix.ps1")]) == 1
    ps = (tmp_path / "fix.ps1").read_text()
    for group in ("Windows Management Instrumentation (WMI)", "Performance Logs and Alerts",
                  "Remote Service Management", "File and Printer Sharing"):
        assert f"Enable-NetFirewallRule -DisplayGroup '{group}'" in ps, group
    assert dc.admin_password not in ps + report.read_text()
