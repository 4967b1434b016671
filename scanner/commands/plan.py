"""`portready plan`: what a scan would do, sending nothing: a summary, and every check with --full."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, TextIO

from scanner.cli_common import add_input_options, bounded_int, load_run_inputs, positive_float
from scanner.models import Depth
from scanner.reporters._view import clip

# Offered by plan before the reporting merge: options are contracts, so old command lines and
# scripts still run. They only change how a scan is done, not what it does: accepted, hidden
# from the help, and said to be ignored when given.
_IGNORED: dict[str, dict[str, Any]] = {
    "--timeout": {"type": positive_float}, "--retries": {"type": bounded_int(0, 10)},
    "--concurrency": {"type": bounded_int(1, 10000)}, "--per-host": {"type": bounded_int(1, 1000)},
    "--ca-bundle": {"type": Path}, "--trust-private-ca": {"action": "store_true"}, "--proxy": {},
}  # fmt: skip


def _drop_ignored(args: argparse.Namespace) -> None:
    for flag in _IGNORED:
        attr = flag[2:].replace("-", "_")
        value = getattr(args, attr, None)
        if value is not None and value is not False:
            print(f"portready plan: {flag} does nothing here (plan shows what a scan would do, sending nothing); "
                  "ignored", file=sys.stderr)  # fmt: skip
        setattr(args, attr, None)  # nothing below reads it (no --ca-bundle file check for a plan)


def _items(plan: Any) -> list[dict[str, Any]]:
    return [
        {"profile": p.row.profile, "row": p.row.id, "doc_port": p.row.doc_port, "target": p.target.host,
         "role": p.target.role, "checks": [
             {"protocol": c.spec.protocol.value, "port": c.port_label, "probe": c.probe,
              "decided": None if c.preset is None else f"{c.preset.status.value}: {c.preset.reason.value}"}
             for c in p.checks]}
        for p in plan.rows
    ]


def plan_summary(plan: Any) -> dict[str, Any]:
    """Rows x targets x checks per profile and per role (bounded by the catalogue, not by the targets)."""
    profiles: dict[str, dict[str, Any]] = defaultdict(lambda: {"rows": set(), "targets": set(), "pairs": 0, "checks": 0,
                                                                 "decided": 0, "probes": Counter()})
    roles: dict[str, dict[str, Any]] = defaultdict(lambda: {"targets": set(), "pairs": 0, "checks": 0})
    for p in plan.rows:
        prof, role = profiles[p.row.profile], roles[p.target.role]
        prof["rows"].add(p.row.id)
        prof["targets"].add(p.target.host)
        role["targets"].add(p.target.host)
        prof["pairs"] += 1
        role["pairs"] += 1
        prof["checks"] += len(p.checks)
        role["checks"] += len(p.checks)
        for c in p.checks:
            if c.preset is not None:
                prof["decided"] += 1
            else:
                prof["probes"][c.probe] += 1
    return {
        "pairs": len(plan.rows),
        "checks": sum(v["checks"] for v in profiles.values()),
        "probes": plan.probe_count,
        "hosts": len(plan.hosts),
        "profiles": {k: {"rows": len(v["rows"]), "targets": len(v["targets"]), "pairs": v["pairs"], "checks": v["checks"],
                         "decided_without_sending": v["decided"], "by_probe": dict(v["probes"].most_common())}
                     for k, v in profiles.items()},
        "roles": {k: {"targets": len(v["targets"]), "pairs": v["pairs"], "checks": v["checks"]} for k, v in roles.items()},
    }


def _run(args: argparse.Namespace) -> int:
    from scanner.engine import build_plan
    from scanner.selection import check_plan_size, require_targets, select_rows

    _drop_ignored(args)
    inputs = load_run_inputs(args, need_credentials=False)
    require_targets(inputs.inventory, inputs.profiles)
    rows = select_rows(inputs.catalogue, inputs.profiles, inputs.inventory)
    check_plan_size(rows, inputs.inventory)
    plan = build_plan(rows, inputs.inventory.targets, depth=Depth(inputs.depth), settings=inputs.settings,
                      use_endpoints=bool(inputs.profiles))
    summary = plan_summary(plan)
    if args.json:
        json.dump({"rows": _items(plan), "probes": plan.probe_count, "hosts": len(plan.hosts),
                   "untargeted": [r.key for r in plan.untargeted], "inbound": [r.key for r in plan.inbound],
                   "summary": summary},
                  sys.stdout, indent=2)
        print()
        return 0
    out = sys.stdout
    out.write(f"Plan ({inputs.depth} depth) — nothing is sent\n")
    if args.full:
        _full(plan, out)
    for pid, s in summary["profiles"].items():
        probes = ", ".join(f"{name} {n}" for name, n in list(s["by_probe"].items())[:8])
        out.write(f"  {clip(pid, 100, one_line=True)}: {s['rows']} rows x {s['targets']} targets = {s['pairs']} pairs, "
                  f"{s['checks']} checks" + (f" ({s['decided_without_sending']} decided without sending)" if s["decided_without_sending"] else "")
                  + (f"; probes: {probes}" if probes else "") + "\n")
    for role, s in summary["roles"].items():
        out.write(f"  role {clip(role, 100, one_line=True)}: {s['targets']} targets, {s['pairs']} pairs, {s['checks']} checks\n")
    out.write(f"{summary['pairs']} row x target pairs, {summary['checks']} checks ({plan.probe_count} probes) "
              f"against {len(plan.hosts)} hosts." + ("" if args.full else " `plan --full` lists every one.") + "\n")
    if plan.untargeted:
        out.write(f"{len(plan.untargeted)} rows have no target: " + ", ".join(sorted({r.target for r in plan.untargeted})) + "\n")
    if plan.inbound:
        out.write(f"{len(plan.inbound)} inbound rows: prove them with `portready listen`.\n")
    return 0


def _full(plan: Any, out: TextIO) -> None:
    """One line per row x target, its checks after it (plain text: a /16 streams, it is not laid out)."""
    for p in plan.rows:
        checks = "; ".join(f"{c.spec.protocol.value}/{c.port_label} {c.probe}"
                           + (f" ({c.preset.status.value}: {c.preset.reason.value})" if c.preset is not None else "")
                           for c in p.checks)
        out.write(f"{clip(p.row.profile, 100, one_line=True)}/{clip(p.row.id, 80, one_line=True)} "
                  f"[{clip(p.row.doc_port, 60, one_line=True)}] -> {clip(p.target.host, 200, one_line=True)}: {checks}\n")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "plan", help="show what a scan would do, sending nothing",
        description=(
            "Expand the selected rows against their targets as `scan` would and summarise it: rows x targets x "
            "checks per profile and per role. Nothing is sent. --full lists every row x target and its checks."
        ),
    )  # fmt: skip
    add_input_options(p)
    # Of the run options only the depth changes what a scan would do; timeouts, concurrency,
    # CA bundles and proxies only change how it is done, so plan does not offer them in its help.
    p.add_argument("--depth", choices=["port", "protocol"], help="port: reachability only; protocol: deepest probe (default)")
    for flag, kw in _IGNORED.items():
        p.add_argument(flag, help=argparse.SUPPRESS, **kw)
    p.add_argument("--json", action="store_true", help="the plan as JSON (every row x target, and the summary)")
    p.add_argument("--full", action="store_true", help="list every row x target and its checks")
    p.set_defaults(func=_run)
