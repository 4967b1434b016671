"""`portready diff OLD.json NEW.json`: what changed between two runs; exit 1 on a regression."""

from __future__ import annotations

import argparse
from pathlib import Path

from scanner.cli_common import write_each
from scanner.diff import diff_documents, load_pair
from scanner.report import EXIT_TOOL
from scanner.reporters._diff import diff_formats, get_diff_format


def run_diff(args: argparse.Namespace) -> int:
    old, new = load_pair(args.old, args.new)
    d = diff_documents(old, new, strict=args.strict)
    failed, to_stdout = write_each(
        diff_formats(), args, lambda fmt, dest: fmt.write(d, dest), "diff", "the other formats were written"
    )
    if not args.quiet and not to_stdout:
        get_diff_format("console").write(d, "-")
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
    for fmt in diff_formats():  # --json, --markdown, --html: one option per registered form
        assert fmt.flag is not None
        p.add_argument(fmt.flag, metavar="FILE", dest=fmt.dest_attr, help=fmt.help)
    p.add_argument("--strict", action="store_true", help="removed targets/rows and rows no longer checked are regressions too")
    p.add_argument("--quiet", "-q", action="store_true", help="no console summary")
    p.set_defaults(func=run_diff)
