"""The report header says which checks that leave events in the targets' security logs ran.

The document's top-level `footprint` lists, per probe that declares a `Probe.footprint` and
whose checks ran (not skipped), how many checks ran and the declared words; every format shows
it in its header. Saved version-1 and older version-2 documents lack it and render as before.
"""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from scanner.errors import ConfigError
from scanner.models import Reason, Status
from scanner.probes.base import get_probe
from scanner.report import build_document, build_footprint, load_document
from scanner.reporters import RenderOptions, render_text
from tests.reports.samples import HOSTILE, check, result, row, scan_doc

SAVED = Path(__file__).parents[1] / "data" / "reports"
KERBEROS_ROW = row("active-directory", "kerberos-88", "88", "TCP\\UDP", "Kerberos authentication")


def _entries(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["probe"]: e for e in doc["footprint"]}


def test_the_document_lists_each_declared_footprint_of_the_checks_that_ran() -> None:
    doc = scan_doc("new")
    entries = _entries(doc)
    # ldap, ldaps, smb, epm and rpc-dynamic declare one; cldap, ontap and sql-named-instances do not
    assert set(entries) == {"ldap", "ldaps", "smb", "epm", "rpc-dynamic"}
    for name, entry in entries.items():
        assert entry["footprint"] == get_probe(name).footprint
    assert entries["epm"]["checks"] == 2  # dc1's WMI row and fs1's SCM row
    assert entries["ldap"]["checks"] == 1 and "flagged" not in entries["ldap"]


def test_skipped_checks_and_unknown_probes_leave_no_footprint() -> None:
    rows = [
        {"checks": [{"probe": "smb", "status": "skip"}, {"probe": "no-such-probe", "status": "pass"},
                    {"probe": "tcp", "status": "fail"}, "not a check", {"status": "pass"}]},
    ]
    assert build_footprint(rows) == []


def test_a_check_that_took_the_noisy_path_is_flagged_with_its_count() -> None:
    noisy = "event 4768 failure 0x6 (unknown client) on the DC"
    doc = build_document(
        "scan",
        [result(KERBEROS_ROW, f"198.18.0.{i}", f"198.18.0.{i}",
                check("tcp", 88, "kerberos", Status.PASS, Reason.OK, "KDC answered", 2.0,
                      **({"footprint": noisy} if i < 3 else {})))
         for i in range(5)],
        started="s", finished="f", options={},
    )
    (entry,) = doc["footprint"]
    assert entry["probe"] == "kerberos" and entry["checks"] == 5
    assert entry["flagged"] == [{"footprint": noisy, "checks": 3}]
    console = render_text("console", doc, RenderOptions(width=10_000))
    assert "kerberos (5 checks)" in console and f"this run: {noisy} (3)" in console


def test_every_format_shows_the_footprint_in_its_header() -> None:
    doc = scan_doc("new")
    smb_words = get_probe("smb").footprint
    console = render_text("console", doc, RenderOptions(width=10_000))
    header = console.split("\n\n", 1)[0]
    assert "Security-log footprint of the checks that ran" in header and f"smb (1 check): {smb_words}" in header
    html = render_text("html", doc)
    head = html.split("</header>", 1)[0]
    assert 'id="footprint"' in head and "smb</span> (1 check)" in head
    markdown = render_text("markdown", doc)
    top = markdown.split("## Findings", 1)[0]
    assert "Security-log footprint of the checks that ran" in top and "epm (2 checks)" in top
    suites = ET.fromstring(render_text("junit", doc).split("\n", 1)[1])
    props = [p.get("value") for p in suites.iter("property") if p.get("name") == "footprint"]
    assert props and all("smb (1 check)" in (v or "") for v in props)
    assert len(props) == len(suites.findall("testsuite"))
    assert json.loads(render_text("json", doc))["footprint"] == doc["footprint"]


def test_a_run_where_no_declared_probe_ran_has_no_footprint_header() -> None:
    doc = scan_doc("new")
    doc["footprint"] = []
    assert "footprint" not in render_text("console", doc).lower()
    assert 'id="footprint"' not in render_text("html", doc)
    assert "footprint" not in render_text("markdown", doc).split("## Findings", 1)[0].lower()
    assert 'name="footprint"' not in render_text("junit", doc)


@pytest.mark.parametrize("name", ["scan-old.json", "scan-new.json"])
def test_saved_version_1_reports_lack_it_and_render_without_it(name: str) -> None:
    doc = load_document(SAVED / name)
    assert doc["schema_version"] == 1 and "footprint" not in doc
    for fmt in ("console", "html", "markdown", "junit", "csv", "json"):
        text = render_text(fmt, doc)
        assert "Security-log footprint" not in text and 'name="footprint"' not in text


def test_a_saved_version_2_report_without_the_field_renders_and_one_with_it_keeps_it(tmp_path: Path) -> None:
    doc = scan_doc("new")
    older = copy.deepcopy(doc)
    del older["footprint"]  # a version-2 report written before the field existed
    (tmp_path / "older.json").write_text(json.dumps(older))
    (tmp_path / "newer.json").write_text(json.dumps(doc))
    loaded_old = load_document(tmp_path / "older.json")
    assert "footprint" not in loaded_old
    assert "Security-log footprint" not in render_text("console", loaded_old)
    loaded_new = load_document(tmp_path / "newer.json")
    assert loaded_new["footprint"] == doc["footprint"]
    assert "rpc-dynamic</span> (1 check)" in render_text("html", loaded_new)


def test_a_hostile_saved_footprint_is_bounded_and_escaped_or_refused(tmp_path: Path) -> None:
    doc = scan_doc("new")
    doc["footprint"] = [
        {"probe": HOSTILE, "checks": "many", "footprint": "\x1b[2J" + HOSTILE * 50,
         "flagged": [{"footprint": HOSTILE, "checks": True}, "junk", {"footprint": 7}]},
        {"probe": "x"},  # no words: left out
        "not an entry", 42, None,
    ] * 20
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(doc))
    loaded = load_document(path)
    # only entries of the field's own shape are kept, bounded, with counts that are counts
    assert all(set(e) <= {"probe", "checks", "footprint", "flagged"} for e in loaded["footprint"])
    # the first 64 entries are read
    assert len(loaded["footprint"]) == len(range(0, 64, 5)) and all(e["checks"] == 0 and len(e["footprint"]) <= 600
                                                  for e in loaded["footprint"])
    assert loaded["footprint"][0]["flagged"] == [{"footprint": HOSTILE, "checks": 0}]
    console = render_text("console", loaded)
    assert "\x1b[2J" not in console and "(0 checks)" in console
    html = render_text("html", loaded)
    assert "<script>alert" not in html
    markdown = render_text("markdown", loaded)
    assert "<script>" not in markdown
    junit = render_text("junit", loaded)
    ET.fromstring(junit.split("\n", 1)[1])
    doc["footprint"] = {"probe": "smb"}
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="'footprint' is a dict, expected list"):
        load_document(path)
