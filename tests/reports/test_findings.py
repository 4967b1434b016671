"""Output that summarises: findings grouped across targets, a console that fits, a grouped HTML matrix,
a plan that summarises, and an interrupted run marked in every format."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from scanner.cli import main
from scanner.models import CheckResult, Reason, RowResult, Status, Target
from scanner.report import build_document
from scanner.reporters import RenderOptions, render_text
from scanner.reporters.html import render_html

from . import samples

ROOT = Path(__file__).resolve().parents[2]
ROWS = (samples.LDAP, samples.GC_SSL, samples.SMB)


def _fleet(hosts: int, *, detail: str = "filtered: no answer in 3 s — a firewall drops TCP 3269") -> dict[str, Any]:
    """`hosts` domain controllers: LDAP passes, GC-SSL is dropped everywhere, SMB is refused on every third."""
    results = []
    for i in range(hosts):
        host = f"10.1.{i // 250}.{i % 250 + 1}"
        for row in ROWS:
            if row is samples.GC_SSL:
                check = CheckResult("tcp", 3269, "ldaps", Status.FAIL, Reason.FILTERED, detail, {}, 3000.0)
            elif row is samples.SMB and i % 3 == 0:
                check = CheckResult("tcp", 445, "smb", Status.FAIL, Reason.REFUSED, "refused: reset", {}, 1.0)
            else:
                check = CheckResult("tcp", 389 if row is samples.LDAP else 445, "tcp", Status.PASS, Reason.PORT_DEPTH,
                                    "accepts connections", {}, 1.0)
            results.append(RowResult(row, Target("domain-controllers", host), host, (check,)))
    return build_document("scan", results, started="s", finished="f", options={"depth": "port"})


def test_identical_outcomes_are_one_finding_with_every_target() -> None:
    doc = _fleet(30)
    findings = doc["findings"]
    first = findings[0]
    assert (first["row"], first["status"], first["reason"], first["count"]) == ("gc-ssl-3269", "fail", "filtered", 30)
    assert first["checks"] == ["TCP 3269"] and len(first["targets"]) == 30
    refused = next(f for f in findings if f["reason"] == "refused")
    assert refused["count"] == 10 and refused["targets"][0] == "10.1.0.1"
    assert sum(f["count"] for f in findings) == len(doc["rows"]) == 90
    assert [f["status"] for f in findings] == sorted((f["status"] for f in findings), key=["fail", "pass"].index)


def test_a_2500_host_scan_prints_findings_and_summary_in_under_200_lines() -> None:
    doc = _fleet(2500)
    text = render_text("console", doc)
    lines = text.splitlines()
    assert len(lines) <= 200, len(lines)
    flat = " ".join(text.split())  # the same words, whatever the wrapping
    assert "2,500 targets: 10.1.0.1, 10.1.0.2" in flat and "and 2,495 more" in flat
    assert "834 targets" in flat  # the refused SMB group
    assert "Passing: 4,166 row × target results over 2 documented rows" in flat
    assert "some rows FAILED (exit 1)" in lines[-1]
    verbose = render_text("console", doc, RenderOptions(verbose=True))
    assert len(re.findall(r"^   (?:PASS|FAIL) ", verbose, flags=re.M)) == 7500, "--verbose lists every row x target"
    assert "\n 10.1.9.250\n" in verbose


def test_a_small_scan_lists_every_row_without_verbose() -> None:
    text = render_text("console", samples.scan_doc("new"))
    assert "dc1 (198.18.0.10)" in text and "Global catalog LDAP over SSL" in text
    assert "SMB 3.0.2 signing required" in text, "a passing row says why it passed (its summary)"


def test_off_a_terminal_lines_wrap_at_80_columns_between_words() -> None:
    long_word = "x" * 120
    detail = "filtered: " + " ".join(f"word{i}" for i in range(60)) + " " + long_word
    text = render_text("console", _fleet(3, detail=detail))
    for line in text.splitlines():
        assert len(line) <= 80 or " " not in line.strip(), line
    assert long_word in text, "a word longer than the line is kept whole"
    joined = " ".join(line.strip() for line in text.splitlines())
    assert " ".join(f"word{i}" for i in range(60)) in joined, "no word broken"


def test_on_a_terminal_lines_fit_its_width() -> None:
    text = render_text("console", _fleet(3), RenderOptions(width=50))
    assert all(len(line) <= 50 for line in text.splitlines() if " " in line.strip())


def test_the_console_off_a_terminal_is_plain_text(tmp_path: Path) -> None:
    saved = tmp_path / "r.json"
    saved.write_text(json.dumps(_fleet(300)))
    proc = subprocess.run([sys.executable, "-m", "scanner", "report", str(saved)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    assert "\x1b" not in proc.stdout and len(proc.stdout.splitlines()) <= 200
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80


class _Ids:
    def __init__(self, html: str) -> None:
        self.ids = set(re.findall(r'\bid="([^"]+)"', html))
        self.links = set(re.findall(r'href="#([^"]+)"', html))


def test_html_puts_findings_first_and_groups_the_matrix_for_many_targets() -> None:
    html = render_html(_fleet(100))
    assert html.index('id="findings"') < html.index('id="matrix"') < html.index('class="profile"')
    matrix = html[html.index('id="matrix"'):html.index("</section>", html.index('id="matrix"'))]
    assert "groups of targets with the same verdicts" in matrix and "targets in 10.1.0.0/24" in matrix
    assert matrix.count('<details class="members">') == 2, "one line per group: SMB refused, and not"
    assert matrix.count('class="cell ') == 2
    page = _Ids(html)
    assert page.links - page.ids <= {"only-failed", "only-warn", "only-inconclusive", "top"} - page.ids
    for i in range(100):
        host = f"10.1.0.{i + 1}"
        assert f">{host}</a>" in matrix, f"{host} is reachable from the matrix"


def test_html_matrix_stays_one_cell_per_target_for_small_scans() -> None:
    html = render_html(_fleet(5))
    matrix = html[html.index('id="matrix"'):html.index("</section>", html.index('id="matrix"'))]
    assert "members" not in matrix and matrix.count('class="cell ') == 5


def test_markdown_has_the_findings_and_names_the_groups() -> None:
    text = render_text("markdown", _fleet(100))
    assert text.index("## Findings") < text.index("## Matrix")
    assert "| **FAIL** | active-directory/gc-ssl-3269 | TCP 3269 |" in text
    assert "100: 10.1.0.1, 10.1.0.2" in text and "and 92 more" in text


INTERRUPTED = {"signal": "SIGTERM", "checks_done": 4, "checks_planned": 9}


def _interrupted_doc() -> dict[str, Any]:
    return {**_fleet(2), "interrupted": dict(INTERRUPTED)}


def test_an_interrupted_run_says_so_in_every_format() -> None:
    built = build_document("scan", [], started="s", finished="f", options={}, interrupted=INTERRUPTED)
    assert built["interrupted"] == INTERRUPTED and built["findings"] == []
    assert build_document("scan", [], started="s", finished="f", options={})["interrupted"] is None
    doc = _interrupted_doc()
    words = "INTERRUPTED by SIGTERM: 4 of 9 checks finished"
    assert json.loads(render_text("json", doc))["interrupted"] == INTERRUPTED
    console = render_text("console", doc).splitlines()
    assert words in console[0]
    assert console[-1] == "some rows FAILED among the finished checks; the run was interrupted by SIGTERM"
    assert words in render_text("markdown", doc)
    html = render_html(doc)
    assert 'id="interrupted"' in html and words in html
    root = ET.fromstring(render_text("junit", doc).split("?>", 1)[1])
    props = [p.get("value") for p in root.iter("property") if p.get("name") == "interrupted"]
    assert props and all(words in (v or "") for v in props)


def test_an_interrupted_run_with_nothing_finished_still_carries_the_junit_property() -> None:
    doc = build_document("scan", [], started="s", finished="f", options={}, interrupted=INTERRUPTED)
    root = ET.fromstring(render_text("junit", doc).split("?>", 1)[1])
    assert [p.get("name") for p in root.iter("property")] == ["interrupted"]


@pytest.mark.parametrize("bad", [{"signal": ["x"], "checks_done": "4"}, {}])
def test_an_odd_interrupted_field_still_renders(bad: dict[str, Any]) -> None:
    doc = {**_fleet(1), "interrupted": bad}
    assert "INTERRUPTED" in render_text("console", doc)


def test_plan_summarises_and_lists_only_with_full(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["plan", "--profile", "active-directory", "--target", "domain-controllers=10.9.0.0/22"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) <= 20
    assert "active-directory: 6 rows x 1022 targets = 6132 pairs" in out and "role domain-controllers: 1022 targets" in out
    assert main(args + ["--full"]) == 0
    full = capsys.readouterr().out
    assert len(full.splitlines()) > 6132 and "active-directory/ldap-389 [389] -> 10.9.3.254: tcp/389 ldap" in full
    assert main(args + ["--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["summary"]["pairs"] == 6132 == len(plan["rows"])
    assert plan["summary"]["profiles"]["active-directory"]["targets"] == 1022


def test_unexpected_sources_reach_the_console_summary() -> None:
    text = " ".join(render_text("console", samples.listen_doc()).split())
    assert "Unexpected sources: 1 sent traffic no row expects: 198.18.0.99 (udp 514)" in text


def test_every_row_of_a_few_targets_is_listed_but_not_of_many() -> None:
    from dataclasses import replace

    def run(targets: int, rows: int) -> str:
        results = [RowResult(replace(samples.LDAP, id=f"r{j}"), Target("domain-controllers", f"dc{i}"), None,
                             (CheckResult("tcp", 389, "tcp", Status.PASS, Reason.PORT_DEPTH, "ok", {}, 1.0),))
                   for i in range(targets) for j in range(rows)]
        return render_text("console", build_document("scan", results, started="s", finished="f", options={}))

    assert len(re.findall(r"^   PASS ", run(1, 120), flags=re.M)) == 120
    assert not re.findall(r"^   PASS ", run(10, 12), flags=re.M)


def test_many_different_findings_still_fit_in_200_lines() -> None:
    from dataclasses import replace

    results = [RowResult(replace(samples.GC_SSL, id=f"row-{j}", purpose="a purpose long enough to wrap " * 3),
                         Target("domain-controllers", f"dc{i}"), None,
                         (CheckResult("tcp", 3000 + j, "ldaps", Status.FAIL, list(Reason)[j % len(Reason)],
                                      "detail words " * 20, {}, 1.0),))
               for i in range(300) for j in range(60)]
    text = render_text("console", build_document("scan", results, started="s", finished="f", options={}))
    assert len(text.splitlines()) <= 200
    assert "more findings: every one is in the JSON and HTML reports" in text


def test_the_diff_console_groups_one_change_across_many_targets() -> None:
    import copy

    from scanner.diff import diff_documents
    from scanner.diff import render_text as diff_text

    new = _fleet(300)
    old = copy.deepcopy(new)
    for row in old["rows"]:
        if row["row"] == "gc-ssl-3269":
            row.update(status="pass", reason="ok", detail="TLS")
            row["checks"][0].update(status="pass", reason="ok")
    text = diff_text(diff_documents(old, new))
    assert "REGRESSIONS (300):" in text
    assert len(text.splitlines()) <= 6, text
    assert "newly failing: active-directory/gc-ssl-3269 (3269 TCP): pass → fail (filtered) on 300 targets: 10.1.0.1" \
        in " ".join(text.split())


def test_plan_offers_only_the_options_that_change_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    text = capsys.readouterr().out
    assert "--depth" in text and "--full" in text and "--set" in text
    assert "--timeout" not in text and "--concurrency" not in text and "--proxy" not in text
    assert main(["plan", "--profile", "active-directory", "--target", "domain-controllers=10.9.0.1", "--depth", "port"]) == 0
    assert "Plan (port depth)" in capsys.readouterr().out
