"""The reporting spine: one registry drives the CLI, one opener writes every file, one word list per reason."""

from __future__ import annotations

import ast
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, TextIO

import pytest

from scanner.cli import main
from scanner.models import REASON_WORDS, Reason
from scanner.reporters import RenderOptions, file_formats, get_reporter, reporter, reporters, unregister
from scanner.reporters._out import open_dest

from . import samples

ROOT = Path(__file__).resolve().parents[2]


def _saved(tmp_path: Path, doc: Mapping[str, Any] | None = None) -> str:
    path = tmp_path / "saved.json"
    path.write_text(json.dumps(doc or samples.scan_doc("new")), encoding="utf-8")
    return str(path)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scanner", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_every_reason_has_words_and_the_readme_table_lists_exactly_those() -> None:
    assert {r.value for r in Reason} <= set(REASON_WORDS), "a Reason without words"
    assert {"no-reply", "closed"} <= set(REASON_WORDS), "the reasons other branches add have their words already"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| reason | meaning |"):]
    table = table[: table.index("\n\n")]
    listed = set(re.findall(r"^\| `([a-z-]+)` \|", table, flags=re.M))
    assert listed == set(REASON_WORDS)


def test_a_throwaway_format_is_its_module_and_its_test(tmp_path: Path) -> None:
    """Registered here, it becomes a `report` option, is written through the opener and returns the exit code."""

    def render_lines(doc: Mapping[str, Any], out: TextIO, options: RenderOptions) -> None:
        for row in doc["rows"]:
            out.write(f"{row['target']} {row['row']} {row['status']}\n")

    reporters()
    reporter("lines-test", flag="--lines-test", help="one line per row (test format)")(render_lines)
    try:
        dest = tmp_path / "made" / "here" / "out.txt"
        code = main(["report", _saved(tmp_path), "--lines-test", str(dest), "-q"])
        assert code == 1  # the document's exit code: some rows failed
        assert "dc1 smb-445 pass" in dest.read_text(encoding="utf-8").splitlines()
        assert any(f.flag == "--lines-test" for f in file_formats())
    finally:
        unregister("lines-test")
    assert "lines-test" not in reporters()


def test_a_format_name_or_flag_is_taken_once() -> None:
    reporters()
    with pytest.raises(ValueError, match="already registered"):
        reporter("html", flag="--other")(lambda doc, out, options: None)
    with pytest.raises(ValueError, match="already taken"):
        reporter("html-two", flag="--html")(lambda doc, out, options: None)
    assert "html-two" not in reporters()


def test_the_cli_offers_one_option_per_registered_format() -> None:
    from scanner.cli import build_parser

    report = build_parser()._subparsers._group_actions[0].choices["report"]  # type: ignore[union-attr]
    flags = {opt for action in report._actions for opt in action.option_strings}
    assert {f.flag for f in file_formats()} <= flags
    assert {"--json", "--junit", "--html", "--markdown", "--csv", "--verbose"} <= flags


def test_open_dest_creates_folders_and_stdout_is_left_open(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open_dest(tmp_path / "a" / "b" / "c.txt") as out:
        out.write("x")
    assert (tmp_path / "a" / "b" / "c.txt").read_text() == "x"
    with open_dest("-") as out:
        out.write("to stdout")
    with open_dest(None) as out:
        out.write(" again")
    assert capsys.readouterr().out == "to stdout again"
    assert not sys.stdout.closed


def test_the_readme_example_writes_every_report_into_a_missing_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _cli("report", _saved(tmp_path), "--json", str(out / "report.json"), "--junit", str(out / "junit.xml"),
                "--html", str(out / "report.html"), "--markdown", str(out / "deep" / "r.md"), "--csv", str(out / "r.csv"))
    assert proc.returncode == 1, proc.stderr
    for name in ("report.json", "junit.xml", "report.html", "deep/r.md", "r.csv"):
        assert (out / name).stat().st_size > 0, name
    assert "Traceback" not in proc.stderr


def test_one_unwritable_path_is_reported_exit_3_and_the_other_formats_are_written(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    good_json, good_csv = tmp_path / "ok" / "r.json", tmp_path / "r.csv"
    proc = _cli("report", _saved(tmp_path), "--html", str(blocker / "x.html"), "--json", str(good_json),
                "--csv", str(good_csv))
    assert proc.returncode == 3
    assert f"could not write the html report to {blocker / 'x.html'}" in proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert json.loads(good_json.read_text(encoding="utf-8"))["tool"] == "portready"
    assert good_csv.read_text(encoding="utf-8-sig").startswith("profile,")
    assert "some rows FAILED" in proc.stdout, "the console still prints"


def test_formats_receive_a_writer_and_never_open_files_themselves() -> None:
    """Only _out.py opens report files: no open()/write_text()/Path.open in a format module."""
    for path in sorted((ROOT / "scanner" / "reporters").glob("*.py")):
        if path.name == "_out.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
                assert name not in ("open", "write_text", "write_bytes"), f"{path.name}:{node.lineno} opens a file"


def test_each_format_writes_to_the_writer_it_is_given() -> None:
    doc = samples.scan_doc("old")
    for name, fmt in reporters().items():
        buf = io.StringIO()
        fmt.render(doc, buf, RenderOptions())
        assert buf.getvalue(), name
    assert get_reporter("json")(doc, None) == 1


# Imports counted inside functions too: a cycle hidden behind a function-level import is still a cycle.
_MINE = ("scanner.report", "scanner.diff", "scanner.reporters", "scanner.commands.report", "scanner.commands.plan",
         "scanner.commands.diff", "scanner.cli_common")
# remediation (the fix engineer's) still imports the Markdown reporter to render its "markdown" form;
# that edge goes when remediation becomes pure, and this list with it.
_NOT_YET = {("scanner.remediation", "scanner.reporters.markdown")}


def _import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "scanner").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        mod = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("scanner") and not node.level:
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("scanner"))
        graph[mod] = deps
    known = set(graph)
    return {m: {d for d in deps if d in known and d != m and (m, d) not in _NOT_YET} for m, deps in graph.items()}


def _cycles(graph: Mapping[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative enough for this tree)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_reaches_the_reporting_modules() -> None:
    graph = _import_graph()
    assert "scanner.reporters._view" in graph and "scanner.report" in graph
    for comp in _cycles(graph):
        assert not any(m.startswith(_MINE) for m in comp), f"import cycle: {sorted(comp)}"


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [{"a", "b", "c"}]


def test_diff_writes_each_format_on_its_own_and_escapes_nothing_to_the_terminal(tmp_path: Path) -> None:
    old = _saved(tmp_path, samples.scan_doc("old"))
    new_doc = samples.hostile_doc()
    new_doc["rows"][0]["target"] = "dc1\x1b[2J\x9b31m"
    new = tmp_path / "new.json"
    new.write_text(json.dumps(new_doc), encoding="utf-8")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    proc = _cli("diff", old, str(new), "--html", str(blocker / "d.html"), "--markdown", str(tmp_path / "m" / "d.md"))
    assert proc.returncode == 3 and f"could not write the html diff to {blocker / 'd.html'}" in proc.stderr
    assert (tmp_path / "m" / "d.md").stat().st_size > 0 and "Traceback" not in proc.stderr
    for args in ([], ["--json", "-"], ["--markdown", "-"]):
        out = _cli("diff", old, str(new), *args).stdout
        assert "\x1b" not in out and "\x9b" not in out, args


def test_the_reporting_modules_know_no_probe_by_name() -> None:
    """Summaries come from the probes' own summarize(); no report module reads a probe's name."""
    from scanner.probes.base import registry

    names = set(registry())
    files = [*(ROOT / "scanner" / "reporters").glob("*.py"),
             *(ROOT / "scanner" / p for p in ("report.py", "diff.py", "cli_common.py", "commands/report.py",
                                             "commands/plan.py", "commands/diff.py"))]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value not in names, f"{path.name}:{node.lineno} names the probe {node.value!r}"


def test_csv_to_a_stdout_that_translates_line_ends_gets_no_doubled_carriage_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a Windows console or pipe does: every \\n becomes \\r\\n on the way out."""
    import scanner.reporters._out as out_module

    raw = io.BytesIO()
    windows_stdout = io.TextIOWrapper(raw, encoding="utf-8", newline="\r\n", write_through=True)
    monkeypatch.setattr(out_module.os, "linesep", "\r\n")
    monkeypatch.setattr(sys, "stdout", windows_stdout)
    get_reporter("csv")(samples.scan_doc("old"), "-")
    data = raw.getvalue()
    assert b"\r\r\n" not in data and data.count(b"\r\n") >= 2
