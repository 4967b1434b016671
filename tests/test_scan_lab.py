"""End to end: `portready scan` of the Active Directory profile against the lab's real Samba DC.

Samba has no DCOM, so the WMI interface of "135 and dynamic range" is not registered there:
that row is honestly `inconclusive` (not-registered) against Samba, never a pass. Every other
row passes with the protocol's own evidence, and a dropped or rejected port fails that row
alone with the right reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scanner.cli import main
from tests.lab.samba_dc import SambaDC

pytestmark = pytest.mark.lab


def _scan(dc: SambaDC, tmp_path: Path, *extra: str) -> tuple[int, dict[str, dict[str, Any]]]:
    out = tmp_path / "ad.json"
    code = main([
        "scan", "--target", f"domain-controllers={dc.address}", "--target", f"dns-servers={dc.address}",
        "--profile", "active-directory", "--set", "domain=lab.test", "--timeout", "2",
        "--ca-bundle", str(dc.root / "lib" / "private" / "tls" / "ca.pem"),
        "--json", str(out), "--quiet", *extra,
    ])
    doc = json.loads(out.read_text())
    return code, {r["row"]: r for r in doc["rows"]}


def _evidence(row: dict[str, Any], probe: str) -> dict[str, Any]:
    return next(c["evidence"] for c in row["checks"] if c["probe"] == probe)


def test_every_active_directory_row_answers_its_protocol_on_the_lab_dc(dc: SambaDC, tmp_path: Path) -> None:
    code, rows = _scan(dc, tmp_path)
    statuses = {rid: r["status"] for rid, r in rows.items()}
    # Targeted by address, the DC's certificate (issued to DC1.lab.test) does not match:
    # LDAPS works, and the row says exactly what the Auditor may object to.
    assert statuses == {
        "ldap-389": "pass", "gc-3268": "pass", "gc-ssl-3269": "warn", "kerberos-88": "pass",
        "wmi-135-dynamic": "inconclusive", "smb-445": "pass", "dns-53": "pass",
    }, {rid: (r["status"], r["detail"]) for rid, r in rows.items() if r["status"] != "pass"}
    assert code == 0
    assert rows["wmi-135-dynamic"]["reason"] == "not-registered"
    assert rows["gc-ssl-3269"]["reason"] == "certificate"
    assert "DC1.lab.test" in rows["gc-ssl-3269"]["detail"]
    assert _evidence(rows["ldap-389"], "ldap")["default_naming_context"] == "DC=lab,DC=test"
    assert _evidence(rows["gc-3268"], "ldap")["is_global_catalog_ready"] in (True, "TRUE")
    assert _evidence(rows["smb-445"], "smb")["dialect"].startswith("3.")
    assert _evidence(rows["kerberos-88"], "kerberos")["error_name"]
    srv = _evidence(rows["dns-53"], "dns")["domain_controllers"]
    assert any("dc1.lab.test" in str(entry) for entry in srv)


def test_strict_turns_warn_and_inconclusive_into_failures(dc: SambaDC, tmp_path: Path) -> None:
    code, rows = _scan(dc, tmp_path, "--strict")
    assert code == 1
    assert {r["status"] for r in rows.values()} == {"pass", "warn", "inconclusive"}


def test_a_dropped_port_fails_that_row_alone_as_filtered(dc: SambaDC, tmp_path: Path) -> None:
    dc.host.firewall.drop(3268, "tcp")
    code, rows = _scan(dc, tmp_path)
    assert code == 1
    assert rows["gc-3268"]["status"] == "fail" and rows["gc-3268"]["reason"] == "filtered"
    assert "a firewall drops TCP 3268" in rows["gc-3268"]["detail"]
    failing = {rid for rid, r in rows.items() if r["status"] == "fail"}
    assert failing == {"gc-3268"}


def test_a_rejected_port_fails_that_row_alone_as_refused(dc: SambaDC, tmp_path: Path) -> None:
    dc.host.firewall.reject(445, "tcp")
    code, rows = _scan(dc, tmp_path)
    assert code == 1
    assert rows["smb-445"]["status"] == "fail" and rows["smb-445"]["reason"] == "refused"
    assert {rid for rid, r in rows.items() if r["status"] == "fail"} == {"smb-445"}


def test_dropped_dynamic_rpc_range_fails_the_row_although_135_answers(dc: SambaDC, tmp_path: Path) -> None:
    # The lab profile override asks the mapper for any registered interface (Samba has no WMI),
    # so the dynamic half of the row is really exercised.
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    src = (Path(__file__).parents[1] / "profiles" / "active-directory.yaml").read_text()
    (profiles / "active-directory.yaml").write_text(src.replace("interfaces: [wmi]", "interfaces: [any]"))
    code, rows = _scan(dc, tmp_path, "--profiles", str(profiles))
    assert rows["wmi-135-dynamic"]["status"] == "pass", rows["wmi-135-dynamic"]["detail"]
    dc.host.firewall.drop_range(49152, 65535, "tcp")
    code, rows = _scan(dc, tmp_path, "--profiles", str(profiles))
    row = rows["wmi-135-dynamic"]
    epm, dynamic, *_activation = row["checks"]  # the dcom check skips without credentials
    assert epm["status"] == "pass"
    assert dynamic["status"] == "fail" and dynamic["reason"] == "filtered"
    assert row["status"] == "fail" and code == 1


def test_port_depth_checks_reachability_and_skips_the_dynamic_range(dc: SambaDC, tmp_path: Path) -> None:
    code, rows = _scan(dc, tmp_path, "--depth", "port")
    dynamic = rows["wmi-135-dynamic"]["checks"][1]
    assert dynamic["status"] == "skip" and dynamic["reason"] == "needs-protocol-depth"
    assert rows["ldap-389"]["checks"][0]["probe"] == "tcp"
    assert rows["ldap-389"]["checks"][0]["status"] == "pass"
    assert code == 0


def test_discovery_turns_the_domain_s_srv_records_into_scanned_dcs(dc: SambaDC, tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    code = main([
        "scan", "--discover", f"lab.test@{dc.address}", "--profile", "active-directory", "--timeout", "2",
        "--depth", "port", "--json", str(out), "--quiet",
    ])
    doc = json.loads(out.read_text())
    assert code == 0
    targets = {r["target"] for r in doc["rows"] if r["role"] == "domain-controllers"}
    # The SRV record names dc1.lab.test; its A record is the lab DC's address, which the
    # lab's DNS serves. Discovery returns the SRV targets as names or addresses.
    assert targets and all(("dc1" in t.lower()) or t == dc.address for t in targets), targets
    assert any("discovered 1 domain controller" in note for note in doc["notes"])


def test_local_readiness_reads_the_dc_clock(dc: SambaDC, tmp_path: Path) -> None:
    out = tmp_path / "local.json"
    code = main(["local", "--target", f"domain-controllers={dc.address}", "--set", "domain=lab.test",
                 "--json", str(out), "--quiet"])  # fmt: skip
    rows = {r["row"]: r for r in json.loads(out.read_text())["rows"]}
    skew = next(r for rid, r in rows.items() if rid.startswith("time-skew"))
    # The DC runs on this machine's clock: the skew is small and the row passes.
    assert skew["status"] == "pass", skew["detail"]
    evidence = skew["checks"][0]["evidence"]
    assert abs(float(evidence["skew_seconds"])) < 60
    assert code in (0, 1)  # local ports may be held on a developer machine; skew is what this test proves


def test_credentialed_scan_logs_on_over_smb_and_no_output_holds_the_password(
    dc: SambaDC, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The inventory's account logs on over SMB (pyspnego NTLM, signed IPC$) and the Kerberos
    check asks about it; the password reaches none of the reports nor the console."""
    monkeypatch.setenv("PR_LAB_DC_PASSWORD", dc.admin_password)
    # libkrb5 (test extra) may not look up realms in DNS: a krb5.conf that knows none and asks none.
    from tests.probes.conftest import NO_NETWORK_KRB5_CONF

    (tmp_path / "krb5.conf").write_text(NO_NETWORK_KRB5_CONF)
    monkeypatch.setenv("KRB5_CONFIG", str(tmp_path / "krb5.conf"))
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        "targets:\n"
        f"  domain-controllers: [{dc.address}]\n"
        f"  dns-servers: [{dc.address}]\n"
        "settings: {domain: lab.test}\n"
        "credentials:\n"
        f"  domain-controllers: {{username: {dc.admin_user}, domain: {dc.domain}, password_env: PR_LAB_DC_PASSWORD}}\n"
    )
    outputs = {kind: tmp_path / f"report.{kind}" for kind in ("json", "junit", "html", "markdown", "csv")}
    main([
        "scan", "-i", str(inventory), "--profile", "active-directory", "--timeout", "2",
        *[arg for kind, path in outputs.items() for arg in (f"--{kind}", str(path))],
    ])
    console = capsys.readouterr()
    for kind, path in outputs.items():
        assert dc.admin_password not in path.read_text(), kind
    assert dc.admin_password not in console.out + console.err
    rows = {r["row"]: r for r in json.loads(outputs["json"].read_text())["rows"]}
    smb = _evidence(rows["smb-445"], "smb")
    assert (smb["login"], smb["auth_protocol"], smb["signed_reply"]) == ("ok", "ntlm", True)
    krb = _evidence(rows["kerberos-88"], "kerberos")
    assert (krb["client_choice"], krb["error_name"]) == ("account", "KDC_ERR_PREAUTH_REQUIRED")
