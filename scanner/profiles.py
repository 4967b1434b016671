"""Load and validate the profile catalogue (profiles/*.yaml) and the role list.

A profile is one table of the vendor's ports document; each row says what must
be reachable, each check says how to prove it (a probe from the registry).
Everything is validated on load, with file and line, before a packet is sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from scanner.errors import ConfigError
from scanner.models import CheckSpec, Direction, PortRange, Profile, Role, Row, Transport
from scanner.yamlsrc import line_of, load_yaml

_SLUG = r"^[a-z0-9][a-z0-9-]{0,62}$"
_RANGE = re.compile(r"^\s*(\d{1,5})\s*-\s*(\d{1,5})\s*$")


def builtin_profiles_dir() -> Path:
    """profiles/ shipped in the wheel, or the repository's profiles/ in a checkout."""
    here = Path(__file__).resolve().parent
    packaged = here / "_profiles"
    return packaged if packaged.is_dir() else here.parent / "profiles"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DocCells(_Strict):
    """The row's cells exactly as the vendor's table writes them."""

    port: str
    protocol: str
    source: str
    target: str
    purpose: str


class CheckModel(_Strict):
    protocol: Literal["tcp", "udp", "icmp"]
    probe: str = Field(pattern=_SLUG)
    port: Optional[Union[int, str]] = None
    setting: Optional[str] = Field(default=None, pattern=_SLUG)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, bool):
            raise ValueError("a port is a number or a range like 1024-65535")
        if isinstance(value, int):
            if not 1 <= value <= 65535:
                raise ValueError(f"port {value} is outside 1-65535")
        elif isinstance(value, str):
            m = _RANGE.match(value)
            if not m:
                raise ValueError(f"port {value!r} is neither a number nor a range like 1024-65535")
            low, high = int(m.group(1)), int(m.group(2))
            if not 1 <= low <= high <= 65535:
                raise ValueError(f"port range {value!r} must be within 1-65535, low to high")
        return value


class RowModel(_Strict):
    id: str = Field(pattern=_SLUG)
    doc: DocCells
    direction: Literal["outbound", "inbound"]
    source: str = Field(pattern=_SLUG)
    target: str = Field(pattern=_SLUG)
    checks: list[CheckModel] = Field(min_length=1)
    group: Optional[str] = None
    derived: bool = False
    note: Optional[str] = None
    endpoints: list[str] = Field(default_factory=list)


class ProfileModel(_Strict):
    id: str = Field(pattern=_SLUG)
    title: str
    section: str
    derived_from: Optional[str] = None
    rows: list[RowModel] = Field(min_length=1)


class RoleModel(_Strict):
    id: str = Field(pattern=_SLUG)
    title: str
    description: str = ""
    local: bool = False  # the Auditor host itself


class RolesModel(_Strict):
    roles: list[RoleModel]


@dataclass(frozen=True)
class Catalogue:
    profiles: dict[str, Profile]
    roles: dict[str, Role]
    local_roles: frozenset[str]

    def rows(self) -> list[Row]:
        return [row for profile in self.profiles.values() for row in profile.rows]


def _invalid(path: Path, data: Any, exc: ValidationError) -> ConfigError:
    errors = exc.errors()
    # A misspelt key also makes the right one "missing"; the unknown key points at the line to fix.
    err = next((e for e in errors if e.get("type") == "extra_forbidden"), errors[0])
    loc = tuple(err.get("loc", ()))
    where = ".".join(str(p) for p in loc) or "file"
    msg = "unknown key" if err.get("type") == "extra_forbidden" else err.get("msg", "invalid")
    return ConfigError(str(path), line_of(data, loc), f"{where}: {msg}")


def load_roles(path: Path) -> tuple[dict[str, Role], frozenset[str]]:
    data = load_yaml(path, "role list")
    try:
        model = RolesModel.model_validate(data)
    except ValidationError as exc:
        raise _invalid(path, data, exc) from None
    roles: dict[str, Role] = {}
    for i, role in enumerate(model.roles):
        if role.id in roles:
            raise ConfigError(str(path), line_of(data, ("roles", i)), f"duplicate role {role.id!r}")
        roles[role.id] = Role(role.id, role.title, role.description)
    return roles, frozenset(r.id for r in model.roles if r.local)


def _check_spec(check: CheckModel) -> CheckSpec:
    port: int | PortRange | None
    if isinstance(check.port, str):
        m = _RANGE.match(check.port)
        assert m is not None  # validated above
        port = PortRange(int(m.group(1)), int(m.group(2)))
    else:
        port = check.port
    return CheckSpec(
        protocol=Transport(check.protocol),
        probe=check.probe,
        port=port,
        setting=check.setting,
        options=dict(check.options),
    )


def load_profile(path: Path, roles: dict[str, Role]) -> Profile:
    """Load one profile file; every mistake is a ConfigError naming file and line."""
    from scanner.probes import registry

    data = load_yaml(path, "profile")
    try:
        model = ProfileModel.model_validate(data)
    except ValidationError as exc:
        raise _invalid(path, data, exc) from None
    if model.id != path.stem:
        raise ConfigError(str(path), line_of(data, ("id",)), f"id {model.id!r} must match the file name {path.stem!r}")
    probes = registry()
    rows: list[Row] = []
    seen: set[str] = set()
    for i, row in enumerate(model.rows):
        row_line = line_of(data, ("rows", i)) or 0

        def fail(msg: str, *loc: Any, _i: int = i, _id: str = row.id) -> ConfigError:
            return ConfigError(str(path), line_of(data, ("rows", _i, *loc)), f"row {_id!r}: {msg}")

        if row.id in seen:
            raise fail("duplicate row id", "id")
        seen.add(row.id)
        for field_name in ("source", "target"):
            role = getattr(row, field_name)
            if role not in roles:
                raise fail(f"unknown role {role!r} (see profiles/roles.yaml)", field_name)
        for j, check in enumerate(row.checks):
            probe = probes.get(check.probe)
            if probe is None:
                raise fail(f"unknown probe {check.probe!r}; known: {', '.join(sorted(probes))}", "checks", j, "probe")
            if Transport(check.protocol) not in probe.transports:
                raise fail(f"probe {check.probe!r} does not run over {check.protocol}", "checks", j, "protocol")
            if isinstance(check.port, str) and not probe.accepts_range:
                raise fail(f"probe {check.probe!r} takes a single port, not a range", "checks", j, "port")
            if check.protocol == "icmp" and check.port is not None:
                raise fail("ICMP checks have no port", "checks", j, "port")
            if check.protocol != "icmp" and check.port is None and check.setting is None:
                raise fail("a TCP/UDP check needs a port or a setting that gives it", "checks", j)
            try:
                probe.validate(check.options)
            except ValueError as exc:
                raise fail(str(exc), "checks", j, "options") from None
        rows.append(
            Row(
                profile=model.id,
                id=row.id,
                section=model.section,
                doc_port=row.doc.port,
                doc_protocol=row.doc.protocol,
                doc_source=row.doc.source,
                doc_target=row.doc.target,
                purpose=row.doc.purpose,
                direction=Direction(row.direction),
                source=row.source,
                target=row.target,
                checks=tuple(_check_spec(c) for c in row.checks),
                group=row.group,
                derived=row.derived,
                note=row.note,
                endpoints=tuple(row.endpoints),
                line=row_line,
            )
        )
    return Profile(model.id, model.title, model.section, tuple(rows), str(path), model.derived_from)


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
