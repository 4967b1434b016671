"""The firewall change that would open each failed row, for the side that must change.

    fixes = plan_fixes(doc)                  # list[Fix], from a report document
    print(render(fixes, "powershell"))       # or netsh, ontap, table, markdown

A fix is worked out per failed row x target from the checks that failed and why:

- `filtered` / `unreachable`: something on the path drops the packets. The rule is an
  inbound allow on the target for the Auditor's address, and the text names the path
  between the two hosts, where a network firewall needs the same opening.
- `refused`: a reset usually means nothing listens; the text says to check the service
  first and only then gives the allow rule (a host firewall may reject too).
- RPC rows (WMI, Service Control Manager, event log, PLA, task scheduler, NetBIOS/SMB file
  sharing): the predefined Windows rule groups the vendor's document names, not a port.
- NetApp ONTAP rows: the `system services firewall policy` commands as the document gives
  them (8.3 / 9.0-9.10 and 8.2 forms).
- Inbound rows (`listen` documents): the rule goes on the Auditor host, from the source.
- `unresolved` says fix DNS; `auth` / `policy` / `tls` / `certificate` / `protocol` say the
  port is open and the problem is elsewhere: no firewall rule is emitted for them.

Everything a document holds may be hostile (a saved report is a file anyone may edit), and
these commands are pasted into an administrator's shell: addresses are parsed as addresses,
ports as numbers, and free text is reduced to a safe character set before it is quoted.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from scanner.models import Status, is_failure

AUDITOR_PLACEHOLDER = "<auditor address>"
SVM_PLACEHOLDER = "<svm>"
LIF_PLACEHOLDER = "<lif>"
ONTAP_POLICY = "netwrix_policy"

# Predefined Windows Firewall rule groups named by the vendor's document, and the words of a
# row's purpose (or the RPC interface the rpc-dynamic probe names) that call for each one.
RULE_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Windows Management Instrumentation (WMI)", ("windows management instrumentation", "wmi")),
    ("Remote Service Management", ("service control manager", "scm", "svcctl")),
    ("Remote Event Log Management", ("event log", "eventlog", "even6")),
    ("Performance Logs and Alerts", ("performance logs", "plasrv", "removable storage", "pla")),
    ("Remote Scheduled Tasks Management", ("scheduled tasks", "scheduled task", "task scheduler", "atsvc", "schedule")),
    ("File and Printer Sharing", ("file and printer sharing", "netbios", "remote registry", "winreg")),
)
_RPC_PROBES = {"epm", "rpc-dynamic"}
_NETBIOS_PROBES = {"netbios-ns", "netbios-dgm"}
_PATH_REASONS = {"filtered", "unreachable", "no-answer"}
_NOT_A_PORT = {
    "auth": "an account issue, not a port: the service answered and rejected the credentials; check the account and its rights",
    "policy": "a policy issue, not a port: the service answered and refuses the method by policy (e.g. LDAP signing or channel binding); change the policy or the method",
    "tls": "a TLS configuration issue, not a port: the port answers but the TLS handshake fails; check the service's TLS versions and certificate",
    "certificate": "a certificate issue, not a port: renew or replace the certificate, or trust its issuer (--ca-bundle)",
    "protocol": "not a firewall issue: something answers on this port but not the documented service; check which service holds the port",
    "not-registered": "not a firewall issue: the RPC interface or SQL instance is not registered; start the service on the target",
    "time-skew": "not a port: the clocks differ more than Kerberos allows; fix time synchronisation",
    "internal": "a portready failure, not a port: please report it with the detail",
    "permission": "a local permission issue, not a port: run portready with the rights the check needs",
    "not-configured": "set the port in the inventory so it can be checked",
    "closed": "the port is open: the service accepted the connection, then closed or reset it; check whether it requires TLS, accepts only listed client addresses (add the Auditor's), or is overloaded",
}


@dataclass(frozen=True)
class Fix:
    """One failed row x target and what would fix it.

    `rule_host` is the host whose firewall needs the rule (the target for outbound rows, the
    Auditor for inbound ones); `remote` the address the rule allows. `ports` is empty when the
    fix is not a port rule (DNS, account, policy) or is a predefined rule group.
    """

    profile: str
    row: str
    target: str
    address: str | None
    reason: str
    status: str
    purpose: str
    doc_port: str
    doc_protocol: str
    direction: str
    source_label: str  # who sends (third-party firewall table)
    destination_label: str  # who receives
    rule_host: str
    remote: str
    protocol: str = ""  # tcp or udp, when a port rule applies
    ports: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    ontap_services: tuple[str, ...] = ()
    advice: str = ""
    detail: str = ""
    opens: bool = field(default=False)  # whether a firewall rule is part of the fix

    @property
    def display_name(self) -> str:
        ports = ",".join(self.ports)
        return safe_text(f"Netwrix Auditor {self.protocol.upper()} {ports} from {self.remote}", 120)


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


def auditor_address(doc: Mapping[str, Any]) -> str:
    """The Auditor's own address from host.addresses: IPv4 first, never loopback."""
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for raw in (doc.get("host") or {}).get("addresses") or []:
        try:
            addr = ipaddress.ip_address(str(raw).split("%")[0])
        except ValueError:
            continue
        if not (addr.is_loopback or addr.is_link_local or addr.is_unspecified):
            found.append(addr)
    found.sort(key=lambda a: a.version)
    return str(found[0]) if found else AUDITOR_PLACEHOLDER


def _port_text(port: Any) -> str | None:
    """A port or range as text, only when it is one (no inventory-setting names)."""
    if isinstance(port, int) and 0 < port < 65536:
        return str(port)
    m = re.fullmatch(r"(\d{1,5})-(\d{1,5})", str(port))
    if m and 0 < int(m.group(1)) <= int(m.group(2)) < 65536:
        return f"{int(m.group(1))}-{int(m.group(2))}"
    return None


def _groups_for(row: Mapping[str, Any], failing: list[Mapping[str, Any]]) -> tuple[str, ...]:
    """Predefined rule groups when the failing checks are RPC / NetBIOS rather than one port."""
    probes = {str(c.get("probe")) for c in failing}
    if not probes & (_RPC_PROBES | _NETBIOS_PROBES):
        return ()
    words = [str(row.get("purpose", "")).lower()]
    for c in failing:
        for item in (c.get("evidence") or {}).get("interfaces") or []:
            if isinstance(item, Mapping):
                words.append(f"{item.get('interface', '')} {item.get('name', '')}".lower())
    text = " ".join(words)
    groups: list[str] = []
    for group, keys in RULE_GROUPS:
        if any(re.search(rf"\b{re.escape(k)}\b", text) for k in keys):
            groups.append(group)
    if not groups and probes & _NETBIOS_PROBES:
        groups.append("File and Printer Sharing")
    if not groups and probes & _RPC_PROBES:
        groups.append("Windows Management Instrumentation (WMI)")  # RPC with no named service
    return tuple(groups)


def _ontap_services(row: Mapping[str, Any], failing: list[Mapping[str, Any]]) -> tuple[str, ...]:
    if row.get("profile") != "netapp-ontap" and not any(c.get("probe") == "ontap" for c in failing):
        return ()
    out: list[str] = []
    for c in failing:
        service = "http" if c.get("port") == 80 else "https"
        if service not in out:
            out.append(service)
    return tuple(out)


def plan_fixes(doc: Mapping[str, Any], auditor: str | None = None) -> list[Fix]:
    """A Fix for every failed row x target of the document (pass and skip rows have none)."""
    strict = bool((doc.get("summary") or {}).get("strict", False))
    me = safe_address(auditor) if auditor else None
    me = me or auditor_address(doc)
    fixes: list[Fix] = []
    for row in doc.get("rows") or []:
        try:
            status = Status(row.get("status"))
        except ValueError:
            continue
        if not is_failure(status, strict):
            continue
        fixes.append(_fix_for_row(row, me, strict))
    return fixes


def _fix_for_row(row: Mapping[str, Any], me: str, strict: bool) -> Fix:
    checks = [c for c in row.get("checks") or [] if isinstance(c, Mapping)]
    failing = [c for c in checks if _check_fails(c, strict)] or checks
    reason = str(row.get("reason", ""))
    inbound = row.get("direction") == "inbound"
    target = safe_host(row.get("target", ""))
    peer = safe_address(row.get("address")) or None
    purpose = str(row.get("purpose", ""))
    base: dict[str, Any] = {
        "profile": str(row.get("profile", "")),
        "row": str(row.get("row", "")),
        "target": target,
        "address": peer,
        "reason": reason,
        "status": str(row.get("status", "")),
        "purpose": purpose,
        "doc_port": str(row.get("doc_port", "")),
        "doc_protocol": str(row.get("doc_protocol", "")),
        "direction": "inbound" if inbound else "outbound",
        "detail": str(row.get("detail", "")),
    }
    src = peer or target
    if inbound:
        # The source sends to the Auditor: the Auditor host's firewall takes the rule.
        base.update(source_label=f"{target} ({peer})" if peer else target, destination_label=f"Auditor ({me})",
                    rule_host="Auditor host", remote=peer or "Any")
        where = f"from {src} to this Auditor host ({me})"
    else:
        base.update(source_label=f"Auditor ({me})", destination_label=f"{target} ({peer})" if peer else target,
                    rule_host=target, remote=me)
        where = f"between the Auditor ({me}) and {target}"
    if reason == "unresolved":
        return Fix(**base, advice=f"fix DNS: {target} does not resolve from the Auditor host; add or correct its DNS record (or the inventory name)")
    if reason in _NOT_A_PORT:
        return Fix(**base, advice=_NOT_A_PORT[reason])
    transports = [str(c.get("protocol", "")).lower() for c in failing]
    protocol = "udp" if transports and all(t == "udp" for t in transports) else "tcp"
    ports = tuple(dict.fromkeys(p for p in (_port_text(c.get("port")) for c in failing) if p))
    if any(t == "icmp" for t in transports) and not ports:
        return Fix(**base, opens=True, groups=("File and Printer Sharing",), protocol="icmp",
                   advice=f"ICMP echo gets no answer {where}: enable File and Printer Sharing (Echo Request) on {target} and allow ICMP echo on the path")
    groups = () if inbound else _groups_for(row, failing)
    ontap = () if inbound else _ontap_services(row, failing)
    what = f"{protocol.upper()} {', '.join(ports) or row.get('doc_port', '')}"
    if reason == "refused":
        advice = (
            f"nothing listens on {what} on {target if not inbound else 'the Auditor host'} (or a host firewall rejects): "
            f"check that the service runs; if it does, allow {what} {where}"
        )
    elif reason in _PATH_REASONS or reason == "not-seen":
        advice = (
            f"a firewall between {('the source ' + src) if inbound else 'the Auditor (' + me + ')'} and "
            f"{'the Auditor host' if inbound else target} drops {what}: allow it on that path and on "
            f"{'the Auditor host' if inbound else 'the target'}"
        )
        if reason == "unreachable":
            advice = f"no route or a firewall rejects with host-unreachable {where}: check routing, then " + advice
        if reason == "not-seen":
            advice = f"nothing arrived {where}: check that the source sends to this host; if it does, " + advice
    else:
        advice = f"{reason or 'failed'}: allow {what} {where} if a firewall is involved; see the detail"
    if groups:
        advice += "; on " + ("the Auditor host" if inbound else target) + " enable the predefined rule group(s) " + ", ".join(groups)
    if ontap:
        advice += f"; on the ONTAP cluster allow the {'/'.join(ontap)} service in a firewall policy for the Auditor"
    return Fix(**base, opens=True, protocol=protocol, ports=ports, groups=groups, ontap_services=ontap, advice=advice)


def _check_fails(check: Mapping[str, Any], strict: bool) -> bool:
    try:
        return is_failure(Status(check.get("status")), strict)
    except ValueError:
        return False


# ---------------------------------------------------------------- renderers


def _ps_quote(text: str) -> str:
    return "'" + safe_text(text, 900).replace("'", "''") + "'"


def powershell(fixes: Iterable[Fix]) -> str:
    """New-NetFirewallRule / Enable-NetFirewallRule lines, grouped by the host that runs them."""
    lines = ["# portready: Windows Firewall rules for the failed rows (run in an elevated PowerShell on each host named)"]
    done: set[str] = set()
    for host, items in _by_host(fixes):
        lines += ["", f"# ---- on {host}"]
        for f in items:
            lines.append(f"# {safe_text(f.profile, 60)}/{safe_text(f.row, 60)} -> {f.target}: {safe_text(f.advice, 400)}")
            if f.ontap_services:
                lines.append("# an ONTAP cluster takes no Windows rule: see `portready fix --format ontap`")
            if not f.opens:
                continue
            for group in f.groups:
                cmd = f"Enable-NetFirewallRule -DisplayGroup {_ps_quote(group)}"
                key = f"{host}|{cmd}"
                if key not in done:
                    done.add(key)
                    lines.append(cmd)
                    if safe_address(f.remote):  # scoping narrows the group for every other manager too
                        lines.append(f"# optional, narrows the whole group: Set-NetFirewallRule -DisplayGroup {_ps_quote(group)} -RemoteAddress {f.remote}")
            if f.ports and not f.groups and not f.ontap_services and f.protocol in ("tcp", "udp"):
                remote = f.remote if safe_address(f.remote) or f.remote == "Any" else "Any"
                cmd = (
                    f"New-NetFirewallRule -DisplayName {_ps_quote(f.display_name)} -Direction Inbound "
                    f"-Protocol {f.protocol.upper()} -LocalPort {','.join(f.ports)} -RemoteAddress {remote} "
                    f"-Action Allow -Description {_ps_quote(f.purpose)}"
                )
                key = f"{host}|{f.protocol}|{','.join(f.ports)}|{remote}"
                if key not in done:
                    done.add(key)
                    lines.append(cmd)
            if f.remote == AUDITOR_PLACEHOLDER:
                lines.append("# replace <auditor address> with the Auditor server's address (portready found none)")
    return "\n".join(lines) + "\n"


def netsh(fixes: Iterable[Fix]) -> str:
    """`netsh advfirewall firewall` lines (cmd.exe), grouped by host."""
    lines = ["REM portready: Windows Firewall rules for the failed rows (run in an elevated cmd on each host named)"]
    done: set[str] = set()
    for host, items in _by_host(fixes):
        lines += ["", f"REM ---- on {host}"]
        for f in items:
            lines.append(f"REM {safe_text(f.profile, 60)}/{safe_text(f.row, 60)} -> {f.target}: {safe_text(f.advice, 400)}")
            if not f.opens:
                continue
            for group in f.groups:
                cmd = f'netsh advfirewall firewall set rule group="{safe_text(group)}" new enable=yes'
                if f"{host}|{cmd}" not in done:
                    done.add(f"{host}|{cmd}")
                    lines.append(cmd)
            if f.ports and not f.groups and not f.ontap_services and f.protocol in ("tcp", "udp"):
                remote = f.remote if safe_address(f.remote) else "any"
                cmd = (
                    f'netsh advfirewall firewall add rule name="{f.display_name}" dir=in action=allow '
                    f"protocol={f.protocol.upper()} localport={','.join(f.ports)} remoteip={remote} "
                    f'description="{safe_text(f.purpose, 900)}"'
                )
                key = f"{host}|{f.protocol}|{','.join(f.ports)}|{remote}"
                if key not in done:
                    done.add(key)
                    lines.append(cmd)
    return "\n".join(lines) + "\n"


def ontap(fixes: Iterable[Fix]) -> str:
    """The ONTAP firewall policy commands of the vendor's document, for the failed NetApp rows."""
    items = [f for f in fixes if f.ontap_services and f.opens]
    if not items:
        return "# portready: no failed NetApp ONTAP row\n"
    subnet = _host_network(items[0].remote)
    services = list(dict.fromkeys(s for f in items for s in f.ontap_services))
    clusters = ", ".join(dict.fromkeys(f.target for f in items))
    lines = [
        f"# portready: NetApp ONTAP firewall policy for the Auditor ({items[0].remote}) on {clusters}",
        f"# {subnet} is the Auditor's address; use its subnet instead if the policy should cover it.",
        f"# Replace {SVM_PLACEHOLDER} with the SVM (vserver) and {LIF_PLACEHOLDER} with its data LIF.",
        "# ONTAP 9.10.1 and later deprecate `system services firewall policy` (see NetApp's ONTAP 9.10.1 commands).",
        "",
        "# Clustered Data ONTAP 8.3, ONTAP 9.0 - 9.10: create the policy (or `modify` an existing one)",
    ]
    for s in services:
        lines.append(f"system services firewall policy create -policy {ONTAP_POLICY} -service {s} -vserver {SVM_PLACEHOLDER} -allow-list {subnet}")
    lines += ["", "# Clustered Data ONTAP 8.2"]
    for s in services:
        lines.append(
            f"system services firewall policy create -policy {ONTAP_POLICY} -service {s} -vserver {SVM_PLACEHOLDER} -action allow -ip-list {subnet}"
        )
    lines += [
        "",
        "# then apply the policy to the LIF and verify",
        f"network interface modify -vserver {SVM_PLACEHOLDER} -lif {LIF_PLACEHOLDER} -firewall-policy {ONTAP_POLICY}",
        "network interface show -fields firewall-policy",
    ]
    return "\n".join(lines) + "\n"


def _host_network(address: str) -> str:
    try:
        addr = ipaddress.ip_address(address)
    except ValueError:
        return "<auditor subnet>"
    return f"{addr}/{32 if addr.version == 4 else 128}"


TABLE_COLUMNS = ("source", "destination", "port", "protocol", "purpose", "action")


def table_rows(fixes: Iterable[Fix]) -> list[dict[str, str]]:
    """Rows for a third-party firewall change request: source, destination, port, protocol, purpose."""
    out: list[dict[str, str]] = []
    for f in fixes:
        out.append({
            "source": f.source_label,
            "destination": f.destination_label,
            "port": ", ".join(f.ports) or f.doc_port,
            "protocol": f.protocol.upper() if f.protocol else f.doc_protocol,
            "purpose": f.purpose,
            "action": f.advice if not f.opens else ("allow" + (f" (group: {', '.join(f.groups)})" if f.groups else "")),
        })
    return out


def table(fixes: Iterable[Fix]) -> str:
    """Plain text: one line per fix, then what to do."""
    fixes = list(fixes)
    if not fixes:
        return "No failed row: nothing to open.\n"
    rows = table_rows(fixes)
    widths = {c: min(40, max(len(c), *(len(_one_line(r[c])) for r in rows))) for c in TABLE_COLUMNS[:4]}
    head = "  ".join(c.upper().ljust(widths[c]) for c in TABLE_COLUMNS[:4]) + "  PURPOSE"
    lines = [head]
    for f, r in zip(fixes, rows, strict=True):
        lines.append("  ".join(_one_line(r[c])[:40].ljust(widths[c]) for c in TABLE_COLUMNS[:4]) + "  " + _one_line(r["purpose"])[:120])
        lines.append("    -> " + _one_line(f.advice))
    return "\n".join(lines) + "\n"


def _one_line(text: Any) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in str(text))


def _by_host(fixes: Iterable[Fix]) -> list[tuple[str, list[Fix]]]:
    groups: dict[str, list[Fix]] = {}
    for f in fixes:
        label = f.rule_host if f.rule_host == "Auditor host" else f"{f.rule_host}" + (f" ({f.address})" if f.address else "")
        groups.setdefault(label, []).append(f)
    return list(groups.items())


FORMATS = ("table", "powershell", "netsh", "ontap", "markdown")


def render(fixes: list[Fix], fmt: str) -> str:
    if fmt == "powershell":
        return powershell(fixes)
    if fmt == "netsh":
        return netsh(fixes)
    if fmt == "ontap":
        return ontap(fixes)
    if fmt == "markdown":
        from scanner.reporters.markdown import fixes_markdown

        return fixes_markdown(fixes)
    if fmt == "table":
        return table(fixes)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
