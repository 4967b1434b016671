"""Every format renders the same document and returns the same exit code."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scanner.models import CheckResult, CheckSpec, Direction, Reason, Row, RowResult, Status, Target, Transport
from scanner.report import build_document, exit_code, load_document
from scanner.reporters import get_reporter

HOSTILE = "<script>alert(1)</script>\x1b[31m\x00[bold]x[/bold]"


def _result(status: Status, reason: Reason, detail: str = "d") -> RowResult:
    row = Row(profile="p", id=f"r-{status.value}", section="S", doc_port="389", doc_protocol="TCP",
              doc_source="Netwrix Auditor Server", doc_target="Domain controllers", purpose="LDAP",
              direction=Direction.OUTBOUND, source="auditor-server", target="domain-controllers",
              checks=(CheckSpec(Transport.TCP, "ldap", 389),))
    check = CheckResult("tcp", 389, "ldap", status, reason, detail, {"banner": HOSTILE}, 1.5)
    return RowResult(row, Target("domain-controllers", "dc1"), "192.0.2.1", (check,))


def _doc(strict: bool = False) -> dict:
    results = [
        _result(Status.PASS, Reason.OK),
        _result(Status.WARN, Reason.CERTIFICATE, HOSTILE),
        _result(Status.INCONCLUSIVE, Reason.NO_ANSWER),
        _result(Status.SKIP, Reason.NOT_CONFIGURED),
    ]
    return build_document("scan", results, started="s", finished="f", options={}, strict=strict)


@pytest.mark.parametrize("strict", [False, True])
def test_formats_agree_on_the_exit_code(tmp_path: Path, strict: bool, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _doc(strict)
    expected = 1 if strict else 0
    assert exit_code(doc) == expected
    assert get_reporter("json")(doc, str(tmp_path / "r.json")) == expected
    assert get_reporter("junit")(doc, str(tmp_path / "r.xml")) == expected
    assert get_reporter("console")(doc, None) == expected
    capsys.readouterr()


def test_junit_is_valid_xml_even_with_control_characters_from_peers(tmp_path: Path) -> None:
    path = tmp_path / "r.xml"
    get_reporter("junit")(_doc(strict=True), str(path))
    root = ET.parse(path).getroot()
    assert root.get("tests") == "4" and root.get("failures") == "2" and root.get("skipped") == "1"


def test_console_shows_peer_text_without_markup_or_terminal_escapes(capsys: pytest.CaptureFixture[str]) -> None:
    get_reporter("console")(_doc(), None)
    out = capsys.readouterr().out
    assert "\x1b[31m" not in out and "\x00" not in out
    assert "[bold]x[/bold]" in out.replace("\n", "").replace(" ", "") or "[bold]" in out


def test_saved_json_reloads_and_rejects_foreign_files(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    get_reporter("json")(_doc(), str(path))
    assert load_document(path)["rows"][0]["status"] == "pass"
    (tmp_path / "x.json").write_text(json.dumps({"tool": "nmap"}))
    from scanner.errors import ConfigError

    with pytest.raises(ConfigError):
        load_document(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{not json")
    with pytest.raises(ConfigError):
        load_document(tmp_path / "y.json")
