"""Benchmark: the HTML report of a large scan: its size, the time to write it, and a browser's load.

Builds the saved reports of bench/console_render.py (N hosts x the active-directory rows at
port depth: a dropped port on every host, a refused one on a third of them), then times
`portready report FILE.json --html OUT` (best of --runs; its console, the user's default
output beside the page, goes to a file) and, with Debian's chromium,
how long a headless browser takes to load and lay out the page (--dump-dom). No network
traffic at all.

    python bench/html_render.py [--hosts 250 2500] [--tool-root DIR ...]

Several --tool-root checkouts (e.g. the previous commit, extracted with `git archive`) are
measured in one run, so before/after figures come from the same machine and load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.console_render import build_doc, timed_run_env  # noqa: E402
from bench.measure import CHILD_ENV  # noqa: E402


def browser_seconds(page: Path, tmp: Path) -> float | None:
    """Wall time of a headless chromium loading the page and dumping its DOM (None: no chromium)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        return None
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp / 'chromium'}", "--dump-dom",
           page.as_uri()]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # its own session: the browser and its helpers, by our process group
        proc.wait()
        return None
    return time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, nargs="+", default=[250, 2500])
    ap.add_argument("--tool-root", type=Path, nargs="+", default=[ROOT], help="checkouts to measure (default: this one)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-browser", action="store_true", help="skip the chromium load time")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="portready-bench-") as name:
        tmp = Path(name)
        os.chdir(tmp)  # `python -m` puts the working folder first on sys.path: not this checkout
        for hosts in args.hosts:
            saved = tmp / f"r{hosts}.json"
            saved.write_text(json.dumps(build_doc(hosts)))
            for root in args.tool_root:
                env = {**CHILD_ENV, "PYTHONPATH": str(root.resolve())}
                page = tmp / f"r{hosts}.html"
                console = tmp / f"r{hosts}.console.txt"
                argv = [sys.executable, "-m", "scanner", "report", str(saved), "--html", str(page)]
                best = min((timed_run_env(argv, env, str(console)) for _ in range(args.runs)), key=lambda r: r[0])
                lines = len(console.read_text(errors="replace").splitlines())
                loaded = None if args.no_browser else browser_seconds(page, tmp)
                shown = f", chromium load {loaded:.2f} s" if loaded is not None else ""
                print(f"{root}: {hosts:>5} hosts x 6 rows: HTML {page.stat().st_size / 1e6:.2f} MB, "
                      f"written in {best[0]:.2f} s with the console to a file ({lines} lines; "
                      f"peak {best[1] / 1024:.0f} MB){shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
