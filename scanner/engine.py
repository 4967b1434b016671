"""The scan engine: rows x targets x checks, scheduled concurrently. It knows no protocol.

    plan = build_plan(catalogue, targets, depth=Depth.PROTOCOL, settings=settings)
    results = await run_plan(plan, settings, concurrency=256, per_host=32,
                             on_row=lambda result: ...)

Each host is resolved once (`_resolve_hosts`); checks are interleaved across
hosts (`_interleave`) and run by a `_Scheduler` under congestion windows (one
per host, one for the scan: AIMD, see `scanner.timing`) whose ceilings are the
user's `--per-host` and `--concurrency`. Checks that end in silence at a host
that answers other ports, or with a service that accepted and then said nothing
(`no-reply`), are run once more at the end with fewer checks at once: slowness
is never the verdict. Each probe gets a deadline sized from the user's timeout
and retries (`probe_budget`), and the engine enforces it. Whatever a probe
raises becomes a result, never a crash. Cancelling `run_plan` raises
`Interrupted` with every row that has a finished check.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping as AbcMapping
from dataclasses import dataclass, field
from itertools import islice
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
from scanner.probes._memo import ScanMemo
from scanner.probes.base import (
    Outcome,
    Probe,
    ProbeContext,
    ProbeError,
    Settings,
    find_probe,
    get_probe,
    port_level_probe,
    registry,
    skipped,
    stalled,
)
from scanner.probes.netio import Resolved, resolve
from scanner.redact import scrub, secret_fragments
from scanner.timing import HostTiming, Pacer, Window

__all__ = [
    "Interrupted", "Plan", "PlannedCheck", "PlannedRow", "Resolved", "build_plan", "context_for",
    "execute_check", "probe_budget", "resolve", "run_plan",
]  # fmt: skip
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
    if depth is Depth.PORT:
        # A probe declares how deep it looks; only protocol-level ones give way.
        probe_cls = find_probe(probe)
        if probe_cls is None or probe_cls.depth == "protocol":
            probe = port_level_probe(spec.protocol)
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


_SCALARS = frozenset({type(None), bool, int, float})


def _kept(item: Any) -> bool:
    """Already JSON-safe and bounded: a plain scalar or a short str (nearly all evidence)."""
    kind = type(item)
    return kind in _SCALARS or (kind is str and len(item) <= _MAX_TEXT)


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
    if isinstance(value, AbcMapping):  # collections.abc's: typing's isinstance is several times slower
        out: dict[str, Any] = {}
        for key, item in islice(value.items(), _MAX_ITEMS):
            # Plain keys and short scalars, nearly all evidence, are kept without a call each.
            name = key if type(key) is str and len(key) <= 200 else str(key)[:200]
            out[name] = item if _kept(item) else _bounded(item, depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        return [item if _kept(item) else _bounded(item, depth + 1) for item in islice(value, _MAX_ITEMS)]
    return _bounded(str(value), depth)


def probe_budget(settings: Settings, exchanges: int) -> float:
    """The most a probe may take: its connect attempts plus its answers in sequence."""
    return settings.timeout * (settings.retries + 1) + settings.timeout * max(exchanges, 0)


def context_for(
    row: Row,
    target: Target,
    spec: CheckSpec,
    *,
    address: str,
    settings: Settings,
    timing: HostTiming,
    probe: str | None = None,
    port: int | None = None,
    ports: PortRange | None = None,
    memo: ScanMemo | None = None,
    paced: bool = False,
) -> ProbeContext:
    """The one way to build a ProbeContext (engine, local readiness, tests).

    The deadline is the probe's budget from now (`probe_budget` with the probe's
    declared `exchanges`); port/ports default to the spec's own. Checks given the same
    `memo` share scan-wide facts (`scanner.probes._memo`); None: a memo of its own.
    """
    if port is None and ports is None:
        if isinstance(spec.port, PortRange):
            ports = spec.port
        else:
            port = spec.port
    probe_cls = find_probe(probe or spec.probe)
    exchanges = probe_cls.exchanges if probe_cls is not None else Probe.exchanges
    return ProbeContext(
        row=row,
        target=target,
        host=target.host,
        address=address,
        protocol=spec.protocol,
        port=port,
        ports=ports,
        options=spec.options,
        settings=settings,
        timing=timing,
        deadline=asyncio.get_running_loop().time() + probe_budget(settings, exchanges),
        memo=memo if memo is not None else ScanMemo(),
        paced=paced,
    )


async def execute_check(probe_name: str, ctx: ProbeContext) -> CheckResult:
    """Run one probe, turning every way it can end into a CheckResult."""
    started = time.perf_counter()
    port_label: int | str | None = ctx.port if ctx.port is not None else (str(ctx.ports) if ctx.ports else None)
    probe: Probe | None = None
    try:
        probe = get_probe(probe_name)()
        # A small grace over the deadline lets the probe report its own, better reason.
        if _timeout is not None:  # Python 3.11+: no extra task per check
            async with _timeout(ctx.remaining() + 0.5):
                outcome = await probe.run(ctx)
        else:
            outcome = await asyncio.wait_for(probe.run(ctx), ctx.remaining() + 0.5)
    except ProbeError as exc:
        outcome = exc.outcome
    except (asyncio.TimeoutError, TimeoutError):
        outcome = stalled(ctx)
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
    # Scrubbed before bounding (a cut must not leave half a secret) and after it (bytes and
    # objects become text only there); both walks return at once when the run has no secret.
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


_timeout = getattr(asyncio, "timeout", None)


async def _resolve_hosts(plan: Plan, settings: Settings) -> dict[str, Resolved]:
    """Resolve every target name once; targets that arrive resolved are not asked again."""
    known = {r.target.host: r.target.address for r in plan.rows if r.target.address}
    names = [h for h in plan.hosts if h not in known]
    limit = asyncio.Semaphore(64)

    async def one(host: str) -> Resolved:
        async with limit:
            return await resolve(host, max(settings.timeout, 2.0))

    resolved = dict(zip(names, await asyncio.gather(*(one(h) for h in names)), strict=True))
    resolved.update({host: Resolved(address, (address,)) for host, address in known.items()})
    return resolved


Job = tuple[int, int]  # (row index in the plan, check index in the row)


def _interleave(plan: Plan, key: Callable[[PlannedRow], str] | None = None) -> dict[str, deque[Job]]:
    """Group the plan's network checks by host (insertion order = plan order); pure.

    The scheduler takes one check per host in turn, so work spreads over the
    targets instead of queueing on one host's window. Preset checks are left out.
    """
    key = key or (lambda prow: prow.target.host)
    by_host: dict[str, deque[Job]] = {}
    for i, prow in enumerate(plan.rows):
        for j, pc in enumerate(prow.checks):
            if pc.preset is None:
                by_host.setdefault(key(prow), deque()).append((i, j))
    return by_host


def _stalled(result: CheckResult | None) -> bool:
    """Connected, then no (complete) answer in time: no-reply, or a TLS handshake that timed out."""
    return result is not None and (result.reason is Reason.NO_REPLY or result.evidence.get("stalled") is True)


def _retryable(result: CheckResult, timing: HostTiming | None) -> bool:
    """Whether a verdict may be an artefact of load: it is asked again before it is final.

    A service that accepted and said nothing, and silence from a host that answers
    other ports (a SYN or datagram lost to a full queue or a rate limit, or a real
    firewall: the second try tells).
    """
    if _stalled(result):
        return True  # (a TLS handshake that timed out: overload, or not TLS; the retry tells)
    return result.reason in (Reason.FILTERED, Reason.NO_ANSWER) and timing is not None and timing.answered


@dataclass
class _Host:
    """One address's share of the scan: its timing, its window and its queued checks."""

    address: str
    timing: HostTiming
    window: Window
    queue: deque[Job] = field(default_factory=deque)
    queued: bool = False  # in the scheduler's ready ring
    late: int = 0  # timing.late / timing.stalls already acted on
    stalls: int = 0


class _Scheduler:
    """Runs jobs under congestion windows: one per host, one for the scan (AIMD).

    Windows start small (4 per host, 32 for the scan) and grow while checks end in
    time; a check that needed a second SYN, stalled after connecting, or took far
    longer than the fastest of its kind halves them. The user's limits are the
    ceilings. `run()` returns when every job has a result.
    """

    START_PER_HOST = 4
    START_GLOBAL = 32

    def __init__(self, plan: Plan, settings: Settings, resolved: Mapping[str, Resolved], *,
                 concurrency: int, per_host: int, on_result: Callable[[Job, CheckResult], None]) -> None:  # fmt: skip
        self.plan = plan
        self.settings = settings
        self.resolved = resolved
        self.per_host = max(1, per_host)
        self.window = Window(max(1, concurrency), self.START_GLOBAL)
        self.pacer = Pacer()
        self.on_result = on_result
        self.hosts: dict[str, _Host] = {}
        self.ready: deque[_Host] = deque()
        self.tasks: set[asyncio.Task[None]] = set()
        self.later: list[Job] = []  # checks to ask once more, in the retry pass (`for_retry`)
        self.retrying = False
        self.stopping = False  # cancelled: start nothing new
        self.fastest: dict[str, float] = {}  # per probe: the quickest check that ended in time
        self.probes = registry()
        self.memo = ScanMemo()  # what one check learns for the whole scan (a DC's policy, ...)
        self._idle: asyncio.Future[None] | None = None

    def host_for(self, address: str) -> _Host:
        host = self.hosts.get(address)
        if host is None:
            timing = HostTiming(self.settings.timeout, self.settings.min_timeout, self.pacer)
            host = self.hosts[address] = _Host(address, timing, Window(self.per_host, self.START_PER_HOST))
        return host

    def address_of(self, prow: PlannedRow, pc: PlannedCheck) -> str | CheckResult:
        """Where the check connects, or its result when the name did not resolve."""
        res = self.resolved[prow.target.host]
        if res.address is not None:
            return res.address
        probe_cls = self.probes.get(pc.probe)
        name_ctx = context_for(prow.row, prow.target, pc.spec, address=prow.target.host, settings=self.settings,
                               timing=HostTiming(self.settings.timeout), probe=pc.probe, port=pc.port, ports=pc.ports)  # fmt: skip
        if probe_cls is None or probe_cls.needs_address(name_ctx):
            return CheckResult(
                pc.spec.protocol.value, pc.port_label, pc.probe, Status.FAIL, Reason.UNRESOLVED,
                f"unresolved: {res.error} — check the name and this host's DNS servers",
            )
        return prow.target.host  # a proxy connects to it by name

    def add(self, job: Job) -> None:
        prow = self.plan.rows[job[0]]
        pc = prow.checks[job[1]]
        where = self.address_of(prow, pc)
        if isinstance(where, CheckResult):
            self.finish(job, where)
            return
        host = self.host_for(where)
        host.queue.append(job)
        if not host.queued:
            host.queued = True
            self.ready.append(host)

    def finish(self, job: Job, result: CheckResult) -> None:
        self.on_result(job, result)

    async def run(self, jobs: Iterable[Job]) -> None:
        for job in jobs:
            self.add(job)
        if not self.ready and not self.tasks:
            return
        self._idle = asyncio.get_running_loop().create_future()
        self.pump()
        try:
            await asyncio.shield(self._idle)
        except asyncio.CancelledError:
            await self.cancel()
            raise

    async def cancel(self) -> None:
        """Cancel every check in flight until all have ended, and start no new one.

        Python 3.11's wait_for swallows a cancellation that arrives as its inner future
        completes, so a single cancel() can leave a check running: ask again until all end.
        """
        self.stopping = True
        self.ready.clear()
        pending = {t for t in self.tasks if not t.done()}
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)
            pending |= {t for t in self.tasks if not t.done()}

    def pump(self) -> None:
        """Start checks while the scan's window allows, one host at a time in turn."""
        if self.stopping:
            return
        loop = asyncio.get_running_loop()
        window, ready = self.window, self.ready
        while ready and window.allows():
            host = ready.popleft()
            if not host.window.allows():
                host.queued = False  # back in the ring when one of its checks ends
                continue
            job = host.queue.popleft()
            if host.queue:
                ready.append(host)
            else:
                host.queued = False
            window.inflight += 1
            host.window.inflight += 1
            task = loop.create_task(self.check(job, host, window.epoch, host.window.epoch))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        if not ready and not self.tasks and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def check(self, job: Job, host: _Host, epoch: int, host_epoch: int) -> None:
        prow = self.plan.rows[job[0]]
        pc = prow.checks[job[1]]
        try:
            try:
                paced = pc.spec.protocol is Transport.UDP
                if paced:
                    # The budget starts when the first datagram may go (nmap: a probe's timer
                    # starts at its send). Waiting in the pacer's queue inside the budget
                    # would leave late senders no time: they went out unpaced, all at once.
                    await self.pacer.acquire()
                ctx = context_for(prow.row, prow.target, pc.spec, address=host.address, settings=self.settings,
                                  timing=host.timing, probe=pc.probe, port=pc.port, ports=pc.ports,
                                  memo=self.memo, paced=paced)  # fmt: skip
                result = await execute_check(pc.probe, ctx)
            finally:
                self.window.inflight -= 1
                host.window.inflight -= 1
            self.adapt(host, pc.probe, result, epoch, host_epoch)
            self.finish(job, result)
            if host.queue and not host.queued:
                host.queued = True
                self.ready.append(host)
            self.tasks.discard(asyncio.current_task())  # type: ignore[arg-type]
            self.pump()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a callback failed: end the run with it, never hang
            if self._idle is not None and not self._idle.done():
                self._idle.set_exception(exc)

    def adapt(self, host: _Host, probe: str, result: CheckResult, epoch: int, host_epoch: int) -> None:
        """AIMD: grow on checks that ended in time, cut on signs of congestion."""
        timing = host.timing
        congested = timing.late > host.late or timing.stalls > host.stalls or result.reason is Reason.NO_REPLY
        host.late, host.stalls = timing.late, timing.stalls
        if not congested and result.protocol == Transport.TCP.value and result.reason is not Reason.FILTERED:
            # (UDP checks wait for the pacer: their duration is our own pacing, not the peer's.)
            seconds = result.duration_ms / 1000
            fastest = self.fastest.get(probe)
            if fastest is None or seconds < fastest:
                self.fastest[probe] = fastest = seconds
            # Rising latency: far slower than the fastest check of its kind, and slow in
            # absolute terms (a third of the timeout), means the peer or we are saturated.
            congested = seconds > max(4 * fastest, self.settings.timeout / 3)
        if congested:
            self.window.cut(epoch)
            host.window.cut(host_epoch)
        elif result.reason is not Reason.FILTERED and result.reason is not Reason.NO_ANSWER:
            self.window.grow()
            host.window.grow()

    def for_retry(self, overloaded: bool) -> None:
        """The second pass: fewer checks at once per host, slower UDP, kinder to loaded peers.

        The scan's window is halved too when some service stalled after accepting
        (`overloaded`); silence alone costs the peers nothing to ask again.
        """
        self.retrying = True
        if overloaded:
            self.window.cap(max(16, int(self.window.size) // 2))
        for host in self.hosts.values():
            cap = max(1, min(self.per_host, max(self.START_PER_HOST, int(host.window.size) // 2)))
            host.window.cap(cap)
            host.window.size = float(cap)
        self.pacer.slow_down(0.5)


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
    """Run every planned check; results come back in plan order.

    Cancelled, it cancels the checks in flight and raises `Interrupted` with the
    rows that have finished checks (rows without one are left out).
    """
    results: list[list[CheckResult | None]] = [[None] * len(p.checks) for p in plan.rows]
    missing = [len(p.checks) for p in plan.rows]
    resolved: dict[str, Resolved] = {}

    def row_result(i: int) -> RowResult:
        prow = plan.rows[i]
        return RowResult(prow.row, prow.target, resolved[prow.target.host].address,
                         tuple(c for c in results[i] if c is not None))  # fmt: skip

    def on_result(job: Job, result: CheckResult) -> None:
        i, j = job
        first = results[i][j]
        if first is not None:  # the second try of a retried check: it decides
            result = _second_try(first, result)
        else:
            if on_check is not None:
                on_check(result)  # once per check, however often it is tried
            if not scheduler.retrying and _retryable(result, timing_of(i)):
                results[i][j] = result  # kept if the scan is interrupted before the retry
                scheduler.later.append(job)
                return
        results[i][j] = result
        missing[i] -= 1
        if missing[i] == 0 and on_row is not None:
            on_row(row_result(i))

    def timing_of(i: int) -> HostTiming | None:
        host = scheduler.hosts.get(resolved[plan.rows[i].target.host].address or plan.rows[i].target.host)
        return host.timing if host is not None else None

    scheduler = _Scheduler(plan, settings, resolved, concurrency=concurrency, per_host=per_host,
                           on_result=on_result)  # fmt: skip
    try:
        resolved.update(await _resolve_hosts(plan, settings))
        for i, prow in enumerate(plan.rows):  # decided without sending anything
            for j, pc in enumerate(prow.checks):
                if pc.preset is not None:
                    on_result((i, j), _preset_result(pc))
        await scheduler.run(_round_robin(_staggered(plan, list(_interleave(plan).values()))))
        if scheduler.later:  # every first try has ended: ask these again at lower load
            stalled = any(_stalled(results[i][j]) for i, j in scheduler.later)
            scheduler.for_retry(overloaded=stalled)
            await scheduler.run(scheduler.later)
    except asyncio.CancelledError:
        await scheduler.cancel()
        raise Interrupted([_interrupted_row(plan.rows[i], results[i], resolved)
                           for i in range(len(plan.rows)) if any(results[i])]) from None  # fmt: skip
    return [row_result(i) for i in range(len(plan.rows))]


def _interrupted_row(prow: PlannedRow, checks: list[CheckResult | None], resolved: Mapping[str, Resolved]) -> RowResult:
    """A row cut short: its finished checks, and the others `inconclusive interrupted` (a row
    whose remaining checks never ran must not read pass)."""
    done = tuple(
        c if c is not None else CheckResult(
            pc.spec.protocol.value, pc.port_label, pc.probe, Status.INCONCLUSIVE, Reason.INTERRUPTED,
            "not finished: the scan was stopped before this check ended; run the scan again for its verdict",
        )
        for c, pc in zip(checks, prow.checks, strict=True)
    )  # fmt: skip
    res = resolved.get(prow.target.host)
    return RowResult(prow.row, prow.target, res.address if res is not None else None, done)


def _staggered(plan: Plan, queues: list[deque[Job]]) -> list[deque[Job]]:
    """Each host starts at a different check (host k at its k-th): at any moment the checks
    in flight are a mix of kinds, not every host asking the same service at once. Targets
    that share one server (names or addresses of one DC, a load balancer) then load all of
    its services a little instead of one of them fully; on distinct servers it changes
    nothing. A host's UDP checks come after at least one of its TCP checks (a connect's
    answer gives the round trip that judges UDP silence), after a different number of them
    on each host: datagrams spread over the run instead of all coming at its end, where a
    service that answers one at a time (Samba's LDAP ping) worked alone while the rest of
    the machine waited. Results keep plan order whatever order checks run in."""

    def is_udp(job: Job) -> bool:
        return plan.rows[job[0]].checks[job[1]].spec.protocol is Transport.UDP

    def rotated(jobs: list[Job], k: int) -> list[Job]:
        return jobs[k % len(jobs):] + jobs[: k % len(jobs)] if jobs else jobs

    for k, queue in enumerate(queues):
        if len(queue) < 2:
            continue
        tcp = rotated([j for j in queue if not is_udp(j)], k)
        udp = rotated([j for j in queue if is_udp(j)], k)
        split = 1 + k % len(tcp) if tcp else 0
        queue.clear()
        queue.extend(tcp[:split] + udp + tcp[split:])
    return queues


def _round_robin(queues: list[deque[Job]]) -> Iterable[Job]:
    """One job from each host in turn, so scheduling order spreads over hosts."""
    ring = deque(q for q in queues if q)
    while ring:
        queue = ring.popleft()
        yield queue.popleft()
        if queue:
            ring.append(queue)


def _preset_result(pc: PlannedCheck) -> CheckResult:
    assert pc.preset is not None
    return CheckResult(pc.spec.protocol.value, pc.port_label, pc.probe, pc.preset.status, pc.preset.reason,
                       pc.preset.detail, dict(pc.preset.evidence))  # fmt: skip


def _second_try(first: CheckResult, second: CheckResult) -> CheckResult:
    """The verdict after a retry at lower load: the second try decides; the first is evidence."""
    evidence = {**second.evidence, "first_try": {"reason": first.reason.value, "detail": first.detail[:300]}}
    detail = second.detail
    if second.reason is first.reason and (second.reason in (Reason.FILTERED, Reason.NO_ANSWER) or _stalled(second)):
        detail = f"{detail}; asked twice, the second time with fewer checks at once, with the same result"
    return CheckResult(second.protocol, second.port, second.probe, second.status, second.reason,
                       detail[:_MAX_TEXT], evidence, first.duration_ms + second.duration_ms,
                       summary=second.summary)  # fmt: skip
