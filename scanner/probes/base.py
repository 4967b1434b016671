"""The probe contract and the registry that maps probe names to probe classes.

A probe proves one check (a port on a transport) against one target::

    @register
    class LdapRootDseProbe(Probe):
        name = "ldap"
        transports = (Transport.TCP,)
        summary = "LDAP: anonymous RootDSE read"

        async def run(self, ctx: ProbeContext) -> Outcome:
            reader, writer = await connect_tcp(ctx)
            ...
            return passed("RootDSE read", naming_context="DC=lab,DC=test")

Raise `ProbeError(outcome)` anywhere inside `run` to end the probe with that
outcome; any other exception becomes status `error` (a bug, reported as such,
never as a pass). `validate` runs when profiles load, before a packet is sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, TypeVar

from scanner.models import PortRange, Reason, Row, Status, Target, Transport
from scanner.probes._discovery import load_all
from scanner.probes._memo import ScanMemo
from scanner.probes._options import ParsedOptions, parse_options
from scanner.timing import HostTiming

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """What a probe found: a status, a reason, words for an admin, and evidence."""

    status: Status
    reason: Reason
    detail: str
    evidence: Mapping[str, Any] = field(default_factory=dict)


def passed(detail: str, reason: Reason = Reason.OK, **evidence: Any) -> Outcome:
    return Outcome(Status.PASS, reason, detail, evidence)


def failed(reason: Reason, detail: str, **evidence: Any) -> Outcome:
    return Outcome(Status.FAIL, reason, detail, evidence)


def warned(reason: Reason, detail: str, **evidence: Any) -> Outcome:
    return Outcome(Status.WARN, reason, detail, evidence)


def inconclusive(reason: Reason, detail: str, **evidence: Any) -> Outcome:
    return Outcome(Status.INCONCLUSIVE, reason, detail, evidence)


def skipped(reason: Reason, detail: str, **evidence: Any) -> Outcome:
    return Outcome(Status.SKIP, reason, detail, evidence)


class ProbeError(Exception):
    """Ends a probe with `outcome`; raised by probes and by the helpers in `netio`."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.detail)
        self.outcome = outcome


@dataclass(frozen=True)
class Credentials:
    """An account for authenticated checks. The secret never appears in repr or reports."""

    username: str
    password: str = field(repr=False)
    domain: str = ""
    # Authenticate as the current Windows user through SSPI (inventory `integrated: true`):
    # no password is held; `username` may name the expected account or stay empty.
    integrated: bool = False

    def __str__(self) -> str:
        if self.integrated and not self.username:
            return "the current Windows user (integrated logon)"
        return f"{self.domain}\\{self.username}" if self.domain else self.username


@dataclass(frozen=True)
class Settings:
    """Run-wide options every probe may read."""

    timeout: float = 3.0  # the longest wait for any one answer (upper bound)
    retries: int = 1  # extra attempts after silence (TCP SYN, UDP datagram)
    min_timeout: float = 0.25  # floor of the adaptive timeout once a host has answered
    ca_bundle: str | None = None  # extra trusted CAs (PEM file), e.g. a private enterprise CA
    trust_private_ca: bool = False  # accept certificates signed by any CA in ca_bundle only
    proxy: str | None = None  # HTTP proxy for internet-bound rows (CONNECT tunnel)
    credentials: Mapping[str, Credentials] = field(default_factory=dict)  # by role id
    values: Mapping[str, Any] = field(default_factory=dict)  # inventory settings (ports, ...)


@dataclass(frozen=True)
class ProbeContext:
    """Everything a probe needs for one check of one row against one target."""

    row: Row
    target: Target
    host: str  # the name the user gave (SNI, Host header, messages)
    address: str  # the resolved address to talk to
    protocol: Transport
    port: int | None
    ports: PortRange | None  # for range checks (dynamic RPC, named SQL instances)
    options: Mapping[str, Any]
    settings: Settings
    timing: HostTiming
    deadline: float  # event-loop time by which the probe must be done
    # Facts that hold for the whole scan (a DC's policy, a chain's verdict): the engine
    # shares one per scan; a context built alone gets its own, so nothing is shared.
    memo: ScanMemo = field(default_factory=ScanMemo, compare=False, repr=False)
    # The engine took the pacer's token for this check's first datagram before its budget
    # began (`udp_exchange` sends it at once): waiting for the pacer never eats the budget.
    paced: bool = False

    @property
    def credentials(self) -> Credentials | None:
        return self.settings.credentials.get(self.target.role)

    def remaining(self) -> float:
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    def step_timeout(self) -> float:
        """How long one wait for an answer may last: the timeout, within the deadline."""
        return max(0.0, min(self.settings.timeout, self.remaining()))

    def where(self, port: int | None = None, protocol: Transport | None = None) -> str:
        """'TCP 3269 between this host and dc1', for messages an admin acts on."""
        proto = (protocol or self.protocol).value.upper()
        p = port if port is not None else self.port
        what = f"{proto} {p}" if p is not None else proto
        return f"{what} between this host and {self.host}"

    def with_port(self, port: int, protocol: Transport | None = None) -> ProbeContext:
        return dataclasses.replace(self, port=port, protocol=protocol or self.protocol)

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking library call in a worker thread, bounded by the deadline.

        The callee must set its own socket timeouts (use `step_timeout()`), so the
        thread ends soon after we stop waiting for it.
        """
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args), self.remaining())
        except asyncio.TimeoutError:
            raise ProbeError(stalled(self)) from None


def stalled(ctx: ProbeContext, waited: float | None = None, what: str = "") -> Outcome:
    """The exchange began and then stopped: no complete answer in time (overload, a hung service).

    The one wording for every "no complete answer" (engine deadline, worker threads, probes).
    """
    waited = ctx.settings.timeout if waited is None else waited
    ctx.timing.stalls += 1
    return inconclusive(
        Reason.NO_REPLY,
        f"no reply: the service on {ctx.where()} accepted the connection but did not finish "
        f"{what + ' ' if what else ''}answering in {waited:.3g} s: overloaded or hung",
        waited_s=round(waited, 3),
    )


@dataclass(frozen=True)
class FirewallHint:
    """How to open what a probe checks when one port rule is not the whole answer (`portready fix`).

    `rule_groups`: Windows predefined rule groups, each with the words of a row's purpose (or of
    an RPC interface the probe names in its `interfaces` evidence) that call for it; when none
    matches, `default_group` applies. `appliance`: a non-Windows device whose own firewall takes
    the rule (a `portready fix --format` dialect name), with its service per port in `services`
    and `default_service` for any other port.
    """

    rule_groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
    default_group: str = ""
    appliance: str = ""
    services: tuple[tuple[int, str], ...] = ()
    default_service: str = ""
    # An evidence key naming what the check itself asked for (a DCOM server, the RPC interfaces
    # it binds): when the check's evidence has it, its words pick the groups before the row's purpose.
    evidence_key: str = ""


class Probe:
    """Base class of every probe. Subclasses set the class attributes and `run`."""

    name: ClassVar[str] = ""
    # The transports a profile may use this probe on; the check's protocol picks one.
    transports: ClassVar[tuple[Transport, ...]] = (Transport.TCP,)
    summary: ClassVar[str] = ""
    # How many answers the probe waits for in sequence; the engine sizes the deadline.
    exchanges: ClassVar[int] = 2
    # Whether the probe takes a port range (e.g. 1024-65535 handed out by a mapper).
    accepts_range: ClassVar[bool] = False

    @classmethod
    def needs_address(cls, ctx: ProbeContext) -> bool:
        """Whether the check needs the target resolved here (not when a proxy connects by name)."""
        return True

    # Options a profile may give this probe, with their types; `validate` checks them.
    # (Older style: new probes declare `Options` instead.)
    option_types: ClassVar[Mapping[str, type | tuple[type, ...]]] = {}
    # The probe's options as a frozen dataclass (scanner/probes/_options.py), parsed once at load
    # and read in `run` with `options_of(ctx, Options)`; None: `option_types`/`validate` only.
    Options: ClassVar[type | None] = None

    @classmethod
    def load_options(cls, options: Mapping[str, Any]) -> Mapping[str, Any]:
        """Check a profile's options (ValueError) and return them as the check keeps them:
        the mapping as written, carrying the typed `Options` when the probe declares them."""
        if cls.Options is None:
            cls.validate(options)
            return options
        return ParsedOptions(options, parse_options(cls.name, cls.Options, options))

    @classmethod
    def validate(cls, options: Mapping[str, Any]) -> None:
        """Reject bad profile options (raise ValueError) before anything is sent.

        With `Options` declared, the dataclass decides (types, then its `__post_init__`);
        otherwise names and types are checked against `option_types`, and probes with richer
        options extend it.
        """
        if cls.Options is not None:
            parse_options(cls.name, cls.Options, options)
            return
        unknown = sorted(set(options) - set(cls.option_types))
        if unknown:
            known = ", ".join(sorted(cls.option_types)) or "none"
            raise ValueError(f"probe {cls.name!r} does not take option(s) {', '.join(map(repr, unknown))}; it takes: {known}")
        for key, value in options.items():
            expected = cls.option_types[key]
            allowed = expected if isinstance(expected, tuple) else (expected,)
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                raise ValueError(f"probe {cls.name!r}: option {key!r} has the wrong type ({type(value).__name__})")

    async def run(self, ctx: ProbeContext) -> Outcome:  # pragma: no cover - abstract
        raise NotImplementedError

    # How deep the probe looks: "protocol" (speaks the service's protocol; replaced by the
    # transport's port-level probe at --depth port), "port" (reachability only: kept), or
    # "inert" (sends nothing, e.g. inbound rows: kept).
    depth: ClassVar[str] = "protocol"
    # The transports for which this probe is THE port-level check used at --depth port.
    port_level_for: ClassVar[tuple[Transport, ...]] = ()
    # What opens this probe's traffic beyond a port rule (rule groups, an appliance); None: a port rule.
    firewall: ClassVar[FirewallHint | None] = None
    # The evidence key holding the peer's clock as ISO 8601 (`portready local` reads DC time skew from it).
    clock_evidence: ClassVar[str | None] = None
    # What one check leaves in the target's security log, e.g. "event 4768 (0x6) per target";
    # "" = nothing known. README's footprint table lists the declared ones.
    footprint: ClassVar[str] = ""
    # Traffic flows to the Auditor host: the scan skips this check and `portready listen` proves it.
    inbound: ClassVar[bool] = False

    def summarize(self, evidence: Mapping[str, Any]) -> str:
        """One line of what the peer showed (e.g. "SMB 3.1.1 signing required"), from this probe's evidence.

        The engine stores it as the check's `summary`; every report prints it. Evidence comes
        from a peer or a saved file: read it defensively (`evidence_text`), never raise.
        """
        return ""


def options_of(ctx: ProbeContext, kind: type[T], *, foreign_ok: bool = False) -> T:
    """The check's typed options: parsed when the profile loaded, or now for a context built by hand.

    `foreign_ok`: the caller may run for another probe's check (a UDP payload builder at port
    depth sees that check's options); options that are not `kind`'s give its defaults then.
    """
    typed = getattr(ctx.options, "typed", None)
    if isinstance(typed, kind):
        return typed
    try:
        return parse_options(kind.__name__, kind, ctx.options)
    except ValueError:
        if not foreign_ok:
            raise
        return kind()


def evidence_text(evidence: Mapping[str, Any], key: str, limit: int = 120) -> str:
    """A scalar evidence value as short text ("" when missing or not a scalar): for summarize()."""
    value = evidence.get(key)
    if value is None or isinstance(value, (dict, list, tuple)):
        return ""
    return str(value)[:limit]


_REGISTRY: dict[str, type[Probe]] = {}


def register(cls: type[Probe]) -> type[Probe]:
    """Class decorator: make a probe available to profiles under `cls.name`."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"probe name {cls.name!r} is taken by {existing.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def registry() -> Mapping[str, type[Probe]]:
    """All registered probes, after importing every probe module."""
    load_all()
    return dict(_REGISTRY)


def find_probe(name: str) -> type[Probe] | None:
    """The probe class registered as `name`, or None (cheap: no copy of the registry)."""
    probe = _REGISTRY.get(name)
    return probe if probe is not None else registry().get(name)


def port_level_probe(transport: Transport) -> str:
    """The name of the probe that checks `transport` at port level (e.g. "tcp")."""
    for name, cls in registry().items():
        if transport in cls.port_level_for:
            return name
    raise KeyError(f"no port-level probe is registered for {transport.value}")


def get_probe(name: str) -> type[Probe]:
    probe = _REGISTRY.get(name)
    if probe is not None:
        return probe
    probes = registry()
    try:
        return probes[name]
    except KeyError:
        raise KeyError(f"unknown probe {name!r}; known: {', '.join(sorted(probes))}") from None
