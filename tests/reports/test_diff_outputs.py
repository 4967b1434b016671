"""`portready diff` writes its forms through the diff-format registry and the shared opener.

Each requested form is written on its own (missing folders created); a path that cannot be
written is named on stderr, the others are still written and the command exits 3; a form
sent to stdout keeps stdout to itself. A form registered in `scanner.reporters._diff` is
offered by `diff` with nothing else edited. Real command lines, real files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import pytest

from scanner.cli import main
from scanner.reporters._diff import diff_format, diff_formats, unregister_diff_format

from . import samples

ROOT = Path(__file__).resolve().parents[2]


def _pair(tmp_path: Path) -> tuple[str, str]:
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(samples.scan_doc("old")), encoding="utf-8")
    new.write_text(json.dumps(samples.scan_doc("new")), encoding="utf-8")
    return str(old), str(new)


def _diff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scanner", "diff", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=False)


def test_the_registry_offers_the_three_forms_diff_always_had() -> None:
    assert [(f.name, f.flag) for f in diff_formats()] == [("json", "--json"), ("markdown", "--markdown"),
                                                           ("html", "--html")]


def test_every_form_lands_in_folders_that_did_not_exist(tmp_path: Path) -> None:
    old, new = _pair(tmp_path)
    out = {"json": tmp_path / "a" / "b" / "d.json", "markdown": tmp_path / "c" / "d.md", "html": tmp_path / "e" / "d.html"}
    proc = _diff(old, new, *(x for k, p in out.items() for x in (f"--{k}", str(p))))
    assert proc.returncode == 1, proc.stderr  # the sample pair has regressions
    assert json.loads(out["json"].read_text())["summary"]["regressions"] >= 1
    assert out["markdown"].read_text().startswith("# portready diff")
    assert "<!DOCTYPE html>" in out["html"].read_text()
    assert "regression" in proc.stdout and proc.stderr == ""


@pytest.mark.parametrize("broken", ["json", "markdown", "html"])
def test_one_failing_path_exits_3_and_the_others_are_written(tmp_path: Path, broken: str) -> None:
    old, new = _pair(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = {k: (blocker / f"d.{k}" if k == broken else tmp_path / "out" / f"d.{k}") for k in ("json", "markdown", "html")}
    proc = _diff(old, new, *(x for k, p in out.items() for x in (f"--{k}", str(p))))
    assert proc.returncode == 3
    assert f"could not write the {broken} diff to {out[broken]}" in proc.stderr and "Traceback" not in proc.stderr
    for name, path in out.items():
        if name != broken:
            assert path.stat().st_size > 0, name
    assert not out[broken].exists()
    assert "regression" in proc.stdout  # the console summary still printed


def test_every_path_failing_names_each_and_exits_3(tmp_path: Path) -> None:
    old, new = _pair(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    proc = _diff(old, new, "--json", str(blocker / "j"), "--markdown", str(blocker / "m"), "--html", str(blocker / "h"))
    assert proc.returncode == 3
    assert all(f"could not write the {k} diff" in proc.stderr for k in ("json", "markdown", "html"))


def test_a_form_on_stdout_keeps_stdout_to_itself(tmp_path: Path) -> None:
    old, new = _pair(tmp_path)
    proc = _diff(old, new, "--json", "-", "--markdown", str(tmp_path / "d.md"))
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["summary"]["regressions"] >= 1  # no console text mixed in
    assert (tmp_path / "d.md").stat().st_size > 0


def test_the_exit_code_without_regression_is_0_even_with_files(tmp_path: Path) -> None:
    old, _ = _pair(tmp_path)
    proc = _diff(old, old, "--html", str(tmp_path / "same" / "d.html"), "-q")
    assert proc.returncode == 0 and proc.stdout == "" and (tmp_path / "same" / "d.html").is_file()


def test_a_registered_form_is_offered_by_diff_with_nothing_else_edited(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    @diff_format("lines", flag="--lines", help="one line per change")
    def render_lines(d: Mapping[str, Any]) -> str:
        return "".join(f"{c['kind']} {c['target']}\n" for c in d["changes"])

    try:
        old, new = _pair(tmp_path)
        dest = tmp_path / "x" / "d.txt"
        assert main(["diff", old, new, "--lines", str(dest), "--quiet"]) == 1
        assert "newly-failing dc1" in dest.read_text() or "worse dc1" in dest.read_text()
        with pytest.raises(ValueError, match="already taken"):
            diff_format("other", flag="--lines")(render_lines)
    finally:
        unregister_diff_format("lines")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["diff", old, new, "--lines", str(dest)])
