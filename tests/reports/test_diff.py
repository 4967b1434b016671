"""`portready diff`: what changed between two runs, and exit 1 only when something regressed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scanner.cli import main
from scanner.diff import diff_documents, render_html, render_markdown

from . import samples


def _write(tmp_path: Path, name: str, doc: Any) -> str:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def _change(d: dict[str, Any], row: str, target: str) -> dict[str, Any]:
    return next(c for c in d["changes"] if c["row"] == row and c["target"] == target)


def _evidence(d: dict[str, Any], what: str) -> list[dict[str, Any]]:
    return [e for e in d["evidence"] if e["what"] == what]


@pytest.fixture(scope="module")
def forward() -> dict[str, Any]:
    return diff_documents(samples.scan_doc("old"), samples.scan_doc("new"))


def test_a_row_that_passed_and_now_fails_is_a_regression(forward: dict[str, Any]) -> None:
    c = _change(forward, "wmi-135-dynamic", "dc1")
    assert c["kind"] == "newly-failing" and c["regression"]
    assert (c["old_status"], c["new_status"], c["new_reason"]) == ("pass", "fail", "filtered")
    assert forward["summary"]["exit_code"] == 1


def test_a_new_target_that_fails_is_a_regression(forward: dict[str, Any]) -> None:
    c = _change(forward, "https-443", "filer1")
    assert c["kind"] == "new-failing" and c["regression"]
    assert forward["targets"]["added"] == ["filer1"] and forward["rows"]["added"] == ["netapp-ontap/https-443"]


def test_filtered_to_refused_is_a_changed_reason_not_a_regression(forward: dict[str, Any]) -> None:
    c = _change(forward, "scm-135", "fs1")
    assert c["kind"] == "reason-changed" and not c["regression"]
    assert (c["old_reason"], c["new_reason"]) == ("filtered", "refused")


def test_a_removed_target_is_listed_and_counts_only_when_strict(forward: dict[str, Any]) -> None:
    assert forward["targets"]["removed"] == ["dc2"]
    assert _change(forward, "ldap-389", "dc2")["kind"] == "no-longer-checked"
    assert not _change(forward, "ldap-389", "dc2")["regression"]
    lenient = diff_documents(samples.scan_doc("old"), _without_target(samples.scan_doc("old"), "dc2"))
    strict = diff_documents(samples.scan_doc("old"), _without_target(samples.scan_doc("old"), "dc2"), strict=True)
    assert lenient["summary"]["exit_code"] == 0 and lenient["targets"]["removed"] == ["dc2"]
    assert strict["summary"]["exit_code"] == 1


def _without_target(doc: dict[str, Any], target: str) -> dict[str, Any]:
    doc["rows"] = [r for r in doc["rows"] if r["target"] != target]
    return doc


def test_certificate_replaced_and_nearer_expiry_are_reported(forward: dict[str, Any]) -> None:
    (replaced,) = _evidence(forward, "certificate-replaced")
    assert replaced["row"] == "gc-ssl-3269" and replaced["old"]["sha256"] != replaced["new"]["sha256"]
    assert "not_after" in replaced["text"]
    (sooner,) = _evidence(forward, "expires-sooner")
    assert "2026-06-01" in sooner["text"] and "2027-03-01" in sooner["text"]


def test_same_certificate_crossing_the_expiry_threshold_is_reported() -> None:
    old, new = samples.scan_doc("old"), samples.scan_doc("old")
    ev = next(r for r in new["rows"] if r["row"] == "gc-ssl-3269" and r["target"] == "dc1")["checks"][0]["evidence"]
    ev["days_left"] = 12
    d = diff_documents(old, new)
    (near,) = _evidence(d, "expiry-near")
    assert "12 days" in near["text"]
    assert not _evidence(d, "certificate-replaced") and d["summary"]["exit_code"] == 0


def test_smb_dialect_endpoints_and_sql_instance_ports_are_compared(forward: dict[str, Any]) -> None:
    (dialect,) = _evidence(forward, "dialect")
    assert (dialect["old"], dialect["new"]) == ("3.1.1", "3.0.2")
    (added,) = _evidence(forward, "endpoints-added")
    assert added["new"] == ["even6"]
    (moved,) = _evidence(forward, "instances")
    assert "SQLEXPRESS" in moved["text"] and (moved["old"], moved["new"]) == (50123, 50999)


def test_the_reverse_diff_shows_newly_passing_rows_and_no_regression_for_them() -> None:
    d = diff_documents(samples.scan_doc("new"), samples.scan_doc("old"))
    c = _change(d, "wmi-135-dynamic", "dc1")
    assert c["kind"] == "newly-passing" and not c["regression"]
    (lost,) = _evidence(d, "endpoints-lost")
    assert lost["old"] == ["even6"]
    # dc2 comes back with a failing row that the old run did not have: that is a regression
    assert _change(d, "gc-ssl-3269", "dc2")["regression"]


def test_identical_runs_have_no_change_and_exit_0() -> None:
    d = diff_documents(samples.scan_doc("old"), samples.scan_doc("old"))
    assert d["changes"] == [] and d["evidence"] == [] and d["summary"]["exit_code"] == 0


def test_pass_to_warn_is_a_regression_without_failing() -> None:
    old, new = samples.scan_doc("old"), samples.scan_doc("old")
    row = next(r for r in new["rows"] if r["row"] == "smb-445")
    row["status"], row["reason"] = "warn", "certificate"
    c = _change(diff_documents(old, new), "smb-445", "dc1")
    assert c["kind"] == "worse" and c["regression"]


def test_diff_command_writes_every_format_and_exits_1_on_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = _write(tmp_path, "old.json", samples.scan_doc("old"))
    new = _write(tmp_path, "new.json", samples.scan_doc("new"))
    out = {k: tmp_path / f"d.{k}" for k in ("json", "markdown", "html")}
    assert main(["diff", old, new] + [x for k, p in out.items() for x in (f"--{k}", str(p))]) == 1
    console = capsys.readouterr().out
    assert "REGRESSIONS (2)" in console and "fail (filtered) → fail (refused)" in console
    assert json.loads(out["json"].read_text())["summary"]["regressions"] == 2
    assert "| **yes** | newly failing |" in out["markdown"].read_text()
    assert "regression</strong>" in out["html"].read_text()
    assert main(["diff", old, old, "--quiet"]) == 0


def test_diff_of_incompatible_schema_versions_says_so_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = _write(tmp_path, "old.json", samples.with_version(samples.scan_doc("old"), 0))
    new = _write(tmp_path, "new.json", samples.scan_doc("new"))
    assert main(["diff", old, new]) == 2
    err = capsys.readouterr().err
    assert "incompatible report schema versions" in err and "old 0" in err


@pytest.mark.parametrize("content", ["{\"tool\": \"portready\", \"rows\": [", "", "[]", "\x00\xff garbage"])
def test_diff_of_a_corrupt_report_exits_2(tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, "good.json", samples.scan_doc("old"))
    bad = _write(tmp_path, "bad.json", content)
    assert main(["diff", good, bad]) == 2
    assert "bad.json" in capsys.readouterr().err
    assert main(["diff", str(tmp_path / "missing.json"), good]) == 2


def test_diff_html_and_markdown_keep_peer_text_inert() -> None:
    old = samples.scan_doc("old")
    new = samples.scan_doc("old")
    row = next(r for r in new["rows"] if r["row"] == "smb-445")
    row["status"], row["reason"], row["detail"] = "fail", "protocol", samples.HOSTILE
    d = diff_documents(old, new)
    html = render_html(d)
    assert "<script>alert" not in html and "<img" not in html and "&lt;script&gt;alert" in html
    md = render_markdown(d)
    assert "<script" not in md and "\n# heading" not in md
