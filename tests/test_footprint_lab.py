"""A real scan of the lab's Samba DC: the report header says which noisy checks ran.

Targeted by address without credentials, the Kerberos check cannot name the DC's own
account and falls back to an unknown principal (one 4768 0x6 per target on Windows):
the header flags exactly that, beside the declared footprint of every probe that ran.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scanner.cli import main
from scanner.probes.base import get_probe
from tests.lab.samba_dc import SambaDC

pytestmark = pytest.mark.lab


def test_a_scan_of_the_lab_dc_names_its_noisy_checks_in_every_header(
        dc: SambaDC, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main([
        "scan", "--target", f"domain-controllers={dc.address}", "--profile", "active-directory",
        "--set", "domain=lab.test", "--timeout", "2",
        "--ca-bundle", str(dc.root / "lib" / "private" / "tls" / "ca.pem"),
        "--json", str(out / "r.json"), "--html", str(out / "r.html"), "--junit", str(out / "r.xml"),
        "--markdown", str(out / "r.md"),
    ])
    console = capsys.readouterr().out
    assert code == 0
    doc = json.loads((out / "r.json").read_text())
    entries = {e["probe"]: e for e in doc["footprint"]}
    # every probe of the profile that declares a footprint and ran is listed, with its own words
    ran = {c["probe"] for r in doc["rows"] for c in r["checks"] if c["status"] != "skip"}
    assert set(entries) == {p for p in ran if get_probe(p).footprint}
    assert {"kerberos", "smb", "ldap", "epm"} <= set(entries)
    for name, entry in entries.items():
        assert entry["footprint"] == get_probe(name).footprint
        assert entry["checks"] == sum(1 for r in doc["rows"] for c in r["checks"]
                                      if c["probe"] == name and c["status"] != "skip")
    kerberos = entries["kerberos"]
    assert [f["footprint"] for f in kerberos["flagged"]] == ["event 4768 failure 0x6 (unknown client) on the DC"]
    assert kerberos["flagged"][0]["checks"] == kerberos["checks"]
    head = console.split("\n\n", 1)[0]
    assert "Security-log footprint of the checks that ran" in head
    assert "kerberos (" in head and "4768" in head
    assert 'id="footprint"' in (out / "r.html").read_text().split("</header>", 1)[0]
    assert "kerberos (" in (out / "r.md").read_text().split("## Findings", 1)[0]
    props = [p.get("value") or "" for p in ET.parse(out / "r.xml").iter("property") if p.get("name") == "footprint"]
    assert props and all("kerberos (" in v and "smb (" in v for v in props)
