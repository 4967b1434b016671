"""Listener under rsyslog's testbench TCP loads: sent / counted / lost per workload, and memory.

    sudo python bench/listener_load.py [--quick]

The workloads are those of rsyslog's own testbench (the most trusted syslog receiver),
driven by a small Python stand-in for its `tcpflood` (tests/listener/_sender.py) in a lab
namespace; the listener is this process, in the root namespace, with its default limits:

    manytcp        tests/manytcp.sh: 1,000 concurrent connections, 40,000 messages
    conndrop       tests/imtcp_conndrop.sh: 20 connections from one address, 50,000
                   messages, 5 % of them followed by a close and reconnect
    conndrop-cut   the same, but each drop cuts the next message in the middle (those are
                   not fully sent and must show as truncated, not as messages)
    drip+normal    300 connections dripping one byte a second, while a normal sender sends
                   10,000 messages over 10 connections from another address
    endless        200 connections sending lines that never end, for 5 s: memory per connection

"lost" is fully sent minus counted (must be 0); "truncated" counts frames cut by a close.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scanner.listener.server import Binding, Listener  # noqa: E402
from scanner.models import Transport  # noqa: E402
from tests.lab.netns import Host, Lab, lab_available  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def run_sender(host: Host, *args: str) -> str:
    proc = await asyncio.to_thread(host.run, [sys.executable, "-m", "tests.listener._sender", *args],
                                   capture_output=True, text=True, env=ENV, timeout=1200)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return str(proc.stdout.strip().splitlines()[-1])


class Meter:
    """Peak resident memory of this process, and bytes the listener holds, while a workload runs."""

    def __init__(self, listener: Listener | None = None) -> None:
        self.base = rss_mib()
        self.peak = self.base
        self.listener = listener
        self.held = 0  # partial frames held by all connections (what per-connection bounds cap)
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mib())
            if self.listener is not None:
                self.held = max(self.held, self.listener._buffered)
            await asyncio.sleep(0.05)

    def stop(self) -> float:
        self._task.cancel()
        return self.peak - self.base


async def settle(listener: Listener, done: Any, seconds: float = 120.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline and not (done() and listener.open_connections == 0):
        await asyncio.sleep(0.1)


def messages(listener: Listener, port: int, source: str) -> int:
    rec = listener.store.records.get((Transport.TCP, port, source))
    return rec.messages if rec else 0


async def flood(lab: Lab, host: Host, connections: int, count: int, *extra: str) -> dict[str, Any]:
    port = free_port()
    listener = Listener([Binding(Transport.TCP, port, "0.0.0.0")])
    await listener.start()
    meter = Meter()
    t0 = time.perf_counter()
    out = json.loads(await run_sender(host, "tcpflood", lab.gateway4, str(port), "--connections", str(connections),
                                      "--count", str(count), *extra))  # fmt: skip
    await settle(listener, lambda: messages(listener, port, host.ipv4) >= out["sent"])
    elapsed = time.perf_counter() - t0
    await listener.stop()
    rec = listener.store.records.get((Transport.TCP, port, host.ipv4))
    return {"sent": out["sent"], "counted": rec.messages if rec else 0, "cut": out["cut"],
            "truncated": rec.losses["frames_truncated"] if rec else 0, "errors": out["errors"],
            "s": elapsed, "mib": meter.stop(), "peak_conn": listener.peak_connections,
            "drops": dict(+listener.store.drops)}  # fmt: skip


async def drip_and_normal(lab: Lab, bad: Host, good: Host, count: int) -> dict[str, Any]:
    port = free_port()
    listener = Listener([Binding(Transport.TCP, port, "0.0.0.0")])
    await listener.start()
    meter = Meter()
    t0 = time.perf_counter()
    drip = asyncio.create_task(run_sender(bad, "drip", lab.gateway4, str(port), "--connections", "300",
                                          "--seconds", "15"))  # fmt: skip
    await asyncio.sleep(3)
    out = json.loads(await run_sender(good, "tcpflood", lab.gateway4, str(port), "--connections", "10",
                                      "--count", str(count)))  # fmt: skip
    await settle(listener, lambda: messages(listener, port, good.ipv4) >= out["sent"], 30)
    counted = messages(listener, port, good.ipv4)
    elapsed = time.perf_counter() - t0
    dripped = json.loads(await drip)
    await listener.stop()
    rec = listener.store.records.get((Transport.TCP, port, bad.ipv4))
    return {"sent": out["sent"], "counted": counted, "cut": 0, "truncated": 0, "errors": out["errors"],
            "s": elapsed, "mib": meter.stop(), "peak_conn": listener.peak_connections,
            "drops": {"drippers_closed_slow": rec.losses["connections_closed_slow"] if rec else 0,
                      "drippers_reset_seen": dripped["reset"]}}  # fmt: skip


async def endless(lab: Lab, host: Host, connections: int) -> dict[str, Any]:
    port = free_port()
    listener = Listener([Binding(Transport.TCP, port, "0.0.0.0")])
    await listener.start()
    meter = Meter(listener)
    t0 = time.perf_counter()
    sent = int(await run_sender(host, "endless", lab.gateway4, str(port), "--connections", str(connections),
                                "--seconds", "5"))  # fmt: skip
    elapsed = time.perf_counter() - t0
    mib = meter.stop()
    await listener.stop()
    return {"sent": 0, "counted": 0, "cut": 0, "truncated": listener.store.drops["frames_truncated"], "errors": 0,
            "s": elapsed, "mib": mib, "peak_conn": listener.peak_connections,
            "drops": {"bytes_sent": sent, "rss_kib_per_connection": round(mib * 1024 / connections, 1),
                      "held_peak_kib_per_connection": round(meter.held / 1024 / connections, 1),
                      "max_frame_kib": listener.max_frame // 1024}}  # fmt: skip


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a tenth of the sizes (a smoke run)")
    p.add_argument("--only", action="append", default=[], metavar="NAME", help="run only this workload (repeatable)")
    a = p.parse_args()
    reason = lab_available()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    div = 10 if a.quick else 1
    with Lab("bench") as lab:
        h1, h2 = lab.add_host("load1"), lab.add_host("load2")
        workloads = [
            ("manytcp", lambda: flood(lab, h1, 1000, 40000 // div)),
            ("conndrop", lambda: flood(lab, h1, 20, 50000 // div, "--reconnect", "0.05")),
            ("conndrop-cut", lambda: flood(lab, h1, 20, 50000 // div, "--reconnect", "0.05", "--cut", "--octet")),
            ("drip+normal", lambda: drip_and_normal(lab, h1, h2, 10000 // div)),
            ("endless", lambda: endless(lab, h1, 200)),
        ]
        print(f"{'workload':<13} {'sent':>7} {'counted':>7} {'lost':>5} {'cut':>5} {'trunc':>5} {'errors':>6} "
              f"{'conns':>5} {'s':>6} {'+MiB':>6}  notes")  # fmt: skip
        for name, run in workloads:
            if a.only and name not in a.only:
                continue
            r = await run()
            lost = r["sent"] - r["counted"]
            print(f"{name:<13} {r['sent']:>7} {r['counted']:>7} {lost:>5} {r['cut']:>5} {r['truncated']:>5} "
                  f"{r['errors']:>6} {r['peak_conn']:>5} {r['s']:>6.1f} {r['mib']:>6.1f}  {r['drops'] or ''}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
