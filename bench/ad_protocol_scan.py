"""Benchmark: a protocol-depth scan of the active-directory profile against many addresses of
one lab DC, beside the same checks done by `nmap -sT` and its NSE scripts.

One real Samba AD DC in a lab namespace answers on ADDRESSES aliases of its interface.
portready runs every row of the active-directory profile at protocol depth (LDAP RootDSE,
GC, LDAPS + RootDSE, CLDAP ping, Kerberos AS-REQ over TCP and UDP, endpoint mapper + the
dynamic RPC ports, SMB negotiate, DNS SRV); nmap runs `-sT` on the TCP ports with
`ldap-rootdse` and `smb-protocols` (TCP only: fewer checks than portready). A first scan of
the DC's own address alone is the reference: every check on every alias must read the same.
portready runs with its defaults, as a user runs it: the console (written to a file, not
--quiet) and the JSON report, which the verdicts are checked from.

    sudo python bench/ad_protocol_scan.py [--addresses 250] [--runs 3]

Targets (issues 4, 10): every check reads what it reads on the DC's own address alone;
portready <= 0.5x nmap's wall time (medians: the machine is shared). Needs root, Samba, nmap.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import timed_run  # noqa: E402
from tests.lab.netns import Lab  # noqa: E402
from tests.lab.samba_dc import SambaDC, provision_template  # noqa: E402

TCP_PORTS = "53,88,135,389,445,3268,3269"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--addresses", type=int, default=250)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0 or not shutil.which("nmap") or not shutil.which("samba"):
        print("bench/ad_protocol_scan.py needs root, samba and nmap (bash tests/lab/install.sh)")
        return 2
    template = provision_template()
    with Lab("adbench") as lab, tempfile.TemporaryDirectory() as tmp:
        host = lab.add_host("dc1")
        aliases = host.add_aliases(args.addresses)  # before samba starts: it binds every address
        dc = SambaDC(host, template).start()
        try:
            hosts_file = Path(tmp) / "hosts.txt"
            hosts_file.write_text("\n".join(aliases) + "\n")
            inventory = Path(tmp) / "inventory.yaml"
            inventory.write_text(
                f"targets:\n  domain-controllers: [{{file: {hosts_file}}}]\n"
                f"  dns-servers: [{{file: {hosts_file}}}]\nsettings:\n  domain: lab.test\n"
            )
            out_json = Path(tmp) / "ad.json"
            # Defaults, as a new user runs it: the console (to a file, not --quiet) and the JSON to check verdicts.
            ours = [sys.executable, "-m", "scanner", "scan", "-i", str(inventory), "--profile", "active-directory",
                    "--json", str(out_json)]  # fmt: skip
            console = Path(tmp) / "console.txt"
            theirs = ["nmap", "-sT", "-Pn", "-n", "-T4", "-p", TCP_PORTS, "--script",
                      "ldap-rootdse,smb-protocols", "-iL", str(hosts_file), "-oX", "-"]
            pr_times, nm_times, peaks, lines = [], [], [], []
            alone_file = Path(tmp) / "alone.txt"
            alone_file.write_text(host.ipv4 + "\n")
            alone_inv = Path(tmp) / "alone.yaml"
            alone_inv.write_text(inventory.read_text().replace(str(hosts_file), str(alone_file)))
            alone_json = Path(tmp) / "alone.json"
            # Warm-up, not timed (writes the bytecode cache as `pip install` would) and the reference.
            timed_run([sys.executable, "-m", "scanner", "scan", "-i", str(alone_inv), "--profile", "active-directory",
                       "--json", str(alone_json)], str(Path(tmp) / "alone-console.txt"))  # fmt: skip
            for _ in range(args.runs):
                wall, rss, _ = timed_run(ours, str(console))
                pr_times.append(wall)
                peaks.append(rss)
                lines.append(len(console.read_text(errors="replace").splitlines()))
                wall, _, xml = timed_run(theirs)
                nm_times.append(wall)
            doc = json.loads(out_json.read_text())
            reference_doc = json.loads(alone_json.read_text())
        finally:
            dc.stop()

    def checks_of(document: dict) -> dict[tuple[str, str], list[tuple[str, str, str, str]]]:
        return {(r["row"], r["target"]): [(c["probe"], str(c["port"]), c["status"], c["reason"]) for c in r["checks"]]
                for r in document["rows"] if r["role"] == "domain-controllers"}  # fmt: skip

    reference = {row: checks for (row, _t), checks in checks_of(reference_doc).items()}
    ours_checks = checks_of(doc)
    same = sum(1 for (row, _t), checks in ours_checks.items() for a, b in zip(checks, reference[row], strict=False) if a == b)
    total = sum(len(checks) for checks in ours_checks.values())
    differ = [(key, checks) for key, checks in ours_checks.items() if checks != reference[key[0]]]
    pr, nm = statistics.median(pr_times), statistics.median(nm_times)
    checks = sum(len(r["checks"]) for r in doc["rows"])
    statuses: dict[str, int] = {}
    for row in doc["rows"]:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    print(f"addresses of one DC      : {args.addresses}; {len(doc['rows'])} row x target, {checks} protocol checks")
    print(f"portready (protocol)     : {pr:.2f} s (median of {args.runs}; all: {', '.join(f'{t:.2f}' for t in pr_times)})")
    print(f"nmap -sT + NSE scripts   : {nm:.2f} s (median of {args.runs}; all: {', '.join(f'{t:.2f}' for t in nm_times)})")
    print(f"ratio portready / nmap   : {pr / nm:.2f}  (target <= 0.5)")
    print(f"checks per second        : {checks / pr:,.0f}")
    print(f"peak memory (portready)  : {max(peaks) / 1024:.1f} MiB")
    print(f"console lines            : {max(lines)} (default console to a file, not --quiet)")
    print(f"row verdicts             : {statuses}")
    print(f"checks as on the DC alone: {same}/{total}")
    for key, checks in differ[:5]:
        print(f"  differs: {key}: {[c for c in checks if c not in reference[key[0]]]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
