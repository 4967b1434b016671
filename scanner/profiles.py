"""Load and validate the profile catalogue (profiles/*.yaml) and the role list.

A profile is one table of the vendor's ports document; each row says what must
be reachable, each check says how to prove it (a probe from the registry).
Everything is validated on load, with file and line, before a packet is sent.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from scanner.errors import ConfigError
from scanner.models import CheckSpec, Direction, PortRange, Profile, Role, Row, Transport
from scanner.yamlsrc import line_of, load_yaml

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_RANGE = re.compile(r"^\s*(\d{1,5})\s*-\s*(\d{1,5})\s*$")


def builtin_profiles_dir() -> Path:
    """profiles/ shipped in the wheel, or the repository's profiles/ in a checkout."""
    here = Path(__file__).resolve().parent
    packaged = here / "_profiles"
    return packaged if packaged.is_dir() else here.parent / "profiles"


# The schema, declared once: field -> (accepted types, required). A small validator
# instead of a model library keeps `portready` quick to start (it loads every profile).
_DOC = {"port": (str, True), "protocol": (str, True), "source": (str, True), "target": (str, True),
        "purpose": (str, True)}  # fmt: skip
_CHECK = {"protocol": (str, True), "probe": (str, True), "port": ((int, str, type(None)), False),
          "setting": ((str, type(None)), False), "options": (dict, False)}  # fmt: skip
_ROW = {"id": (str, True), "doc": (dict, True), "direction": (str, True), "source": (str, True),
        "target": (str, True), "checks": (list, True), "group": ((str, type(None)), False),
        "derived": (bool, False), "note": ((str, type(None)), False), "endpoints": (list, False)}  # fmt: skip
_PROFILE = {"id": (str, True), "title": (str, True), "section": (str, True),
            "derived_from": ((str, type(None)), False), "rows": (list, True)}  # fmt: skip
_ROLE = {"id": (str, True), "title": (str, True), "description": (str, False), "local": (bool, False),
         "internet": (bool, False)}  # fmt: skip
_ROLES = {"roles": (list, True)}


class _Invalid(Exception):
    def __init__(self, loc: tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def _fields(value: Any, loc: tuple[Any, ...], spec: Mapping[str, tuple[Any, bool]]) -> Mapping[str, Any]:
    """Check a mapping against a spec: unknown keys first (a typo points at its own line)."""
    if not isinstance(value, dict):
        raise _Invalid(loc, f"expected a mapping, got {type(value).__name__}")
    for key in value:
        if key not in spec:
            raise _Invalid((*loc, key), "unknown key")
    for key, (types, required) in spec.items():
        if key not in value:
            if required:
                raise _Invalid((*loc, key), "field required")
            continue
        item = value[key]
        allowed = types if isinstance(types, tuple) else (types,)
        if not isinstance(item, allowed) or (isinstance(item, bool) and bool not in allowed):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise _Invalid((*loc, key), f"expected {names}, got {type(item).__name__}")
    return value


def _slug(value: str, loc: tuple[Any, ...]) -> str:
    if not _SLUG.match(value):
        raise _Invalid(loc, f"{value!r} is not an id (lower-case letters, digits and dashes)")
    return value


def _port(value: int | str | None, loc: tuple[Any, ...]) -> int | PortRange | None:
    if value is None or isinstance(value, int):
        if isinstance(value, int) and not 1 <= value <= 65535:
            raise _Invalid(loc, f"port {value} is outside 1-65535")
        return value
    m = _RANGE.match(value)
    if not m:
        raise _Invalid(loc, f"port {value!r} is neither a number nor a range like 1024-65535")
    low, high = int(m.group(1)), int(m.group(2))
    if not 1 <= low <= high <= 65535:
        raise _Invalid(loc, f"port range {value!r} must be within 1-65535, low to high")
    return PortRange(low, high)


def _check(value: Any, loc: tuple[Any, ...]) -> CheckSpec:
    check = _fields(value, loc, _CHECK)
    if check["protocol"] not in ("tcp", "udp", "icmp"):
        raise _Invalid((*loc, "protocol"), f"protocol {check['protocol']!r} is not tcp, udp or icmp")
    setting = check.get("setting")
    return CheckSpec(
        protocol=Transport(check["protocol"]),
        probe=_slug(check["probe"], (*loc, "probe")),
        port=_port(check.get("port"), (*loc, "port")),
        setting=_slug(setting, (*loc, "setting")) if setting is not None else None,
        options=dict(check.get("options") or {}),
    )


@dataclass(frozen=True)
class Catalogue:
    profiles: dict[str, Profile]
    roles: dict[str, Role]
    local_roles: frozenset[str]

    def rows(self) -> list[Row]:
        return [row for profile in self.profiles.values() for row in profile.rows]


def _invalid(path: Path, data: Any, exc: _Invalid) -> ConfigError:
    where = ".".join(str(p) for p in exc.loc) or "file"
    return ConfigError(str(path), line_of(data, exc.loc), f"{where}: {exc.message}")


def load_roles(path: Path) -> tuple[dict[str, Role], frozenset[str]]:
    data = load_yaml(path, "role list")
    roles: dict[str, Role] = {}
    local: set[str] = set()
    try:
        for i, item in enumerate(_fields(data, (), _ROLES)["roles"]):
            role = _fields(item, ("roles", i), _ROLE)
            rid = _slug(role["id"], ("roles", i, "id"))
            if rid in roles:
                raise _Invalid(("roles", i), f"duplicate role {rid!r}")
            roles[rid] = Role(rid, role["title"], role.get("description", ""), bool(role.get("internet", False)))
            if role.get("local"):
                local.add(rid)
    except _Invalid as exc:
        raise _invalid(path, data, exc) from None
    return roles, frozenset(local)


def _row(
    value: Any, loc: tuple[Any, ...], profile: Mapping[str, Any], roles: Mapping[str, Role], probes: Mapping[str, Any]
) -> Row:
    """One row: shape, roles and probes (the registry checks each check's options)."""
    row = _fields(value, loc, _ROW)
    rid = _slug(row["id"], (*loc, "id"))
    doc = _fields(row["doc"], (*loc, "doc"), _DOC)
    if row["direction"] not in ("outbound", "inbound"):
        raise _Invalid((*loc, "direction"), f"direction {row['direction']!r} is not outbound or inbound")
    for field_name in ("source", "target"):
        if _slug(row[field_name], (*loc, field_name)) not in roles:
            raise _Invalid((*loc, field_name), f"row {rid!r}: unknown role {row[field_name]!r} (see profiles/roles.yaml)")
    if not row["checks"]:
        raise _Invalid((*loc, "checks"), "checks: a row needs at least one check")
    endpoints = row.get("endpoints") or []
    if not all(isinstance(e, str) for e in endpoints):
        raise _Invalid((*loc, "endpoints"), "endpoints: a list of host names")
    checks: list[CheckSpec] = []
    for j, item in enumerate(row["checks"]):
        cloc = (*loc, "checks", j)
        check = _check(item, cloc)
        probe = probes.get(check.probe)
        if probe is None:
            raise _Invalid((*cloc, "probe"), f"row {rid!r}: unknown probe {check.probe!r}; known: {', '.join(sorted(probes))}")
        if check.protocol not in probe.transports:
            raise _Invalid((*cloc, "protocol"), f"row {rid!r}: probe {check.probe!r} does not run over {check.protocol.value}")
        if isinstance(check.port, PortRange) and not probe.accepts_range:
            raise _Invalid((*cloc, "port"), f"row {rid!r}: probe {check.probe!r} takes a single port, not a range")
        if check.protocol is Transport.ICMP and check.port is not None:
            raise _Invalid((*cloc, "port"), f"row {rid!r}: ICMP checks have no port")
        if check.protocol is not Transport.ICMP and check.port is None and check.setting is None:
            raise _Invalid(cloc, f"row {rid!r}: a TCP/UDP check needs a port or a setting that gives it")
        try:
            check = dataclasses.replace(check, options=probe.load_options(check.options))  # parsed once, here
        except ValueError as exc:
            raise _Invalid((*cloc, "options"), f"row {rid!r}: {exc}") from None
        checks.append(check)
    return Row(
        profile=profile["id"],
        id=rid,
        section=profile["section"],
        doc_port=doc["port"],
        doc_protocol=doc["protocol"],
        doc_source=doc["source"],
        doc_target=doc["target"],
        purpose=doc["purpose"],
        direction=Direction(row["direction"]),
        source=row["source"],
        target=row["target"],
        checks=tuple(checks),
        group=row.get("group"),
        derived=bool(row.get("derived", False)),
        note=row.get("note"),
        endpoints=tuple(endpoints),
        internet=roles[row["target"]].internet,
    )


def load_profile(path: Path, roles: dict[str, Role]) -> Profile:
    """Load one profile file; every mistake is a ConfigError naming file and line."""
    from scanner.probes import registry

    data = load_yaml(path, "profile")
    probes = registry()
    rows: list[Row] = []
    try:
        profile = _fields(data, (), _PROFILE)
        pid = _slug(profile["id"], ("id",))
        if pid != path.stem:
            raise _Invalid(("id",), f"id {pid!r} must match the file name {path.stem!r}")
        if not profile["rows"]:
            raise _Invalid(("rows",), "a profile needs at least one row")
        seen: set[str] = set()
        for i, item in enumerate(profile["rows"]):
            row = _row(item, ("rows", i), profile, roles, probes)
            if row.id in seen:
                raise _Invalid(("rows", i, "id"), f"row {row.id!r}: duplicate row id")
            seen.add(row.id)
            rows.append(dataclasses.replace(row, line=line_of(data, ("rows", i)) or 0))
    except _Invalid as exc:
        raise _invalid(path, data, exc) from None
    return Profile(pid, profile["title"], profile["section"], tuple(rows), str(path), profile.get("derived_from"))


def load_catalogue(extra_dirs: list[Path] | None = None) -> Catalogue:
    """The built-in profiles, then each --profiles DIR (same id overrides, new ids add)."""
    dirs = [builtin_profiles_dir(), *(extra_dirs or [])]
    roles: dict[str, Role] = {}
    local: set[str] = set()
    for d in dirs:
        if not d.is_dir():
            raise ConfigError(str(d), None, "not a folder of profiles")
        roles_file = d / "roles.yaml"
        if roles_file.is_file():
            more, more_local = load_roles(roles_file)
            roles.update(more)
            local |= more_local
    profiles: dict[str, Profile] = {}
    for d in dirs:
        for path in sorted(d.glob("*.yaml")):
            if path.name == "roles.yaml":
                continue
            profile = load_profile(path, roles)
            profiles[profile.id] = profile
    return Catalogue(profiles, roles, frozenset(local))
