"""`portready listen`: prove inbound rows by listening on this host for each expected source."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import ipaddress
import re
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

from scanner.cli_common import add_input_options, add_report_options, load_run_inputs, write_reports
from scanner.errors import UsageError
from scanner.models import CheckSpec, Direction, Row, Target, Transport

DEFAULT_DURATION = 60.0
MAX_DURATION = 24 * 3600.0
COMPLETION_GRACE = 1.0
ANY_ROLE = "any-source"
_PORT_OPT = re.compile(r"^(\d{1,5})/(udp|tcp)(?:=(\d{1,5}))?$", re.I)


@dataclass
class PortOptions:
    adhoc: list[tuple[Transport, int]] = field(default_factory=list)
    mapping: dict[tuple[Transport, int], int] = field(default_factory=dict)


def parse_port_options(values: list[str]) -> PortOptions:
    """`--port 9999/tcp` listens on an extra port; `--port 514/udp=15514` moves a documented one."""
    out = PortOptions()
    for value in values:
        m = _PORT_OPT.match(value.strip())
        if not m:
            raise UsageError(f"--port {value!r}: expected PORT/udp or PORT/tcp, or DOCPORT/udp=PORT to move a documented port")
        port, proto = int(m.group(1)), Transport(m.group(2).lower())
        moved = int(m.group(3)) if m.group(3) else None
        for p in (port, moved):
            if p is not None and not 1 <= p <= 65535:
                raise UsageError(f"--port {value!r}: ports are 1-65535")
        if moved is None:
            out.adhoc.append((proto, port))
        else:
            out.mapping[(proto, port)] = moved
    return out


def adhoc_row(protocol: Transport, port: int) -> Row:
    from scanner.listener.tag import port_row_id
    from scanner.probes.listen import InboundProbe

    return Row(
        profile="port", id=port_row_id(protocol.value, port), section="Ports given with --port",
        doc_port=str(port), doc_protocol=protocol.value.upper(), doc_source="Any listed source",
        doc_target="Netwrix Auditor Server", purpose="Ad-hoc inbound port", direction=Direction.INBOUND,
        source=ANY_ROLE, target="auditor-server", checks=(CheckSpec(protocol, InboundProbe.name, port),),
    )  # fmt: skip


def parse_bind(values: list[str]) -> list[str]:
    if not values:
        return ["0.0.0.0", "::"]
    out: list[str] = []
    for value in values:
        try:
            out.append(str(ipaddress.ip_address(value.strip("[]"))))
        except ValueError:
            raise UsageError(f"--bind {value!r}: give a local IP address (0.0.0.0, ::, or one of this host's)") from None
    return out


def duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= MAX_DURATION:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_DURATION:g} seconds")
    return value


def select_inbound(catalogue: Any, profiles: list[str], targets: dict[str, list[Target]]) -> list[Row]:
    """Inbound rows of the chosen profiles; with none chosen, of profiles whose sources are listed."""
    if profiles:
        return [r for pid in profiles for r in catalogue.profiles[pid].rows if r.direction is Direction.INBOUND]
    have = {role for role, hosts in targets.items() if hosts}
    return [r for p in catalogue.profiles.values() for r in p.rows if r.direction is Direction.INBOUND and r.source in have]


async def resolve_sources(roles: set[str], targets: dict[str, list[Target]], timeout: float) -> dict[str, list[Any]]:
    from scanner.engine import resolve
    from scanner.listener.matching import ExpectedSource
    from scanner.listener.server import normalize_address

    async def one(t: Target) -> ExpectedSource:
        res = await resolve(t.host, max(timeout, 2.0))
        addrs = tuple(dict.fromkeys(normalize_address(a) for a in res.addresses))
        return ExpectedSource(t, addrs, res.error if res.address is None else None)

    out: dict[str, list[Any]] = {}
    for role in sorted(roles):
        if role == ANY_ROLE:
            hosts = list({t.host: t for ts in targets.values() for t in ts}.values())
        else:
            hosts = list(targets.get(role, ()))
        out[role] = list(await asyncio.gather(*(one(t) for t in hosts))) if hosts else []
    return out


async def run_listener(
    rows: list[Row],
    targets: dict[str, list[Target]],
    *,
    settings_values: dict[str, Any],
    port_map: dict[tuple[Transport, int], int],
    bind: list[str],
    seconds: float,
    capture: bool,
    timeout: float = 3.0,
    on_ready: Any = None,
) -> tuple[list[Any], list[dict[str, Any]], dict[str, Any]]:
    """Listen, wait, match: (row results, unexpected sources, listener facts for the report)."""
    from scanner.listener.capture import PassiveCapture
    from scanner.listener.matching import is_complete, match, plan_bindings, plan_inbound
    from scanner.listener.owners import describe_owners, port_owners
    from scanner.listener.server import Listener, bind_error_text

    plan = plan_inbound(rows, settings_values, port_map)
    sources = await resolve_sources({r.row.source for r in plan}, targets, timeout)
    listener = Listener(plan_bindings(plan, bind))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    notes: list[str] = []
    port_notes: dict[tuple[Transport, int], str] = {}
    cap: PassiveCapture | None = None
    await listener.start()
    watched = {(b.protocol, b.port) for b in listener.bound}
    try:
        in_use = sorted({(b.protocol, b.port) for b, e in listener.failed.items()
                         if e.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1))} - watched,
                        key=lambda k: (k[1], k[0].value))  # fmt: skip
        for key in in_use:
            owners = await asyncio.to_thread(port_owners, *key)
            port_notes[key] = f"held by {describe_owners(owners)}"
        if in_use and capture:
            cap = PassiveCapture(in_use, listener.store)
            if await cap.start():
                watched |= set(in_use)
                for key in in_use:
                    port_notes[key] += "; watched by passive capture instead"
                notes.append("passive capture confirms arrivals on " + ", ".join(f"{p.value.upper()} {n}" for p, n in in_use))
            else:
                notes.append(f"{cap.error}; ports held by other processes cannot be watched")
        elif in_use:
            notes.append("some ports are held by other processes (see the rows); `--capture` can watch them without binding")
        for b, exc in listener.failed.items():
            if (b.protocol, b.port) not in watched:
                notes.append(bind_error_text(b, exc))
        def interrupted() -> None:
            stop.set()
            listener.news.set()

        if sys.platform != "win32":
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, interrupted)
        if on_ready is not None:
            on_ready(listener)
        started = loop.time()
        if watched:
            complete = await listener.wait(
                lambda: stop.is_set() or is_complete(plan, sources, listener.store, watched),
                started + seconds,
            )
            if complete and not stop.is_set():
                # The first packet of a source completes the wait; a TCP sender's message
                # follows its connection by a moment: keep it (within the deadline).
                await asyncio.sleep(max(0.0, min(COMPLETION_GRACE, started + seconds - loop.time())))
        else:
            complete = False
        waited = loop.time() - started
    finally:
        if sys.platform != "win32":
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)
        if cap is not None:
            await cap.stop()
        await listener.stop()
    report = match(plan, sources, listener.store, listener.failed, watched, waited, port_notes)
    if stop.is_set():
        notes.append(f"interrupted after {waited:.0f} s")
    facts = {
        "bound": [str(b) for b in listener.bound],
        "not_bound": {str(b): bind_error_text(b, e) for b, e in listener.failed.items()},
        "watched": [f"{p.value}/{n}" for p, n in sorted(watched, key=lambda k: (k[1], k[0].value))],
        "capture": None if cap is None else (cap.error or "running"),
        "waited_s": round(waited, 1),
        "complete": bool(complete and report.complete),
        "arrivals": listener.store.total,
        "sources_kept": len(listener.store.records),
        "drops": {k: v for k, v in sorted(listener.store.drops.items()) if v},
        "notes": notes,
    }
    return report.rows, report.unexpected, facts


def run_listen(args: argparse.Namespace) -> int:
    from scanner.report import build_document, now_iso

    inputs = load_run_inputs(args, need_credentials=False)
    ports = parse_port_options(args.ports)
    bind = parse_bind(args.bind)
    targets = {role: list(ts) for role, ts in inputs.inventory.targets.items()}
    rows = select_inbound(inputs.catalogue, inputs.profiles, targets)
    rows += [adhoc_row(p, n) for p, n in ports.adhoc]
    if not rows:
        raise UsageError(
            "nothing to listen for: choose --profile ID (e.g. qumulo, auditor-server), give sources with "
            "--source ROLE=HOST, or listen on --port PORT/udp|tcp"
        )
    started = now_iso()
    results, unexpected, facts = asyncio.run(run_listener(
        rows, targets, settings_values=dict(inputs.settings.values), port_map=ports.mapping, bind=bind,
        seconds=args.duration, capture=args.capture, timeout=inputs.settings.timeout,
    ))  # fmt: skip
    options = {
        "profiles": inputs.profiles or "auto", "duration": args.duration, "bind": bind,
        "ports": args.ports, "capture": args.capture, "strict": args.strict,
    }
    doc = build_document(
        "listen", results, started=started, finished=now_iso(), options=options,
        inventory=inputs.inventory.describe(), strict=args.strict,
        extra={"unexpected": unexpected, "listener": facts, "notes": facts["notes"]},
    )  # fmt: skip
    return write_reports(doc, args)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "listen", help="listen on this host and report what arrives from each expected source",
        description=(
            "Bind the inbound ports of the chosen profiles (UDP and TCP, IPv4 and IPv6) and report, per row and "
            "expected source, whether traffic arrived; stops when every source was seen or after --duration."
        ),
    )  # fmt: skip
    add_input_options(p, target_flag="--source")
    p.add_argument("--port", action="append", default=[], dest="ports", metavar="PORT/PROTO[=PORT]",
                   help="listen on an extra port (9999/tcp), or move a documented one (514/udp=15514) (repeatable)")
    p.add_argument("--duration", type=duration, default=DEFAULT_DURATION, metavar="S",
                   help=f"stop after S seconds at most (default {DEFAULT_DURATION:g})")
    p.add_argument("--bind", action="append", default=[], metavar="ADDR",
                   help="local address to listen on (repeatable; default 0.0.0.0 and ::)")
    p.add_argument("--capture", action="store_true",
                   help="watch ports held by other processes by passive capture (needs scapy and capture rights)")
    add_report_options(p)
    p.set_defaults(func=run_listen)
