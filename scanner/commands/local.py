"""`portready local`: the Auditor host's own readiness (local ports, name resolution, time skew)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from scanner.cli_common import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    add_input_options,
    add_report_options,
    bounded_int,
    load_run_inputs,
    positive_float,
    write_reports,
)

_IGNORED: dict[str, dict[str, Any]] = {
    "--concurrency": {"type": bounded_int(1, 10000)}, "--per-host": {"type": bounded_int(1, 1000)},
    "--depth": {"choices": ["port", "protocol"]}, "--ca-bundle": {"type": Path},
    "--trust-private-ca": {"action": "store_true"}, "--proxy": {},
}  # fmt: skip


def run_local(args: argparse.Namespace) -> int:
    for flag in _IGNORED:
        if getattr(args, flag[2:].replace("-", "_"), None):
            print(f"portready local: {flag} does nothing here (local checks this host's ports, names and the DC clocks); "
                  "ignored", file=sys.stderr)  # fmt: skip
    from scanner.local import local_readiness
    from scanner.report import build_document, exit_code, now_iso
    from scanner.selection import select_rows

    inputs = load_run_inputs(args)
    rows = select_rows(inputs.catalogue, inputs.profiles, inputs.inventory)
    if not inputs.profiles and "auditor-server" in inputs.catalogue.profiles:
        rows += list(inputs.catalogue.profiles["auditor-server"].rows)  # the Auditor's own ports, always
    started = now_iso()
    results = asyncio.run(local_readiness(
        rows, inputs.inventory.targets, inputs.settings,
        local_roles=sorted(inputs.catalogue.local_roles) or ["auditor-server"],
        time_skew=not args.no_time_skew, time_rows=inputs.catalogue.rows(),
    ))  # fmt: skip
    options = {"profiles": inputs.profiles or "auto", "timeout": inputs.settings.timeout,
               "time_skew": not args.no_time_skew, "strict": args.strict}  # fmt: skip
    doc = build_document("local", results, started=started, finished=now_iso(), options=options,
                         inventory=inputs.inventory.describe(), strict=args.strict)  # fmt: skip
    args.verdict = exit_code(doc)  # what a closed stdout (`| head`) still returns
    return write_reports(doc, args)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "local", help="check this host: local ports, name resolution of targets, time skew to the DCs",
        description=(
            "The Auditor host's readiness: the ports it needs locally are free or held by the expected service "
            "(and by which process), every target name resolves, and the clock is within Kerberos' 5 minutes "
            "of each domain controller."
        ),
    )  # fmt: skip
    add_input_options(p)
    # Only what these checks use: no depth, concurrency, proxy or TLS trust (LDAP and SMB in clear, a few hosts).
    p.add_argument("--timeout", type=positive_float, metavar="S", help=f"longest wait for one answer (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--retries", type=bounded_int(0, 10), metavar="N", help=f"extra tries after silence (default {DEFAULT_RETRIES})")
    # Accepted for old command lines, hidden from the help, and said to be ignored when given.
    for flag, kw in _IGNORED.items():
        p.add_argument(flag, help=argparse.SUPPRESS, **kw)
    p.add_argument("--no-time-skew", action="store_true", help="skip the time-skew rows (no LDAP/SMB to the DCs)")
    add_report_options(p)
    p.set_defaults(func=run_local)
