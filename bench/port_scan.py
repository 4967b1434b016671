"""Benchmark: `portready scan --depth port` against `nmap -sT -T4` on the same lab network.

Builds HOSTS addresses on one veth of a lab namespace, 16 TCP ports each: half
listening, the rest closed (reset), and a fifth of all host:port pairs dropped
by nftables. Runs both scanners, prints wall times, their ratio, probes per
second, portready's peak memory and whether the verdicts agree.

    sudo python bench/port_scan.py [--hosts 250] [--runs 3]

Target (issue 2): 250 hosts x 16 ports in <= 0.5x nmap's wall time, same verdicts, < 150 MB.
Needs root (namespaces, nftables) and Debian's nmap.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import timed_run  # noqa: E402
from tests.lab.netns import Lab  # noqa: E402

PORTS = list(range(20001, 20017))
LISTENING = PORTS[:8]
SERVER = """
import socket, sys, time
socks = []
for port in map(int, sys.argv[1:]):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(4096); s.setblocking(False); socks.append(s)
print("ready", flush=True)
end = time.time() + 900
while time.time() < end:
    for s in socks:
        try:
            while True:
                c, _ = s.accept(); c.close()
        except BlockingIOError:
            pass
    time.sleep(0.002)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=250)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("nmap"):
        print("bench/port_scan.py needs root and nmap (apt-get install nmap)")
        return 2
    rng = random.Random(args.seed)
    with Lab("bench") as lab, tempfile.TemporaryDirectory() as tmp:
        host = lab.add_host("many")
        addresses = host.add_aliases(args.hosts)
        pairs = [(a, p) for a in addresses for p in PORTS]
        dropped = set(rng.sample(pairs, len(pairs) // 5))
        elements = ", ".join(f"{a} . {p}" for a, p in sorted(dropped))
        ruleset = (
            "table inet prbench {\n"
            "  set dropped { type ipv4_addr . inet_service; elements = { " + elements + " } }\n"
            "  chain input {\n    type filter hook input priority 0;\n    ip daddr . tcp dport @dropped drop\n  }\n"
            "}\n"
        )
        host.run(["nft", "-f", "-"], input=ruleset, text=True, check=True)
        server = host.popen([sys.executable, "-c", SERVER, *map(str, LISTENING)], stdout=subprocess.PIPE)
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        hosts_file = Path(tmp) / "hosts.txt"
        hosts_file.write_text("\n".join(addresses) + "\n")
        inventory = Path(tmp) / "inventory.yaml"
        inventory.write_text(f"targets:\n  monitored-computers: [{{file: {hosts_file}}}]\n")
        out_json = Path(tmp) / "portready.json"
        pr_argv = [
            sys.executable, "-m", "scanner", "scan", "--profiles", str(ROOT / "bench" / "profiles"),
            "--profile", "bench-ports", "-i", str(inventory), "--depth", "port",
            "--concurrency", str(args.concurrency), "--per-host", "16", "--json", str(out_json),
        ]  # the console too (to a file, not --quiet): what the user's run renders
        console = Path(tmp) / "console.txt"
        nmap_argv = ["nmap", "-sT", "-T4", "-Pn", "-n", "-p", f"{PORTS[0]}-{PORTS[-1]}", "-iL", str(hosts_file), "-oX", "-"]
        pr_times, nmap_times, peaks, lines = [], [], [], []
        nmap_xml = ""
        timed_run(pr_argv, str(console))  # warm-up, not timed: writes the bytecode cache as `pip install` would
        for _ in range(args.runs):
            wall, rss, _ = timed_run(pr_argv, str(console))
            pr_times.append(wall)
            peaks.append(rss)
            lines.append(len(console.read_text(errors="replace").splitlines()))
            wall, _, nmap_xml = timed_run(nmap_argv)
            nmap_times.append(wall)
        server.kill()
        server.wait()
        server.stdout.close()
        ours = {}
        for row in json.loads(out_json.read_text())["rows"]:
            c = row["checks"][0]
            ours[(row["target"], c["port"])] = {"pass": "open", "refused": "closed", "filtered": "filtered"}.get(
                c["reason"] if c["status"] == "fail" else c["status"], c["status"])
        theirs = {}
        for h in ET.fromstring(nmap_xml).iter("host"):
            addr = h.find("address").get("addr")  # type: ignore[union-attr]
            for p in h.iter("port"):
                theirs[(addr, int(p.get("portid")))] = p.find("state").get("state")  # type: ignore[union-attr,arg-type]
        truth = {(a, p): ("filtered" if (a, p) in dropped else "open" if p in LISTENING else "closed") for a, p in pairs}
        agree = sum(1 for k in truth if ours.get(k) == theirs.get(k))
        ours_right = sum(1 for k in truth if ours.get(k) == truth[k])
        nmap_right = sum(1 for k in truth if theirs.get(k) == truth[k])
    pr, nm = min(pr_times), min(nmap_times)
    probes = len(pairs)
    print(f"hosts x ports           : {args.hosts} x {len(PORTS)} = {probes} probes, {len(dropped)} dropped")
    print(f"portready --depth port  : {pr:.2f} s (best of {args.runs}; all: {', '.join(f'{t:.2f}' for t in pr_times)})")
    print(f"nmap -sT -T4 -Pn        : {nm:.2f} s (best of {args.runs}; all: {', '.join(f'{t:.2f}' for t in nmap_times)})")
    print(f"ratio portready / nmap  : {pr / nm:.2f}  (target <= 0.5)")
    print(f"probes per second       : {probes / pr:,.0f}")
    print(f"peak memory (portready) : {max(peaks) / 1024:.1f} MiB  (target < 150)")
    print(f"console lines           : {max(lines)} (default console to a file, not --quiet)")
    print(f"verdicts agree with nmap: {agree}/{probes}; portready right {ours_right}/{probes}, nmap right {nmap_right}/{probes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
