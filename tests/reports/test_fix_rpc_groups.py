"""`fix` for failed dcom and rpc-auth checks names the Windows rule group of what the check asked for.

dcom names its DCOM server in the evidence (`server`: wmi, pla), rpc-auth the interfaces it was
given (`asked`: scm, eventlog, winreg, tasksched); the probes declare that key in their
`firewall` hint, so the group follows the check, not every service a row's purpose mentions
(Remote Registry over \\PIPE\\winreg is SMB: File and Printer Sharing, even on a row whose
purpose names the Service Control Manager too). Reports without that evidence fall back to
the purpose, then to the hint's default.
"""

from __future__ import annotations

from typing import Any

import pytest

from scanner.models import Reason, Status
from scanner.probes.base import get_probe
from scanner.remediation import netsh, plan_fixes, powershell
from scanner.report import build_document
from tests.reports import samples

WMI_GROUP = "Windows Management Instrumentation (WMI)"
PLA_GROUP = "Performance Logs and Alerts"
SCM_ROW = samples.row("windows-server", "scm-135", "135", "TCP",
                      "Service Control Manager Remote Protocol (RPC) Core Service installation", target_role="windows-servers")
WINREG_ROW = samples.row("windows-server", "winreg-139-445", "139, 445", "TCP",
                         "Service Control Manager Remote Protocol (RPC) Remote registry", target_role="windows-servers")
PLA_ROW = samples.row("windows-server", "pla-135-dynamic", "135 and dynamic range: 1024 -65535", "TCP",
                      "Collect removable storage insertions. Allow the following process to use the port: "
                      "%systemroot%\\system32\\plasrv.exe", target_role="windows-servers")
PLAIN_ROW = samples.row("windows-server", "other", "135", "TCP", "Core Service communication", target_role="windows-servers")


def _doc(row: Any, port: Any, probe: str, reason: Reason = Reason.FILTERED, **evidence: Any) -> dict[str, Any]:
    doc = build_document("scan", [samples.result(row, "fs1", "198.18.0.20",
                                                 samples.check("tcp", port, probe, Status.FAIL, reason, reason.value,
                                                               **evidence))],
                         started="s", finished="f", options={})
    doc["host"] = {"name": "auditor01", "addresses": [samples.AUDITOR], "os": "x", "python": "3"}
    return doc


def test_the_probes_declare_their_hint_with_the_evidence_that_names_the_service() -> None:
    assert get_probe("dcom").firewall is not None and get_probe("dcom").firewall.evidence_key == "server"
    assert get_probe("rpc-auth").firewall is not None and get_probe("rpc-auth").firewall.evidence_key == "asked"


@pytest.mark.parametrize(("row", "server", "group"), [
    (samples.WMI, "wmi", WMI_GROUP),
    (PLA_ROW, "pla", PLA_GROUP),
    (PLAIN_ROW, "pla", PLA_GROUP),  # the server decides even where the purpose names neither
])
def test_a_failed_dcom_check_enables_its_servers_group(row: Any, server: str, group: str) -> None:
    (fix,) = plan_fixes(_doc(row, "1024-65535", "dcom", server=server, clsid="x", step="activation"))
    assert fix.groups == (group,)
    ps = powershell([fix])
    assert f"Enable-NetFirewallRule -DisplayGroup '{group}'" in ps
    assert "New-NetFirewallRule" not in ps  # never the whole dynamic range as a port rule
    assert f'netsh advfirewall firewall set rule group="{group}" new enable=yes' in netsh([fix])


@pytest.mark.parametrize(("row", "group"), [(PLA_ROW, PLA_GROUP), (samples.WMI, WMI_GROUP), (PLAIN_ROW, WMI_GROUP)])
def test_a_dcom_check_without_evidence_falls_back_to_the_purpose_then_wmi(row: Any, group: str) -> None:
    (fix,) = plan_fixes(_doc(row, "1024-65535", "dcom"))  # a report written before the evidence existed
    assert fix.groups == (group,)


@pytest.mark.parametrize(("row", "port", "asked", "group"), [
    (SCM_ROW, 135, ["scm"], "Remote Service Management"),
    (WINREG_ROW, 445, ["winreg"], "File and Printer Sharing"),
    (PLAIN_ROW, 135, ["eventlog"], "Remote Event Log Management"),
    (PLAIN_ROW, 135, ["tasksched"], "Remote Scheduled Tasks Management"),
])
def test_a_failed_rpc_auth_check_enables_the_group_of_each_interface_it_asked_for(
        row: Any, port: int, asked: list[str], group: str) -> None:
    (fix,) = plan_fixes(_doc(row, port, "rpc-auth", asked=asked))
    assert fix.groups == (group,)
    assert f"Enable-NetFirewallRule -DisplayGroup '{group}'" in powershell([fix])


def test_remote_registry_is_file_and_printer_sharing_not_the_scm_group_its_purpose_also_names() -> None:
    (with_evidence,) = plan_fixes(_doc(WINREG_ROW, 445, "rpc-auth", asked=["winreg"]))
    assert "Remote Service Management" not in with_evidence.groups
    (without,) = plan_fixes(_doc(WINREG_ROW, 445, "rpc-auth"))  # an older report: the purpose names both
    assert set(without.groups) == {"Remote Service Management", "File and Printer Sharing"}


def test_several_interfaces_get_every_group() -> None:
    (fix,) = plan_fixes(_doc(PLAIN_ROW, 135, "rpc-auth", asked=["scm", "eventlog"]))
    assert fix.groups == ("Remote Service Management", "Remote Event Log Management")


def test_an_unknown_interface_gets_a_port_rule_not_a_guessed_group() -> None:
    (fix,) = plan_fixes(_doc(PLAIN_ROW, 135, "rpc-auth", asked=["frobnicator"]))
    assert fix.groups == ()
    assert "New-NetFirewallRule" in powershell([fix]) and "-LocalPort 135 " in powershell([fix])


@pytest.mark.parametrize("reason", [Reason.AUTH, Reason.POLICY, Reason.NOT_REGISTERED])
def test_an_auth_or_policy_failure_opens_nothing(reason: Reason) -> None:
    (fix,) = plan_fixes(_doc(SCM_ROW, 135, "rpc-auth", reason=reason, asked=["scm"]))
    assert not fix.opens
    assert "Enable-NetFirewallRule" not in powershell([fix]) and "New-NetFirewallRule" not in powershell([fix])


@pytest.mark.parametrize("asked", [[{"x": 1}, 5, None], "scm" * 5000, {"scm": True}, ["A" * 100_000, "scm"], 42])
def test_hostile_evidence_in_a_saved_report_never_crashes_fix(asked: Any) -> None:
    (fix,) = plan_fixes(_doc(SCM_ROW, 135, "rpc-auth", asked=asked))
    assert fix.groups  # the purpose still decides: Remote Service Management
    assert all(g in ("Remote Service Management",) for g in fix.groups)
