"""Remediation: the rule for the side that must change, worded by why the row failed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scanner.cli import main
from scanner.models import Direction, Reason, Status
from scanner.remediation import auditor_address, netsh, ontap, plan_fixes, powershell
from scanner.report import build_document

from . import samples


def _doc(*results: Any) -> dict[str, Any]:
    doc = build_document("scan", list(results), started="s", finished="f", options={})
    doc["host"] = {"name": "auditor01", "addresses": ["127.0.0.1", samples.AUDITOR], "os": "x", "python": "3"}
    return doc


def _one(reason: Reason, status: Status = Status.FAIL, r: Any = None, port: int = 3269, probe: str = "ldaps", **ev: Any) -> dict[str, Any]:
    return _doc(samples.result(r or samples.GC_SSL, "dc1", "198.18.0.10",
                               samples.check("tcp", port, probe, status, reason, f"{reason.value}", **ev)))


def test_filtered_names_the_path_and_opens_the_port_on_the_target_for_the_auditor_only() -> None:
    (fix,) = plan_fixes(_one(Reason.FILTERED))
    assert fix.rule_host == "dc1" and fix.remote == samples.AUDITOR
    assert f"a firewall between the Auditor ({samples.AUDITOR}) and dc1 drops TCP 3269" in fix.advice
    ps = powershell([fix])
    assert (f"New-NetFirewallRule -DisplayName 'Netwrix Auditor TCP 3269 from {samples.AUDITOR}' -Direction Inbound "
            f"-Protocol TCP -LocalPort 3269 -RemoteAddress {samples.AUDITOR} -Action Allow "
            "-Description 'Global catalog LDAP over SSL'") in ps
    assert "# ---- on dc1 (198.18.0.10)" in ps
    assert (f'netsh advfirewall firewall add rule name="Netwrix Auditor TCP 3269 from {samples.AUDITOR}" dir=in action=allow '
            f"protocol=TCP localport=3269 remoteip={samples.AUDITOR}") in netsh([fix])


def test_refused_says_check_the_service_before_blaming_a_firewall() -> None:
    (fix,) = plan_fixes(_one(Reason.REFUSED))
    assert fix.advice.startswith("nothing listens on TCP 3269 on dc1 (or a host firewall rejects): check that the service runs")
    assert "a firewall between" not in fix.advice


def test_wmi_row_enables_the_predefined_rule_group() -> None:
    doc = _doc(samples.result(samples.WMI, "dc1", "198.18.0.10",
                              samples.check("tcp", "1024-65535", "rpc-dynamic", Status.FAIL, Reason.FILTERED, "x",
                                            interfaces=[{"interface": "wmi", "status": "filtered"}])))
    (fix,) = plan_fixes(doc)
    assert fix.groups == ("Windows Management Instrumentation (WMI)",)
    ps = powershell([fix])
    assert "Enable-NetFirewallRule -DisplayGroup 'Windows Management Instrumentation (WMI)'" in ps
    assert "New-NetFirewallRule" not in ps  # not the whole dynamic range as a port rule
    assert 'netsh advfirewall firewall set rule group="Windows Management Instrumentation (WMI)" new enable=yes' in netsh([fix])


@pytest.mark.parametrize(("purpose", "group"), [
    ("Service Control Manager Remote Protocol (RPC) Core Service installation", "Remote Service Management"),
    ("Collect removable storage insertions. Allow %systemroot%\\system32\\plasrv.exe", "Performance Logs and Alerts"),
    ("Remote Event Log Management", "Remote Event Log Management"),
    ("Remote Scheduled Tasks Management (RPC)", "Remote Scheduled Tasks Management"),
    ("File and Printer Sharing (NetBIOS Name Resolution)", "File and Printer Sharing"),
])
def test_rpc_rows_map_to_the_group_the_document_names(purpose: str, group: str) -> None:
    r = samples.row("windows-server", "x", "135", "TCP", purpose, target_role="windows-servers")
    (fix,) = plan_fixes(_one(Reason.FILTERED, r=r, port=135, probe="epm"))
    assert group in fix.groups


def test_netapp_row_gives_the_ontap_policy_commands_of_the_document() -> None:
    fixes = plan_fixes(samples.scan_doc("new"))
    text = ontap(fixes)
    assert f"system services firewall policy create -policy netwrix_policy -service https -vserver <svm> -allow-list {samples.AUDITOR}/32" in text
    assert f"-service https -vserver <svm> -action allow -ip-list {samples.AUDITOR}/32" in text  # the 8.2 form
    assert "network interface modify -vserver <svm> -lif <lif> -firewall-policy netwrix_policy" in text
    assert "-service http " not in text  # only the failed service
    netapp = next(f for f in fixes if f.profile == "netapp-ontap")
    assert "New-NetFirewallRule" not in powershell([netapp])


def test_pass_and_skip_rows_get_no_rule_and_non_port_reasons_say_what_they_are() -> None:
    assert plan_fixes(_one(Reason.OK, Status.PASS)) == []
    assert plan_fixes(_one(Reason.NOT_CONFIGURED, Status.SKIP)) == []
    (dns,) = plan_fixes(_one(Reason.UNRESOLVED))
    assert dns.advice.startswith("fix DNS") and not dns.opens
    (auth,) = plan_fixes(_one(Reason.AUTH))
    assert "account issue, not a port" in auth.advice and "New-NetFirewallRule" not in powershell([auth])
    (policy,) = plan_fixes(_one(Reason.POLICY))
    assert "policy issue, not a port" in policy.advice


def test_inbound_rows_put_the_rule_on_the_auditor_host_from_the_source() -> None:
    fixes = plan_fixes(samples.listen_doc())
    (fix,) = fixes
    assert fix.rule_host == "Auditor host" and fix.remote == "198.18.0.51" and fix.direction == Direction.INBOUND.value
    assert "-Protocol UDP -LocalPort 514 -RemoteAddress 198.18.0.51" in powershell(fixes)


def test_hostile_document_text_cannot_escape_the_quotes_of_a_command() -> None:
    r = samples.row("active-directory", "x", "3269", "TCP", "x' ; Remove-Item C:\\ -Recurse ; '\"& calc\n`$(evil)")
    doc = _doc(samples.result(r, "dc1\n;calc", "198.18.0.10; calc",
                              samples.check("tcp", 3269, "ldaps", Status.FAIL, Reason.FILTERED, "x")))
    doc["host"]["addresses"] = ["1.2.3.4; calc"]
    fixes = plan_fixes(doc)
    ps, ns = powershell(fixes), netsh(fixes)
    (ps_line,) = [x for x in ps.splitlines() if x.startswith("New-NetFirewallRule")]
    (ns_line,) = [x for x in ns.splitlines() if x.startswith("netsh advfirewall firewall add")]
    assert ps_line.count("'") == 4  # -DisplayName '...' and -Description '...', nothing closes them early
    assert ns_line.count('"') == 4  # name="..." and description="..."
    for line in (ps_line, ns_line):
        assert not set(line) & set("`$%&|<>^\n\r\\")
    assert "-RemoteAddress 198.18.0.10" not in ps_line and "calc" not in ps_line.split("-Description")[0]
    assert "-RemoteAddress <auditor address>" not in ps  # a placeholder never reaches an argument
    assert "\n;calc" not in ps


def test_auditor_address_skips_loopback_and_link_local() -> None:
    assert auditor_address({"host": {"addresses": ["127.0.1.1", "fe80::1", "fd5e::5", "198.18.0.5"]}}) == "198.18.0.5"
    assert auditor_address({"host": {"addresses": ["::1"]}}) == "<auditor address>"


def test_fix_command_prints_each_format_and_returns_the_documents_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = Path(__file__).parent.parent / "data" / "reports" / "scan-new.json"
    for fmt, expect in (("table", "SOURCE"), ("powershell", "Enable-NetFirewallRule"), ("netsh", "netsh advfirewall"),
                        ("ontap", "system services firewall policy"), ("markdown", "## How to fix")):
        assert main(["fix", str(src), "--format", fmt]) == 1
        assert expect in capsys.readouterr().out
    out = tmp_path / "rules.ps1"
    assert main(["fix", str(src), "-f", "powershell", "--auditor", "198.18.9.9", "-o", str(out)]) == 1
    assert "-RemoteAddress 198.18.9.9" in out.read_text() or "198.18.9.9" in out.read_text()
    assert main(["fix", str(src), "--auditor", "not an address"]) == 2
    passing = tmp_path / "pass.json"
    passing.write_text(json.dumps(_one(Reason.OK, Status.PASS)))
    assert main(["fix", str(passing)]) == 0
    assert "nothing to open" in capsys.readouterr().out
