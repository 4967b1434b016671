"""`portready scan`: run every selected row against every target of its role."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
from typing import Any, Iterator

from scanner.cli_common import (
    RunInputs,
    add_input_options,
    add_report_options,
    add_run_options,
    load_run_inputs,
    stderr_is_terminal,
    write_reports,
)
from scanner.errors import UsageError
from scanner.models import Depth, RowResult, Target
from scanner.report import build_document, exit_code, now_iso


def add_discovered_targets(inputs: RunInputs, extra: list[str]) -> list[str]:
    """Domain controllers from DNS SRV records (inventory `discover:` and --discover)."""
    wanted: list[dict[str, str]] = list(inputs.inventory.discover)
    for value in extra:
        domain, sep, server = value.partition("@")
        if not sep or not domain or not server:
            raise UsageError(f"--discover {value!r}: expected DOMAIN@DNS_SERVER")
        wanted.append({"domain": domain, "dns_server": server})
    notes: list[str] = []
    if not wanted:
        return notes
    from scanner.discovery import DiscoveryError, discover_with_addresses

    for entry in wanted:
        item = dict(entry)
        try:
            found = asyncio.run(discover_with_addresses(item["domain"], item["dns_server"], inputs.settings.timeout))
        except DiscoveryError as exc:
            raise UsageError(f"discovery of {item['domain']} via {item['dns_server']}: {exc}") from None
        # The DCs keep their names (TLS and Kerberos want them) with the addresses the
        # domain's own DNS server gave, so the system resolver is not asked.
        inputs.inventory.add("domain-controllers", [
            Target("domain-controllers", name, "discovered", addrs[0] if addrs else None) for name, addrs in found
        ])  # fmt: skip
        dcs = [name for name, _ in found]
        if not inputs.inventory.targets.get("dns-servers"):
            inputs.inventory.add("dns-servers", [Target("dns-servers", item["dns_server"])])
        if not inputs.settings.values.get("domain"):
            values = {**inputs.settings.values, "domain": item["domain"]}
            inputs.settings = dataclasses.replace(inputs.settings, values=values)
        notes.append(f"discovered {len(dcs)} domain controller(s) of {item['domain']} via {item['dns_server']}: {', '.join(dcs)}")
    return notes


def run_scan(args: argparse.Namespace) -> int:
    from scanner.engine import build_plan
    from scanner.selection import check_plan_size, inbound_only_hint, require_targets, select_rows

    inputs = load_run_inputs(args)
    started = now_iso()
    try:
        with _signal_ends_discovery():
            notes = add_discovered_targets(inputs, list(getattr(args, "discover", []) or []))
    except _Stopped as stop:  # a CI timeout while asking DNS: still a report, with no check in it
        info = {"signal": stop.signame, "checks_done": 0, "checks_planned": 0}
        write_reports(_document(args, inputs, [], [f"interrupted by {stop.signame} during discovery: no check ran"],
                                info, started), args)  # fmt: skip
        return _SIGNAL_EXIT[stop.signame]
    require_targets(inputs.inventory, inputs.profiles)
    rows = select_rows(inputs.catalogue, inputs.profiles, inputs.inventory)
    check_plan_size(rows, inputs.inventory)
    plan = build_plan(
        rows, inputs.inventory.targets, depth=Depth(inputs.depth), settings=inputs.settings,
        use_endpoints=bool(inputs.profiles),
    )
    if not plan.rows:
        hint = inbound_only_hint(rows)
        if hint is not None:
            raise UsageError(hint)
        roles = sorted({r.target for r in plan.untargeted})
        if not roles:
            raise UsageError("the selection has no row to scan; see `portready profiles`")
        raise UsageError(
            "none of the selected rows has a target: give hosts for the roles "
            + ", ".join(roles[:8]) + " (--target ROLE=HOST or the inventory's targets:)"
        )
    if plan.untargeted:
        roles = sorted({r.target for r in plan.untargeted})
        notes.append(f"{len(plan.untargeted)} selected row(s) have no target and were not checked (roles: {', '.join(roles)})")
    if plan.inbound:
        notes.append(f"{len(plan.inbound)} inbound row(s) flow to this host: prove them with `portready listen` and `portready send`")
    results, signame = asyncio.run(_run_until_signal(plan, inputs, quiet=args.quiet))
    interrupted: dict[str, Any] | None = None
    if signame is not None:
        planned = sum(len(r.checks) for r in plan.rows)
        done = sum(len(r.checks) for r in results)
        interrupted = {"signal": signame, "checks_done": done, "checks_planned": planned}
        notes.append(
            f"interrupted by {signame}: {done} of {planned} checks finished; this report holds only those, "
            "and a row whose other checks did not finish shows the finished ones"
        )
    doc = _document(args, inputs, results, notes, interrupted, started)
    if signame is None:
        args.verdict = exit_code(doc)  # what a closed stdout (`| head`) still returns
        return write_reports(doc, args)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C ends at once
    write_reports(doc, args)
    return _SIGNAL_EXIT[signame]


def _document(
    args: argparse.Namespace, inputs: RunInputs, results: list[RowResult], notes: list[str],
    interrupted: dict[str, Any] | None, started: str,
) -> dict[str, Any]:  # fmt: skip
    options: dict[str, Any] = {
        "depth": inputs.depth, "timeout": inputs.settings.timeout, "retries": inputs.settings.retries,
        "concurrency": inputs.concurrency, "per_host": inputs.per_host, "strict": args.strict,
        "profiles": inputs.profiles or "auto", "proxy": bool(inputs.settings.proxy),
    }  # fmt: skip
    return build_document(
        "scan", results, started=started, finished=now_iso(), options=options,
        inventory=inputs.inventory.describe(), strict=args.strict,
        extra={"notes": notes}, interrupted=interrupted,
    )


class _Stopped(KeyboardInterrupt):
    """SIGINT/SIGTERM before the checks start (asyncio treats it as it does Ctrl-C)."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


@contextlib.contextmanager
def _signal_ends_discovery() -> Iterator[None]:
    """While discovery asks DNS, SIGINT and SIGTERM raise _Stopped (main thread only)."""

    def stop(signum: int, _frame: Any) -> None:
        raise _Stopped(signal.Signals(signum).name)

    previous: dict[signal.Signals, Any] = {}
    try:
        for name in ("SIGINT", "SIGTERM"):
            sig = getattr(signal, name)
            try:
                previous[sig] = signal.signal(sig, stop)
            except ValueError:  # not the main thread
                break
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# The shell's codes for a process ended by the signal (128 + its number), kept on purpose.
_SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143, "SIGBREAK": 149}


async def _run_until_signal(plan: Any, inputs: RunInputs, *, quiet: bool) -> tuple[list[RowResult], str | None]:
    """Run the plan; SIGINT/SIGTERM (Ctrl-C, a CI timeout) stop it with what finished.

    The signal cancels this task; the engine then raises Interrupted with every finished
    check, so the reports can still be written and marked interrupted.
    """
    from scanner.engine import Interrupted

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    caught: list[str] = []

    def on_signal(name: str) -> None:
        if not caught and task is not None:
            caught.append(name)
            task.cancel()

    def from_thread(signum: int, _frame: Any) -> None:
        loop.call_soon_threadsafe(on_signal, signal.Signals(signum).name)

    installed: list[signal.Signals] = []
    previous: dict[signal.Signals, Any] = {}
    for name in ("SIGINT", "SIGTERM", "SIGBREAK"):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            loop.add_signal_handler(sig, on_signal, name)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # Windows: no loop signal handlers
            try:
                previous[sig] = signal.signal(sig, from_thread)
            except ValueError:  # not the main thread (an embedding caller): signals stay theirs
                pass
    try:
        return await _run_with_progress(plan, inputs, quiet=quiet), None
    except Interrupted as exc:
        if not caught:
            raise  # cancelled by something else than a signal
        uncancel = getattr(task, "uncancel", None)
        if uncancel is not None:
            uncancel()
        return exc.rows, caught[0]
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _run_with_progress(plan: Any, inputs: RunInputs, *, quiet: bool) -> list[RowResult]:
    from scanner.engine import run_plan

    if quiet or not stderr_is_terminal():
        return await run_plan(plan, inputs.settings, concurrency=inputs.concurrency, per_host=inputs.per_host)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]scanning"), BarColumn(), MofNCompleteColumn(), TextColumn("checks"),
        TimeElapsedColumn(), TextColumn("{task.fields[failed]} failing"),
        console=Console(stderr=True), transient=True,
    ) as progress:
        task = progress.add_task("scan", total=sum(len(r.checks) for r in plan.rows), failed=0)
        failed = 0

        def on_check(result: Any) -> None:
            nonlocal failed
            if result.status.value in ("fail", "error"):
                failed += 1
            progress.update(task, advance=1, failed=failed)

        return await run_plan(
            plan, inputs.settings, concurrency=inputs.concurrency, per_host=inputs.per_host, on_check=on_check
        )


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "scan", help="check every documented row against its targets",
        description="Run every selected row against every target of its role and report a verdict per row.",
    )
    add_input_options(p)
    p.add_argument("--discover", action="append", default=[], metavar="DOMAIN@DNS_SERVER",
                   help="add the domain's controllers (DNS SRV records) as domain-controllers targets")
    add_run_options(p)
    add_report_options(p)
    p.set_defaults(func=run_scan)
