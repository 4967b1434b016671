"""`portready fix RESULTS.json`: the firewall change that would open each failed check."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scanner.errors import ConfigError, UsageError
from scanner.remediation import (
    Fix,
    ReportShapeError,
    auditor_address_problem,
    auditor_addresses,
    fix_format,
    fix_formats,
    plan_fixes,
    render,
)
from scanner.report import exit_code, load_document


@fix_format("markdown")
def _markdown(fixes: list[Fix]) -> str:
    # The Markdown reporter owns the "How to fix" section; imported only when asked for.
    from scanner.reporters.markdown import fixes_markdown

    return fixes_markdown(fixes)


def _declared_probes() -> dict[str, tuple[str, ...]]:
    """The probes each built-in row declares (a check run at port depth names only `tcp`/`udp`)."""
    from scanner.profiles import load_catalogue

    try:
        catalogue = load_catalogue()
    except ConfigError:
        return {}  # a broken built-in catalogue must not stop the rules of a saved report
    return {row.key: tuple(row.probes) for row in catalogue.rows()}


def _write(dest: str | None, text: str) -> None:
    if dest in (None, "-"):
        sys.stdout.write(text)
        return
    path = Path(str(dest))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--output {dest}: cannot write ({exc.strerror or exc})") from None


def _ask_address(tries: int = 3) -> str | None:
    """At a terminal: ask for the Auditor's address (checked); Enter or end of input keeps the placeholder."""
    for _ in range(tries):
        sys.stderr.write("The report names no address of the Auditor server. Its address for the rules "
                         "(Enter: write a placeholder instead): ")  # fmt: skip
        sys.stderr.flush()
        answer = sys.stdin.readline(200).strip()
        if not answer:
            return None
        problem = auditor_address_problem(answer)
        if problem is None:
            return answer
        sys.stderr.write(f"portready: {problem}\n")
    return None


def run_fix(args: argparse.Namespace) -> int:
    if args.auditor is not None:
        problem = auditor_address_problem(args.auditor)
        if problem:
            raise UsageError(f"--auditor-address {args.auditor!r}: {problem}")
    try:
        doc = load_document(args.results)
    except RecursionError:
        raise ConfigError(str(args.results), None, "the report is nested too deeply to be one of ours") from None
    declared = _declared_probes()
    try:
        fixes = plan_fixes(doc, auditor=args.auditor, declared=declared)
        if args.auditor is None and not auditor_addresses(doc) and any(f.opens and not f.inbound for f in fixes):
            asked = _ask_address() if sys.stdin.isatty() and sys.stderr.isatty() else None
            if asked is None:
                print("portready: the report names no address of the Auditor server: give it with --auditor-address "
                      "ADDRESS; until then every rule carries a placeholder that fails when run unedited",
                      file=sys.stderr)  # fmt: skip
            else:
                fixes = plan_fixes(doc, auditor=asked, declared=declared)
    except ReportShapeError as exc:
        raise ConfigError(str(args.results), None, f"not a report fix can read: {exc}") from None
    _write(args.output, render(fixes, args.format))
    return exit_code(doc)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "fix", help="the firewall rule that would open each failed check (PowerShell, netsh, ONTAP, table)",
        description=(
            "For each failed check of a saved report: the side that must change and the rule that opens it, "
            "described by the documented purpose. One rule per port, protocol and reason, with the hosts it is "
            "needed on (sources collapsed to CIDR ranges). filtered -> a firewall on the path and on the target; "
            "refused -> check the service first; RPC checks -> the predefined Windows rule groups; NetApp checks "
            "-> ONTAP firewall policy commands. Rules allow only the Auditor's address (from the report, or "
            "--auditor-address); never any address. Exit code: the report's own (1 when some row failed)."
        ),
    )  # fmt: skip
    p.add_argument("results", type=Path, metavar="RESULTS.json", help="a report written with --json")
    p.add_argument("--format", "-f", choices=sorted(fix_formats()), default="table", help="output form (default: table)")
    p.add_argument("--auditor-address", "--auditor", dest="auditor", metavar="ADDRESS",
                   help="the Auditor server's address the rules allow (default: the report's host addresses); "
                        "an IP address or a network of at most 256 addresses")  # fmt: skip
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of the console (folders are created)")
    p.set_defaults(func=run_fix)
