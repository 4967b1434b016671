"""Values shared by the whole tool: states, reasons, rows, targets and results.

Everything here is plain data (frozen dataclasses and string enums) so that the
engine, the probes and every reporter see the same thing and JSON round-trips it.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from typing import Any, Mapping


class _StrEnum(str, enum.Enum):
    """`enum.StrEnum` for Python 3.10: members compare and format as their value."""

    def __str__(self) -> str:
        return str(self.value)


class Status(_StrEnum):
    """The verdict of one check, and of a row (the worst of its checks)."""

    PASS = "pass"
    WARN = "warn"  # reachable and speaking the protocol, but something needs attention
    INCONCLUSIVE = "inconclusive"  # the probe could not decide (e.g. UDP silence)
    FAIL = "fail"
    ERROR = "error"  # the tool failed on this check (a bug or a local problem)
    SKIP = "skip"  # not run, or not verifiable by design; does not count


# Order used to pick the worst status of a row; SKIP never wins over a real result.
STATUS_SEVERITY: dict[Status, int] = {
    Status.SKIP: 0,
    Status.PASS: 1,
    Status.INCONCLUSIVE: 2,
    Status.WARN: 3,
    Status.FAIL: 4,
    Status.ERROR: 5,
}


# What each reason means, in the words an admin acts on; every report format and the
# README's reason table use these. Keyed by value so that reasons another part of the
# tool adds ("no-reply", "closed") have their words before their enum member lands.
REASON_WORDS: dict[str, str] = {
    "ok": "the protocol answered",
    "port-depth": "the port accepts connections (no public protocol to check deeper)",
    "refused": "refused: nothing listens there, or a firewall rejects",
    "filtered": "filtered: no answer at all, a firewall drops the packets",
    "unreachable": "unreachable: no route, or a firewall rejects with host-unreachable",
    "unresolved": "the name does not resolve",
    "protocol": "something answered, but not the documented protocol",
    "auth": "the service rejected the credentials",
    "policy": "the service refuses the method by policy",
    "tls": "the TLS handshake failed",
    "certificate": "the certificate is expired, not yet valid, misnamed or untrusted",
    "no-answer": "UDP silence: open or filtered, cannot tell",
    "not-verifiable": "documented, but no service answers there by design",
    "not-registered": "the RPC interface or SQL instance is not registered",
    "not-configured": "the port is chosen per installation: set it in the inventory",
    "permission": "the operating system refused the means (e.g. ICMP without rights)",
    "needs-protocol-depth": "--depth port cannot check a dynamic range",
    "inbound": "traffic flows to the Auditor host: prove it with listen / send",
    "not-seen": "nothing arrived from that source",
    "time-skew": "the clock differs from the domain controller's by more than Kerberos allows",
    "port-in-use": "a local port the Auditor needs is held by another process",
    "interrupted": "the scan was stopped before this check ended: no verdict; run it again",
    "no-reply": "the service accepted the connection but did not answer in time: overloaded or hung",
    "closed": "the service accepted the connection, then closed or reset it: TLS required, an IP allow-list, or overload",
    "internal": "a portready bug; the detail says what",
}


def reason_words(reason: object) -> str:
    """The words for a reason (its value when unknown, e.g. from a newer report)."""
    return REASON_WORDS.get(str(reason), str(reason))


class Reason(_StrEnum):
    """Why a check ended the way it did. Reporters turn these into words."""

    OK = "ok"
    REFUSED = "refused"  # TCP reset or ICMP port-unreachable: nothing listens, or a firewall rejects
    FILTERED = "filtered"  # no answer at all within the timeout: a firewall drops packets
    UNREACHABLE = "unreachable"  # ICMP host/net unreachable, no route
    UNRESOLVED = "unresolved"  # the name does not resolve
    PROTOCOL = "protocol"  # something answered, but not the documented protocol
    AUTH = "auth"  # the service answered and rejected the credentials
    POLICY = "policy"  # the service refuses the method by policy (e.g. strongerAuthRequired)
    TLS = "tls"  # TLS handshake failed
    CERTIFICATE = "certificate"  # TLS works but the certificate is expired, misnamed or untrusted
    NO_ANSWER = "no-answer"  # UDP silence: open or filtered, cannot tell
    NOT_VERIFIABLE = "not-verifiable"  # documented, but no service answers there by design
    NOT_REGISTERED = "not-registered"  # RPC interface or instance not registered on the peer
    NOT_CONFIGURED = "not-configured"  # the port or endpoint must come from the inventory
    PERMISSION = "permission"  # the OS refused us the means (e.g. ICMP without rights)
    PORT_DEPTH = "port-depth"  # passed at port level only; no public protocol to check deeper
    NEEDS_PROTOCOL_DEPTH = "needs-protocol-depth"  # --depth port cannot check this
    INBOUND = "inbound"  # traffic flows to the Auditor host: checked by `portready listen`
    NOT_SEEN = "not-seen"  # listener: nothing arrived from that source
    TIME_SKEW = "time-skew"
    PORT_IN_USE = "port-in-use"  # a local port the Auditor needs is held by another process
    CLOSED = "closed"  # accepted, then closed/reset by the service: TLS required, IP allow-list, overload
    NO_REPLY = "no-reply"  # connected, then no answer in time: the service is overloaded or hung
    INTERRUPTED = "interrupted"  # the scan was stopped (a signal) before this check ended
    INTERNAL = "internal"  # a bug or local failure; detail says what


class Transport(_StrEnum):
    TCP = "tcp"
    UDP = "udp"
    ICMP = "icmp"


class Direction(_StrEnum):
    OUTBOUND = "outbound"  # from the Auditor host to the target
    INBOUND = "inbound"  # from the source to the Auditor host


class Depth(_StrEnum):
    PORT = "port"
    PROTOCOL = "protocol"


@dataclass(frozen=True)
class PortRange:
    """An inclusive range of ports, such as the dynamic RPC range 1024-65535."""

    low: int
    high: int

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.low <= port <= self.high


@dataclass(frozen=True)
class CheckSpec:
    """One thing to prove for a row: a port (or range) on a transport, and how.

    `port` is None for ICMP and for ports that only the inventory knows (then
    `setting` names the inventory key that gives it).
    """

    protocol: Transport
    probe: str
    port: int | PortRange | None = None
    setting: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def port_label(self) -> str:
        if self.port is None:
            return self.setting or "-"
        return str(self.port)


@dataclass(frozen=True)
class Row:
    """A documented row of the vendor's table, as encoded in a profile."""

    profile: str
    id: str
    section: str
    doc_port: str
    doc_protocol: str
    doc_source: str
    doc_target: str
    purpose: str
    direction: Direction
    source: str
    target: str
    checks: tuple[CheckSpec, ...]
    group: str | None = None
    derived: bool = False
    note: str | None = None
    endpoints: tuple[str, ...] = ()  # documented default host names (Microsoft 365 rows)
    line: int = 0  # line in the profile file, for error messages
    internet: bool = False  # the target role is on the internet (roles.yaml `internet: true`): proxied by default

    @property
    def key(self) -> str:
        return f"{self.profile}/{self.id}"

    @property
    def ports(self) -> list[int | str]:
        seen: list[int | str] = []
        for check in self.checks:
            value: int | str
            if check.port is None:
                if check.setting is None:
                    continue
                value = f"<{check.setting}>"
            else:
                value = check.port if isinstance(check.port, int) else str(check.port)
            if value not in seen:
                seen.append(value)
        return seen

    @property
    def protocols(self) -> list[str]:
        out: list[str] = []
        for check in self.checks:
            if check.protocol.value not in out:
                out.append(check.protocol.value)
        return out

    @property
    def probes(self) -> list[str]:
        out: list[str] = []
        for check in self.checks:
            if check.probe not in out:
                out.append(check.probe)
        return out


@dataclass(frozen=True)
class Profile:
    id: str
    title: str
    section: str
    rows: tuple[Row, ...]
    path: str = ""
    derived_from: str | None = None


@dataclass(frozen=True)
class Role:
    id: str
    title: str
    description: str = ""
    internet: bool = False  # reached over the internet (through the proxy, when one is set)


@dataclass(frozen=True)
class Target:
    """A host of a role, as the user named it (before resolution)."""

    role: str
    host: str
    label: str | None = None  # a friendlier name from the inventory, if any
    address: str | None = None  # already resolved (e.g. by DC discovery at the domain's DNS server)


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check of one row against one target."""

    protocol: str
    port: int | str | None
    probe: str
    status: Status
    reason: Reason
    detail: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    duration_ms: float = 0.0
    summary: str = ""  # one line of what the peer showed, from the probe's summarize()

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "port": self.port,
            "probe": self.probe,
            "status": self.status.value,
            "reason": self.reason.value,
            "detail": self.detail,
            "summary": self.summary,
            # Shared, not copied: the engine already made it a fresh bounded dict, and
            # a copy per check doubles what a large scan holds until it is written.
            "evidence": self.evidence if type(self.evidence) is dict else dict(self.evidence),
            "duration_ms": round(self.duration_ms, 1),
        }


@dataclass(frozen=True)
class RowResult:
    """One documented row against one target: the unit every report shows."""

    row: Row
    target: Target
    address: str | None
    checks: tuple[CheckResult, ...]

    # Cached: the row is frozen, and reports ask for its status, reason and detail often.
    @functools.cached_property
    def status(self) -> Status:
        return worst_status(c.status for c in self.checks)

    @functools.cached_property
    def deciding(self) -> CheckResult | None:
        """The check that gave the row its status (the first of the worst)."""
        status = self.status
        for check in self.checks:
            if check.status == status:
                return check
        return None

    @property
    def reason(self) -> Reason:
        check = self.deciding
        return check.reason if check else Reason.OK

    @property
    def detail(self) -> str:
        check = self.deciding
        return check.detail if check else ""

    def to_dict(self) -> dict[str, Any]:
        row = self.row
        return {
            "profile": row.profile,
            "row": row.id,
            "section": row.section,
            "doc_port": row.doc_port,
            "doc_protocol": row.doc_protocol,
            "doc_source": row.doc_source,
            "doc_target": row.doc_target,
            "purpose": row.purpose,
            "direction": row.direction.value,
            "role": self.target.role,
            "target": self.target.host,
            "address": self.address,
            "status": self.status.value,
            "reason": self.reason.value,
            "detail": self.detail,
            "checks": [c.to_dict() for c in self.checks],
        }


def worst_status(statuses: Any) -> Status:
    """The most severe status; SKIP only when nothing else was decided."""
    worst = Status.SKIP
    for status in statuses:
        if STATUS_SEVERITY[status] > STATUS_SEVERITY[worst]:
            worst = status
    return worst


def is_failure(status: Status, strict: bool = False) -> bool:
    """Whether a status makes the run fail (exit 1). `--strict` adds warn and inconclusive."""
    if status in (Status.FAIL, Status.ERROR):
        return True
    return strict and status in (Status.WARN, Status.INCONCLUSIVE)
