"""Benchmark: how long the console takes to render a large scan, and how many lines it prints.

Builds saved reports of N hosts (the active-directory rows at port depth: mostly passing,
a dropped port on every host, a refused one on a third of them), then times
`portready report FILE.json` with the console written to a file, as a scheduled job
would, and counts the lines. No network traffic at all.

    python bench/console_render.py [--hosts 250 2500] [--tool-root DIR]
    sudo python bench/console_render.py --scan 250 [--tool-root DIR]   # a real port scan, console to a pipe

`--scan N` runs `portready scan --depth port` against N lab addresses x 16 TCP ports (the
setup of bench/port_scan.py: half listening, a fifth of all pairs dropped), with the console
and with `-q`, so the difference is what the console costs in a real scan.

`--tool-root` runs another checkout's portready (e.g. the previous release, extracted with
`git archive`), so before/after figures come from one run. Target (issue 10): a 250-host
scan's console no longer costs seconds; a 2,500-host scan prints <= 200 lines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import CHILD_ENV, timed_run  # noqa: E402

ROWS = [  # (row id, documented port, protocol, purpose, outcome per host index)
    ("kerberos-88", "88", "TCP", "Kerberos authentication"),
    ("ldap-389", "389", "TCP", "LDAP Common queries"),
    ("smb-445", "445", "TCP", "SMB 2.0/3.0 Authenticated communication"),
    ("gc-3268", "3268", "TCP", "Global catalog LDAP"),
    ("gc-ssl-3269", "3269", "TCP", "Global catalog LDAP over SSL"),
    ("epm-135", "135", "TCP", "Endpoint mapper"),
]


def _outcome(row: str, i: int) -> tuple[str, str, str]:
    if row == "gc-ssl-3269":
        return "fail", "filtered", "filtered: no answer in 3 s (2 tries) — a firewall drops TCP 3269 between this host and the target"
    if row == "smb-445" and i % 3 == 0:
        return "fail", "refused", "refused: TCP 445 was reset — nothing listens there, or a firewall rejects"
    return "pass", "port-depth", "the port accepts connections"


def build_doc(hosts: int) -> dict:
    rows = []
    for i in range(hosts):
        host = f"10.{20 + i // 65536}.{(i // 256) % 256}.{i % 256}"
        for rid, port, proto, purpose in ROWS:
            status, reason, detail = _outcome(rid, i)
            rows.append({
                "profile": "active-directory", "row": rid, "section": "Active Directory Ports", "doc_port": port,
                "doc_protocol": proto, "doc_source": "Netwrix Auditor Server", "doc_target": "Domain controllers",
                "purpose": purpose, "direction": "outbound", "role": "domain-controllers", "target": host,
                "address": host, "status": status, "reason": reason, "detail": detail,
                "checks": [{"protocol": "tcp", "port": int(port), "probe": "tcp", "status": status, "reason": reason,
                            "detail": detail, "evidence": {"depth": "port"}, "duration_ms": 1.0}],
            })
    summary = {s: sum(1 for r in rows if r["status"] == s) for s in ("pass", "warn", "inconclusive", "fail", "error", "skip")}
    failed = summary["fail"] + summary["error"]
    return {
        "schema_version": 1, "tool": "portready", "version": "bench", "kind": "scan", "started": "s", "finished": "f",
        "host": {"name": "bench", "addresses": [], "os": "", "python": ""}, "options": {"depth": "port"},
        "inventory": {}, "notes": [], "rows": rows,
        "summary": {"rows": len(rows), **summary, "failed_rows": failed, "strict": False, "exit_code": 1 if failed else 0},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, nargs="+", default=[250, 2500])
    ap.add_argument("--tool-root", type=Path, default=ROOT, help="the checkout whose portready renders (default: this one)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scan", type=int, metavar="N", help="time a real port scan of N lab addresses instead (root)")
    args = ap.parse_args()
    if args.scan:
        return scan(args.scan, args.tool_root, args.runs)
    env = {**CHILD_ENV, "PYTHONPATH": str(args.tool_root.resolve())}
    print(f"tool: {args.tool_root}")
    with tempfile.TemporaryDirectory(prefix="portready-bench-") as tmp:
        os.chdir(tmp)  # `python -m` puts the working folder first on sys.path: not this checkout
        for hosts in args.hosts:
            path = Path(tmp) / f"r{hosts}.json"
            path.write_text(json.dumps(build_doc(hosts)))
            argv = [sys.executable, "-m", "scanner", "report", str(path)]
            quiet = argv + ["-q"]
            best = min((timed_run_env(argv, env) for _ in range(args.runs)), key=lambda r: r[0])
            base = min((timed_run_env(quiet, env) for _ in range(args.runs)), key=lambda r: r[0])
            lines = best[2].count("\n")
            print(f"{hosts:>5} hosts x {len(ROWS)} rows: console {best[0]:.2f} s, -q {base[0]:.2f} s "
                  f"(console costs {best[0] - base[0]:.2f} s), {lines} lines, peak {best[1] / 1024:.0f} MB")
    return 0


def scan(hosts: int, tool_root: Path, runs: int) -> int:
    """The console's cost in a real `scan --depth port` (lab namespace, nftables drops)."""
    import random
    import subprocess

    from bench.port_scan import LISTENING, PORTS, SERVER
    from tests.lab.netns import Lab

    env = {**CHILD_ENV, "PYTHONPATH": str(tool_root.resolve())}
    rng = random.Random(7)
    with Lab("cbench") as lab, tempfile.TemporaryDirectory(prefix="portready-bench-") as tmp:
        os.chdir(tmp)
        host = lab.add_host("many")
        addresses = host.add_aliases(hosts)
        pairs = [(a, p) for a in addresses for p in PORTS]
        dropped = sorted(rng.sample(pairs, len(pairs) // 5))
        host.run(["nft", "-f", "-"], text=True, check=True, input=(
            "table inet crbench {\n  set dropped { type ipv4_addr . inet_service; elements = { "
            + ", ".join(f"{a} . {p}" for a, p in dropped) + " } }\n  chain input {\n    type filter hook input priority 0;\n"
            "    ip daddr . tcp dport @dropped drop\n  }\n}\n"))
        server = host.popen([sys.executable, "-c", SERVER, *map(str, LISTENING)], stdout=subprocess.PIPE)
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        hosts_file = Path(tmp) / "hosts.txt"
        hosts_file.write_text("\n".join(addresses) + "\n")
        inventory = Path(tmp) / "inventory.yaml"
        inventory.write_text(f"targets:\n  monitored-computers: [{{file: {hosts_file}}}]\n")
        argv = [sys.executable, "-m", "scanner", "scan", "--profiles", str(ROOT / "bench" / "profiles"), "--profile",
                "bench-ports", "-i", str(inventory), "--depth", "port", "--concurrency", "1024", "--per-host", "16"]
        try:
            timed_run_env(argv + ["-q"], env)  # warm-up: the bytecode cache
            loud = [timed_run_env(argv, env) for _ in range(runs)]
            quiet = [timed_run_env(argv + ["-q"], env) for _ in range(runs)]
        finally:
            server.kill()
            server.wait()
            server.stdout.close()
    best, base = min(loud, key=lambda r: r[0]), min(quiet, key=lambda r: r[0])
    print(f"tool: {tool_root}")
    print(f"scan of {hosts} hosts x {len(PORTS)} ports: with the console {best[0]:.2f} s "
          f"(all: {', '.join(f'{r[0]:.2f}' for r in loud)}), -q {base[0]:.2f} s "
          f"(all: {', '.join(f'{r[0]:.2f}' for r in quiet)}); console {best[2].count(chr(10))} lines")
    return 0


def timed_run_env(argv: list[str], env: dict[str, str], stdout_path: str | None = None) -> tuple[float, int, str]:
    """timed_run with another checkout on PYTHONPATH (the console goes to a pipe, or to `stdout_path`)."""
    saved = dict(CHILD_ENV)
    CHILD_ENV.clear()
    CHILD_ENV.update(env)
    try:
        return timed_run(argv, stdout_path)
    finally:
        CHILD_ENV.clear()
        CHILD_ENV.update(saved)


if __name__ == "__main__":
    raise SystemExit(main())
