"""`portready report RESULTS.json`: re-render a saved run in any format, without scanning."""

from __future__ import annotations

import argparse
from pathlib import Path

from scanner.cli_common import add_report_options, write_reports
from scanner.report import load_document, summarize


def run_report(args: argparse.Namespace) -> int:
    doc = load_document(args.results)
    if args.strict:
        # --strict re-judges the saved rows: warn and inconclusive now fail (and exit 1).
        doc["summary"] = summarize(doc["rows"], True)
        doc.setdefault("options", {})["strict"] = True
    return write_reports(doc, args)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from scanner.reporters import file_formats

    flags = ", ".join(f.flag for f in file_formats() if f.flag)
    p = sub.add_parser(
        "report", help=f"re-render a saved JSON report ({flags}) without scanning",
        description=(
            "Read a report written with --json and write it again in other formats. Nothing is sent. "
            "The exit code is the report's own (0 no row failed, 1 some row failed), recomputed with --strict; "
            "2 when the file is not a readable portready report (too large, not JSON, a missing key or a wrong "
            "type, an unknown schema version: schema versions 1 and 2 are read); "
            "3 when a report file could not be written (the others still are)."
        ),
    )
    p.add_argument("results", type=Path, metavar="RESULTS.json", help="a report written by scan/listen/local --json")
    add_report_options(p)
    p.set_defaults(func=run_report)
