"""The scan engine: rows x targets x checks, scheduled concurrently. It knows no protocol.

    plan = build_plan(catalogue, targets, depth=Depth.PROTOCOL, settings=settings)
    results = await run_plan(plan, settings, concurrency=256, per_host=32,
                             on_row=lambda result: ...)

Each host is resolved once; probes run under a global and a per-host limit;
each probe gets a deadline sized from the user's timeout and retries, and the
engine enforces it. Whatever a probe raises becomes a result, never a crash.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from scanner.models import (
    CheckResult,
    CheckSpec,
    Depth,
    Direction,
    PortRange,
    Reason,
    Row,
    RowResult,
    Status,
    Target,
    Transport,
)
from scanner.probes.base import Outcome, Probe, ProbeContext, ProbeError, Settings, failed, get_probe, registry, skipped
from scanner.redact import scrub, secret_fragments
from scanner.timing import HostTiming

# At --depth port each transport's plain reachability probe replaces the protocol probe.
_PORT_LEVEL = {Transport.TCP: "tcp", Transport.UDP: "udp", Transport.ICMP: "icmp-echo"}
# Probes that are already as shallow as they can honestly be.
_KEEP_AT_PORT_DEPTH = {"listen", "udp-unverifiable", "tcp", "udp", "icmp-echo"}
_MAX_TEXT = 2000
_MAX_ITEMS = 256


class Interrupted(Exception):
    """run_plan was cancelled (Ctrl-C, SIGTERM, a CI timeout); `rows` holds every finished check.

    Rows with no finished check are left out; a row some of whose checks did not finish
    carries only those that did.
    """

    def __init__(self, rows: list[RowResult]) -> None:
        super().__init__(f"interrupted after {sum(len(r.checks) for r in rows)} finished checks")
        self.rows = rows


@dataclass(frozen=True)
class PlannedCheck:
    spec: CheckSpec
    probe: str
    port: int | None
    ports: PortRange | None
    preset: Outcome | None = None  # decided without sending anything

    @property
    def port_label(self) -> int | str | None:
        if self.port is not None:
            return self.port
        if self.ports is not None:
            return str(self.ports)
        return self.spec.setting


@dataclass(frozen=True)
class PlannedRow:
    row: Row
    target: Target
    checks: tuple[PlannedCheck, ...]


@dataclass
class Plan:
    rows: list[PlannedRow] = field(default_factory=list)
    inbound: list[Row] = field(default_factory=list)  # rows only `portready listen` can prove
    untargeted: list[Row] = field(default_factory=list)  # selected rows whose role has no target

    @property
    def probe_count(self) -> int:
        return sum(1 for r in self.rows for c in r.checks if c.preset is None)

    @property
    def hosts(self) -> list[str]:
        return sorted({r.target.host for r in self.rows})


def _plan_check(spec: CheckSpec, depth: Depth, settings: Settings) -> PlannedCheck:
    port: int | None = None
    ports: PortRange | None = None
    preset: Outcome | None = None
    configured = (settings.values.get("ports") or {}).get(spec.setting) if spec.setting else None
    if configured is not None:
        port = int(configured)
    elif isinstance(spec.port, PortRange):
        ports = spec.port
    else:
        port = spec.port
    if spec.protocol is not Transport.ICMP and port is None and ports is None:
        preset = skipped(
            Reason.NOT_CONFIGURED,
            f"not configured: this port is chosen per installation; set ports.{spec.setting} "
            "in the inventory to check it",
        )
    probe = spec.probe
    if depth is Depth.PORT and probe not in _KEEP_AT_PORT_DEPTH:
        probe = _PORT_LEVEL[spec.protocol]
    if depth is Depth.PORT and ports is not None and preset is None:
        preset = skipped(
            Reason.NEEDS_PROTOCOL_DEPTH,
            f"needs --depth protocol: the ports in {ports} are handed out at run time "
            f"({spec.probe}), a port-level scan cannot know which to try",
        )
    return PlannedCheck(spec, probe, port, ports, preset)


def build_plan(
    rows: Iterable[Row],
    targets: Mapping[str, list[Target]],
    *,
    depth: Depth,
    settings: Settings,
    use_endpoints: bool = True,
) -> Plan:
    """Expand rows x targets x checks. Rows whose role has no target are listed apart."""
    plan = Plan()
    for row in rows:
        if row.direction is Direction.INBOUND:
            plan.inbound.append(row)
            continue
        row_targets = list(targets.get(row.target, ()))
        if not row_targets and use_endpoints and row.endpoints:
            row_targets = [Target(row.target, host, label="documented endpoint") for host in row.endpoints]
        if not row_targets:
            plan.untargeted.append(row)
            continue
        checks = tuple(_plan_check(spec, depth, settings) for spec in row.checks)
        for target in row_targets:
            plan.rows.append(PlannedRow(row, target, checks))
    return plan


def _bounded(value: Any, depth: int = 0) -> Any:
    """Evidence as JSON-safe, size-bounded data: peers choose what they send us."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, bytes):
        value = value.hex()
    if isinstance(value, str):
        return value if len(value) <= _MAX_TEXT else value[:_MAX_TEXT] + "…"
    if depth > 6:
        return str(value)[:_MAX_TEXT]
    if isinstance(value, Mapping):
        return {str(k)[:200]: _bounded(v, depth + 1) for k, v in list(value.items())[:_MAX_ITEMS]}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_bounded(v, depth + 1) for v in list(value)[:_MAX_ITEMS]]
    return _bounded(str(value), depth)


def probe_budget(settings: Settings, exchanges: int) -> float:
    """The most a probe may take: its connect attempts plus its answers in sequence."""
    return settings.timeout * (settings.retries + 1) + settings.timeout * max(exchanges, 0)


async def execute_check(probe_name: str, ctx: ProbeContext) -> CheckResult:
    """Run one probe, turning every way it can end into a CheckResult."""
    started = time.perf_counter()
    port_label: int | str | None = ctx.port if ctx.port is not None else (str(ctx.ports) if ctx.ports else None)
    probe: Probe | None = None
    try:
        probe = get_probe(probe_name)()
        # A small grace over the deadline lets the probe report its own, better reason.
        timeout_cm = getattr(asyncio, "timeout", None)
        if timeout_cm is not None:  # Python 3.11+: no extra task per check
            async with timeout_cm(ctx.remaining() + 0.5):
                outcome = await probe.run(ctx)
        else:
            outcome = await asyncio.wait_for(probe.run(ctx), ctx.remaining() + 0.5)
    except ProbeError as exc:
        outcome = exc.outcome
    except (asyncio.TimeoutError, TimeoutError):
        outcome = failed(
            Reason.PROTOCOL,
            f"no complete answer in {ctx.settings.timeout:g} s on {ctx.where()}: the port "
            "accepts connections but the service stalled in the middle of the exchange",
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - a probe bug is a result, not a crash
        outcome = Outcome(
            Status.ERROR,
            Reason.INTERNAL,
            f"the {probe_name} probe failed unexpectedly ({type(exc).__name__}: {str(exc)[:300]}); "
            "this is a portready problem, please report it",
        )
    secrets = secret_fragments(ctx.settings)  # whatever a peer echoed, our secrets stay out
    evidence = scrub(_bounded(scrub(dict(outcome.evidence), secrets)), secrets)
    return CheckResult(
        protocol=ctx.protocol.value,
        port=port_label,
        probe=probe_name,
        status=outcome.status,
        reason=outcome.reason,
        detail=scrub(outcome.detail, secrets)[:_MAX_TEXT],
        evidence=evidence,
        duration_ms=(time.perf_counter() - started) * 1000,
        summary=_summary(probe, evidence),
    )


def _summary(probe: Probe | None, evidence: Mapping[str, Any]) -> str:
    """The probe's one-line summary of its evidence; a summarize() bug costs the line, not the check."""
    if probe is None or not evidence:
        return ""
    try:
        return str(probe.summarize(evidence))[:300]
    except Exception:  # noqa: BLE001
        return ""


@dataclass(frozen=True)
class Resolved:
    address: str | None
    addresses: tuple[str, ...] = ()
    error: str | None = None


async def resolve(host: str, timeout: float) -> Resolved:
    """Resolve a name once (IPv4 and IPv6); literals pass through untouched."""
    try:
        return Resolved(str(ipaddress.ip_address(host.strip("[]"))), (host,))
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), timeout
        )
    except asyncio.TimeoutError:
        return Resolved(None, error=f"name resolution of {host} timed out after {timeout:g} s")
    except (socket.gaierror, UnicodeError, OSError) as exc:
        return Resolved(None, error=f"{host} does not resolve ({getattr(exc, 'strerror', None) or exc})")
    addresses: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in addresses:
            addresses.append(addr)
    if not addresses:
        return Resolved(None, error=f"{host} resolves to no address")
    return Resolved(addresses[0], tuple(addresses))


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel tasks until every one has ended.

    Python 3.11's wait_for swallows a cancellation that arrives as its inner future
    completes, so a single cancel() can leave a check running: ask again until all end.
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)


async def run_plan(
    plan: Plan,
    settings: Settings,
    *,
    concurrency: int = 256,
    per_host: int = 32,
    on_row: Callable[[RowResult], None] | None = None,
    on_check: Callable[[CheckResult], None] | None = None,
) -> list[RowResult]:
    """Run every planned check; results come back in plan order."""
    loop = asyncio.get_running_loop()
    hosts = plan.hosts
    resolve_limit = asyncio.Semaphore(64)

    async def _resolve(host: str) -> Resolved:
        async with resolve_limit:
            return await resolve(host, max(settings.timeout, 2.0))

    # Targets that arrive resolved (discovery asked the domain's own DNS server) are not
    # asked of the system resolver again.
    known = {r.target.host: r.target.address for r in plan.rows if r.target.address}
    hosts = [h for h in hosts if h not in known]
    try:
        resolved = dict(zip(hosts, await asyncio.gather(*(_resolve(h) for h in hosts)), strict=True))
    except asyncio.CancelledError:
        raise Interrupted([]) from None  # nothing was checked yet
    resolved.update({host: Resolved(address, (address,)) for host, address in known.items()})
    timings: dict[str, HostTiming] = {}
    host_limits: dict[str, asyncio.Semaphore] = {}
    probes = registry()

    async def _check(prow: PlannedRow, pc: PlannedCheck) -> CheckResult:
        if pc.preset is not None:
            return CheckResult(
                pc.spec.protocol.value, pc.port_label, pc.probe,
                pc.preset.status, pc.preset.reason, pc.preset.detail, dict(pc.preset.evidence),
            )
        res = resolved[prow.target.host]
        probe_cls = probes.get(pc.probe)
        address = res.address
        if address is None:
            name_ctx = _context(prow, pc, prow.target.host, HostTiming(settings.timeout, settings.min_timeout), 0.0)
            if probe_cls is None or probe_cls.needs_address(name_ctx):
                return CheckResult(
                    pc.spec.protocol.value, pc.port_label, pc.probe, Status.FAIL, Reason.UNRESOLVED,
                    f"unresolved: {res.error} — check the name and this host's DNS servers",
                )
            address = prow.target.host  # a proxy connects to it by name
        timing = timings.get(address)
        if timing is None:
            timing = timings[address] = HostTiming(settings.timeout, settings.min_timeout)
        limit = host_limits.get(address)
        if limit is None:
            limit = host_limits[address] = asyncio.Semaphore(max(1, per_host))
        exchanges = getattr(probe_cls, "exchanges", 2)
        async with limit:
            ctx = _context(prow, pc, address, timing, loop.time() + probe_budget(settings, exchanges))
            return await execute_check(pc.probe, ctx)

    def _context(prow: PlannedRow, pc: PlannedCheck, address: str, timing: HostTiming, deadline: float) -> ProbeContext:
        return ProbeContext(
            row=prow.row,
            target=prow.target,
            host=prow.target.host,
            address=address,
            protocol=pc.spec.protocol,
            port=pc.port,
            ports=pc.ports,
            options=pc.spec.options,
            settings=settings,
            timing=timing,
            deadline=deadline,
        )

    # Jobs interleaved across hosts, so workers spread over targets instead of queueing
    # on one host's limit; a fixed pool of workers instead of a task per check keeps the
    # event loop light (thousands of tasks waiting on one semaphore cost O(n^2)).
    by_host: dict[str, list[tuple[int, int]]] = {}
    for i, prow in enumerate(plan.rows):
        for j in range(len(prow.checks)):
            by_host.setdefault(prow.target.host, []).append((i, j))
    queues = list(by_host.values())
    jobs: list[tuple[int, int]] = []
    for k in range(max((len(q) for q in queues), default=0)):
        jobs.extend(q[k] for q in queues if k < len(q))
    results: list[list[CheckResult | None]] = [[None] * len(p.checks) for p in plan.rows]
    missing = [len(p.checks) for p in plan.rows]
    rows_out: list[RowResult | None] = [None] * len(plan.rows)
    next_job = iter(jobs)

    async def _worker() -> None:
        for i, j in next_job:
            prow = plan.rows[i]
            result = await _check(prow, prow.checks[j])
            results[i][j] = result
            if on_check is not None:
                on_check(result)
            missing[i] -= 1
            if missing[i] == 0:
                row = RowResult(prow.row, prow.target, resolved[prow.target.host].address,
                                tuple(c for c in results[i] if c is not None))
                rows_out[i] = row
                if on_row is not None:
                    on_row(row)

    workers = max(1, min(concurrency, len(jobs), per_host * max(1, len(by_host))))
    tasks = [asyncio.ensure_future(_worker()) for _ in range(workers)]
    try:
        await asyncio.wait(tasks)  # unlike gather, raises CancelledError here at once
    except asyncio.CancelledError:
        # Cancelled from outside: stop the checks in flight, keep the ones that finished.
        await _stop(tasks)
        raise Interrupted([
            RowResult(prow.row, prow.target, resolved[prow.target.host].address, tuple(c for c in results[i] if c is not None))
            for i, prow in enumerate(plan.rows) if any(c is not None for c in results[i])
        ]) from None  # fmt: skip
    for task in tasks:
        task.result()  # a worker's own failure (an on_check callback) is not hidden
    for i, prow in enumerate(plan.rows):  # rows without checks
        if rows_out[i] is None:
            rows_out[i] = RowResult(prow.row, prow.target, resolved[prow.target.host].address, ())
    return [r for r in rows_out if r is not None]
