"""The listener against real senders in lab namespaces: logger, `portready send`, raw sockets."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scanner.commands.listen import ANY_ROLE, adhoc_row, run_listener
from scanner.listener.server import Binding, Listener
from scanner.models import CheckSpec, Direction, Reason, Row, Status, Target, Transport
from tests.lab.netns import Host, Lab

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def free_port() -> int:
    """A port free for both UDP and TCP on every address."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("0.0.0.0", 0))
            port = int(s.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("0.0.0.0", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


def syslog_row(profile: str = "qumulo", role: str = "monitored-file-servers") -> Row:
    return Row(
        profile=profile, id="syslog-514", section="test", doc_port="514", doc_protocol="UDP / TCP",
        doc_source="Monitored file servers", doc_target="Netwrix Auditor Server", purpose="syslog",
        direction=Direction.INBOUND, source=role, target="auditor-server",
        checks=(CheckSpec(Transport.UDP, "listen", 514), CheckSpec(Transport.TCP, "listen", 514)),
    )  # fmt: skip


async def sh(host: Host, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        host.run, list(argv), capture_output=True, text=True, timeout=60, env=ENV, check=check
    )


async def listen_while(coro_factory: Any, rows: list[Row], targets: dict[str, list[Target]], port: int,
                       seconds: float = 6.0, bind: list[str] | None = None) -> tuple[list[Any], list[Any], dict[str, Any]]:  # fmt: skip
    """Run the listener (514 moved to `port`) and, once it is bound, the senders."""
    ready = asyncio.Event()
    task = asyncio.create_task(run_listener(
        rows, targets, settings_values={}, bind=bind or ["0.0.0.0", "::"], seconds=seconds, capture=False,
        port_map={(Transport.UDP, 514): port, (Transport.TCP, 514): port}, on_ready=lambda _l: ready.set(),
    ))  # fmt: skip
    await asyncio.wait_for(ready.wait(), 10)
    await coro_factory()
    return await task


def by_target(results: list[Any]) -> dict[str, Any]:
    return {r.target.host: r for r in results}


async def test_logger_udp_passes_silent_source_fails_and_stranger_is_unexpected(
    lab: Lab, second_host: Host, third_host: Host
) -> None:
    port = free_port()
    silent = f"198.18.{lab.subnet}.250"
    targets = {"monitored-file-servers": [Target("monitored-file-servers", second_host.ipv4),
                                          Target("monitored-file-servers", silent)]}  # fmt: skip

    async def senders() -> None:
        await sh(second_host, "logger", "-d", "-n", lab.gateway4, "-P", str(port), "-t", "qumulo", "disk quota hit")
        await sh(third_host, "logger", "-d", "--rfc3164", "-n", lab.gateway4, "-P", str(port), "-t", "natbox", "hi")

    rows, unexpected, facts = await listen_while(senders, [syslog_row()], targets, port, seconds=3)
    res = by_target(rows)
    good = res[second_host.ipv4]
    assert good.status is Status.PASS
    udp, tcp = good.checks
    assert udp.status is Status.PASS and udp.evidence["datagrams"] == 1
    assert udp.evidence["syslog"]["app"] == "qumulo" and udp.evidence["syslog"]["message"] == "disk quota hit"
    assert udp.evidence["documented_port"] == 514 and udp.port == port
    assert tcp.status is Status.SKIP and tcp.reason is Reason.NOT_SEEN
    assert res[silent].status is Status.FAIL and res[silent].reason is Reason.NOT_SEEN
    assert [u["source_address"] for u in unexpected] == [third_host.ipv4]
    assert unexpected[0]["syslog"]["syslog_format"] == "rfc3164" and unexpected[0]["syslog"]["app"] == "natbox"
    assert facts["complete"] is False and facts["waited_s"] >= 2.5


async def test_logger_tcp_octet_counting_and_newline_over_ipv6(lab: Lab, second_host: Host, third_host: Host) -> None:
    port = free_port()
    targets = {"monitored-file-servers": [Target("monitored-file-servers", second_host.ipv6),
                                          Target("monitored-file-servers", third_host.ipv6)]}  # fmt: skip

    async def senders() -> None:
        await sh(second_host, "logger", "-T", "--octet-count", "--rfc5424", "-n", lab.gateway6, "-P", str(port),
                 "-t", "synology", "counted")  # fmt: skip
        await sh(third_host, "logger", "-T", "--rfc3164", "-n", lab.gateway6, "-P", str(port), "-t", "syno", "lined")

    rows, unexpected, facts = await listen_while(senders, [syslog_row()], targets, port, seconds=8)
    res = by_target(rows)
    counted, lined = res[second_host.ipv6], res[third_host.ipv6]
    assert counted.status is Status.PASS and lined.status is Status.PASS, (counted.detail, lined.detail)
    tcp = counted.checks[1]
    assert tcp.evidence["connections"] == 1 and tcp.evidence["messages"] == 1
    assert tcp.evidence["syslog"]["message"] == "counted" and tcp.evidence["syslog"]["app"] == "synology"
    assert tcp.evidence["syslog"]["syslog_format"] == "rfc5424"
    ev = lined.checks[1].evidence
    assert ev["syslog"]["syslog_format"] == "rfc3164" and ev["syslog"]["app"] == "syno" and ev["messages"] == 1
    assert unexpected == []
    assert facts["complete"] is True and facts["waited_s"] < 8  # stopped as soon as the source was seen


async def test_project_send_is_matched_by_its_tag_and_reports_refusal(lab: Lab, second_host: Host) -> None:
    port = free_port()
    closed = free_port()
    targets = {"compression-services": [Target("compression-services", second_host.ipv4)]}
    out: dict[str, subprocess.CompletedProcess[str]] = {}

    async def senders() -> None:
        base = [sys.executable, "-m", "scanner", "send", "--to", lab.gateway4, "--protocol", "tcp"]
        out["ok"] = await sh(second_host, *base, "--port", str(port), "--count", "2", check=False)
        out["refused"] = await sh(second_host, *base, "--port", str(closed), check=False)

    rows, unexpected, _ = await listen_while(senders, [adhoc_row(Transport.TCP, port)], targets, port, seconds=8)
    assert out["ok"].returncode == 0, out["ok"].stdout + out["ok"].stderr
    assert out["refused"].returncode == 1 and "refused" in out["refused"].stdout
    (result,) = rows
    assert result.row.source == ANY_ROLE and result.status is Status.PASS
    tags = result.checks[0].evidence["tags"]
    assert len(tags) == 1 and tags[0]["row"] == f"port/tcp-{port}" and tags[0]["count"] == 2
    assert tags[0]["nonce"] in out["ok"].stdout
    assert unexpected == []


async def test_malformed_syslog_and_endless_stream_stay_bounded(lab: Lab, second_host: Host, tmp_path: Path) -> None:
    port = free_port()
    listener = Listener([Binding(Transport.UDP, port, "0.0.0.0"), Binding(Transport.TCP, port, "0.0.0.0")],
                        idle_timeout=30.0)  # fmt: skip
    await listener.start()
    try:
        await sh(second_host, sys.executable, "-m", "tests.listener._sender", "garbage", lab.gateway4, str(port))
        endless = asyncio.create_task(sh(second_host, sys.executable, "-m", "tests.listener._sender", "endless",
                                         lab.gateway4, str(port), "--seconds", "30", check=False))  # fmt: skip
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await listener.wait(lambda: False, loop.time() + 3) is False  # the deadline ends the wait
        assert loop.time() - started < 4
    finally:
        await listener.stop()  # ends the endless connection
    result = await asyncio.wait_for(endless, 40)
    assert int(result.stdout.strip() or 0) > 1_000_000  # it really streamed megabytes at us
    store = listener.store
    udp = store.records[(Transport.UDP, port, second_host.ipv4)]
    tcp = store.records[(Transport.TCP, port, second_host.ipv4)]
    assert udp.datagrams >= 5
    assert tcp.connections == 3
    for rec in (udp, tcp):
        for sample in rec.samples:
            assert len(sample.raw) <= store.sample_bytes
            parsed = sample.syslog()
            assert parsed is None or len(parsed.message) <= 2048
    assert store.drops["frames_truncated"] >= 2  # the bogus count and the endless line
    assert store.drops["tcp_bytes_discarded"] > 1_000_000


async def test_flood_reports_every_tagged_datagram_with_bounded_memory(lab: Lab, second_host: Host) -> None:
    port = free_port()
    listener = Listener([Binding(Transport.UDP, port, "0.0.0.0")])
    await listener.start()
    try:
        sent = await sh(second_host, sys.executable, "-m", "tests.listener._sender", "flood", lab.gateway4, str(port),
                        "--count", "20000", "--tagged", "200", "--rate", "20000")  # fmt: skip
        nonces = set(sent.stdout.split())
        loop = asyncio.get_running_loop()
        store = listener.store
        await listener.wait(lambda: store.tags_kept >= len(nonces), loop.time() + 10)
    finally:
        await listener.stop()
    assert len(nonces) == 200
    rec = store.records[(Transport.UDP, port, second_host.ipv4)]
    assert {n for n in rec.tags} == nonces
    assert all(t.tag.key == "flood/udp" for t in rec.tags.values())
    assert rec.datagrams + store.drops["udp_kernel_drops"] >= 20000 - 50
    assert len(store.records) == 1 and len(rec.samples) <= 2  # 20,000 datagrams, two samples kept


async def test_real_port_514_as_root(lab: Lab, second_host: Host) -> None:
    if os.geteuid() != 0:
        pytest.skip("binding 514 needs root")
    listener = Listener([Binding(Transport.UDP, 514, lab.gateway4)])
    await listener.start()
    try:
        if listener.failed:
            pytest.skip(f"UDP 514 is taken on this machine: {next(iter(listener.failed.values()))}")
        await sh(second_host, "logger", "-d", "-n", lab.gateway4, "-t", "router", "real port")  # default port 514
        loop = asyncio.get_running_loop()
        await listener.wait(lambda: bool(listener.store.records), loop.time() + 5)
    finally:
        await listener.stop()
    rec = listener.store.records[(Transport.UDP, 514, second_host.ipv4)]
    msg = rec.samples[0].syslog()
    assert msg is not None and msg.app == "router" and msg.message == "real port"
