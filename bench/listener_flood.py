"""Listener under a UDP flood from a lab namespace: datagrams per second held, tagged losses, memory.

    sudo python bench/listener_flood.py [--count 100000] [--tagged 500] [--rates 0,50000,100000]

For each send rate (0 = as fast as the sender can), a sender in a lab namespace floods
the listener (this process, root namespace) with --count syslog datagrams, --tagged of
them carrying unique test tags. Prints per rate: datagrams received / sent, the kernel's
drops, how many tagged datagrams were reported, the receive rate, and the peak memory
of the store (tracemalloc) and of the process (ru_maxrss). "held" is the highest rate
with zero tagged losses.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import sys
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRACE = "--trace-memory" in sys.argv  # tracemalloc slows allocation several times: opt-in
sys.path.insert(0, str(REPO))

from scanner.listener.server import Binding, Listener  # noqa: E402
from scanner.models import Transport  # noqa: E402
from tests.lab.netns import Lab, lab_available  # noqa: E402


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


async def one_round(lab: Lab, host: object, count: int, tagged: int, rate: float, size: int) -> dict[str, float]:
    port = free_udp_port()
    if TRACE:
        tracemalloc.start()
    listener = Listener([Binding(Transport.UDP, port, "0.0.0.0")])
    await listener.start()
    argv = [sys.executable, "-m", "tests.listener._sender", "flood", lab.gateway4, str(port),
            "--count", str(count), "--tagged", str(tagged), "--rate", str(rate), "--size", str(size)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = await asyncio.to_thread(host.run, argv, capture_output=True, text=True, env=env, timeout=600)  # type: ignore[attr-defined]
    sent_s = time.perf_counter() - t0
    nonces = set(proc.stdout.split())
    store = listener.store
    # Let the listener drain what is still queued in the socket buffer.
    last, idle_since = -1, time.perf_counter()
    while time.perf_counter() - idle_since < 0.5:
        await asyncio.sleep(0.05)
        if store.total != last:
            last, idle_since = store.total, time.perf_counter()
    recv_s = time.perf_counter() - t0
    await listener.stop()
    peak = tracemalloc.get_traced_memory()[1] if TRACE else 0
    tracemalloc.stop()
    seen = {n for rec in store.records.values() for n in rec.tags}
    return {
        "rate": rate, "sent": count, "received": store.total, "kernel_drops": store.drops.get("udp_kernel_drops", 0),
        "tagged": len(nonces), "tagged_seen": len(nonces & seen), "send_s": sent_s,
        "dps": store.total / max(recv_s - 0.5, 1e-6), "peak_store_mib": peak / 2**20,
    }  # fmt: skip


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--tagged", type=int, default=500)
    p.add_argument("--size", type=int, default=200, help="bytes per flood datagram")
    p.add_argument("--trace-memory", action="store_true", help="measure the store's peak with tracemalloc (slower)")
    p.add_argument("--rates", default="0,50000,100000", help="send rates to try, datagrams/s (0 = unpaced)")
    a = p.parse_args()
    reason = lab_available()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    held = 0.0
    with Lab("bench") as lab:
        host = lab.add_host("flood")
        print(f"{'rate':>8} {'sent':>7} {'recv':>7} {'kdrop':>6} {'tagged':>9} {'recv/s':>9} {'send s':>7} {'store MiB':>9}")
        for rate in (float(r) for r in a.rates.split(",")):
            r = await one_round(lab, host, a.count, a.tagged, rate, a.size)
            lost = r["tagged"] - r["tagged_seen"]
            label = "max" if rate == 0 else f"{rate:.0f}"
            print(f"{label:>8} {r['sent']:>7.0f} {r['received']:>7.0f} {r['kernel_drops']:>6.0f} "
                  f"{r['tagged_seen']:>4.0f}/{r['tagged']:<4.0f} {r['dps']:>9.0f} {r['send_s']:>7.2f} "
                  f"{r['peak_store_mib']:>9.2f}")  # fmt: skip
            if lost == 0:
                held = max(held, r["dps"])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"held: {held:.0f} datagrams/s with zero tagged losses; peak RSS {rss:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
