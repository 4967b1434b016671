"""HTML for many targets: one rows table per group of identical outcomes, one line per target.

Above MATRIX_TARGETS targets, each profile section groups its targets by outcome (row,
verdict, reason): the group's first target is shown in full with its evidence, every target
of it (the first included) on one line with its own anchor and, per row, its verdict and
what it said. Every row x target stays on the page and every link lands; small scans keep
one block per target.
"""

from __future__ import annotations

import re
from typing import Any

from scanner.models import CheckResult, Reason, RowResult, Status, Target
from scanner.report import build_document
from scanner.reporters._view import MATRIX_TARGETS, build_view
from scanner.reporters.html import render_html

from . import samples

ROWS = (samples.LDAP, samples.GC_SSL, samples.SMB)


def _fleet(hosts: int, name: str = "10.1.{a}.{b}", *, odd: int | None = None) -> dict[str, Any]:
    """LDAP passes with a summary, GC-SSL is dropped everywhere, SMB is refused on every third host.

    `odd`: that host's LDAP is inconclusive (a group of its own).
    """
    results = []
    for i in range(hosts):
        host = name.format(a=i // 250, b=i % 250 + 1, i=i)
        for row in ROWS:
            if row is samples.GC_SSL:
                check = CheckResult("tcp", 3269, "ldaps", Status.FAIL, Reason.FILTERED,
                                    "filtered: no answer in 3 s", {"tries": 2}, 3000.0)
            elif row is samples.SMB and i % 3 == 0:
                check = CheckResult("tcp", 445, "smb", Status.FAIL, Reason.REFUSED, f"refused: {host} reset", {}, 1.0)
            elif row is samples.LDAP and i == odd:
                check = CheckResult("tcp", 389, "ldap", Status.INCONCLUSIVE, Reason.PROTOCOL, "odd answer",
                                    {"bytes": 3}, 1.0)
            else:
                check = CheckResult("tcp", 389 if row is samples.LDAP else 445, "ldap", Status.PASS, Reason.OK,
                                    "RootDSE read", {"naming_context": f"DC=h{i},DC=lab"}, 1.0, summary=f"RootDSE of h{i}")
            results.append(RowResult(row, Target("domain-controllers", host), host, (check,)))
    return build_document("scan", results, started="s", finished="f", options={})


def _ids(html: str) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', html))


def test_many_targets_are_grouped_by_identical_outcomes_worst_and_largest_first() -> None:
    view = build_view(_fleet(300, odd=7))
    (section,) = view["sections"]
    groups = section["groups"]
    assert [g["count"] for g in groups] == [199, 100, 1]  # SMB passing, SMB refused, the odd LDAP
    assert sum(g["count"] for g in groups) == 300
    assert groups[2]["members"] == []  # a group of one is its block in full
    # evidence is prepared for the block shown in full only
    assert groups[0]["rep"]["rows"][0]["checks"][0]["evidence"]
    assert all(not c["evidence"] for b in section["blocks"][2:] for r in b["rows"] for c in r["checks"]
               if b is not groups[0]["rep"] and b is not groups[1]["rep"] and b is not groups[2]["rep"])


def test_every_row_x_target_is_on_the_page_and_every_link_lands() -> None:
    doc = _fleet(300, odd=7)
    html = render_html(doc)
    ids = _ids(html)
    view = build_view(doc)
    for block in view["sections"][0]["blocks"]:
        assert block["id"] in ids, block["target"]
    links = set(re.findall(r'href="#([^"]+)"', html))
    assert links - ids <= {"only-failed", "only-warn", "only-inconclusive", "top"}
    lines = re.findall(r'<tr class="r s-(\w+)" data-status="\w+" id="(pt[^"]+)"><th>([^<]+)', html)
    assert len(lines) == 299  # every member of the two large groups, one line each; the odd host in full
    assert {t.strip() for _, _, t in lines} | {"10.1.0.8"} == {f"10.1.{i // 250}.{i % 250 + 1}" for i in range(300)}
    # each line carries every row: LDAP's own summary, GC-SSL's verdict, SMB's own detail
    line = html[html.index('id="pt0-3-'):]
    line = line[:line.index("</tr>")]
    assert line.count('<span class="b s-') == len(ROWS)
    assert "RootDSE of h3" in line and "refused: 10.1.0.4 reset" in line and "as above" in line


def test_the_page_is_a_fraction_of_one_block_per_target() -> None:
    doc = _fleet(2500)
    grouped = render_html(doc)
    assert grouped.count('class="block') == 2 and grouped.count("<details class=\"targets\"") == 2
    # the evidence of the two blocks shown in full (the refused SMB check has none)
    assert grouped.count("<summary>evidence</summary>") == 2 * len(ROWS) - 1
    # one full block per target would be at least the size of a block, times 2,500
    one_block = render_html(_fleet(1))
    assert len(grouped) < 0.2 * 2500 * (len(one_block.split('class="profile"', 1)[1]))


def test_a_scan_of_few_targets_keeps_one_block_per_target() -> None:
    doc = _fleet(MATRIX_TARGETS)
    view = build_view(doc)
    assert view["sections"][0]["groups"] is None
    html = render_html(doc)
    assert html.count('<div class="block" id="pt0-') == MATRIX_TARGETS and 'class="lines"' not in html


def test_small_groups_are_listed_open_large_ones_closed() -> None:
    html = render_html(_fleet(90))  # 60 passing SMB, 30 refused
    assert '<details class="targets"><summary>All 60 targets' in html
    assert '<details class="targets" open><summary>All 30 targets' in html


def test_hostile_target_names_in_a_grouped_page_are_escaped() -> None:
    doc = _fleet(60, name="<img src=x onerror=alert({i})>\x1b[31m")
    html = render_html(doc)
    assert "<img src=x" not in html and "\x1b" not in html
    assert "&lt;img src=x onerror=alert(0)&gt;" in html
