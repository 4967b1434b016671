"""The firewall change that would open each failed check, for the side that must change.

    fixes = plan_fixes(doc)                  # list[Fix], from a report document (pure)
    print(render(fixes, "powershell"))       # a dialect of the registry: table, powershell, netsh, ontap

A fix is one *finding*: the same port, protocol and reason failing on one or more hosts.

- Each failing check counts on its own port, with its own reason: a row whose TCP 139 is
  refused while 445 answers gives a fix for 139 only. The same (host, port, protocol) needed by
  several rows or profiles is one rule, whose description lists every purpose.
- Identical (port, protocol, reason) across hosts is one fix with the host group: one rule
  to run on each target (outbound rows), or one rule on the Auditor host listing the sources,
  collapsed to CIDR ranges (inbound rows). Ranges never cover an address that did not fail.
- `filtered` / `unreachable` / `no-answer`: something on the path drops the packets; the rule
  allows the Auditor's address on the target, and the text names the path.
- `refused`: usually nothing listens; the text says to check the service first.
- Probes declare what opens their traffic beyond a port (`Probe.firewall`): Windows rule
  groups for RPC and NetBIOS, an appliance's own firewall (ONTAP) for its services.
- `unresolved` says fix DNS; `auth`, `policy`, `tls`, `closed`... say the port is open and the
  problem is elsewhere: no rule for them.

No rule is ever open to any address. Without a known Auditor address (the report's host has
none and `--auditor-address` was not given) a rule carries a placeholder that fails loudly
when run unedited: `$(throw ...)` in PowerShell, an invalid `remoteip` in netsh.

Everything a document holds may be hostile (a saved report is a file anyone may edit), and
these commands are pasted into an administrator's shell: addresses are parsed as addresses,
ports as numbers, and free text is reduced to a safe character set before it is quoted. A
document of the wrong shape raises `ReportShapeError` naming the field.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scanner.models import Status, is_failure

if TYPE_CHECKING:
    from scanner.probes.base import FirewallHint

# A PowerShell argument that stops the script when run unedited (a terminating error).
PS_AUDITOR_PLACEHOLDER = "$(throw 'portready: replace this with the Auditor server address, or rerun portready fix --auditor-address ADDRESS')"
PS_SOURCE_PLACEHOLDER = "$(throw 'portready: replace this with the address of the source named above')"
# netsh and ONTAP reject a word that is neither an address nor one of their keywords.
AUDITOR_PLACEHOLDER = "REPLACE_WITH_AUDITOR_ADDRESS"
SOURCE_PLACEHOLDER = "REPLACE_WITH_SOURCE_ADDRESS"
SVM_PLACEHOLDER = "<svm>"
LIF_PLACEHOLDER = "<lif>"
ONTAP_POLICY = "netwrix_policy"
# The appliance name a probe's hint gives for NetApp ONTAP, and the dialect that renders it.
ONTAP = "ontap"
# The widest network --auditor-address accepts: an Auditor is one host, or a small cluster.
MAX_AUDITOR_ADDRESSES = 256

_PATH_REASONS = {"filtered", "unreachable", "no-answer"}
_NOT_A_PORT = {
    "auth": "an account issue, not a port: the service answered and rejected the credentials; check the account and its rights",
    "policy": "a policy issue, not a port: the service answered and refuses the method by policy (e.g. LDAP signing or channel binding); change the policy or the method",
    "tls": "a TLS configuration issue, not a port: the port answers but the TLS handshake fails; check the service's TLS versions and certificate",
    "certificate": "a certificate issue, not a port: renew or replace the certificate, or trust its issuer (--ca-bundle)",
    "protocol": "not a firewall issue: something answers on this port but not the documented service; check which service holds the port",
    "no-reply": "not a firewall issue: the service accepted the connection but did not answer in time (overloaded or hung); check the service",
    "not-registered": "not a firewall issue: the RPC interface or SQL instance is not registered; start the service on the target",
    "time-skew": "not a port: the clocks differ more than Kerberos allows; fix time synchronisation",
    "internal": "a portready failure, not a port: please report it with the detail",
    "permission": "a local permission issue, not a port: run portready with the rights the check needs",
    "port-in-use": "a local port conflict, not a firewall: stop or move the service that holds the port",
    "not-configured": "set the port in the inventory so it can be checked",
    "closed": "the port is open: the service accepted the connection, then closed or reset it; check whether it requires TLS, accepts only listed client addresses (add the Auditor's), or is overloaded",
}
# When the same port of a host fails with different reasons in different rows, the reason
# that calls for a rule wins (the others describe the same closed path less precisely).
_PRECEDENCE = ("filtered", "unreachable", "no-answer", "not-seen", "refused")


class ReportShapeError(ValueError):
    """The report document lacks a field `fix` needs, or a field has the wrong type."""


@dataclass(frozen=True)
class Host:
    """A target (outbound) or source (inbound) of a finding: its name and address, both made safe."""

    name: str
    address: str | None

    @property
    def label(self) -> str:
        return f"{self.name} ({self.address})" if self.address and self.address != self.name else self.name


@dataclass(frozen=True)
class Fix:
    """One finding: a port, protocol and reason failing on `hosts`, and what would fix it.

    `direction` says where the rule goes: `outbound`, on each host (allowing the Auditor);
    `inbound`, on the Auditor host (allowing each host as a source). `auditor` is empty when
    the Auditor's address is unknown (rules then carry a placeholder). `port` is the port or
    range as a number; empty when the check had none (ICMP, a row without checks).
    """

    direction: str
    reason: str
    status: str
    protocol: str
    port: str
    hosts: tuple[Host, ...]
    rows: tuple[str, ...]
    purposes: tuple[str, ...]
    auditor: tuple[str, ...]
    advice: str
    opens: bool = False  # whether a firewall change is part of the fix
    groups: tuple[str, ...] = ()  # Windows predefined rule groups to enable instead of a port rule
    appliance: str = ""  # a device whose own firewall takes the rule (ONTAP)
    services: tuple[str, ...] = ()  # the appliance's services to allow
    detail: str = ""
    doc_port: str = ""  # the documented port text, for findings without a numeric port

    @property
    def inbound(self) -> bool:
        return self.direction == "inbound"

    @property
    def ports(self) -> tuple[str, ...]:
        return (self.port,) if self.port else ()

    @property
    def ontap_services(self) -> tuple[str, ...]:
        return self.services if self.appliance == ONTAP else ()

    @property
    def purpose(self) -> str:
        return "; ".join(self.purposes)

    @property
    def sources(self) -> tuple[str, ...]:
        """The addresses an inbound rule allows, CIDR-collapsed (only hosts with an address)."""
        return collapse(h.address for h in self.hosts if h.address)

    @property
    def remote(self) -> str:
        """The rule's remote addresses, comma-separated; '' when unknown (a placeholder applies)."""
        return ",".join(self.sources if self.inbound else self.auditor)

    @property
    def display_name(self) -> str:
        if self.inbound:
            who = self.remote if len(self.sources) == 1 else f"{len(self.hosts)} sources"
        else:
            who = self.remote or "the Auditor"
        return safe_text(f"Netwrix Auditor {self.protocol.upper()} {self.port} from {who}", 120)


# ---------------------------------------------------------------- safe text and addresses


def safe_text(text: Any, limit: int = 200) -> str:
    """Free text reduced to characters that are inert in PowerShell, cmd and the ONTAP CLI quotes."""
    s = re.sub(r"[^A-Za-z0-9 .,:;/()\[\]_+=@#-]", " ", str(text))
    s = re.sub(r"\s+", " ", s).strip()
    return s[:limit]


def safe_host(text: Any) -> str:
    """A host name or address for comments and messages: letters, digits, dots, dashes, colons."""
    s = re.sub(r"[^A-Za-z0-9.:_%-]", "", str(text))[:120]
    return s or "<host>"


def safe_address(text: Any) -> str | None:
    """An IP address or network, or None: nothing else may reach a -RemoteAddress argument."""
    try:
        return str(ipaddress.ip_address(str(text)))
    except ValueError:
        pass
    try:
        return str(ipaddress.ip_network(str(text), strict=False))
    except ValueError:
        return None


def auditor_address_problem(text: str) -> str | None:
    """Why `text` cannot be the Auditor's address in a rule, or None when it can."""
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return "expected the Auditor server's IP address (e.g. 10.0.0.5) or a small network (e.g. 10.0.0.4/30)"
    if net.num_addresses > MAX_AUDITOR_ADDRESSES:
        return (f"{net} holds {net.num_addresses} addresses: a rule for it would open the port far beyond the "
                "Auditor; give the Auditor server's own address")  # fmt: skip
    addr = net.network_address
    if addr.is_unspecified or addr.is_loopback or addr.is_multicast:
        return f"{net} is not an address the targets can see the Auditor come from; give its network address"
    return None


def auditor_addresses(doc: Mapping[str, Any]) -> tuple[str, ...]:
    """The Auditor's own addresses from host.addresses (the sources the targets see): IPv4 first."""
    host = doc.get("host")
    raw = host.get("addresses") if isinstance(host, Mapping) else None
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for item in raw if isinstance(raw, list) else []:
        try:
            addr = ipaddress.ip_address(str(item).split("%")[0])
        except ValueError:
            continue
        if not (addr.is_loopback or addr.is_link_local or addr.is_unspecified or addr.is_multicast) and addr not in found:
            found.append(addr)
    found.sort(key=lambda a: a.version)
    return tuple(str(a) for a in found[:16])


def auditor_address(doc: Mapping[str, Any]) -> str | None:
    """The Auditor's first usable address from the report, or None."""
    found = auditor_addresses(doc)
    return found[0] if found else None


def collapse(addresses: Iterable[str | None]) -> tuple[str, ...]:
    """Addresses as the fewest exact CIDR blocks (a lone host stays a plain address)."""
    # Every dialect and the table ask again for the same host group of a finding: computed once.
    return _collapse(tuple(addresses))


@functools.lru_cache(maxsize=64)
def _collapse(addresses: tuple[str | None, ...]) -> tuple[str, ...]:
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for a in addresses:
        if a:
            try:
                nets.append(ipaddress.ip_network(a, strict=False))
            except ValueError:
                continue
    out: list[str] = []
    for version in (4, 6):
        same = [n for n in nets if n.version == version]
        for net in ipaddress.collapse_addresses(same):  # type: ignore[type-var]
            out.append(str(net.network_address) if net.num_addresses == 1 else str(net))
    return tuple(out)


def hosts_text(hosts: Iterable[Host], limit: int = 8) -> str:
    """'dc1 (198.18.0.10)', or 'N hosts: ...' naming a few and counting the rest (ranges when many)."""
    items = list(hosts)
    if len(items) == 1:
        return items[0].label
    if len(items) <= limit:
        return f"{len(items)} hosts: " + ", ".join(h.label for h in items)
    ranges = collapse(h.address for h in items)
    unaddressed = [h.name for h in items if not h.address]
    parts = list(ranges[:limit]) + unaddressed[: max(0, limit - len(ranges))]
    more = len(ranges) + len(unaddressed) - len(parts)
    return f"{len(items)} hosts: " + ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def _port_text(port: Any) -> str | None:
    """A port or range as text, only when it is one (no inventory-setting names)."""
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
        return str(port)
    m = re.fullmatch(r"(\d{1,5})-(\d{1,5})", str(port)) if isinstance(port, str) else None
    if m and 0 < int(m.group(1)) <= int(m.group(2)) < 65536:
        return f"{int(m.group(1))}-{int(m.group(2))}"
    return None


# ---------------------------------------------------------------- the document, checked


def _field(item: Mapping[str, Any], key: str, where: str, types: tuple[type, ...], default: Any = None,
           required: bool = False) -> Any:  # fmt: skip
    if key not in item or item[key] is None:
        if required:
            raise ReportShapeError(f"{where}: no {key!r}")
        return default
    value = item[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        names = " or ".join(t.__name__ for t in types)
        raise ReportShapeError(f"{where}.{key}: expected {names}, got {type(value).__name__}")
    return value


def _status(value: Any, where: str) -> Status:
    try:
        return Status(value)
    except ValueError:
        raise ReportShapeError(f"{where}.status: {safe_text(value, 40)!r} is not a status") from None


def _rows(doc: Any) -> list[Mapping[str, Any]]:
    if not isinstance(doc, Mapping):
        raise ReportShapeError(f"the report is not a JSON object (got {type(doc).__name__})")
    rows = _field(doc, "rows", "report", (list,), required=True)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ReportShapeError(f"rows[{i}]: expected an object, got {type(row).__name__}")
    return rows


# ---------------------------------------------------------------- planning

HintLookup = Callable[[str], "FirewallHint | None"]


def probe_hints() -> HintLookup:
    """The `firewall` hint each registered probe declares, by probe name."""
    from scanner.probes.base import registry

    probes = registry()

    def lookup(name: str) -> FirewallHint | None:
        probe = probes.get(name)
        return probe.firewall if probe is not None else None

    return lookup


@dataclass
class _Item:
    """One (direction, host, protocol, port) while rows are merged into it."""

    direction: str
    host: Host
    protocol: str
    port: str
    doc_port: str
    reason: str
    status: Status
    rows: list[str]
    purposes: list[str]
    groups: list[str]
    appliance: str
    services: list[str]
    detail: str


def _add(items: list[str], values: Iterable[str]) -> None:
    for v in values:
        if v and v not in items:
            items.append(v)


def _matching(hint: FirewallHint, text: str) -> list[str]:
    return [g for g, keys in hint.rule_groups if any(re.search(rf"\b{re.escape(k)}\b", text) for k in keys)]


def _own_words(hint: FirewallHint, evidence: Mapping[str, Any]) -> str:
    """The words of what the check itself asked for (`hint.evidence_key`), "" when its evidence lacks them."""
    if not hint.evidence_key:
        return ""
    value = evidence.get(hint.evidence_key)
    values = value if isinstance(value, list) else [value]
    return " ".join(v.lower() for v in values[:32] if isinstance(v, str))[:2000]


def _groups(hint: FirewallHint, purpose: str, evidence: Mapping[str, Any]) -> list[str]:
    own = _own_words(hint, evidence)
    found = _matching(hint, own) if own else []
    if found:
        return found
    words = [purpose.lower()]
    interfaces = evidence.get("interfaces")
    for item in interfaces if isinstance(interfaces, list) else []:
        if isinstance(item, Mapping):
            words.append(f"{item.get('interface', '')} {item.get('name', '')}".lower())
    found = _matching(hint, " ".join(words)[:20000])
    return found or ([hint.default_group] if hint.default_group else [])


def _check_fails(check: Mapping[str, Any], strict: bool, where: str) -> bool:
    return is_failure(_status(_field(check, "status", where, (str,), required=True), where), strict)


def plan_fixes(doc: Mapping[str, Any], auditor: str | None = None, *, hints: HintLookup | None = None,
               declared: Mapping[str, Iterable[str]] | None = None) -> list[Fix]:  # fmt: skip
    """The findings of a report document: one Fix per (direction, protocol, port, reason) and host group.

    `auditor` overrides the report's own addresses (check it with `auditor_address_problem`).
    `hints` gives a probe's firewall hint by name (default: the probe registry); `declared`
    maps "profile/row" to the probes the profile declares, for checks run at port depth.
    """
    rows = _rows(doc)
    summary = doc.get("summary")
    strict = bool(summary.get("strict", False)) if isinstance(summary, Mapping) else False
    if auditor is not None:
        problem = auditor_address_problem(auditor)
        if problem:
            raise ValueError(f"auditor address {safe_text(auditor, 60)!r}: {problem}")
        me: tuple[str, ...] = (str(ipaddress.ip_network(auditor.strip(), strict=False)).removesuffix("/32").removesuffix("/128"),)
    else:
        me = auditor_addresses(doc)
    lookup = hints or probe_hints()
    items: dict[tuple[str, str, str | None, str, str], _Item] = {}
    for i, row in enumerate(rows):
        where = f"rows[{i}]"
        status = _status(_field(row, "status", where, (str,), required=True), where)
        if not is_failure(status, strict):
            continue
        _item_for_row(row, where, strict, lookup, declared or {}, items)
    return _findings(list(items.values()), me)


def _item_for_row(row: Mapping[str, Any], where: str, strict: bool, lookup: HintLookup,
                  declared: Mapping[str, Iterable[str]], items: dict[tuple[str, str, str | None, str, str], _Item]) -> None:  # fmt: skip
    target = safe_host(_field(row, "target", where, (str,), required=True))
    address = safe_address(_field(row, "address", where, (str,)))
    key = f"{_field(row, 'profile', where, (str,), '')}/{_field(row, 'row', where, (str,), '')}"
    purpose = _field(row, "purpose", where, (str,), "")
    doc_port = _field(row, "doc_port", where, (str,), "")
    inbound = _field(row, "direction", where, (str,), "outbound") == "inbound"
    checks = _field(row, "checks", where, (list,), [])
    failing: list[tuple[str, Mapping[str, Any]]] = []
    for j, c in enumerate(checks):
        if not isinstance(c, Mapping):
            raise ReportShapeError(f"{where}.checks[{j}]: expected an object, got {type(c).__name__}")
        cw = f"{where}.checks[{j}]"
        for name, types in (("protocol", (str,)), ("port", (int, str)), ("probe", (str,)), ("evidence", (Mapping,)),
                            ("reason", (str,)), ("detail", (str,))):  # fmt: skip
            _field(c, name, cw, types)
        if _check_fails(c, strict, cw):
            failing.append((cw, c))
    if not failing:  # a failed row with no failing check (hand-edited): the row's own words
        failing = [(where, {"status": row["status"], "reason": _field(row, "reason", where, (str,), ""),
                            "detail": _field(row, "detail", where, (str,), "")})]
    probes_declared = [str(p) for p in declared.get(key, ())]
    for cw, c in failing:
        protocol = str(_field(c, "protocol", cw, (str,), "")).lower()
        port = _port_text(_field(c, "port", cw, (int, str)))
        probe = _field(c, "probe", cw, (str,), "")
        evidence = _field(c, "evidence", cw, (Mapping,), {})
        hint = lookup(probe) if probe else None
        for name in probes_declared:  # at port depth the check ran `tcp`; the row's own probe knows
            hint = hint or lookup(name)
        groups = _groups(hint, purpose, evidence) if hint and hint.rule_groups and not inbound else []
        services: list[str] = []
        if hint and hint.appliance and not inbound:
            by_port = dict(hint.services)
            services = [by_port.get(int(port), hint.default_service) if port and port.isdigit() else hint.default_service]
        ikey = ("inbound" if inbound else "outbound", target, address, protocol, port or doc_port)
        reason = str(_field(c, "reason", cw, (str,), ""))
        status = _status(c.get("status", "fail"), cw)
        item = items.get(ikey)
        if item is None:
            items[ikey] = _Item(ikey[0], Host(target, address), protocol, port or "", doc_port, reason, status,
                                [key], [purpose] if purpose else [], groups, hint.appliance if hint else "", services,
                                str(_field(c, "detail", cw, (str,), "")))  # fmt: skip
            continue
        _add(item.rows, [key])
        _add(item.purposes, [purpose])
        _add(item.groups, groups)
        _add(item.services, services)
        item.appliance = item.appliance or (hint.appliance if hint else "")
        if _rank(reason) < _rank(item.reason):
            item.reason, item.status = reason, status


def _rank(reason: str) -> int:
    return _PRECEDENCE.index(reason) if reason in _PRECEDENCE else len(_PRECEDENCE)


def _findings(items: list[_Item], me: tuple[str, ...]) -> list[Fix]:
    groups: dict[tuple[Any, ...], list[_Item]] = {}
    for it in items:
        key = (it.direction, it.protocol, it.port or it.doc_port, it.reason, tuple(sorted(it.groups)), it.appliance,
               tuple(sorted(it.services)), it.direction == "inbound" and it.host.address is None)  # fmt: skip
        groups.setdefault(key, []).append(it)
    out: list[Fix] = []
    for same in groups.values():
        first = same[0]
        rows: list[str] = []
        purposes: list[str] = []
        for it in same:
            _add(rows, it.rows)
            _add(purposes, it.purposes)
        hosts = tuple(dict.fromkeys(it.host for it in same))
        fix = Fix(direction=first.direction, reason=first.reason, status=first.status.value, protocol=first.protocol,
                  port=first.port, hosts=hosts, rows=tuple(rows), purposes=tuple(purposes[:12]), auditor=me, advice="",
                  groups=tuple(first.groups), appliance=first.appliance, services=tuple(first.services),
                  detail=first.detail, doc_port=first.doc_port)  # fmt: skip
        advice, opens = _advice(fix)
        out.append(dataclasses.replace(fix, advice=advice, opens=opens))
    return out


def _advice(f: Fix) -> tuple[str, bool]:
    """What to do for a finding, in words, and whether it opens something."""
    me = ", ".join(f.auditor) or "address unknown"
    who = hosts_text(f.hosts, 4)
    if f.inbound:
        where = f"from {who} to this Auditor host ({me})"
    else:
        where = f"between the Auditor ({me}) and {who}"
    if f.reason == "unresolved":
        return f"fix DNS: {who} does not resolve from the Auditor host; add or correct its DNS record (or the inventory name)", False
    if f.reason in _NOT_A_PORT:
        return _NOT_A_PORT[f.reason], False
    if f.protocol == "icmp" and not f.port:
        return (f"ICMP echo gets no answer {where}: enable File and Printer Sharing (Echo Request) on {who} "
                "and allow ICMP echo on the path"), True  # fmt: skip
    what = f"{f.protocol.upper()} {f.port or f.doc_port}".strip()
    on = "the Auditor host" if f.inbound else who
    if f.reason == "refused":
        advice = (f"nothing listens on {what} on {on} (or a host firewall rejects): "
                  f"check that the service runs; if it does, allow {what} {where}")  # fmt: skip
    elif f.reason in _PATH_REASONS or f.reason == "not-seen":
        source = f"the source {who}" if f.inbound else f"the Auditor ({me})"
        advice = (f"a firewall between {source} and {'the Auditor host' if f.inbound else who} drops {what}: "
                  f"allow it on that path and on {'the Auditor host' if f.inbound else 'the target'}")  # fmt: skip
        if f.reason == "unreachable":
            advice = f"no route or a firewall rejects with host-unreachable {where}: check routing, then " + advice
        if f.reason == "not-seen":
            advice = f"nothing arrived {where}: check that the source sends to this host; if it does, " + advice
    else:
        advice = f"{f.reason or 'failed'}: allow {what} {where} if a firewall is involved; see the detail"
    if f.groups:
        advice += f"; on {on} enable the predefined rule group(s) " + ", ".join(f.groups)
    if f.ontap_services:
        advice += f"; on the ONTAP cluster allow the {'/'.join(f.ontap_services)} service in a firewall policy for the Auditor"
    return advice, True


# ---------------------------------------------------------------- dialects

FixFormat = Callable[[list[Fix]], str]
_DIALECTS: dict[str, FixFormat] = {}


def fix_format(name: str) -> Callable[[FixFormat], FixFormat]:
    """Decorator: register a dialect of `portready fix --format NAME` (a name is taken once)."""

    def add(fn: FixFormat) -> FixFormat:
        existing = _DIALECTS.get(name)
        if existing is not None and existing is not fn:
            raise ValueError(f"fix format {name!r} is taken by {existing.__qualname__}")
        _DIALECTS[name] = fn
        return fn

    return add


def fix_formats() -> Mapping[str, FixFormat]:
    return dict(_DIALECTS)


def render(fixes: list[Fix], fmt: str) -> str:
    try:
        return _DIALECTS[fmt](fixes)
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(_DIALECTS)}") from None


def _ps_quote(text: str) -> str:
    return "'" + safe_text(text, 900).replace("'", "''") + "'"


def _on(f: Fix) -> str:
    return f"on the Auditor host: {f.protocol.upper()} {f.port} from {hosts_text(f.hosts)}" if f.inbound else \
        f"on {hosts_text(f.hosts)}: {f.protocol.upper()} {f.port}".rstrip(": ")  # fmt: skip


def _walk(fixes: Iterable[Fix], comment: str) -> Iterable[tuple[str, Fix | None]]:
    """The lines both Windows dialects share: a heading per finding and its advice, then the finding."""
    for f in fixes:
        yield "", None
        yield f"{comment} ---- {_on(f)}", None
        yield f"{comment} {safe_text(', '.join(f.rows), 300)}: {safe_text(f.advice, 400)}", None
        if f.ontap_services:
            yield f"{comment} an ONTAP cluster takes no Windows rule: see `portready fix --format ontap`", None
        elif not f.inbound and len(f.hosts) > 1 and f.opens:
            yield f"{comment} run on each of these hosts (or in a GPO linked to them)", None
        if len(f.hosts) > 8:  # the heading named a few: every host, once
            yield f"{comment} hosts: {_group_label(f)}", None
        yield "", f


def _ps_remote(f: Fix) -> str:
    if f.remote:
        return f.remote
    return PS_SOURCE_PLACEHOLDER if f.inbound else PS_AUDITOR_PLACEHOLDER


def _port_rule(f: Fix) -> bool:
    return f.opens and bool(f.port) and not f.groups and not f.appliance and f.protocol in ("tcp", "udp")


@fix_format("powershell")
def powershell(fixes: Iterable[Fix]) -> str:
    """New-NetFirewallRule / Enable-NetFirewallRule lines, one block per finding."""
    fixes = list(fixes)
    lines = ["# portready: Windows Firewall rules for the failed checks (run in an elevated PowerShell on each host named)"]
    if any(_port_rule(f) and not f.remote for f in fixes):
        lines.append("# Some rules name no address yet: they stop with an error until you replace the $(throw ...) argument.")
    done: set[tuple[Any, ...]] = set()
    for line, f in _walk(fixes, "#"):
        if f is None:
            if line or lines[-1]:
                lines.append(line)
            continue
        if not f.opens:
            continue
        for group in f.groups:
            cmd = f"Enable-NetFirewallRule -DisplayGroup {_ps_quote(group)}"
            if (f.hosts, cmd) in done:
                continue
            done.add((f.hosts, cmd))
            lines.append(cmd)
            if f.auditor:  # scoping narrows the group for every other manager too
                lines.append(f"# optional, narrows the whole group: Set-NetFirewallRule -DisplayGroup {_ps_quote(group)} "
                             f"-RemoteAddress {','.join(f.auditor)}")  # fmt: skip
        if _port_rule(f):
            lines.append(
                f"New-NetFirewallRule -DisplayName {_ps_quote(f.display_name)} -Direction Inbound "
                f"-Protocol {f.protocol.upper()} -LocalPort {f.port} -RemoteAddress {_ps_remote(f)} "
                f"-Action Allow -Description {_ps_quote(f.purpose)}"
            )
    return "\n".join(lines).rstrip("\n") + "\n"


@fix_format("netsh")
def netsh(fixes: Iterable[Fix]) -> str:
    """`netsh advfirewall firewall` lines (cmd.exe), one block per finding."""
    fixes = list(fixes)
    lines = ["REM portready: Windows Firewall rules for the failed checks (run in an elevated cmd on each host named)"]
    if any(_port_rule(f) and not f.remote for f in fixes):
        lines.append(f"REM Some rules name no address yet: netsh rejects {AUDITOR_PLACEHOLDER} / {SOURCE_PLACEHOLDER} until you replace it.")
    done: set[Any] = set()
    for line, f in _walk(fixes, "REM"):
        if f is None:
            if line or lines[-1]:
                lines.append(line)
            continue
        if not f.opens:
            continue
        for group in f.groups:
            cmd = f'netsh advfirewall firewall set rule group="{safe_text(group)}" new enable=yes'
            if (f.hosts, cmd) not in done:
                done.add((f.hosts, cmd))
                lines.append(cmd)
        if _port_rule(f):
            remote = f.remote or (SOURCE_PLACEHOLDER if f.inbound else AUDITOR_PLACEHOLDER)
            lines.append(
                f'netsh advfirewall firewall add rule name="{f.display_name}" dir=in action=allow '
                f"protocol={f.protocol.upper()} localport={f.port} remoteip={remote} "
                f'description="{safe_text(f.purpose, 900)}"'
            )
    return "\n".join(lines).rstrip("\n") + "\n"


@fix_format(ONTAP)
def ontap(fixes: Iterable[Fix]) -> str:
    """The ONTAP firewall policy commands of the vendor's document, for the failed NetApp checks."""
    items = [f for f in fixes if f.ontap_services and f.opens]
    if not items:
        return "# portready: no failed NetApp ONTAP row\n"
    auditor = items[0].auditor
    allow = ",".join(f"{a}/{32 if ':' not in a else 128}" if "/" not in a else a for a in auditor) or AUDITOR_PLACEHOLDER
    services = list(dict.fromkeys(s for f in items for s in f.ontap_services))
    clusters = ", ".join(dict.fromkeys(h.label for f in items for h in f.hosts))
    lines = [
        f"# portready: NetApp ONTAP firewall policy for the Auditor ({', '.join(auditor) or 'address unknown'}) on {safe_text(clusters, 400)}",
        f"# {allow} is the Auditor's address; use its subnet instead if the policy should cover it.",
        f"# Replace {SVM_PLACEHOLDER} with the SVM (vserver) and {LIF_PLACEHOLDER} with its data LIF.",
        "# ONTAP 9.10.1 and later deprecate `system services firewall policy` (see NetApp's ONTAP 9.10.1 commands).",
    ]
    if not auditor:
        lines.append(f"# The Auditor's address is unknown: ONTAP rejects {AUDITOR_PLACEHOLDER} until you replace it.")
    lines += ["", "# Clustered Data ONTAP 8.3, ONTAP 9.0 - 9.10: create the policy (or `modify` an existing one)"]
    for s in services:
        lines.append(f"system services firewall policy create -policy {ONTAP_POLICY} -service {s} -vserver {SVM_PLACEHOLDER} -allow-list {allow}")
    lines += ["", "# Clustered Data ONTAP 8.2"]
    for s in services:
        lines.append(
            f"system services firewall policy create -policy {ONTAP_POLICY} -service {s} -vserver {SVM_PLACEHOLDER} -action allow -ip-list {allow}"
        )
    lines += [
        "",
        "# then apply the policy to the LIF and verify",
        f"network interface modify -vserver {SVM_PLACEHOLDER} -lif {LIF_PLACEHOLDER} -firewall-policy {ONTAP_POLICY}",
        "network interface show -fields firewall-policy",
    ]
    return "\n".join(lines) + "\n"


TABLE_COLUMNS = ("source", "destination", "port", "protocol", "purpose", "action")


def _auditor_label(f: Fix) -> str:
    return f"Auditor ({', '.join(f.auditor)})" if f.auditor else "Auditor (address unknown)"


def _group_label(f: Fix) -> str:
    if len(f.hosts) == 1:
        return f.hosts[0].label
    return ", ".join(collapse(h.address for h in f.hosts) + tuple(h.name for h in f.hosts if not h.address)) + f" ({len(f.hosts)} hosts)"


def table_rows(fixes: Iterable[Fix]) -> list[dict[str, str]]:
    """Rows for a third-party firewall change request: source, destination, port, protocol, purpose."""
    out: list[dict[str, str]] = []
    for f in fixes:
        hosts, me = _group_label(f), _auditor_label(f)
        out.append({
            "source": hosts if f.inbound else me,
            "destination": me if f.inbound else hosts,
            "port": f.port or f.doc_port,
            "protocol": f.protocol.upper(),
            "purpose": f.purpose,
            "action": f.advice if not f.opens else ("allow" + (f" (group: {', '.join(f.groups)})" if f.groups else "")),
        })  # fmt: skip
    return out


@fix_format("table")
def table(fixes: Iterable[Fix]) -> str:
    """Plain text: one line per finding, then what to do (and every host when there are several)."""
    fixes = list(fixes)
    if not fixes:
        return "No failed row: nothing to open.\n"
    rows = table_rows(fixes)
    widths = {c: min(40, max(len(c), *(len(_one_line(r[c])) for r in rows))) for c in TABLE_COLUMNS[:4]}
    head = "  ".join(c.upper().ljust(widths[c]) for c in TABLE_COLUMNS[:4]) + "  PURPOSE"
    lines = [head]
    if any(f.opens and not f.auditor for f in fixes):
        lines.insert(0, "The report names no address of the Auditor server: give it with --auditor-address.")
    for f, r in zip(fixes, rows, strict=True):
        lines.append("  ".join(_one_line(r[c])[:40].ljust(widths[c]) for c in TABLE_COLUMNS[:4]) + "  " + _one_line(r["purpose"])[:120])
        if len(f.hosts) > 1:
            lines.append("    hosts: " + _one_line(_group_label(f)))
        lines.append("    -> " + _one_line(f.advice))
    return "\n".join(lines) + "\n"


def _one_line(text: Any) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in str(text))
