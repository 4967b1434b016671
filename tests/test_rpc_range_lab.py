"""End to end: the "135 + dynamic range" rows against the lab's real Samba DC, range open and dropped.

Samba has no DCOM, so WMI is not registered there; the rows still prove the range itself by
binding the dynamic ports the endpoint mapper lists (49152+). With those ports dropped by
nftables while 135 answers, the Active Directory, Logon Activity and Windows File Servers
rows fail `filtered`, and `portready diff` of the two runs reports the regression.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scanner.cli import main
from tests.lab.samba_dc import SambaDC

pytestmark = pytest.mark.lab

PROFILES = ("active-directory", "logon-activity", "windows-file-servers")


def _scan(dc: SambaDC, out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    args = ["scan", "--timeout", "1", "--retries", "0", "--json", str(out), "--quiet", "--set", "domain=lab.test"]
    for role in ("domain-controllers", "monitored-computers", "dns-servers"):
        args += ["--target", f"{role}={dc.address}"]
    for profile in PROFILES:
        args += ["--profile", profile]
    main(args)
    doc = json.loads(out.read_text())
    return {(r["profile"], r["row"]): r for r in doc["rows"] if r["row"] == "wmi-135-dynamic"}


def test_dropped_dynamic_range_fails_every_135_dynamic_row_and_diff_shows_the_regression(
    dc: SambaDC, tmp_path: Path
) -> None:
    before = _scan(dc, tmp_path / "before.json")
    assert {p for p, _ in before} == set(PROFILES)
    for row in before.values():
        dynamic = next(c for c in row["checks"] if c["probe"] == "rpc-dynamic")
        assert (dynamic["status"], dynamic["reason"]) == ("inconclusive", "not-registered"), dynamic["detail"]
        assert dynamic["evidence"]["range_verdict"] == "reachable"
        # the row says what a credentialed run would add, and its dcom check says why it skipped
        assert "a credentialed run adds the authenticated DCOM activation of WMI" in dynamic["detail"]
        activation = next(c for c in row["checks"] if c["probe"] == "dcom")
        assert activation["status"] == "skip" and "no credentials" in activation["detail"]

    dc.host.firewall.drop_range(49152, 65535, "tcp")
    after = _scan(dc, tmp_path / "after.json")
    for row in after.values():
        assert (row["status"], row["reason"]) == ("fail", "filtered"), row["detail"]
        epm = next(c for c in row["checks"] if c["probe"] == "epm")
        assert epm["status"] == "pass"  # 135 still answers: the classic firewall mistake

    code = main(["diff", str(tmp_path / "before.json"), str(tmp_path / "after.json"),
                 "--json", str(tmp_path / "diff.json"), "--quiet"])  # fmt: skip
    assert code == 1
    diff = json.loads((tmp_path / "diff.json").read_text())
    regressed = {(c.get("profile"), c.get("row")) for c in diff["changes"] if c["regression"]}
    assert {(p, "wmi-135-dynamic") for p in PROFILES} <= regressed, diff["changes"]


def test_rejected_135_fails_the_rows_refused(dc: SambaDC, tmp_path: Path) -> None:
    dc.host.firewall.reject(135, "tcp")
    rows = _scan(dc, tmp_path / "r135.json")
    for row in rows.values():
        assert (row["status"], row["reason"]) == ("fail", "refused"), row["detail"]
        dynamic = next(c for c in row["checks"] if c["probe"] == "rpc-dynamic")
        assert "endpoint mapper cannot be asked" in dynamic["detail"]


def test_rejected_445_leaves_the_range_proven_and_fails_the_smb_row(dc: SambaDC, tmp_path: Path) -> None:
    dc.host.firewall.reject(445, "tcp")
    rows = _scan(dc, tmp_path / "r445.json")
    for row in rows.values():
        dynamic = next(c for c in row["checks"] if c["probe"] == "rpc-dynamic")
        assert dynamic["evidence"]["range_verdict"] == "reachable", dynamic["detail"]
    doc = json.loads((tmp_path / "r445.json").read_text())
    smb = next(r for r in doc["rows"] if r["profile"] == "active-directory" and r["row"] == "smb-445")
    assert (smb["status"], smb["reason"]) == ("fail", "refused"), smb["detail"]
