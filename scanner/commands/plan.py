"""`portready plan`: what a scan would do (rows x targets x probes), sending nothing."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from scanner.cli_common import add_input_options, add_run_options, load_run_inputs
from scanner.models import Depth


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from scanner.engine import build_plan
    from scanner.selection import check_plan_size, require_targets, select_rows

    inputs = load_run_inputs(args, need_credentials=False)
    require_targets(inputs.inventory, inputs.profiles)
    rows = select_rows(inputs.catalogue, inputs.profiles, inputs.inventory)
    check_plan_size(rows, inputs.inventory)
    plan = build_plan(rows, inputs.inventory.targets, depth=Depth(inputs.depth), settings=inputs.settings,
                      use_endpoints=bool(inputs.profiles))
    items: list[dict[str, Any]] = [
        {"profile": p.row.profile, "row": p.row.id, "doc_port": p.row.doc_port, "target": p.target.host,
         "role": p.target.role, "checks": [
             {"protocol": c.spec.protocol.value, "port": c.port_label, "probe": c.probe,
              "decided": None if c.preset is None else f"{c.preset.status.value}: {c.preset.reason.value}"}
             for c in p.checks]}
        for p in plan.rows
    ]
    if args.json:
        json.dump({"rows": items, "probes": plan.probe_count, "hosts": len(plan.hosts),
                   "untargeted": [r.key for r in plan.untargeted], "inbound": [r.key for r in plan.inbound]},
                  sys.stdout, indent=2)
        print()
        return 0
    console = Console(highlight=False)
    table = Table(title=f"Plan ({inputs.depth} depth) — nothing is sent")
    for col in ("Profile/row", "Documented port", "Target", "Checks"):
        table.add_column(col, overflow="fold")
    for item in items:
        checks = "\n".join(f"{c['protocol']}/{c['port']} {c['probe']}" + (f" ({c['decided']})" if c["decided"] else "") for c in item["checks"])
        table.add_row(Text(f"{item['profile']}/{item['row']}"), Text(item["doc_port"]), Text(item["target"]), Text(checks))
    console.print(table)
    console.print(Text(f"{len(items)} row x target pairs, {plan.probe_count} probes against {len(plan.hosts)} hosts."))
    if plan.untargeted:
        console.print(Text(f"{len(plan.untargeted)} rows have no target: " + ", ".join(sorted({r.target for r in plan.untargeted}))))
    if plan.inbound:
        console.print(Text(f"{len(plan.inbound)} inbound rows: prove them with `portready listen`."))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "plan", help="show what a scan would do, sending nothing",
        description=(
            "List every row x target x check a scan with the same inputs would run, and which checks are "
            "decided without sending anything (ports that need the inventory, inbound rows). Nothing is sent."
        ),
    )  # fmt: skip
    add_input_options(p)
    add_run_options(p, only={"--depth"})  # timeouts, TLS trust and the proxy change nothing in a plan
    p.add_argument("--json", action="store_true", help="the plan as JSON")
    p.set_defaults(func=_run)
