"""The HTML report in a real headless browser (Debian chromium): it renders, links resolve, filters run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest

from scanner.reporters.html import render_html

from . import samples

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", *args,
    ]
    # Its own session, so a hung browser and its helpers end together (by our process group id).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("chromium did not finish in 90 s")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


class Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.matrix_links: list[str] = []
        self.filters: dict[str, dict[str, str | None]] = {}
        self.rows: list[dict[str, str | None]] = []
        self.html_class = ""
        self._matrix_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag == "html":
            self.html_class = a.get("class") or ""
        if tag == "table" and "matrix" in (a.get("class") or ""):
            self._matrix_depth = 1
        if tag == "a" and self._matrix_depth and a.get("href", "").startswith("#"):  # type: ignore[union-attr]
            self.matrix_links.append(str(a["href"])[1:])
        if tag == "a" and a.get("data-filter"):
            self.filters[str(a["data-filter"])] = a
        if tag == "tr" and "r" in (a.get("class") or "").split():
            self.rows.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._matrix_depth = 0


def _dom(tmp_path: Path, url: str) -> Dom:
    done = _chromium(tmp_path, "--dump-dom", url)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = Dom()
    dom.feed(done.stdout)
    return dom


@pytest.fixture
def report(tmp_path: Path) -> Path:
    path = tmp_path / "report.html"
    path.write_text(render_html(samples.scan_doc("new")), encoding="utf-8")
    return path


def test_report_renders_in_chromium_and_a_screenshot_is_saved(tmp_path: Path, report: Path,
                                                              record_property: Callable[[str, object], None]) -> None:
    png = tmp_path / "report.png"
    done = _chromium(tmp_path, f"--screenshot={png}", "--window-size=1280,2000", report.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    record_property("screenshot", str(png))
    print(f"screenshot: {png}")


def test_matrix_links_resolve_and_filter_buttons_exist_after_scripts_ran(tmp_path: Path, report: Path) -> None:
    dom = _dom(tmp_path, report.as_uri())
    assert "js" in dom.html_class.split()  # the inline script ran
    assert dom.matrix_links, "the matrix links down to the rows"
    missing = [x for x in dom.matrix_links if x not in dom.ids]
    assert not missing, missing
    assert {"failed", "warn", "inconclusive", "all"} <= set(dom.filters)
    assert dom.filters["all"]["aria-pressed"] == "true"
    assert all("hidden" not in r for r in dom.rows)


def test_opening_the_failed_filter_hides_every_other_row(tmp_path: Path, report: Path) -> None:
    dom = _dom(tmp_path, report.as_uri() + "#only-failed")
    assert dom.filters["failed"]["aria-pressed"] == "true"
    shown = {r["data-status"] for r in dom.rows if "hidden" not in r}
    hidden = {r["data-status"] for r in dom.rows if "hidden" in r}
    assert shown == {"fail"} and "pass" in hidden


def test_a_grouped_page_of_many_targets_opens_the_list_a_link_lands_in(tmp_path: Path) -> None:
    from .test_html_many_targets import _fleet

    path = tmp_path / "many.html"
    path.write_text(render_html(_fleet(300)), encoding="utf-8")
    target = "pt0-4-10-1-0-5"  # 10.1.0.5: a member line inside the closed list of 200 passing-SMB targets
    assert f'id="{target}"' in path.read_text()
    done = _chromium(tmp_path, "--dump-dom", path.as_uri() + "#" + target)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    line = dom.rfind("<details", 0, dom.index(f'id="{target}"'))
    assert dom[line:dom.index(">", line)].find("open") > 0, "the list holding the linked target was opened"
    parsed = Dom()
    parsed.feed(dom)
    missing = [x for x in parsed.matrix_links if x not in parsed.ids]
    assert parsed.matrix_links and not missing, missing


def test_the_failed_filter_on_a_grouped_page_keeps_only_failing_lines(tmp_path: Path) -> None:
    from .test_html_many_targets import _fleet

    path = tmp_path / "many.html"
    path.write_text(render_html(_fleet(120)), encoding="utf-8")
    dom = _dom(tmp_path, path.as_uri() + "#only-failed")
    shown = {r["data-status"] for r in dom.rows if "hidden" not in r}
    assert shown == {"fail"} and len([r for r in dom.rows if "hidden" not in r]) > 120
