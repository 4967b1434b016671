"""`portready diff OLD.json NEW.json`: what changed between two runs; exit 1 on a regression."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scanner.diff import diff_documents, load_pair, render_html, render_markdown, render_text
from scanner.reporters._out import write_text


def run_diff(args: argparse.Namespace) -> int:
    old, new = load_pair(args.old, args.new)
    d = diff_documents(old, new, strict=args.strict)
    if args.json:
        write_text(args.json, json.dumps(d, indent=2, ensure_ascii=False, default=str) + "\n")
    if args.markdown:
        write_text(args.markdown, render_markdown(d))
    if args.html:
        write_text(args.html, render_html(d))
    if not args.quiet and "-" not in (args.json, args.markdown, args.html):
        sys.stdout.write(render_text(d))
    return int(d["summary"]["exit_code"])


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "diff", help="what changed between two saved runs (post-upgrade review); exit 1 on a regression",
        description=(
            "Compare two reports written with --json, row by row and target by target. A regression is a row x "
            "target whose status got worse (pass -> warn/inconclusive/fail, warn -> fail, ...) or a new row x target "
            "that fails. Removed targets and rows are listed; with --strict they count as regressions too. "
            "Exit 0 no regression, 1 regression, 2 unreadable or incompatible reports (different schema versions)."
        ),
    )
    p.add_argument("old", type=Path, metavar="OLD.json", help="the earlier run")
    p.add_argument("new", type=Path, metavar="NEW.json", help="the later run")
    p.add_argument("--json", metavar="FILE", help="write the diff as JSON (- for stdout)")
    p.add_argument("--markdown", metavar="FILE", help="write the diff as Markdown")
    p.add_argument("--html", metavar="FILE", help="write the diff as a self-contained HTML page")
    p.add_argument("--strict", action="store_true", help="removed targets/rows and rows no longer checked are regressions too")
    p.add_argument("--quiet", "-q", action="store_true", help="no console summary")
    p.set_defaults(func=run_diff)
