"""`portready local`: the Auditor host's own readiness (local ports, name resolution, time skew)."""

from __future__ import annotations

import argparse
import asyncio

from scanner.cli_common import add_input_options, add_report_options, add_run_options, load_run_inputs, write_reports


def run_local(args: argparse.Namespace) -> int:
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
        time_skew=not args.no_time_skew,
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
    add_run_options(p, only={"--timeout", "--retries"})  # no TLS, proxy, depth or concurrency here
    p.add_argument("--no-time-skew", action="store_true", help="skip the time-skew rows (no LDAP/SMB to the DCs)")
    add_report_options(p)
    p.set_defaults(func=run_local)
