"""Benchmark: the active-directory rows at --depth port against many hosts behind ONE routed hop,
beside `nmap -Pn -n -sT -sU -T4` on the same hosts and ports, in one run.

The targets live behind a router namespace (tests/lab: `Lab.add_routed_site`), as a remote site
does: the Auditor's neighbour table holds the router only. Behind it one process serves every
address: TCP ports of the profile half listening (backlog 64: a busy accept queue), half closed;
UDP 53/88 answer (echo, from the address asked), UDP 389 closed; a fifth of all host:port pairs
dropped by nftables. Scenario `icmp` adds the Linux ICMP rate limit (1000/s, burst 50) on the
router. Prints wall times (median of --runs; the machine is shared, so medians), peak RSS,
console lines (console to a file, not --quiet), and how many verdicts are true for each tool.

    sudo python bench/scale_scan.py [--hosts 2500] [--runs 1] [--scenario ports|icmp]

Targets (issue 10): ports: every verdict true, wall <= 0.5x nmap, peak RSS <= 150 MB;
icmp (250 hosts): every closed UDP port refused, time <= nmap. Needs root and Debian's nmap.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import timed_run  # noqa: E402
from tests.lab.netns import Lab  # noqa: E402

UDP_OPEN = (53, 88)
SERVER = r"""
import selectors, socket, struct, sys
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; Python lacks the constant
tcp_ports = [int(p) for p in sys.argv[1].split(",") if p]
udp_ports = [int(p) for p in sys.argv[2].split(",") if p]
sel = selectors.DefaultSelector()
for port in tcp_ports:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(64); s.setblocking(False); sel.register(s, selectors.EVENT_READ, "tcp")
for port in udp_ports:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    u.bind(("0.0.0.0", port)); u.setblocking(False); sel.register(u, selectors.EVENT_READ, "udp")
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        try:
            if key.data == "tcp":
                while True:
                    c, _ = s.accept(); c.close()
            else:
                while True:
                    data, anc, _, peer = s.recvmsg(2048, socket.CMSG_SPACE(12))
                    dst = next((d[8:12] for lvl, typ, d in anc if typ == IP_PKTINFO), None)
                    cmsg = [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("I4s4s", 0, dst, bytes(4)))] if dst else []
                    s.sendmsg([data or b"\0"], cmsg, 0, peer)  # answer from the address asked
        except (BlockingIOError, InterruptedError):
            pass
"""


def run(argv: list[str], stdout_path: Path | None = None) -> tuple[float, int, str]:
    """Wall time, peak RSS (KiB) and stdout of one command (stdout to a file when given)."""
    return timed_run(argv, str(stdout_path) if stdout_path else None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=None, help="default: 2500 (ports), 250 (icmp)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--scenario", choices=("ports", "icmp"), default="ports")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-nmap", action="store_true")
    ap.add_argument("--concurrency", type=int, default=2048, help="portready's upper bound (its window adapts below it)")
    args = ap.parse_args()
    hosts = args.hosts or (2500 if args.scenario == "ports" else 250)
    if os.geteuid() != 0 or not shutil.which("nmap"):
        print("bench/scale_scan.py needs root and nmap (apt-get install nmap)")
        return 2
    rng = random.Random(args.seed)
    with Lab("scale") as lab, tempfile.TemporaryDirectory() as tmp:
        site = lab.add_routed_site("site", hosts)
        addresses = site.addresses
        hosts_file = Path(tmp) / "hosts.txt"
        hosts_file.write_text("\n".join(addresses) + "\n")
        inventory = Path(tmp) / "inventory.yaml"
        inventory.write_text(f"targets:\n  domain-controllers: [{{file: {hosts_file}}}]\nsettings:\n  domain: lab.test\n")
        out_json = Path(tmp) / "portready.json"
        ours = [sys.executable, "-m", "scanner", "scan", "--profile", "active-directory", "-i", str(inventory),
                "--depth", "port", "--json", str(out_json), "--concurrency", str(args.concurrency)]  # fmt: skip
        # The ports come from the profile itself (a first, untimed run also warms the bytecode cache).
        run(ours, Path(tmp) / "warmup.txt")
        planned = json.loads(out_json.read_text())
        tcp = sorted({c["port"] for r in planned["rows"] for c in r["checks"] if c["protocol"] == "tcp" and isinstance(c["port"], int)})
        udp = sorted({c["port"] for r in planned["rows"] for c in r["checks"] if c["protocol"] == "udp" and isinstance(c["port"], int)})
        listening = tcp[: (len(tcp) + 1) // 2]
        udp_open = [p for p in udp if p in UDP_OPEN]
        pairs = [(a, "tcp", p) for a in addresses for p in tcp] + [(a, "udp", p) for a in addresses for p in udp]
        dropped = set(rng.sample(pairs, len(pairs) // 5)) if args.scenario == "ports" else set()
        rules = ["table inet prbench {", "  chain input {", "    type filter hook input priority 0;"]
        for proto in ("tcp", "udp"):
            elements = ", ".join(f"{a} . {p}" for a, pr, p in sorted(dropped) if pr == proto)
            if elements:
                rules.insert(1, f"  set {proto}drop {{ type ipv4_addr . inet_service; elements = {{ {elements} }} }}")
                rules.append(f"    ip daddr . {proto} dport @{proto}drop drop")
        site.far.run(["nft", "-f", "-"], input="\n".join([*rules, "  }", "}"]) + "\n", text=True, check=True)
        if args.scenario == "icmp":
            site.limit_icmp(1000, 50)
        server = site.far.popen([sys.executable, "-c", SERVER, ",".join(map(str, listening)),
                                 ",".join(map(str, udp_open))], stdout=subprocess.PIPE)  # fmt: skip
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        nmap = ["nmap", "-Pn", "-n", "-sT", "-sU", "-T4", "-p", f"T:{','.join(map(str, tcp))},U:{','.join(map(str, udp))}",
                "-iL", str(hosts_file), "-oX", "-"]  # fmt: skip
        pr_times, nm_times, peaks, lines = [], [], [], []
        nmap_xml = ""
        console = Path(tmp) / "console.txt"
        for _ in range(args.runs):
            wall, rss, _ = run(ours, console)
            pr_times.append(wall)
            peaks.append(rss)
            lines.append(len(console.read_text(errors="replace").splitlines()))
            if not args.no_nmap:
                wall, _, nmap_xml = run(nmap)
                nm_times.append(wall)
        quiet_wall, quiet_rss, _ = run([*ours, "--quiet"])  # the engine alone, without the console's rendering
        icmp_dropped = site.icmp_dropped()
        server.kill()
        server.wait()
        server.stdout.close()
        doc = json.loads(out_json.read_text())

    def truth(a: str, proto: str, p: int) -> str:
        if (a, proto, p) in dropped:
            return "filtered" if proto == "tcp" else "open|filtered"
        if proto == "tcp":
            return "open" if p in listening else "closed"
        return "open" if p in udp_open else "closed"

    ours_v: dict[tuple[str, str, int], str] = {}
    for row in doc["rows"]:
        for c in row["checks"]:
            if not isinstance(c["port"], int):
                continue
            verdict = {"pass": "open"}.get(c["status"]) or {"refused": "closed", "filtered": "filtered",
                                                            "no-answer": "open|filtered"}.get(c["reason"], c["reason"])  # fmt: skip
            ours_v[(row["target"], c["protocol"], c["port"])] = verdict
    theirs: dict[tuple[str, str, int], str] = {}
    if nmap_xml:
        for h in ET.fromstring(nmap_xml).iter("host"):
            addr = h.find("address").get("addr")  # type: ignore[union-attr]
            for p in h.iter("port"):
                theirs[(str(addr), str(p.get("protocol")), int(p.get("portid", 0)))] = p.find("state").get("state")  # type: ignore[union-attr]
    keys = list(ours_v)
    right = sum(1 for k in keys if ours_v[k] == truth(*k))
    wrong = [(k, ours_v[k], truth(*k)) for k in keys if ours_v[k] != truth(*k)]
    nmap_right = sum(1 for k in keys if theirs.get(k) == truth(*k))
    closed_udp = [k for k in keys if k[1] == "udp" and truth(*k) == "closed"]
    pr = statistics.median(pr_times)
    print(f"scenario                : {args.scenario}; {hosts} hosts behind one router; TCP {tcp}, UDP {udp}")
    print(f"portready options       : --depth port --concurrency {args.concurrency} (defaults otherwise)")
    print(f"checks                  : {len(keys)} ({len(dropped)} host:port pairs dropped)")
    print(f"portready --depth port  : {pr:.2f} s (median of {args.runs}: {', '.join(f'{t:.2f}' for t in pr_times)})")
    if nm_times:
        nm = statistics.median(nm_times)
        print(f"nmap -sT -sU -T4 -Pn -n : {nm:.2f} s (median of {args.runs}: {', '.join(f'{t:.2f}' for t in nm_times)})")
        print(f"ratio portready / nmap  : {pr / nm:.2f}  (target <= 0.5 for ports, <= 1 for icmp)")
    print(f"portready --quiet       : {quiet_wall:.2f} s, {quiet_rss / 1024:.1f} MiB (one run: no console rendering)")
    print(f"peak RSS (portready)    : {max(peaks) / 1024:.1f} MiB  (target <= 150)")
    print(f"console lines           : {max(lines)} (to a file, not --quiet)")
    print(f"verdicts true           : portready {right}/{len(keys)}, nmap {nmap_right}/{len(keys)}")
    print(f"closed UDP read refused : {sum(1 for k in closed_udp if ours_v[k] == 'closed')}/{len(closed_udp)}")
    if args.scenario == "icmp":
        print(f"ICMP errors the router dropped (rate limit, both tools, all runs): {icmp_dropped}")
    for k, got, want in wrong[:10]:
        print(f"  wrong: {k[0]} {k[1].upper()} {k[2]}: portready {got}, truth {want}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
