"""HTML, Markdown and CSV reports and `portready report`: same exit code, hostile text inert."""

from __future__ import annotations

import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from scanner.cli import main
from scanner.models import Reason, Status
from scanner.report import build_document, exit_code
from scanner.reporters import file_formats, get_reporter
from scanner.reporters.csv_report import render_csv
from scanner.reporters.html import render_html
from scanner.reporters.markdown import render_markdown

from . import samples

FORMATS = tuple(f.name for f in file_formats())  # every format a flag asks for, as registered


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside <script> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


def _parse(html: str) -> Tags:
    p = Tags()
    p.feed(html)
    return p


def _warn_only_doc() -> dict[str, Any]:
    r = samples.result(samples.GC_SSL, "dc1", "198.18.0.10",
                       samples.check("tcp", 3269, "ldaps", Status.WARN, Reason.CERTIFICATE, "expired certificate"))
    return build_document("scan", [r], started="s", finished="f", options={})


@pytest.mark.parametrize("which", ["old", "new", "hostile", "listen", "warn"])
def test_every_format_returns_the_documents_exit_code(tmp_path: Path, which: str) -> None:
    doc = {"old": lambda: samples.scan_doc("old"), "new": lambda: samples.scan_doc("new"), "hostile": samples.hostile_doc,
           "listen": samples.listen_doc, "warn": _warn_only_doc}[which]()
    expected = exit_code(doc)
    codes = {fmt: get_reporter(fmt)(doc, str(tmp_path / f"out.{fmt}")) for fmt in FORMATS}
    assert set(codes.values()) == {expected}, codes
    assert expected == (0 if which == "warn" else 1)


def test_html_is_self_contained_and_peer_markup_stays_text() -> None:
    html = render_html(samples.hostile_doc())
    parsed = _parse(html)
    names = [t for t, _ in parsed.tags]
    assert names.count("script") == 1, "only the report's own filter script"
    assert "img" not in names and "b" not in names
    for tag, attrs in parsed.tags:
        for name, value in attrs:
            assert not name.startswith("on"), (tag, name)
            if name in ("src", "href"):
                assert value is not None and not re.match(r"(?i)\s*(https?:|//|javascript:)", value), (tag, value)
    assert "link" not in names and "iframe" not in names
    assert "alert" not in "".join(parsed.scripts)
    assert "&lt;script&gt;alert(" in html  # shown, as text
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_html_shows_header_evidence_and_fixes() -> None:
    html = render_html(samples.scan_doc("new"))
    for text in ("auditor01", "198.18.0.5", "lab-inventory.yaml", "ab" * 32, "portready 0.1.0", "depth=protocol",
                 "2 inbound row(s) flow to this host",
                 "SMB 3.0.2", "TLSv1.3", "2026-06-01", "3 RPC endpoints", "SQLEXPRESS (TCP 50999)",
                 "How to fix", "Enable-NetFirewallRule -DisplayGroup", "system services firewall policy create"):
        assert text in html, text
    # the rows exactly as the vendor's table writes them
    assert "135 and dynamic range: 1024 -65535" in html and "Windows Management Instrumentation. `gpupdate /force `" in html


def test_html_renders_a_listen_report_with_its_unexpected_sources() -> None:
    html = render_html(samples.listen_doc())
    assert "Unexpected sources" in html and "198.18.0.99" in html
    assert "network-devices" in html and "not-seen" in html
    assert "New-NetFirewallRule" in html and "-RemoteAddress 198.18.0.51" in html


def _table_cells(line: str) -> list[str]:
    return re.split(r"(?<!\\)\|", line.strip())[1:-1]


def test_markdown_escapes_pipes_backticks_tags_and_newlines() -> None:
    text = render_markdown(samples.hostile_doc())
    assert "<script" not in text and "<img" not in text
    assert "&lt;script>alert" in text
    assert not any(line.startswith("# heading") for line in text.splitlines())
    assert "`rm -rf`" not in text and "\\`rm -rf\\`" in text
    assert "[click](javascript:" not in text and "\\[click\\](javascript:" in text
    blocks: list[list[list[str]]] = []
    previous_was_table = False
    for line in text.splitlines():
        if line.startswith("|"):
            if not previous_was_table:
                blocks.append([])
            blocks[-1].append(_table_cells(line))
        previous_was_table = line.startswith("|")
    assert len(blocks) >= 3
    for rows in blocks:
        # every line of a table has as many cells as its header: no | or newline broke out
        assert len({len(r) for r in rows}) == 1, rows


def test_csv_has_one_line_per_check_and_no_cell_starts_like_a_formula() -> None:
    doc = samples.hostile_doc()
    rows = list(csv.DictReader(io.StringIO(render_csv(doc))))
    assert len(rows) == sum(len(r["checks"]) for r in doc["rows"])
    for line in rows:
        for value in line.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), value
    formula = next(r for r in rows if r["row"] == "formula")
    assert formula["doc_port"] == "'=cmd|' /C calc'!A0"
    assert formula["doc_protocol"] == "'+TCP" and formula["purpose"] == "'@SUM(1+1)" and formula["target"] == "'-dc2"
    assert formula["check_detail"].startswith("'=HYPERLINK")
    evil = next(r for r in rows if r["row"] != "formula")
    assert json.loads(evil["evidence"])["banner"] == samples.HOSTILE  # kept whole, as text


def test_report_command_re_renders_a_saved_run_in_every_format(tmp_path: Path) -> None:
    src = Path(__file__).parent.parent / "data" / "reports" / "scan-new.json"
    outs = {fmt: tmp_path / f"r.{fmt}" for fmt in FORMATS}
    args = ["report", str(src), "--quiet"] + [x for fmt, p in outs.items() for x in (f"--{fmt}", str(p))]
    assert main(args) == 1
    assert json.loads(outs["json"].read_text())["rows"] == json.loads(src.read_text())["rows"]
    assert outs["html"].read_text().startswith("<!DOCTYPE html>")
    assert "| Profile |" in outs["markdown"].read_text()
    assert outs["csv"].read_bytes().startswith(b"\xef\xbb\xbfprofile,")


def test_report_strict_turns_warnings_into_a_failure(tmp_path: Path) -> None:
    path = tmp_path / "warn.json"
    path.write_text(json.dumps(_warn_only_doc()))
    assert main(["report", str(path), "--quiet"]) == 0
    out = tmp_path / "strict.json"
    assert main(["report", str(path), "--quiet", "--strict", "--json", str(out)]) == 1
    assert json.loads(out.read_text())["summary"]["exit_code"] == 1


@pytest.mark.parametrize("content", ["{not json", json.dumps({"tool": "other"}), json.dumps(samples.with_version(_warn_only_doc(), 99))])
def test_report_command_refuses_a_file_that_is_not_a_readable_report(tmp_path: Path, content: str,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert main(["report", str(path), "--html", str(tmp_path / "x.html")]) == 2
    assert str(path) in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()
