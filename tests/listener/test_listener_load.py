"""The listener under rsyslog's testbench loads and against slow, idle and many peers.

The loads mirror rsyslog's `tests/manytcp.sh` (many concurrent connections) and
`tests/imtcp_conndrop.sh` (one address reconnecting), at sizes that keep the suite quick;
bench/listener_load.py runs the full sizes. Senders run in lab namespaces (real sockets,
real kernel); every fully sent message must be counted exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from scanner.listener.server import ArrivalStore, Binding, Listener
from scanner.models import Reason, Status, Target, Transport
from tests.lab.netns import Host, Lab
from tests.listener.test_listener_lab import free_port

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


async def sender(host: Host, *args: str) -> dict[str, Any]:
    proc = await asyncio.to_thread(
        host.run, [sys.executable, "-m", "tests.listener._sender", *args],
        capture_output=True, text=True, timeout=300, env=ENV, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


async def poll(cond: Any, seconds: float) -> None:
    """Wait for `cond()` (a deadline for the wait, not a timed assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline and not cond():
        await asyncio.sleep(0.1)


async def settle(listener: Listener, until: Any, seconds: float = 30.0) -> None:
    """Let the listener read what is still queued."""
    await poll(lambda: until() and listener.open_connections == 0, seconds)


def connections(listener: Listener, port: int, source: str) -> int:
    rec = listener.store.records.get((Transport.TCP, port, source))
    return rec.connections if rec else 0


def tcp_messages(listener: Listener, port: int, source: str) -> int:
    rec = listener.store.records.get((Transport.TCP, port, source))
    return rec.messages if rec else 0


async def test_manytcp_load_1000_concurrent_connections_counts_every_message(lab: Lab, second_host: Host) -> None:
    port = free_port()
    listener = Listener([Binding(Transport.TCP, port, "0.0.0.0")])
    await listener.start()
    try:
        out = await sender(second_host, "tcpflood", lab.gateway4, str(port), "--connections", "1000", "--count", "10000")
        await settle(listener, lambda: tcp_messages(listener, port, second_host.ipv4) >= out["sent"])
    finally:
        await listener.stop()
    assert out == {"sent": 10000, "cut": 0, "opened": 1000, "errors": 0}
    rec = listener.store.records[(Transport.TCP, port, second_host.ipv4)]
    assert rec.connections == 1000 and rec.messages == 10000
    assert listener.peak_connections > 256  # they really were open at once
    assert not +listener.store.drops and not rec.losses


async def test_conndrop_load_reconnecting_source_loses_nothing(lab: Lab, second_host: Host) -> None:
    port = free_port()
    # A per-source cap far below the reconnect count: only OPEN connections may count.
    listener = Listener([Binding(Transport.TCP, port, "0.0.0.0")], max_connections_per_source=32)
    await listener.start()
    try:
        out = await sender(second_host, "tcpflood", lab.gateway4, str(port), "--connections", "20", "--count", "20000",
                           "--reconnect", "0.05")  # fmt: skip
        await settle(listener, lambda: tcp_messages(listener, port, second_host.ipv4) >= out["sent"])
    finally:
        await listener.stop()
    assert out["errors"] == 0 and out["opened"] > 500
    rec = listener.store.records[(Transport.TCP, port, second_host.ipv4)]
    assert rec.messages == out["sent"] == 20000 and rec.connections == out["opened"]
    assert not +listener.store.drops


async def test_frames_cut_by_reconnects_are_truncated_not_messages(lab: Lab, second_host: Host) -> None:
    port = free_port()
    listener = Listener([Binding(Transport.TCP, port, "0.0.0.0")])
    await listener.start()
    try:
        out = await sender(second_host, "tcpflood", lab.gateway4, str(port), "--connections", "20", "--count", "5000",
                           "--reconnect", "0.05", "--cut", "--octet")  # fmt: skip
        await settle(listener, lambda: tcp_messages(listener, port, second_host.ipv4) >= out["sent"])
    finally:
        await listener.stop()
    assert out["cut"] > 100 and out["errors"] == 0
    rec = listener.store.records[(Transport.TCP, port, second_host.ipv4)]
    assert rec.messages == out["sent"]
    assert rec.losses["frames_truncated"] == out["cut"]
    assert listener.store.drops["frames_miscounted"] == 0


async def test_300_dripping_connections_cannot_starve_a_normal_sender(
    lab: Lab, second_host: Host, third_host: Host
) -> None:
    port = free_port()
    # Caps small enough that the drippers fill them: the normal sender needs shedding.
    listener = Listener([Binding(Transport.TCP, port, "0.0.0.0")], max_connections=100,
                        max_connections_per_source=1000, shed_after=1.0, frame_timeout=60.0)  # fmt: skip
    await listener.start()
    try:
        # The drippers outlast the test: stopping the listener resets them, which ends the sender.
        drip = asyncio.create_task(sender(second_host, "drip", lab.gateway4, str(port), "--connections", "300",
                                          "--seconds", "60"))  # fmt: skip
        await poll(lambda: connections(listener, port, second_host.ipv4) >= 300, 60)  # all 300 in
        await asyncio.sleep(1.5)  # the drippers are now stale: no complete frame for over shed_after
        out = await sender(third_host, "tcpflood", lab.gateway4, str(port), "--connections", "10", "--count", "2000")
        await poll(lambda: tcp_messages(listener, port, third_host.ipv4) >= out["sent"], 10)
        normal = tcp_messages(listener, port, third_host.ipv4)
    finally:
        await listener.stop()
    dripped = await drip
    assert out["sent"] == 2000 and out["errors"] == 0
    assert normal == 2000
    rec = listener.store.records[(Transport.TCP, port, third_host.ipv4)]
    assert not rec.losses
    bad = listener.store.records[(Transport.TCP, port, second_host.ipv4)]
    assert dripped["reset"] > 0
    assert bad.messages == bad.losses["lines_unterminated"]  # last lines without LF at the close, said so
    # Refused with a reset, or shed for a newer connection once stale: counted either way.
    assert bad.losses["connections_over_cap"] + bad.losses["connections_shed"] >= 300 - 100 - listener.max_parked
    assert bad.losses["connections_shed"] >= 10  # at least one per connection of the normal sender


async def test_a_frame_that_never_completes_hits_the_read_deadline(lab: Lab, second_host: Host) -> None:
    port = free_port()
    listener = Listener([Binding(Transport.TCP, port, "0.0.0.0")], frame_timeout=2.0)
    await listener.start()
    try:
        dripped = await sender(second_host, "drip", lab.gateway4, str(port), "--connections", "5", "--seconds", "8")
    finally:
        await listener.stop()
    rec = listener.store.records[(Transport.TCP, port, second_host.ipv4)]
    assert dripped["reset"] == 5  # one byte a second does not keep a connection
    assert rec.losses["connections_closed_slow"] == 5 and rec.losses["frames_truncated"] == 5
    assert rec.messages == 0


async def test_per_source_cap_leaves_room_for_everyone_else(lab: Lab, second_host: Host, third_host: Host) -> None:
    port = free_port()
    listener = Listener([Binding(Transport.TCP, port, "0.0.0.0")], max_connections=200,
                        max_connections_per_source=50, frame_timeout=60.0, shed_after=60.0)  # fmt: skip
    await listener.start()
    try:
        drip = asyncio.create_task(sender(second_host, "drip", lab.gateway4, str(port), "--connections", "300",
                                          "--seconds", "4"))  # fmt: skip
        await poll(lambda: connections(listener, port, second_host.ipv4) >= 300, 60)
        out = await sender(third_host, "tcpflood", lab.gateway4, str(port), "--connections", "40", "--count", "1000")
        await settle(listener, lambda: tcp_messages(listener, port, third_host.ipv4) >= out["sent"], 10)
        normal = tcp_messages(listener, port, third_host.ipv4)
        await drip
    finally:
        await listener.stop()
    assert normal == out["sent"] == 1000
    bad = listener.store.records[(Transport.TCP, port, second_host.ipv4)]
    assert bad.losses["connections_over_source_cap"] == 300 - 50 - listener.max_parked_per_source


async def test_expected_source_is_kept_after_many_strangers(lab: Lab, second_host: Host, third_host: Host) -> None:
    port = free_port()
    aliases = third_host.add_aliases(40) if len(third_host.aliases) < 40 else third_host.aliases[:40]
    store = ArrivalStore(max_sources=10, expected={second_host.ipv4})
    listener = Listener([Binding(Transport.UDP, port, "0.0.0.0")], store=store)
    await listener.start()
    try:
        await asyncio.to_thread(third_host.run, [sys.executable, "-m", "tests.listener._sender", "strangers",
                                                 lab.gateway4, str(port), "--sources", ",".join(aliases)],
                                env=ENV, check=True, timeout=60)  # fmt: skip
        await asyncio.to_thread(second_host.run, ["logger", "-d", "-n", lab.gateway4, "-P", str(port), "late"],
                                check=True, timeout=30)  # fmt: skip
        loop = asyncio.get_running_loop()
        await listener.wait(lambda: (Transport.UDP, port, second_host.ipv4) in store.records, loop.time() + 10)
    finally:
        await listener.stop()
    assert (Transport.UDP, port, second_host.ipv4) in store.records
    assert store.strangers == 10
    over = store.overflow[(Transport.UDP, port)]
    assert over.arrivals == 30 and len(over.addresses) == 30


def test_store_keeps_expected_sources_whatever_the_strangers() -> None:
    store = ArrivalStore(max_sources=100, expected={"198.18.9.9"})
    for i in range(20000):
        store.record(Transport.UDP, 514, f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", "datagram", b"<13>x")
    store.record(Transport.UDP, 514, "198.18.9.9", "datagram", b"<13>mine")
    assert (Transport.UDP, 514, "198.18.9.9") in store.records
    assert len(store.records) == 101
    over = store.overflow[(Transport.UDP, 514)]
    assert over.arrivals == 19900 and over.distinct == "4096+"


async def test_a_line_that_never_ends_hits_the_read_deadline_with_bounded_memory(lab: Lab, second_host: Host) -> None:
    port = free_port()
    listener = Listener([Binding(Transport.TCP, port, "0.0.0.0")], frame_timeout=2.0)
    await listener.start()
    peak = 0
    try:
        task = asyncio.create_task(asyncio.to_thread(
            second_host.run, [sys.executable, "-m", "tests.listener._sender", "endless", lab.gateway4, str(port),
                              "--connections", "20", "--seconds", "8"],
            capture_output=True, text=True, env=ENV, timeout=60,
        ))  # fmt: skip
        while not task.done():
            peak = max(peak, listener._buffered)
            await asyncio.sleep(0.05)
        sent = int((await task).stdout.strip())
    finally:
        await listener.stop()
    rec = listener.store.records[(Transport.TCP, port, second_host.ipv4)]
    assert sent > 20 * 1_000_000  # megabytes per connection really arrived
    assert rec.losses["connections_closed_slow"] == 20  # fast, but never a whole message
    assert peak <= 20 * listener.max_frame  # at most one frame held per connection


async def test_wrong_octet_counts_from_a_real_sender_cost_no_message(lab: Lab, second_host: Host) -> None:
    port = free_port()
    listener = Listener([Binding(Transport.TCP, port, "0.0.0.0")])
    await listener.start()
    try:
        out = await sender(second_host, "miscount", lab.gateway4, str(port), "--count", "31")
        await settle(listener, lambda: tcp_messages(listener, port, second_host.ipv4) >= 31, 10)
    finally:
        await listener.stop()
    rec = listener.store.records[(Transport.TCP, port, second_host.ipv4)]
    assert out["sent"] == 31 and rec.messages == 31  # not 2, as a count that swallows the stream gave
    assert rec.losses["frames_miscounted"] == 2 and rec.losses["frames_truncated"] == 0


async def test_kernel_udp_drops_reach_the_rows(lab: Lab, second_host: Host) -> None:
    from scanner.listener.matching import ExpectedSource, match, plan_inbound
    from tests.listener.test_listener_lab import syslog_row

    port = free_port()
    listener = Listener([Binding(Transport.UDP, port, "0.0.0.0")], rcvbuf=4096)
    await listener.start()
    try:
        flood = asyncio.create_task(asyncio.to_thread(second_host.run, [
            sys.executable, "-m", "tests.listener._sender", "flood", lab.gateway4, str(port), "--count", "5000",
            "--tagged", "0"], capture_output=True, env=ENV, timeout=60))  # fmt: skip
        while not flood.done():
            time.sleep(0.5)  # the loop is busy elsewhere: the small socket buffer overflows
            await asyncio.sleep(0)
        await flood
    finally:
        await listener.stop()
    assert listener.store.drops["udp_kernel_drops"] > 0
    plan = plan_inbound([syslog_row()], {}, {(Transport.UDP, 514): port, (Transport.TCP, 514): port})
    silent = f"198.18.{lab.subnet}.250"
    sources = {"monitored-file-servers": [ExpectedSource(Target("monitored-file-servers", second_host.ipv4),
                                                         (second_host.ipv4,)),
                                          ExpectedSource(Target("monitored-file-servers", silent), (silent,))]}  # fmt: skip
    report = match(plan, sources, listener.store, watched={(Transport.UDP, port)}, waited=5)
    seen, unseen = report.rows
    udp = seen.checks[0]
    assert udp.status is Status.PASS and "dropped by the kernel" in udp.detail
    assert unseen.checks[0].status is Status.INCONCLUSIVE and unseen.checks[0].reason is Reason.NOT_SEEN
    assert "the kernel dropped" in unseen.checks[0].detail


def test_limit_options_are_checked() -> None:
    import subprocess

    for bad in (["--max-connections", "0"], ["--frame-timeout", "fast"], ["--max-strangers", "-1"]):
        proc = subprocess.run([sys.executable, "-m", "scanner", "listen", "--port", "9/udp", *bad], cwd=REPO,
                              env=ENV, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 2 and bad[0] in proc.stderr, proc.stderr


def test_the_first_source_on_a_port_is_kept_past_the_stranger_cap() -> None:
    """A row open to any source must not read not-seen because strangers filled the store elsewhere."""
    store = ArrivalStore(max_sources=10)
    for i in range(50):
        store.record(Transport.UDP, 514, f"10.0.0.{i}", "datagram", b"<13>x")
    store.record(Transport.TCP, 9004, "10.9.9.9", "connection")
    store.record(Transport.TCP, 9004, "10.9.9.8", "connection")
    assert (Transport.TCP, 9004, "10.9.9.9") in store.records
    assert (Transport.TCP, 9004, "10.9.9.8") not in store.records
    assert store.overflow[(Transport.TCP, 9004)].arrivals == 1


async def test_partial_messages_past_the_memory_cap_shed_the_oldest(lab: Lab, second_host: Host) -> None:
    port = free_port()
    listener = Listener([Binding(Transport.TCP, port, "0.0.0.0")], max_frame=65536, max_buffered=512 * 1024)
    await listener.start()
    peak = 0
    try:
        drip = asyncio.create_task(sender(second_host, "drip", lab.gateway4, str(port), "--connections", "20",
                                          "--partial", "60000", "--seconds", "3"))  # fmt: skip
        while not drip.done():
            peak = max(peak, listener._buffered)
            await asyncio.sleep(0.01)
        await drip
    finally:
        await listener.stop()
    rec = listener.store.records[(Transport.TCP, port, second_host.ipv4)]
    assert rec.losses["connections_shed_memory"] >= 10  # 20 x 60 KB does not fit in 512 KiB
    assert peak <= 512 * 1024 + 65536 + 4096  # one read past the cap at most, then shed back under


async def test_a_connection_parked_too_long_is_refused_and_told() -> None:
    port = free_port()
    listener = Listener([Binding(Transport.TCP, port, "127.0.0.1")], max_connections_per_source=1,
                        frame_timeout=1.0, shed_after=3600.0)  # fmt: skip
    await listener.start()
    try:
        _, hog = await asyncio.open_connection("127.0.0.1", port)
        hog.write(b"<13>hello\n")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"<13>waiting\n")
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(reader.read(1), 10)  # the sweeper refuses it with a reset
        hog.close()
        writer.close()
    finally:
        await listener.stop()
    rec = listener.store.records[(Transport.TCP, port, "127.0.0.1")]
    assert rec.losses["connections_over_source_cap"] == 1 and rec.messages == 1
