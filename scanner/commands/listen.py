"""`portready listen`: prove inbound rows by listening on this host for each expected source.

A report is written however the listener stops: every source seen, --duration reached, or
a signal (SIGINT, SIGTERM, SIGHUP; Ctrl-Break on Windows) at any moment, even while the
inventory is still loading. Interrupted, sources not yet seen are `inconclusive`, the
document says `interrupted`, and the exit code is 128 + the signal number.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import ipaddress
import re
import signal
import sys
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any

from scanner.cli_common import add_input_options, add_report_options, load_run_inputs, write_reports
from scanner.errors import UsageError
from scanner.models import CheckSpec, Direction, Reason, Row, RowResult, Status, Target, Transport

DEFAULT_DURATION = 60.0
MAX_DURATION = 24 * 3600.0
COMPLETION_GRACE = 1.0
ANY_ROLE = "any-source"
_PORT_OPT = re.compile(r"^(\d{1,5})/(udp|tcp)(?:=(\d{1,5}))?$", re.I)


@dataclass
class StopSignal:
    """The first stop signal, caught from the very start of the command (any phase)."""

    signum: int | None = None
    event: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None
    _previous: dict[int, Any] = field(default_factory=dict)

    @property
    def name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    def install(self) -> None:
        if self._previous:
            return  # already catching
        for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK"):
            sig = getattr(signal, name, None)
            if sig is not None:
                with contextlib.suppress(ValueError, OSError):  # not the main thread
                    self._previous[sig] = signal.signal(sig, self._caught)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, handler)
        self._previous.clear()
        self.signum, self.event, self.loop = None, None, None  # ready for another run in this process

    def attach(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        """The event a running loop waits on; set at once if a signal came earlier."""
        self.loop, self.event = loop, asyncio.Event()
        if self.signum is not None:
            self.event.set()
        return self.event

    def _caught(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        loop, event = self.loop, self.event
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)


@dataclass(frozen=True)
class ListenerLimits:
    """The listener's caps (options of `listen`); the defaults take rsyslog's testbench loads."""

    max_connections: int
    max_connections_per_source: int
    idle_timeout: float
    frame_timeout: float
    max_frame: int
    max_strangers: int

    @classmethod
    def defaults(cls) -> ListenerLimits:
        from scanner.listener import server

        return cls(server.MAX_CONNECTIONS, server.MAX_CONNECTIONS_PER_SOURCE, server.IDLE_TIMEOUT,
                   server.FRAME_TIMEOUT, server.MAX_FRAME, server.MAX_STRANGERS)  # fmt: skip


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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError("must be from 1 to 1000000")
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
    limits: ListenerLimits | None = None,
    stop_signal: StopSignal | None = None,
) -> tuple[list[Any], list[dict[str, Any]], dict[str, Any]]:
    """Listen, wait, match: (row results, unexpected sources, listener facts for the report)."""
    from scanner.listener.capture import PassiveCapture
    from scanner.listener.matching import is_complete, match, plan_bindings, plan_inbound
    from scanner.listener.owners import describe_owners, port_owners
    from scanner.listener.server import ArrivalStore, Listener, bind_error_text

    limits = limits or ListenerLimits.defaults()
    stop_signal = stop_signal or StopSignal()
    loop = asyncio.get_running_loop()
    stop = stop_signal.attach(loop)
    started = loop.time()
    plan = plan_inbound(rows, settings_values, port_map)
    sources: dict[str, list[Any]] = {}
    if not stop.is_set():
        sources = await _unless_stopped(resolve_sources({r.row.source for r in plan}, targets, timeout), stop, {})
    expected = {a for srcs in sources.values() for src in srcs for a in src.addresses}
    store = ArrivalStore(max_sources=limits.max_strangers, expected=expected)
    listener = Listener(
        plan_bindings(plan, bind), store=store, max_connections=limits.max_connections,
        max_connections_per_source=limits.max_connections_per_source, idle_timeout=limits.idle_timeout,
        frame_timeout=limits.frame_timeout, max_frame=limits.max_frame,
    )  # fmt: skip
    notes: list[str] = []
    port_notes: dict[tuple[Transport, int], str] = {}
    cap: PassiveCapture | None = None
    listening = False
    complete = False
    begun = started
    stopper: asyncio.Future[Any] | None = None
    if not stop.is_set():
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
        notes.extend(listener.notes)
        stopper = asyncio.ensure_future(stop.wait())
        stopper.add_done_callback(lambda _f: listener.news.set())
        if on_ready is not None and not stop.is_set():
            on_ready(listener)
        begun = loop.time()
        listening = bool(watched) and not stop.is_set()
        if listening:
            complete = await listener.wait(
                lambda: stop.is_set() or is_complete(plan, sources, listener.store, watched),
                begun + seconds,
            )
            if complete and not stop.is_set():
                # The first packet of a source completes the wait; a TCP sender's message
                # follows its connection by a moment: keep it (within the deadline).
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, min(COMPLETION_GRACE, begun + seconds - loop.time())))
    finally:
        if stopper is not None:
            stopper.cancel()
        if cap is not None:
            await cap.stop()
        await listener.stop()
    waited = loop.time() - (begun if listening else started)  # "not seen in N s" counts listening time
    report = match(plan, sources, listener.store, listener.failed, watched, waited, port_notes)
    results = report.rows
    if stop.is_set():
        results = [_interrupted_row(r, stop_signal.name or "a signal", waited, listening) for r in results]
        code = 128 + (stop_signal.signum or 0)
        notes.append(f"interrupted by {stop_signal.name or 'a signal'} after {waited:.1f} s"
                     + ("" if listening else ", before the listener was ready")
                     + f"; exit code {code} (128 + the signal), whatever the rows")  # fmt: skip
    notes.extend(_summary_notes(report.unexpected, listener))
    facts = {
        "bound": [str(b) for b in listener.bound],
        "not_bound": {str(b): bind_error_text(b, e) for b, e in listener.failed.items()},
        "watched": [f"{p.value}/{n}" for p, n in sorted(watched, key=lambda k: (k[1], k[0].value))],
        "capture": None if cap is None else (cap.error or "running"),
        "waited_s": round(waited, 1),
        "complete": bool(complete and report.complete and not stop.is_set()),
        "arrivals": listener.store.total,
        "sources_kept": len(listener.store.records),
        "drops": {k: v for k, v in sorted(listener.store.drops.items()) if v},
        "kernel_drops": {str(b): n for b, n in listener.kernel_drops.items()},
        "strangers_not_kept": [
            {"protocol": p.value, "port": n, "arrivals": o.arrivals, "bytes": o.byte_count, "addresses": o.distinct}
            for (p, n), o in sorted(listener.store.overflow.items(), key=lambda kv: (kv[0][1], kv[0][0].value))
        ],
        "connections_peak": listener.peak_connections,
        "connections_parked": listener.parked_total,
        "limits": {
            "max_connections": listener.max_connections,
            "max_connections_per_source": listener.max_connections_per_source,
            "idle_timeout_s": listener.idle_timeout, "frame_timeout_s": listener.frame_timeout,
            "max_frame": listener.max_frame, "max_strangers": listener.store.max_sources,
        },
        "interrupted": stop_signal.name if stop.is_set() else None,
        "notes": notes,
    }  # fmt: skip
    return results, report.unexpected, facts


async def _unless_stopped(coro: Any, stop: asyncio.Event, default: Any) -> Any:
    """Run `coro` unless a stop signal comes first (then `default`)."""
    task = asyncio.ensure_future(coro)
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return default


def _interrupted_row(result: RowResult, signame: str, waited: float, listening: bool) -> RowResult:
    """Stopped early: a source not seen yet is undecided, not a failure."""
    if not listening:
        checks = tuple(
            replace(c, status=Status.INCONCLUSIVE, reason=Reason.NOT_SEEN,
                    detail=f"interrupted by {signame} after {waited:.1f} s, before the listener was ready: "
                           "nothing was watched")
            if c.status is not Status.SKIP else c
            for c in result.checks
        )  # fmt: skip
        return replace(result, checks=checks)
    checks = tuple(
        replace(c, status=Status.INCONCLUSIVE, detail=f"interrupted by {signame} after {waited:.1f} s: {c.detail}")
        if c.status is Status.FAIL and c.reason in (Reason.NOT_SEEN, Reason.UNRESOLVED) else c
        for c in result.checks
    )
    return replace(result, checks=checks)


def _summary_notes(unexpected: list[dict[str, Any]], listener: Any) -> list[str]:
    """Console lines: who sent without being expected, and every loss, in words."""
    from scanner.listener.matching import LOSS_WORDS

    out: list[str] = []
    for u in unexpected[:10]:
        sl = u.get("syslog") or {}
        what = f"{u.get('count', 0)} arrival(s)" + "".join(
            f", syslog {k} {sl[k]}" for k in ("host", "app") if sl.get(k))
        rows = ", ".join(u.get("rows") or []) or "no row"
        out.append(f"unexpected source {u['source_address']} on {str(u['protocol']).upper()} {u['port']} ({what}), "
                   f"not listed for {rows}: a device behind NAT, or a source missing from --source")  # fmt: skip
    if len(unexpected) > 10:
        out.append(f"... and {len(unexpected) - 10} more unexpected source(s) (see the JSON report)")
    for (proto, port), over in sorted(listener.store.overflow.items(), key=lambda kv: (kv[0][1], kv[0][0].value)):
        out.append(f"{over.arrivals} arrival(s) from {over.distinct} more unexpected address(es) on "
                   f"{proto.value.upper()} {port} counted but not kept (--max-strangers "
                   f"{listener.store.max_sources}); expected sources are always kept")  # fmt: skip
    drops = {k: v for k, v in listener.store.drops.items() if v and k in LOSS_WORDS and k != "tcp_bytes_discarded"}
    if drops:
        out.append("listener losses and repairs: " + "; ".join(f"{n} {LOSS_WORDS[k]}" for k, n in sorted(drops.items())))
    return out


# Caught from the moment the parser is built when this process runs `portready listen`:
# a signal during start-up (loading profiles, the inventory) still ends in a report.
_EARLY = StopSignal()


def run_listen(args: argparse.Namespace) -> int:
    stop_signal = _EARLY
    stop_signal.install()  # first: a signal while loading must still end in a report
    try:
        return _run_listen(args, stop_signal)
    finally:
        stop_signal.restore()


def _run_listen(args: argparse.Namespace, stop_signal: StopSignal) -> int:
    from scanner.report import build_document, now_iso

    started = now_iso()
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
    limits = ListenerLimits(args.max_connections, args.max_connections_per_source, args.idle_timeout,
                            args.frame_timeout, args.max_frame, args.max_strangers)  # fmt: skip
    results, unexpected, facts = asyncio.run(run_listener(
        rows, targets, settings_values=dict(inputs.settings.values), port_map=ports.mapping, bind=bind,
        seconds=args.duration, capture=args.capture, timeout=inputs.settings.timeout, limits=limits,
        stop_signal=stop_signal,
    ))  # fmt: skip
    options = {
        "profiles": inputs.profiles or "auto", "duration": args.duration, "bind": bind,
        "ports": args.ports, "capture": args.capture, "strict": args.strict,
    }
    extra: dict[str, Any] = {"unexpected": unexpected, "listener": facts, "notes": facts["notes"]}
    if stop_signal.signum is not None:
        planned = [c for r in results for c in r.checks if c.status is not Status.SKIP]
        extra["interrupted"] = {
            "signal": stop_signal.name,
            "checks_done": sum(1 for c in planned if not c.detail.startswith("interrupted by")),
            "checks_planned": len(planned),
        }
    doc = build_document(
        "listen", results, started=started, finished=now_iso(), options=options,
        inventory=inputs.inventory.describe(), strict=args.strict, extra=extra,
    )  # fmt: skip
    code = write_reports(doc, args)
    return 128 + stop_signal.signum if stop_signal.signum is not None else code


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
    if sys.argv[1:2] == ["listen"]:
        _EARLY.install()
    d = ListenerLimits.defaults()
    p.add_argument("--max-connections", type=_positive_int, default=d.max_connections, metavar="N",
                   help=f"TCP connections open at once (default {d.max_connections}); at the cap the stalest "
                        "is closed first")
    p.add_argument("--max-connections-per-source", type=_positive_int, default=d.max_connections_per_source,
                   metavar="N", help=f"open TCP connections from one address (default {d.max_connections_per_source})")
    p.add_argument("--idle-timeout", type=duration, default=d.idle_timeout, metavar="S",
                   help=f"close a TCP connection silent this long (default {d.idle_timeout:g})")
    p.add_argument("--frame-timeout", type=duration, default=d.frame_timeout, metavar="S",
                   help=f"a started message must be complete within S seconds (default {d.frame_timeout:g})")
    p.add_argument("--max-frame", type=_positive_int, default=d.max_frame, metavar="BYTES",
                   help=f"longest message kept whole; longer ones are truncated (default {d.max_frame})")
    p.add_argument("--max-strangers", type=_positive_int, default=d.max_strangers, metavar="N",
                   help=f"unexpected source addresses recorded one by one (default {d.max_strangers}); more are "
                        "counted per port. Expected sources are always recorded")
    add_report_options(p)
    p.set_defaults(func=run_listen)
