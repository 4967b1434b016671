"""Saved reports are untrusted files, and peer text is untrusted in every format.

`report` and `diff` (the real command, in a subprocess) meet missing keys, wrong types,
deep nesting, a 300 MB file, foreign JSON: a clear error naming what is wrong, exit 2,
never a traceback or exit 3. Terminal escapes from a peer never reach stdout.
"""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from scanner.errors import ConfigError
from scanner.models import Reason, Status
from scanner.report import MAX_REPORT_BYTES, build_document, load_document

from . import samples

ROOT = Path(__file__).resolve().parents[2]
ESCAPES = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\x9b31m\u202egnp.exe\x00"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scanner", *args], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          errors="replace")


def _doc() -> dict[str, Any]:
    return copy.deepcopy(samples.scan_doc("old"))


def _edit(fn: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    doc = _doc()
    fn(doc)
    return doc


BROKEN: dict[str, tuple[Any, str]] = {
    "row without status": (_edit(lambda d: d["rows"][0].pop("status")), "row 0: the key 'status' is missing"),
    "row without checks": (_edit(lambda d: d["rows"][1].pop("checks")), "row 1: the key 'checks' is missing"),
    "target is a number": (_edit(lambda d: d["rows"][0].update(target=7)), "row 0: 'target' is an int"),
    "checks is a string": (_edit(lambda d: d["rows"][0].update(checks="x")), "'checks' is a str"),
    "check is a list": (_edit(lambda d: d["rows"][0].update(checks=[[1]])), "row 0, check 0 is not an object"),
    "check status unknown": (_edit(lambda d: d["rows"][0]["checks"][0].update(status="great")), "no valid status"),
    "evidence is a list": (_edit(lambda d: d["rows"][0]["checks"][0].update(evidence=[1, 2])), "'evidence' is a list"),
    "duration is text": (_edit(lambda d: d["rows"][0]["checks"][0].update(duration_ms="fast")), "'duration_ms' is a str"),
    "port is a float": (_edit(lambda d: d["rows"][0]["checks"][0].update(port=1.5)), "'port' is a float"),
    "summary is a dict": (_edit(lambda d: d["rows"][0]["checks"][0].update(summary={})), "'summary' is a dict"),
    "host is a list": (_edit(lambda d: d.update(host=["x"])), "'host' is a list"),
    "notes hold objects": (_edit(lambda d: d.update(notes=[{"x": 1}])), "'notes' holds something other than text"),
    "interrupted is text": (_edit(lambda d: d.update(interrupted="yes")), "'interrupted' is a str"),
    "rows is an object": (_edit(lambda d: d.update(rows={})), "not a portready JSON report"),
    "row is a string": (_edit(lambda d: d["rows"].append("row")), "is not an object"),
    "schema from the future": (_edit(lambda d: d.update(schema_version=99)), "report schema version 99"),
    "schema is true": (_edit(lambda d: d.update(schema_version=True)), "report schema version True"),
    "not ours": ({"tool": "nmap", "rows": []}, "not a portready JSON report"),
    "a list": ([1, 2, 3], "not a portready JSON report"),
    "duration is NaN": ('{"tool": "portready", "schema_version": 2, "rows": [{"profile": "p", "row": "r", "target": "t", '
                        '"status": "pass", "reason": "ok", "checks": [{"status": "pass", "reason": "ok", "duration_ms": NaN}]}]}',
                        "'duration_ms' is not a duration"),
    "duration of 400 digits": ('{"tool": "portready", "schema_version": 2, "rows": [{"profile": "p", "row": "r", "target": "t", '
                               '"status": "pass", "reason": "ok", "checks": [{"status": "pass", "reason": "ok", "duration_ms": '
                               + "9" * 400 + "}]}]}", "'duration_ms' is not a duration"),
    "a 5000-digit number": ('{"tool": "portready", "rows": [], "schema_version": ' + "1" * 5000 + "}", "not a JSON report"),
    "deep evidence": (_edit(lambda d: d["rows"][0]["checks"][0].update(evidence=json.loads("[" * 40 + "]" * 40))),
                      "nested deeper than 32 levels"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_saved_report_is_refused_with_what_is_wrong(tmp_path: Path, case: str) -> None:
    doc, words = BROKEN[case]
    path = tmp_path / "r.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_document(path)
    assert words in str(err.value)


@pytest.mark.parametrize("command", ["report", "diff"])
@pytest.mark.parametrize("case", ["row without status", "evidence is a list", "host is a list", "deep evidence"])
def test_report_and_diff_exit_2_without_a_traceback(tmp_path: Path, command: str, case: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(BROKEN[case][0]), encoding="utf-8")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(samples.scan_doc("new")), encoding="utf-8")
    args = [command, str(bad)] + ([str(good)] if command == "diff" else ["--html", str(tmp_path / "x.html")])
    proc = _cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert BROKEN[case][1] in proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert not (tmp_path / "x.html").exists()


def test_json_nested_beyond_the_parsers_stack_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    proc = _cli("report", str(path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "nested deeper" in proc.stderr or "not a portready JSON report" in proc.stderr


def test_a_300_mb_report_is_refused_by_its_size_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    with open(path, "wb") as fh:  # sparse: 300 MB of size, no disk
        fh.truncate(300 * 1024 * 1024)
    assert path.stat().st_size > MAX_REPORT_BYTES
    for args in (["report", str(path)], ["diff", str(path), str(path)]):
        proc = _cli(*args)
        assert proc.returncode == 2, proc.stderr
        assert "larger than 128 MiB" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("text", ["{not json", "\xff\xfe garbage", ""])
def test_text_that_is_not_json_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "r.json"
    path.write_bytes(text.encode("latin-1"))
    proc = _cli("report", str(path))
    assert proc.returncode == 2 and "not a JSON report" in proc.stderr and "Traceback" not in proc.stderr


def test_saved_summary_and_findings_are_recomputed_not_trusted(tmp_path: Path) -> None:
    doc = _doc()
    doc["summary"] = {"rows": "lots", "exit_code": 0, "fail": -1}
    doc["findings"] = [{"status": "<b>forged</b>"}]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    loaded = load_document(path)
    assert loaded["summary"]["rows"] == len(doc["rows"]) and loaded["summary"]["exit_code"] == 1
    assert all(f["status"] in {s.value for s in Status} for f in loaded["findings"])


def _escape_doc() -> dict[str, Any]:
    r = samples.result(samples.SMB, "dc1" + ESCAPES, "198.18.0.10",
                       samples.check("tcp", 445, "smb", Status.FAIL, Reason.PROTOCOL, "banner " + ESCAPES, 2.0,
                                     banner=ESCAPES, dialect="3.1.1" + ESCAPES))
    return build_document("scan", [r], started="s", finished="f", options={"x": ESCAPES}, extra={"notes": [ESCAPES]})


@pytest.mark.parametrize("flag", ["--csv", "--json", "--markdown", "--junit", "--html", None])
def test_no_peer_escape_sequence_reaches_stdout(tmp_path: Path, flag: str | None) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_escape_doc()), encoding="utf-8")
    proc = _cli("report", str(path), *([flag, "-"] if flag else ["--verbose"]))
    assert proc.returncode == 1, proc.stderr
    for bad in ("\x1b", "\x07", "\x9b", "\u202e", "\x00"):
        assert bad not in proc.stdout, (flag, repr(bad))
    assert "owned" in proc.stdout, "the text is kept, only its control characters go"


def test_json_escapes_c1_controls_and_still_round_trips(tmp_path: Path) -> None:
    from scanner.reporters import get_reporter

    doc = _escape_doc()
    dest = tmp_path / "r.json"
    get_reporter("json")(doc, dest)
    raw = dest.read_text(encoding="utf-8")
    assert "\x9b" not in raw and "\\u009b" in raw and "\u202e" not in raw
    assert json.loads(raw)["rows"][0]["checks"][0]["evidence"]["banner"] == ESCAPES


def _v1(doc: dict[str, Any]) -> dict[str, Any]:
    """The same run as portready 0.1 saved it: schema 1, no summaries, findings or interrupted."""
    out = copy.deepcopy(doc)
    out["schema_version"] = 1
    out.pop("findings", None)
    out.pop("interrupted", None)
    for row in out["rows"]:
        for check in row["checks"]:
            check.pop("summary", None)
    return out


def test_a_version_1_report_still_renders_every_format_with_its_summaries(tmp_path: Path) -> None:
    saved = tmp_path / "v1.json"
    saved.write_text(json.dumps(_v1(samples.scan_doc("new"))), encoding="utf-8")
    out = tmp_path / "out"
    proc = _cli("report", str(saved), "--html", str(out / "r.html"), "--markdown", str(out / "r.md"),
                "--csv", str(out / "r.csv"), "--junit", str(out / "r.xml"), "--json", str(out / "r.json"))
    assert proc.returncode == 1, proc.stderr
    html = (out / "r.html").read_text(encoding="utf-8")
    assert "SMB 3.0.2 signing required" in html, "the probe's own summary, asked for an old report"
    assert "Findings" in html
    rewritten = json.loads((out / "r.json").read_text(encoding="utf-8"))
    assert rewritten["findings"] and rewritten["interrupted"] is None
    assert "Findings:" in proc.stdout


def test_a_version_1_and_a_version_2_report_compare(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    old.write_text(json.dumps(_v1(samples.scan_doc("old"))), encoding="utf-8")
    new = tmp_path / "new.json"
    new.write_text(json.dumps(samples.scan_doc("new")), encoding="utf-8")
    proc = _cli("diff", str(old), str(new))
    assert proc.returncode == 1, proc.stderr
    assert "REGRESSIONS" in proc.stdout


_ODD: list[Any] = ["", ESCAPES, "x" * 5000, 0, -1, 2**63, 1.5e300, True, None, [], {}, [ESCAPES, {"k": [1, {"j": ESCAPES}]}],
                   {"uuid": ESCAPES, "name": 7, "port": "x", "status": [], "tcp_port": {}}]


def _mutated(rng: random.Random) -> dict[str, Any]:
    """A valid-shaped report whose free text, evidence and optional fields hold odd values."""
    doc = samples.scan_doc(rng.choice(["old", "new"]))
    for row in doc["rows"]:
        for key in ("purpose", "detail", "doc_port", "section", "target", "row"):
            if rng.random() < 0.3:
                row[key] = rng.choice([v for v in _ODD if isinstance(v, str)])
        for check in row["checks"]:
            ev = check["evidence"]
            for key in ("dialect", "signing_required", "tls_version", "not_after", "days_left", "subject", "sha256",
                        "endpoints", "interfaces", "instances", "endpoint_count", "syslog", rng.choice(["a", ESCAPES])):
                if rng.random() < 0.4:
                    ev[key] = rng.choice(_ODD) if key not in ("endpoints", "interfaces", "instances") else \
                        [rng.choice(_ODD) for _ in range(rng.randint(0, 4))]
            if rng.random() < 0.3:
                check.pop("summary", None)
            if rng.random() < 0.2:
                check["port"] = rng.choice([None, "x", 10**30, ESCAPES])
    if rng.random() < 0.3:
        doc["interrupted"] = rng.choice([{"signal": ESCAPES, "checks_done": "x"}, {}, {"checks_done": 10**40}])
    if rng.random() < 0.3:
        doc["schema_version"] = 1
    return doc


def test_fuzzed_reports_render_and_compare_without_an_exception(tmp_path: Path) -> None:
    """Bounded: 150 seeded documents through load, every format and diff, in-process."""
    from scanner.diff import diff_documents, render_html, render_markdown, render_text
    from scanner.reporters import render_text as render_format
    from scanner.reporters import reporters

    rng = random.Random(1515)
    previous: dict[str, Any] | None = None
    for i in range(150):
        path = tmp_path / f"f{i % 2}.json"
        path.write_text(json.dumps(_mutated(rng)), encoding="utf-8")
        try:
            doc = load_document(path)
        except ConfigError:
            continue
        for name in reporters():
            text = render_format(name, doc)
            assert "\x1b" not in text and "\x9b" not in text, name
        if previous is not None:
            d = diff_documents(previous, doc)
            for render in (render_text, render_markdown, render_html):
                assert "\x1b" not in render(d)
        previous = doc


@pytest.mark.parametrize("name", ["scan-old.json", "scan-new.json", "listen.json"])
def test_the_stored_version_1_samples_render_in_every_format(tmp_path: Path, name: str) -> None:
    saved = ROOT / "tests" / "data" / "reports" / name
    assert json.loads(saved.read_text(encoding="utf-8"))["schema_version"] == 1
    out = tmp_path / "out"
    flags = [arg for fmt in ("html", "markdown", "csv", "junit", "json") for arg in (f"--{fmt}", str(out / f"r.{fmt}"))]
    proc = _cli("report", str(saved), *flags)
    assert proc.returncode == 1, proc.stderr
    assert all((out / f"r.{fmt}").stat().st_size for fmt in ("html", "markdown", "csv", "junit", "json"))
    assert json.loads((out / "r.json").read_text(encoding="utf-8"))["schema_version"] == 1, "re-rendered, not rewritten"
    assert "some rows FAILED (exit 1)" in proc.stdout


@pytest.mark.parametrize("flag", [None, "--csv", "--markdown", "--json"])
def test_a_stdout_that_cannot_encode_the_text_still_gets_the_report(tmp_path: Path, flag: str | None) -> None:
    """A Windows pipe is cp1252; here ASCII: "→", "…" and a peer's U+FFFD must not cost the report."""
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_escape_doc()), encoding="utf-8")
    env = {**__import__("os").environ, "PYTHONIOENCODING": "ascii"}
    proc = subprocess.run([sys.executable, "-m", "scanner", "report", str(path), *([flag, "-"] if flag else [])],
                          capture_output=True, cwd=ROOT, timeout=120, env=env)
    assert proc.returncode == 1, proc.stderr
    assert b"Traceback" not in proc.stderr and b"owned" in proc.stdout
