"""`portready fix RESULTS.json`: the firewall change that would open each failed row."""

from __future__ import annotations

import argparse
from pathlib import Path

from scanner.errors import UsageError
from scanner.remediation import FORMATS, plan_fixes, render, safe_address
from scanner.report import exit_code, load_document
from scanner.reporters.html import write_text


def run_fix(args: argparse.Namespace) -> int:
    doc = load_document(args.results)
    if args.auditor and not safe_address(args.auditor):
        raise UsageError(f"--auditor {args.auditor!r}: expected an IP address or network")
    fixes = plan_fixes(doc, auditor=args.auditor)
    write_text(args.output, render(fixes, args.format))
    return exit_code(doc)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "fix", help="the firewall rule that would open each failed row (PowerShell, netsh, ONTAP, table)",
        description=(
            "For each failed row x target of a saved report: the side that must change and the rule that opens it, "
            "described by the documented purpose. filtered -> a firewall on the path and on the target; refused -> "
            "check the service first; RPC rows -> the predefined Windows rule groups; NetApp rows -> ONTAP firewall "
            "policy commands. Exit code: the report's own (1 when some row failed)."
        ),
    )
    p.add_argument("results", type=Path, metavar="RESULTS.json", help="a report written with --json")
    p.add_argument("--format", "-f", choices=FORMATS, default="table", help="output form (default: table)")
    p.add_argument("--auditor", metavar="ADDRESS", help="the Auditor's address for the rules (default: from the report's host)")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of the console")
    p.set_defaults(func=run_fix)
