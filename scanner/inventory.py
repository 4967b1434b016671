"""Targets, settings and credential references: from an inventory file and the command line.

    targets:
      domain-controllers: [dc1.corp.example, 10.0.5.10-40, 10.0.6.0/28, {file: dcs.txt}]
    settings: {domain: corp.example, ports: {sharepoint-central-admin-port: 2013}}
    credentials:
      domain-controllers: {username: auditor, domain: CORP, password_env: PORTREADY_DC_PASSWORD}
      file-servers: {integrated: true}     # Windows: log on as the current user (SSPI)

Hosts may be names, addresses, CIDR blocks or ranges (10.0.5.10-40 or
10.0.5.10-10.0.5.40); every entry is validated and bounded before anything
is sent. Passwords are never read from the file itself: only from an
environment variable or a prompt.
"""

from __future__ import annotations

import getpass
import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from scanner.errors import ConfigError, UsageError
from scanner.models import Target
from scanner.probes.base import Credentials
from scanner.yamlsrc import LineDict, LineList, read_text

MAX_HOSTS_PER_ENTRY = 65536
MAX_TARGETS = 200_000
_HOSTNAME = re.compile(r"^(?=.{1,253}$)(\*\.)?([A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?$")
_SHORT_RANGE = re.compile(r"^(\d{1,3}\.\d{1,3}\.\d{1,3}\.)(\d{1,3})-(\d{1,3})$")
_TOP_KEYS = {"targets", "settings", "credentials", "profiles", "discover", "version"}
_SETTING_KEYS = {
    "domain", "ports", "timeout", "retries", "concurrency", "per_host", "ca_bundle",
    "trust_private_ca", "proxy", "oracle_service", "sql_instances", "depth",
    "kerberos_client",
}
_CRED_KEYS = {"username", "domain", "password_env", "password_prompt", "integrated"}


@dataclass
class Inventory:
    targets: dict[str, list[Target]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    credential_refs: dict[str, dict[str, Any]] = field(default_factory=dict)
    profiles: list[str] = field(default_factory=list)
    discover: list[dict[str, str]] = field(default_factory=list)
    path: str | None = None
    sha256: str | None = None

    def add(self, role: str, hosts: list[Target]) -> None:
        bucket = self.targets.setdefault(role, [])
        seen = {t.host for t in bucket}
        for target in hosts:
            if target.host not in seen:
                bucket.append(target)
                seen.add(target.host)
        if sum(len(v) for v in self.targets.values()) > MAX_TARGETS:
            raise UsageError(f"more than {MAX_TARGETS} targets in all; split the inventory")

    def describe(self) -> dict[str, Any]:
        """For report headers: where the inventory came from, never its secrets."""
        return {
            "path": self.path,
            "sha256": self.sha256,
            "roles": {role: len(hosts) for role, hosts in sorted(self.targets.items())},
        }


class HostError(ValueError):
    """A host entry is wrong; `problem` says what without repeating the entry (host files may hold secrets)."""

    def __init__(self, message: str, problem: str) -> None:
        super().__init__(message)
        self.problem = problem


def expand_host(entry: str) -> list[str]:
    """A host, address, CIDR block or address range as a list of hosts; HostError if wrong."""
    text = entry.strip()
    if not text:
        raise HostError("empty host", "empty host")
    if "/" in text:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise HostError(f"{text!r} is not a CIDR block", "not a CIDR block") from None
        if net.num_addresses > MAX_HOSTS_PER_ENTRY:
            raise HostError(
                f"{text} has {net.num_addresses} addresses; the limit is {MAX_HOSTS_PER_ENTRY}",
                f"a block of {net.num_addresses} addresses; the limit is {MAX_HOSTS_PER_ENTRY}",
            )
        hosts = list(net.hosts()) if net.num_addresses > 2 else list(net)
        return [str(h) for h in hosts]
    if "-" in text and (_SHORT_RANGE.match(text) or _looks_like_address_range(text) or not _HOSTNAME.match(text)):
        return _expand_range(text)
    try:
        return [str(ipaddress.ip_address(text.strip("[]")))]
    except ValueError:
        pass
    if not _HOSTNAME.match(text) or text.replace(".", "").isdigit():
        raise HostError(
            f"{text!r} is not a host name, address, CIDR block or range",
            "not a host name, address, CIDR block or range",
        )
    return [text.rstrip(".")]


def _looks_like_address_range(text: str) -> bool:
    first, _, last = text.partition("-")
    try:
        ipaddress.ip_address(first.strip())
        ipaddress.ip_address(last.strip())
    except ValueError:
        return False
    return True


def _expand_range(text: str) -> list[str]:
    m = _SHORT_RANGE.match(text)
    try:
        if m:
            first = ipaddress.ip_address(m.group(1) + m.group(2))
            last = ipaddress.ip_address(m.group(1) + m.group(3))
        else:
            a, b = text.split("-", 1)
            first, last = ipaddress.ip_address(a.strip()), ipaddress.ip_address(b.strip())
    except ValueError:
        raise HostError(f"{text!r} is not an address range like 10.0.5.10-40", "not an address range like 10.0.5.10-40") from None
    if first.version != last.version or int(last) < int(first):
        problem = "the range must go from low to high within one address family"
        raise HostError(f"{text!r}: {problem}", problem)
    count = int(last) - int(first) + 1
    if count > MAX_HOSTS_PER_ENTRY:
        problem = f"a range of {count} addresses; the limit is {MAX_HOSTS_PER_ENTRY}"
        raise HostError(f"{text} has {count} addresses; the limit is {MAX_HOSTS_PER_ENTRY}", problem)
    return [str(ipaddress.ip_address(int(first) + i)) for i in range(count)]


def _hosts_from_file(path: Path, origin: str, line: int | None) -> list[str]:
    if not path.is_file():
        raise ConfigError(origin, line, f"host file {str(path)!r} does not exist or is not a regular file")
    hosts: list[str] = []
    for number, raw in enumerate(read_text(path, "host file").splitlines(), start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            hosts.extend(expand_host(text))
        except HostError as exc:
            # Only file:line and what is wrong: a mistaken path (/proc/self/environ, a key
            # file) must not put its contents in an error message or a CI log.
            raise ConfigError(str(path), number, f"{exc.problem} (one host a line; # starts a comment)") from None
        if len(hosts) > MAX_TARGETS:
            raise ConfigError(str(path), number, f"more than {MAX_TARGETS} hosts")
    return hosts


def parse_target_option(value: str, known_roles: Mapping[str, Any]) -> tuple[str, list[Target]]:
    """`ROLE=HOST[,HOST...]` from the command line."""
    role, sep, hosts = value.partition("=")
    role = role.strip()
    if not sep or not role or not hosts.strip():
        raise UsageError(f"--target {value!r}: expected ROLE=HOST[,HOST...]")
    if role not in known_roles:
        raise UsageError(f"--target {value!r}: unknown role {role!r}; see `portready profiles --roles`")
    targets: list[Target] = []
    parts = hosts.split(",")
    for part in parts:
        # Capped as it grows: thousands of /16 blocks in one option must not be expanded first.
        if len(targets) > MAX_TARGETS:
            raise UsageError(f"--target {role}=...: more than {MAX_TARGETS} hosts; split the inventory")
        try:
            targets.extend(Target(role, h) for h in expand_host(part))
        except ValueError as exc:
            raise UsageError(f"--target {role}=...: {exc}") from None
    if len(targets) > MAX_TARGETS:
        raise UsageError(f"--target {role}=...: more than {MAX_TARGETS} hosts; split the inventory")
    return role, targets


def load_inventory(path: Path, known_roles: Mapping[str, Any]) -> Inventory:
    from scanner.yamlsrc import parse_yaml

    text = read_text(path, "inventory")
    origin = str(path)
    data = parse_yaml(text, origin)
    inv = Inventory(path=origin, sha256=hashlib.sha256(text.encode()).hexdigest())
    if data is None:
        return inv
    if not isinstance(data, LineDict):
        raise ConfigError(origin, getattr(data, "line", 1), "an inventory is a mapping with a `targets:` section")

    def line(mapping: Any, key: Any) -> int | None:
        return mapping.key_lines.get(key) if isinstance(mapping, LineDict) else getattr(mapping, "line", None)

    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(origin, line(data, key), f"unknown section {key!r}; expected one of {sorted(_TOP_KEYS)}")
    targets = data.get("targets") or LineDict()
    if not isinstance(targets, LineDict):
        raise ConfigError(origin, line(data, "targets"), "`targets:` maps role ids to lists of hosts")
    for role, entries in targets.items():
        if role not in known_roles:
            raise ConfigError(origin, line(targets, role), f"unknown role {role!r}; see `portready profiles --roles`")
        if isinstance(entries, (str, LineDict)):
            entries = LineList([entries])
            entries.item_lines = [line(targets, role) or 0]
        if not isinstance(entries, LineList):
            raise ConfigError(origin, line(targets, role), f"role {role!r}: expected a list of hosts")
        for i, entry in enumerate(entries):
            where = entries.item_lines[i] if i < len(entries.item_lines) else line(targets, role)
            inv.add(role, _entry_targets(role, entry, path, origin, where))
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError(origin, line(data, "settings"), "`settings:` must be a mapping")
    check_settings(settings, origin, line)
    inv.settings = dict(settings)
    if isinstance(settings.get("ca_bundle"), str):
        inv.settings["ca_bundle"] = str((path.parent / settings["ca_bundle"]).resolve())
    creds = data.get("credentials") or {}
    if not isinstance(creds, dict):
        raise ConfigError(origin, line(data, "credentials"), "`credentials:` maps role ids to accounts")
    for role, ref in creds.items():
        if role not in known_roles:
            raise ConfigError(origin, line(creds, role), f"unknown role {role!r}")
        if isinstance(ref, dict) and "integrated" in ref:
            _check_integrated(ref, role, origin, line)
        elif not isinstance(ref, dict) or "username" not in ref:
            raise ConfigError(
                origin, line(creds, role),
                f"credentials for {role!r} need at least `username` (or `integrated: true` on Windows)",
            )
        if "password" in ref:
            raise ConfigError(
                origin, line(ref, "password"),
                "passwords are not read from the inventory; use password_env: VARIABLE or password_prompt: true",
            )
        for key in ref:
            if key not in _CRED_KEYS:
                raise ConfigError(origin, line(ref, key), f"unknown credential key {key!r}; expected {sorted(_CRED_KEYS)}")
        inv.credential_refs[role] = dict(ref)
    profiles = data.get("profiles") or []
    if not isinstance(profiles, list) or not all(isinstance(p, str) for p in profiles):
        raise ConfigError(origin, line(data, "profiles"), "`profiles:` is a list of profile ids")
    inv.profiles = list(profiles)
    discover = data.get("discover") or []
    if not isinstance(discover, list):
        raise ConfigError(origin, line(data, "discover"), "`discover:` is a list of {domain, dns_server}")
    for item in discover:
        if not isinstance(item, dict) or not {"domain", "dns_server"} <= set(item) or set(item) - {"domain", "dns_server"}:
            raise ConfigError(origin, getattr(item, "line", line(data, "discover")), "each discover entry is {domain: NAME, dns_server: HOST}")
        inv.discover.append({"domain": str(item["domain"]), "dns_server": str(item["dns_server"])})
    return inv


def _entry_targets(role: str, entry: Any, path: Path, origin: str, where: int | None) -> list[Target]:
    if isinstance(entry, (str, int)) and not isinstance(entry, bool):
        try:
            return [Target(role, h) for h in expand_host(str(entry))]
        except ValueError as exc:
            raise ConfigError(origin, where, f"role {role!r}: {exc}") from None
    if isinstance(entry, dict) and set(entry) == {"file"}:
        return [Target(role, h) for h in _hosts_from_file(path.parent / str(entry["file"]), origin, where)]
    if isinstance(entry, dict) and "host" in entry and set(entry) <= {"host", "label"}:
        try:
            hosts = expand_host(str(entry["host"]))
        except ValueError as exc:
            raise ConfigError(origin, where, f"role {role!r}: {exc}") from None
        label = str(entry["label"]) if "label" in entry else None
        return [Target(role, h, label) for h in hosts]
    raise ConfigError(origin, where, f"role {role!r}: an entry is a host, {{file: PATH}} or {{host: H, label: L}}")


def _check_integrated(ref: Mapping[str, Any], role: str, origin: str, line: Callable[[Any, Any], int | None]) -> None:
    """`integrated: true`: logon as the current Windows user (SSPI), so no password source."""
    if not isinstance(ref["integrated"], bool):
        raise ConfigError(origin, line(ref, "integrated"), f"credentials for {role!r}: `integrated` is true or false")
    if not ref["integrated"] and "username" not in ref:
        raise ConfigError(origin, line(ref, "integrated"), f"credentials for {role!r} need `username` when not integrated")
    if ref["integrated"]:
        for key in ("password_env", "password_prompt"):
            if key in ref:
                raise ConfigError(
                    origin, line(ref, key),
                    f"credentials for {role!r}: integrated logon uses the current Windows user's logon, "
                    f"no password; remove `{key}` or `integrated`",
                )


def check_settings(settings: Mapping[str, Any], origin: str, line: Callable[[Any, Any], int | None]) -> None:
    """Every key and value of a settings mapping (the inventory's `settings:` and `--set`)."""

    def bad(key: str, msg: str) -> ConfigError:
        return ConfigError(origin, line(settings, key), f"setting {key!r}: {msg}")

    for key in settings:
        if key not in _SETTING_KEYS:
            raise ConfigError(origin, line(settings, key), f"unknown setting {key!r}; expected one of {sorted(_SETTING_KEYS)}")
    for key in ("timeout",):
        if key in settings and (not isinstance(settings[key], (int, float)) or isinstance(settings[key], bool) or not 0 < settings[key] <= 300):
            raise bad(key, "a number of seconds more than 0 and at most 300")
    for key, lo, hi in (("retries", 0, 10), ("concurrency", 1, 10000), ("per_host", 1, 1000)):
        if key in settings and (not isinstance(settings[key], int) or isinstance(settings[key], bool) or not lo <= settings[key] <= hi):
            raise bad(key, f"a whole number from {lo} to {hi}")
    for key in ("domain", "ca_bundle", "proxy", "oracle_service"):
        if key in settings and (not isinstance(settings[key], str) or not settings[key].strip()):
            raise bad(key, "a non-empty text value")
    if "trust_private_ca" in settings and not isinstance(settings["trust_private_ca"], bool):
        raise bad("trust_private_ca", "true or false")
    ports = settings.get("ports")
    if ports is not None:
        if not isinstance(ports, dict):
            raise bad("ports", "maps setting names to port numbers")
        for name, value in ports.items():
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
                raise ConfigError(origin, line(ports, name), f"port {name!r}: {value!r} is not a port number (1-65535)")
    sql = settings.get("sql_instances")
    if sql is not None and (
        not isinstance(sql, dict)
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536 for v in sql.values())
    ):
        raise bad("sql_instances", "maps instance names to TCP ports (1-65535)")
    if "depth" in settings and settings["depth"] not in ("port", "protocol"):
        raise bad("depth", "port or protocol")
    if "kerberos_client" in settings and (not isinstance(settings["kerberos_client"], str) or not settings["kerberos_client"].strip()):
        raise bad("kerberos_client", "the account name the Kerberos check asks the KDC about (text)")


def resolve_credentials(
    refs: Mapping[str, Mapping[str, Any]],
    *,
    environ: Mapping[str, str] | None = None,
    prompt: Callable[[str], str] | None = None,
) -> dict[str, Credentials]:
    """Read passwords from the named environment variables (or a prompt); never from files."""
    env = os.environ if environ is None else environ
    out: dict[str, Credentials] = {}
    for role, ref in refs.items():
        password: str | None = None
        if ref.get("integrated") is True:
            # SSPI logs on as the current user (scanner/probes/_auth.py): nothing to read.
            out[role] = Credentials(str(ref.get("username", "")), "", str(ref.get("domain", "")), integrated=True)
            continue
        if ref.get("password_env"):
            password = env.get(str(ref["password_env"]))
            if password is None:
                raise UsageError(
                    f"credentials for {role}: environment variable {ref['password_env']} is not set"
                )
        elif ref.get("password_prompt"):
            ask = prompt or getpass.getpass
            password = ask(f"Password for {ref.get('domain', '')}\\{ref['username']} ({role}): ")
        else:
            raise UsageError(f"credentials for {role}: give password_env or password_prompt")
        out[role] = Credentials(str(ref["username"]), password, str(ref.get("domain", "")))
    return out
