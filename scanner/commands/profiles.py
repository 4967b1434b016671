"""`portready profiles`: the catalogue of documented rows, roles and probes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanner.errors import UsageError
from scanner.models import Row

if TYPE_CHECKING:
    from rich.text import Text


def row_to_dict(row: Row) -> dict[str, Any]:
    return {
        "profile": row.profile,
        "row": row.id,
        "section": row.section,
        "group": row.group,
        "doc_port": row.doc_port,
        "doc_protocol": row.doc_protocol,
        "ports": row.ports,
        "protocols": row.protocols,
        "direction": row.direction.value,
        "source": row.source,
        "target": row.target,
        "doc_source": row.doc_source,
        "doc_target": row.doc_target,
        "purpose": row.purpose,
        "probes": row.probes,
        "checks": [
            {"protocol": c.protocol.value, "port": c.port if isinstance(c.port, int) or c.port is None else str(c.port),
             "setting": c.setting, "probe": c.probe, "options": dict(c.options)}
            for c in row.checks
        ],
        "endpoints": list(row.endpoints),
        "derived": row.derived,
    }


def _plain(value: Any) -> Text:
    """Profile text as literal text: no rich markup, no terminal escapes (profiles are user files)."""
    from rich.text import Text

    return Text("".join(ch if ch.isprintable() or ch == "\n" else "\ufffd" for ch in str(value)))


def _option_lines(probe: Any) -> str:
    """A probe's options, one a line: typed `Options` with defaults and help, else `option_types`."""
    from scanner.probes._options import describe

    if probe.Options is not None:
        return "\n".join(f"{n} ({d}): {h}" if h else f"{n} ({d})" for n, d, h in describe(probe.Options))
    return "\n".join(f"{n}: {getattr(t, '__name__', t)}" for n, t in sorted(probe.option_types.items()))


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from scanner.probes import registry
    from scanner.profiles import load_catalogue

    catalogue = load_catalogue(list(args.profile_dirs))
    if args.roles:
        if args.json:
            json.dump([{"id": r.id, "title": r.title, "description": r.description} for r in catalogue.roles.values()], sys.stdout, indent=2)
            print()
            return 0
        table = Table(title="Roles (use as --target ROLE=HOST or in the inventory's targets:)")
        for col in ("Role id", "Title", "Description"):
            table.add_column(col, overflow="fold")
        for r in catalogue.roles.values():
            table.add_row(_plain(r.id), _plain(r.title), _plain(r.description))
        Console(highlight=False).print(table)
        return 0
    if args.probes:
        probes = registry()
        table = Table(title="Probes")
        table.add_column("Probe")
        table.add_column("Transports")
        table.add_column("What it proves", overflow="fold")
        table.add_column("Options (default)", overflow="fold")
        for name in sorted(probes):
            p = probes[name]
            table.add_row(_plain(name), _plain(", ".join(t.value for t in p.transports)), _plain(p.summary),
                          _plain(_option_lines(p)))
        Console(highlight=False).print(table)
        return 0
    ids = [args.profile] if args.profile else list(catalogue.profiles)
    for pid in ids:
        if pid not in catalogue.profiles:
            raise UsageError(f"unknown profile {pid!r}; known: {', '.join(catalogue.profiles)}")
    rows = [row for pid in ids for row in catalogue.profiles[pid].rows]
    if args.json:
        json.dump([row_to_dict(r) for r in rows], sys.stdout, indent=2, ensure_ascii=False)
        print()
        return 0
    console = Console(highlight=False)
    for pid in ids:
        profile = catalogue.profiles[pid]
        table = Table(title=_plain(f"{pid} — {profile.section}" + (" (derived)" if profile.derived_from else "")), show_lines=False)
        for col in ("Row", "Port", "Protocol", "Direction", "Source → Target", "Checks", "Purpose"):
            table.add_column(col, overflow="fold")
        for row in profile.rows:
            checks = ", ".join(f"{c.protocol.value}/{c.port_label}:{c.probe}" for c in row.checks)
            cells = (row.id, row.doc_port, row.doc_protocol, row.direction.value, f"{row.source} → {row.target}",
                     checks, row.purpose)  # fmt: skip
            table.add_row(*(_plain(c) for c in cells))
        console.print(table)
    console.print(_plain(f"{len(rows)} rows in {len(ids)} profiles. Roles: `portready profiles --roles`; probes: `--probes`."))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("profiles", help="list the documented rows (the catalogue)", description="List profiles and their documented rows.")
    p.add_argument("profile", nargs="?", help="one profile id")
    p.add_argument("--json", action="store_true", help="one JSON object per documented row")
    p.add_argument("--roles", action="store_true", help="list the role ids targets are given under")
    p.add_argument("--probes", action="store_true", help="list the probes and what each proves")
    p.add_argument("--profiles", type=Path, action="append", default=[], dest="profile_dirs", metavar="DIR")
    p.set_defaults(func=_run)
