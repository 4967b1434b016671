"""Remediation: one rule per finding, for the side that must change, worded by why the port failed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from scanner.cli import main
from scanner.models import Direction, Reason, Status
from scanner.remediation import (
    AUDITOR_PLACEHOLDER,
    PS_AUDITOR_PLACEHOLDER,
    auditor_address,
    collapse,
    fix_formats,
    netsh,
    ontap,
    plan_fixes,
    powershell,
    table,
)
from scanner.report import build_document

from . import samples

ROOT = Path(__file__).resolve().parents[2]


def _doc(*results: Any, addresses: list[str] | None = None) -> dict[str, Any]:
    doc = build_document("scan", list(results), started="s", finished="f", options={})
    doc["host"] = {"name": "auditor01", "addresses": ["127.0.0.1", samples.AUDITOR] if addresses is None else addresses,
                   "os": "x", "python": "3"}  # fmt: skip
    return doc


def _one(reason: Reason, status: Status = Status.FAIL, r: Any = None, port: int = 3269, probe: str = "ldaps", **ev: Any) -> dict[str, Any]:
    return _doc(samples.result(r or samples.GC_SSL, "dc1", "198.18.0.10",
                               samples.check("tcp", port, probe, status, reason, f"{reason.value}", **ev)))


def _rules(text: str) -> list[str]:
    return [x for x in text.splitlines() if x.startswith(("New-NetFirewallRule", "netsh advfirewall firewall add"))]


def test_filtered_names_the_path_and_opens_the_port_on_the_target_for_the_auditor_only() -> None:
    (fix,) = plan_fixes(_one(Reason.FILTERED))
    assert [h.name for h in fix.hosts] == ["dc1"] and fix.remote == samples.AUDITOR and not fix.inbound
    assert f"a firewall between the Auditor ({samples.AUDITOR}) and dc1 (198.18.0.10) drops TCP 3269" in fix.advice
    ps = powershell([fix])
    assert (f"New-NetFirewallRule -DisplayName 'Netwrix Auditor TCP 3269 from {samples.AUDITOR}' -Direction Inbound "
            f"-Protocol TCP -LocalPort 3269 -RemoteAddress {samples.AUDITOR} -Action Allow "
            "-Description 'Global catalog LDAP over SSL'") in ps
    assert "# ---- on dc1 (198.18.0.10): TCP 3269" in ps
    assert (f'netsh advfirewall firewall add rule name="Netwrix Auditor TCP 3269 from {samples.AUDITOR}" dir=in action=allow '
            f"protocol=TCP localport=3269 remoteip={samples.AUDITOR}") in netsh([fix])


def test_refused_says_check_the_service_before_blaming_a_firewall() -> None:
    (fix,) = plan_fixes(_one(Reason.REFUSED))
    assert fix.advice.startswith("nothing listens on TCP 3269 on dc1 (198.18.0.10) (or a host firewall rejects): check that the service runs")
    assert "a firewall between" not in fix.advice


def test_without_an_auditor_address_no_rule_is_open_to_any_address() -> None:
    doc = _doc(samples.result(samples.GC_SSL, "dc1", "198.18.0.10",
                              samples.check("tcp", 3269, "ldaps", Status.FAIL, Reason.FILTERED, "x")),
               samples.result(samples.WMI, "dc1", "198.18.0.10",
                              samples.check("tcp", "1024-65535", "rpc-dynamic", Status.FAIL, Reason.FILTERED, "x")),
               addresses=["127.0.0.1", "fe80::1", "0.0.0.0"])  # fmt: skip
    assert auditor_address(doc) is None
    fixes = plan_fixes(doc)
    ps, ns = powershell(fixes), netsh(fixes)
    (ps_rule,) = _rules(ps)
    (ns_rule,) = _rules(ns)
    assert f"-RemoteAddress {PS_AUDITOR_PLACEHOLDER} " in ps_rule  # a terminating error when run unedited
    assert f"remoteip={AUDITOR_PLACEHOLDER} " in ns_rule  # netsh rejects a word that is not an address
    for text in (ps, ns):
        assert not re.search(r"(?i)(remoteaddress|remoteip)[ =]any\b", text)
    assert "placeholder" not in ps_rule.lower() or "throw" in ps_rule
    assert "Set-NetFirewallRule" not in ps  # a group is never narrowed to an unknown address
    assert "REPLACE_WITH_AUDITOR_ADDRESS" in ontap(plan_fixes(samples.scan_doc("new") | {"host": {"addresses": []}}))
    assert "Auditor (address unknown)" in table(fixes) and "give it with --auditor-address" in table(fixes)


def test_inbound_source_without_an_address_gets_a_placeholder_not_any() -> None:
    doc = samples.listen_doc()
    doc["rows"][1]["address"] = None
    (fix,) = plan_fixes(doc)
    (ps_rule,) = _rules(powershell([fix]))
    assert "-RemoteAddress $(throw" in ps_rule and " Any " not in ps_rule
    assert "remoteip=REPLACE_WITH_SOURCE_ADDRESS" in netsh([fix])


def test_one_rule_per_target_port_and_protocol_however_many_profiles_need_it() -> None:
    ad_smb = samples.SMB
    fs_smb = samples.row("windows-file-servers", "smb-445", "445", "TCP", "SMB file share auditing",
                         target_role="domain-controllers")  # fmt: skip
    doc = _doc(samples.result(ad_smb, "dc1", "198.18.0.10", samples.check("tcp", 445, "smb", Status.FAIL, Reason.FILTERED)),
               samples.result(fs_smb, "dc1", "198.18.0.10", samples.check("tcp", 445, "tcp", Status.FAIL, Reason.FILTERED)))
    (fix,) = plan_fixes(doc)
    assert fix.rows == ("active-directory/smb-445", "windows-file-servers/smb-445")
    for text in (powershell([fix]), netsh([fix])):
        (rule,) = _rules(text)
        assert "SMB 2.0/3.0 Authenticated communication; SMB file share auditing" in rule


def test_the_reason_is_the_ports_own_not_the_rows() -> None:
    smb = samples.row("windows-server", "smb-139-445", "139, 445", "TCP", "SMB", target_role="windows-servers")
    doc = _doc(samples.result(smb, "fs1", "198.18.0.20",
                              samples.check("tcp", 139, "smb", Status.FAIL, Reason.REFUSED),
                              samples.check("tcp", 445, "smb", Status.PASS, Reason.OK)))  # fmt: skip
    (fix,) = plan_fixes(doc)
    assert fix.port == "139" and "nothing listens on TCP 139 on" in fix.advice and "445" not in fix.advice
    doc["rows"][0]["checks"][1].update(status="fail", reason="filtered")
    by_port = {f.port: f for f in plan_fixes(doc)}
    assert by_port["139"].advice.startswith("nothing listens on TCP 139")
    assert by_port["445"].advice.startswith("a firewall between") and "139" not in by_port["445"].advice


def test_many_targets_with_the_same_finding_get_one_rule_and_the_host_group() -> None:
    results = [samples.result(samples.GC_SSL, f"dc{i}", f"198.18.1.{i}",
                              samples.check("tcp", 3269, "ldaps", Status.FAIL, Reason.FILTERED)) for i in range(250)]
    results += [samples.result(samples.GC_SSL, "dcx", "198.18.2.7", samples.check("tcp", 3269, "ldaps", Status.FAIL, Reason.REFUSED))]
    fixes = plan_fixes(_doc(*results))
    assert sorted((f.reason, len(f.hosts)) for f in fixes) == [("filtered", 250), ("refused", 1)]
    filtered = next(f for f in fixes if f.reason == "filtered")
    ps = powershell(fixes)
    assert len(_rules(ps)) == 2 and len(_rules(netsh(fixes))) == 2
    assert "# ---- on 250 hosts: 198.18.1.0/25, 198.18.1.128/26, 198.18.1.192/27" in ps
    assert "250 hosts" in filtered.advice and "dc0 (198.18.1.0)" not in ps.split("# ---- on 250 hosts")[1].split("\n")[0]
    text = table(fixes)
    assert "hosts: 198.18.1.0/25, 198.18.1.128/26, 198.18.1.192/27, 198.18.1.224/28, 198.18.1.240/29, 198.18.1.248/31 (250 hosts)" in text
    assert len(text.splitlines()) < 12


def test_inbound_sources_with_the_same_finding_are_one_rule_listing_them_collapsed() -> None:
    syslog = samples.row("network-devices", "syslog-514", "514", "UDP", "Getting events from monitored devices",
                         target_role="network-devices", direction=Direction.INBOUND)  # fmt: skip
    results = [samples.result(syslog, f"sw{i}", f"198.18.3.{i}", samples.check("udp", 514, "listen", Status.FAIL, Reason.NOT_SEEN))
               for i in (4, 5, 6, 7, 9)]
    (fix,) = plan_fixes(_doc(*results))
    assert fix.sources == ("198.18.3.4/30", "198.18.3.9")
    (rule,) = _rules(powershell([fix]))
    assert "-Protocol UDP -LocalPort 514 -RemoteAddress 198.18.3.4/30,198.18.3.9 " in rule
    assert "remoteip=198.18.3.4/30,198.18.3.9 " in netsh([fix])


def test_collapse_never_widens_beyond_the_addresses_given() -> None:
    assert collapse(["10.0.0.1", "10.0.0.2", "10.0.0.3"]) == ("10.0.0.1", "10.0.0.2/31")
    assert collapse(["fd00::1", "10.0.0.8", None, "junk"]) == ("10.0.0.8", "fd00::1")


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
    netapp = next(f for f in fixes if f.rows == ("netapp-ontap/https-443",))
    assert "New-NetFirewallRule" not in powershell([netapp])


def test_a_netapp_check_run_at_port_depth_still_gets_the_ontap_form_from_the_rows_declared_probe() -> None:
    doc = _doc(samples.result(samples.ONTAP, "filer1", "198.18.0.40",
                              samples.check("tcp", 80, "tcp", Status.FAIL, Reason.FILTERED)))
    (plain,) = plan_fixes(doc)
    assert not plain.ontap_services  # the check alone says only "tcp"
    (fix,) = plan_fixes(doc, declared={"netapp-ontap/https-443": ("ontap",)})
    assert fix.ontap_services == ("http",)
    assert "-service http -vserver <svm>" in ontap([fix])


def test_pass_and_skip_rows_get_no_rule_and_non_port_reasons_say_what_they_are() -> None:
    assert plan_fixes(_one(Reason.OK, Status.PASS)) == []
    assert plan_fixes(_one(Reason.NOT_CONFIGURED, Status.SKIP)) == []
    (dns,) = plan_fixes(_one(Reason.UNRESOLVED))
    assert dns.advice.startswith("fix DNS") and not dns.opens
    (auth,) = plan_fixes(_one(Reason.AUTH))
    assert "account issue, not a port" in auth.advice and "New-NetFirewallRule" not in powershell([auth])
    (policy,) = plan_fixes(_one(Reason.POLICY))
    assert "policy issue, not a port" in policy.advice
    closed = _one(Reason.REFUSED)
    closed["rows"][0]["checks"][0]["reason"] = "closed"  # the reason another branch adds: a saved report may carry it
    (fix,) = plan_fixes(closed)
    assert "accepted the connection, then closed or reset it" in fix.advice and not _rules(powershell([fix]))


def test_inbound_rows_put_the_rule_on_the_auditor_host_from_the_source() -> None:
    fixes = plan_fixes(samples.listen_doc())
    (fix,) = fixes
    assert fix.inbound and fix.remote == "198.18.0.51" and fix.direction == Direction.INBOUND.value
    assert "-Protocol UDP -LocalPort 514 -RemoteAddress 198.18.0.51" in powershell(fixes)
    assert "# ---- on the Auditor host: UDP 514 from sw2 (198.18.0.51)" in powershell(fixes)


def test_hostile_document_text_cannot_escape_the_quotes_of_a_command() -> None:
    r = samples.row("active-directory", "x", "3269", "TCP", "x' ; Remove-Item C:\\ -Recurse ; '\"& calc\n`$(evil)")
    doc = _doc(samples.result(r, "dc1\n;calc", "198.18.0.10; calc",
                              samples.check("tcp", 3269, "ldaps", Status.FAIL, Reason.FILTERED, "x")))
    doc["host"]["addresses"] = ["1.2.3.4; calc"]
    fixes = plan_fixes(doc)
    ps, ns = powershell(fixes), netsh(fixes)
    (ps_line,) = _rules(ps)
    (ns_line,) = _rules(ns)
    ps_ours = ps_line.replace(PS_AUDITOR_PLACEHOLDER, "")  # our own fixed text, the one `$` and quotes allowed
    assert ps_ours.count("'") == 4  # -DisplayName '...' and -Description '...', nothing closes them early
    assert ns_line.count('"') == 4  # name="..." and description="..."
    for line in (ps_ours, ns_line):
        assert not set(line) & set("`$%&|<>^\n\r\\")
    assert "-RemoteAddress 198.18.0.10" not in ps_line and "calc" not in ps_line.split("-Description")[0]
    assert "\n;calc" not in ps


def test_auditor_address_skips_loopback_and_link_local() -> None:
    assert auditor_address({"host": {"addresses": ["127.0.1.1", "fe80::1", "fd5e::5", "198.18.0.5"]}}) == "198.18.0.5"
    assert auditor_address({"host": {"addresses": ["::1"]}}) is None
    assert auditor_address({"host": "junk"}) is None


def test_every_dialect_is_in_the_registry() -> None:
    assert {"table", "powershell", "netsh", "ontap"} <= set(fix_formats())


SCAN_NEW = ROOT / "tests" / "data" / "reports" / "scan-new.json"


def test_fix_command_prints_each_format_and_returns_the_documents_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for fmt, expect in (("table", "SOURCE"), ("powershell", "Enable-NetFirewallRule"), ("netsh", "netsh advfirewall"),
                        ("ontap", "system services firewall policy"), ("markdown", "## How to fix")):
        assert main(["fix", str(SCAN_NEW), "--format", fmt]) == 1
        assert expect in capsys.readouterr().out
    out = tmp_path / "new" / "folder" / "rules.ps1"
    filtered = tmp_path / "filtered.json"
    filtered.write_text(json.dumps(_one(Reason.FILTERED)))
    assert main(["fix", str(filtered), "-f", "powershell", "--auditor-address", "198.18.9.9", "-o", str(out)]) == 1
    assert "-RemoteAddress 198.18.9.9 " in out.read_text()
    assert main(["fix", str(filtered), "-f", "netsh", "--auditor", "198.18.9.8/30", "-o", str(out)]) == 1  # the old spelling
    assert "remoteip=198.18.9.8/30 " in out.read_text()
    passing = tmp_path / "pass.json"
    passing.write_text(json.dumps(_one(Reason.OK, Status.PASS)))
    assert main(["fix", str(passing)]) == 0
    assert "nothing to open" in capsys.readouterr().out


@pytest.mark.parametrize(("address", "words"), [
    ("not an address", "expected the Auditor server's IP address"),
    ("0.0.0.0/0", "holds 4294967296 addresses"),
    ("10.0.0.0/8", "far beyond the Auditor"),
    ("::/0", "addresses"),
    ("0.0.0.0", "is not an address the targets can see"),
    ("127.0.0.1", "is not an address the targets can see"),
    ("any", "expected the Auditor server's IP address"),
])
def test_fix_refuses_an_auditor_address_that_opens_more_than_the_auditor(address: str, words: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fix", str(SCAN_NEW), "--auditor-address", address]) == 2
    assert words in capsys.readouterr().err


def test_fix_without_an_auditor_address_asks_for_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _one(Reason.FILTERED)
    doc["host"]["addresses"] = ["127.0.0.1"]
    src = tmp_path / "r.json"
    src.write_text(json.dumps(doc))
    assert main(["fix", str(src), "-f", "powershell"]) == 1
    captured = capsys.readouterr()
    assert "give it with --auditor-address ADDRESS" in captured.err
    assert all("$(throw" in rule for rule in _rules(captured.out)) and _rules(captured.out)


def _hostile(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@pytest.mark.parametrize(("path", "value", "words"), [
    (("rows", 0, "checks"), "not a list", "row 0: 'checks' is a str, expected list"),
    (("rows", 0, "checks", 0), ["x"], "row 0, check 0 is not an object"),
    (("rows", 0, "checks", 0, "port"), 3.5, "row 0, check 0: 'port' is a float, expected int"),
    (("rows", 0, "checks", 0, "status"), "exploded", "row 0, check 0 has no valid status"),
    (("rows", 0, "checks", 0, "evidence"), [1, 2], "row 0, check 0: 'evidence' is a list, expected dict"),
    (("rows", 0, "target"), KeyError, "row 0: the key 'target' is missing"),
    (("rows", 0, "target"), {"x": 1}, "row 0: 'target' is a dict, expected str"),
    (("rows", 0, "address"), 12, "row 0: 'address' is an int, expected str"),
    (("rows", 0, "purpose"), ["x"] * 3, "row 0: 'purpose' is a list, expected str"),
])
def test_a_hostile_report_is_a_clear_error_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 path: tuple[Any, ...], value: Any, words: str) -> None:  # fmt: skip
    doc = json.loads(SCAN_NEW.read_text())
    failing = next(i for i, r in enumerate(doc["rows"]) if r["status"] == "fail")
    doc["rows"].insert(0, doc["rows"].pop(failing))
    src = tmp_path / "hostile.json"
    src.write_text(json.dumps(_hostile(doc, path, value)))
    assert main(["fix", str(src)]) == 2
    err = capsys.readouterr().err
    assert words in err and "internal error" not in err and "Traceback" not in err


def test_a_deeply_nested_or_broken_report_is_a_clear_error_in_the_real_command(tmp_path: Path) -> None:
    nested = tmp_path / "nested.json"
    nested.write_text('{"tool": "portready", "schema_version": 1, "rows": [' + "[" * 100_000 + "]" * 100_000 + "]}")
    broken = tmp_path / "broken.json"
    broken.write_bytes(b"\xff\xfe{not json")
    for src in (nested, broken):
        run = subprocess.run([sys.executable, "-m", "scanner", "fix", str(src)], capture_output=True, text=True,
                             timeout=120, cwd=ROOT)  # fmt: skip
        assert run.returncode == 2, run.stderr
        assert "Traceback" not in run.stderr and str(src) in run.stderr


_PROFILE = """\
id: fix-lab
title: Fix lab
section: Fix lab
rows:
  - id: smb-139-445
    doc: {port: "139, 445", protocol: TCP, source: Netwrix Auditor Server, target: Lab hosts, purpose: SMB in the lab}
    direction: outbound
    source: auditor-server
    target: monitored-computers
    checks:
      - {protocol: tcp, port: 139, probe: tcp}
      - {protocol: tcp, port: 445, probe: tcp}
  - id: netbios-139
    doc: {port: "139", protocol: TCP, source: Netwrix Auditor Server, target: Lab hosts, purpose: NetBIOS session in the lab}
    direction: outbound
    source: auditor-server
    target: monitored-computers
    checks:
      - {protocol: tcp, port: 139, probe: tcp}
"""


@pytest.mark.lab
def test_fix_on_a_real_lab_scan_gives_one_rule_per_finding_with_its_own_reason(second_host: Any, third_host: Any,
                                                                               tmp_path: Path) -> None:  # fmt: skip
    """Two lab hosts listen on 445; 139 is refused on one (nothing listens) and dropped on the other."""
    listeners = [host.popen([sys.executable, "-c", "import socket,time;s=socket.create_server(('0.0.0.0',445));time.sleep(120)"])
                 for host in (second_host, third_host)]
    third_host.firewall.drop(139, "tcp")
    try:
        for host in (second_host, third_host):  # wait until both listen, from this host
            deadline = time.monotonic() + 10
            while host.run(["ss", "-Hltn", "sport = :445"], capture_output=True, text=True).stdout.strip() == "":
                assert time.monotonic() < deadline, f"{host} did not start listening"
                time.sleep(0.05)
        (tmp_path / "profiles").mkdir()
        (tmp_path / "profiles" / "fix-lab.yaml").write_text(_PROFILE)
        report = tmp_path / "scan.json"
        code = main(["scan", "--profiles", str(tmp_path / "profiles"), "--profile", "fix-lab", "--depth", "port",
                     "--target", f"monitored-computers={second_host.ipv4}", "--target", f"monitored-computers={third_host.ipv4}",
                     "--timeout", "1", "--retries", "0", "--json", str(report), "--quiet"])  # fmt: skip
        assert code == 1
        doc = json.loads(report.read_text())
        fixes = plan_fixes(doc)
        assert sorted((f.port, f.reason, [h.address for h in f.hosts]) for f in fixes) == [
            ("139", "filtered", [third_host.ipv4]), ("139", "refused", [second_host.ipv4])]
        assert all(f.rows == ("fix-lab/smb-139-445", "fix-lab/netbios-139") for f in fixes)
        assert all("445" not in f.advice for f in fixes)
        me = auditor_address(doc)
        assert me is not None and me.startswith("198.18.")  # the address the lab hosts see
        rules = _rules(powershell(fixes))
        assert len(rules) == 2 and all(f"-LocalPort 139 -RemoteAddress {me} " in r for r in rules)
    finally:
        third_host.firewall.clear()
        for proc in listeners:
            proc.kill()
            proc.wait()


def test_at_a_terminal_fix_asks_for_the_auditor_address_and_checks_the_answer(tmp_path: Path) -> None:
    pty = pytest.importorskip("pty")  # POSIX: a pseudo-terminal stands in for the admin's console
    doc = _one(Reason.FILTERED)
    doc["host"]["addresses"] = []
    src = tmp_path / "r.json"
    src.write_text(json.dumps(doc))
    out = tmp_path / "rules.ps1"
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "scanner", "fix", str(src), "-f", "powershell", "-o", str(out)],
                            stdin=slave, stderr=slave, stdout=subprocess.DEVNULL, cwd=ROOT)  # fmt: skip
    os.close(slave)
    seen = b""
    try:
        for answer in (b"0.0.0.0/0\n", b"198.18.7.7\n"):
            while seen.count(b"Its address for the rules") < (1 if answer.startswith(b"0.") else 2):
                seen += os.read(master, 4096)
            os.write(master, answer)
        assert proc.wait(timeout=60) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert b"far beyond the Auditor" in seen  # the too-wide answer was refused, then asked again
    (rule,) = _rules(out.read_text())
    assert "-RemoteAddress 198.18.7.7 " in rule and "throw" not in rule


def test_a_new_probe_declaring_a_firewall_hint_is_used_without_editing_remediation() -> None:
    from scanner.probes import base

    @base.register
    class WidgetProbe(base.Probe):
        name = "throwaway-widget"
        firewall = base.FirewallHint(rule_groups=(("Widget Remote Management", ("widget",)),), default_group="Widget Sharing")

    try:
        r = samples.row("windows-server", "widget-7000", "7000", "TCP", "Widget console", target_role="windows-servers")
        (named,) = plan_fixes(_one(Reason.FILTERED, r=r, port=7000, probe="throwaway-widget"))
        assert named.groups == ("Widget Remote Management",)
        r2 = samples.row("windows-server", "other-7001", "7001", "TCP", "Something else", target_role="windows-servers")
        (fallback,) = plan_fixes(_one(Reason.FILTERED, r=r2, port=7001, probe="throwaway-widget"))
        assert fallback.groups == ("Widget Sharing",)
        assert "Enable-NetFirewallRule -DisplayGroup 'Widget Sharing'" in powershell([fallback])
    finally:
        base._REGISTRY.pop("throwaway-widget", None)
