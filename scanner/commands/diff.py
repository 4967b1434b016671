"""`portready diff OLD.json NEW.json`: what changed between two runs; exit 1 on a regression."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from scanner.diff import diff_documents, load_pair, render_html, render_markdown, render_text
from scanner.report import EXIT_TOOL
from scanner.reporters._out import write_text
from scanner.reporters.json_report import json_text

_FORMATS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "json": json_text,
    "markdown": render_markdown,
    "html": render_html,
}


def run_diff(args: argparse.Namespace) -> int:
    old, new = load_pair(args.old, args.new)
    d = diff_documents(old, new, strict=args.strict)
    failed = False
    for name, render in _FORMATS.items():
        dest = getattr(args, name, None)
        if not dest:
            continue
        try:  # each format on its own: one bad path does not cost the others
            write_text(dest, render(d))
        except BrokenPipeError:
            raise
        except OSError as exc:
            failed = True
            print(f"portready: could not write the {name} diff to {dest}: {exc.strerror or exc}; "
                  "the other formats were written", file=sys.stderr)
    if not args.quiet and "-" not in (args.json, args.markdown, args.html):
        write_text("-", render_text(d))
    return EXIT_TOOL if failed else int(d["summary"]["exit_code"])


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "diff", help="what changed between two saved runs (post-upgrade review); exit 1 on a regression",
        description=(
            "Compare two reports written with --json, row by row and target by target. A regression is a row x "
            "target whose status got worse (pass -> warn/inconclusive/fail, warn -> fail, ...) or a new row x target "
            "that fails. Removed targets and rows are listed; with --strict they count as regressions too. "
            "Exit 0 no regression, 1 regression, 2 unreadable or incompatible reports (different schema versions), "
            "3 when an output file could not be written (the others still are)."
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
