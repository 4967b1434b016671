"""The engine under load, against real peers: verdicts must not depend on how busy the peer is.

- an open port whose listener's accept queue overflows (backlog 1, slow to accept) is never
  `filtered`: its dropped SYNs are sent again on TCP's schedule and asked again at lower load;
- a slow peer (accepts, answers late) reads `pass` or `no-reply`, never `protocol`;
- closed UDP ports behind a router that rate-limits ICMP errors read `refused`;
- the Samba DC on many addresses reads at protocol depth what it reads on its own address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scanner.engine import build_plan, run_plan
from scanner.models import CheckSpec, Depth, Direction, Reason, Row, RowResult, Status, Target, Transport
from scanner.probes.base import Settings
from tests.lab.netns import Lab, RoutedSite

_SERVER = """
import socket, sys, threading, time
def listen(port, backlog):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(backlog); return s
def drain(s, pause):
    while True:
        c, _ = s.accept(); c.close(); time.sleep(pause)
threading.Thread(target=drain, args=(listen(8201, 4096), 0), daemon=True).start()
threading.Thread(target=drain, args=(listen(8202, 1), 0.05), daemon=True).start()
print("ready", flush=True); time.sleep(300)
"""


def _row(*checks: CheckSpec, row_id: str = "r") -> Row:
    return Row(
        profile="t", id=row_id, section="T", doc_port="x", doc_protocol="TCP", doc_source="s",
        doc_target="t", purpose="p", direction=Direction.OUTBOUND, source="auditor-server",
        target="monitored-computers", checks=checks,
    )  # fmt: skip


def _scan(rows: list[Row], hosts: list[str], settings: Settings, **kw: Any) -> list[RowResult]:
    targets = {"monitored-computers": [Target("monitored-computers", h) for h in hosts]}
    plan = build_plan(rows, targets, depth=Depth.PORT, settings=settings)
    return asyncio.run(run_plan(plan, settings, **kw))


def _netstat(site: RoutedSite, name: str) -> int:
    text = site.far.run(["cat", "/proc/net/netstat"], capture_output=True, text=True, check=True).stdout
    lines = [line.split() for line in text.splitlines() if line.startswith("TcpExt:")]
    return int(dict(zip(lines[0], lines[1], strict=True))[name])


@pytest.fixture(scope="module")
def site(lab: Lab) -> Iterator[RoutedSite]:
    yield lab.add_routed_site("site", 120)


@pytest.mark.lab
def test_open_port_behind_an_overflowing_accept_queue_is_not_filtered(site: RoutedSite) -> None:
    server = site.far.popen([sys.executable, "-c", _SERVER], stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        before = _netstat(site, "ListenOverflows")
        rows = [_row(CheckSpec(Transport.TCP, "tcp", 8201), CheckSpec(Transport.TCP, "tcp", 8202))]
        results = _scan(rows, site.addresses[:60], Settings(timeout=2.0, retries=1), concurrency=512)
        overflows = _netstat(site, "ListenOverflows") - before
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()
    assert overflows > 0  # the queue really overflowed: SYNs were dropped by the listener
    slow = [r.checks[1] for r in results]
    assert {(c.status, c.reason) for c in slow} == {(Status.PASS, Reason.PORT_DEPTH)}, [
        c.detail for c in slow if c.status is not Status.PASS
    ]


@pytest.mark.lab
def test_closed_udp_ports_behind_an_icmp_rate_limit_read_refused(site: RoutedSite) -> None:
    site.limit_icmp(rate=100, burst=10)  # harsher than Linux's 1000/s: the pacing must adapt
    try:
        rows = [_row(CheckSpec(Transport.TCP, "tcp", 8299), CheckSpec(Transport.UDP, "udp", 9389),
                     CheckSpec(Transport.UDP, "udp", 9390))]  # fmt: skip
        results = _scan(rows, site.addresses[:100], Settings(timeout=2.0, retries=1), concurrency=512)
        dropped = site.icmp_dropped()
    finally:
        site.router.run(["nft", "delete", "table", "inet", "prsite"], check=False, capture_output=True)
    udp = [c for r in results for c in r.checks if c.protocol == "udp"]
    assert len(udp) == 200
    assert {(c.status, c.reason) for c in udp} == {(Status.FAIL, Reason.REFUSED)}, [
        c.detail for c in udp if c.reason is not Reason.REFUSED
    ][:5]
    assert dropped > 0  # the limit really bit: some ICMP errors were lost and the scan recovered


@pytest.mark.lab
def test_udp_port_dropped_behind_the_router_stays_inconclusive_not_refused(site: RoutedSite) -> None:
    site.router.run(["nft", "-f", "-"], input=(
        "table inet prdrop {\n chain forward {\n  type filter hook forward priority 0;\n"
        "  udp dport 9391 drop\n }\n}\n"), text=True, check=True)  # fmt: skip
    try:
        rows = [_row(CheckSpec(Transport.TCP, "tcp", 8299), CheckSpec(Transport.UDP, "udp", 9391))]
        results = _scan(rows, site.addresses[:4], Settings(timeout=1.0, retries=1))
    finally:
        site.router.run(["nft", "delete", "table", "inet", "prdrop"], check=False, capture_output=True)
    for row in results:
        closed, dropped = row.checks
        assert closed.reason is Reason.REFUSED
        assert (dropped.status, dropped.reason) == (Status.INCONCLUSIVE, Reason.NO_ANSWER)
        assert dropped.evidence["first_try"]["reason"] == "no-answer"  # asked again before the verdict


# -- a slow peer ----------------------------------------------------------------------------
async def _slow_http(delay: float) -> tuple[asyncio.AbstractServer, int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(delay)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the test ended before the slow answer: nothing to send
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _http_scan(delay: float, timeout: float) -> RowResult:
    async def scan() -> RowResult:
        server, port = await _slow_http(delay)
        async with server:
            settings = Settings(timeout=timeout, retries=0)
            rows = [_row(CheckSpec(Transport.TCP, "http", port))]
            targets = {"monitored-computers": [Target("monitored-computers", "127.0.0.1")]}
            plan = build_plan(rows, targets, depth=Depth.PROTOCOL, settings=settings)
            (row,) = await run_plan(plan, settings)
            return row

    return asyncio.run(scan())


def test_slow_peer_that_answers_within_the_timeout_passes() -> None:
    row = _http_scan(delay=0.3, timeout=2.0)
    assert row.checks[0].status is Status.PASS, row.checks[0].detail


def test_peer_slower_than_the_timeout_reads_no_reply_never_protocol() -> None:
    check = _http_scan(delay=3.0, timeout=0.5).checks[0]
    assert (check.status, check.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), check.detail
    assert "accepted the connection" in check.detail and "overloaded or hung" in check.detail
    assert "asked twice" in check.detail  # retried at lower load before the verdict
    assert check.evidence["first_try"]["reason"] == "no-reply"


# -- the Samba DC on many addresses -----------------------------------------------------------
@pytest.mark.lab
def test_samba_dc_on_many_addresses_reads_what_it_reads_on_its_own(lab: Lab, samba_template: Path, tmp_path: Path) -> None:
    from scanner.cli import main
    from tests.lab.samba_dc import SambaDC

    host = lab.add_host("dcmany")
    aliases = host.add_aliases(24)  # before samba starts: it binds every address of eth0
    dc = SambaDC(host, samba_template).start()

    def scan(addresses: list[str], name: str) -> dict[tuple[str, str], set[tuple[str, str, str]]]:
        out = tmp_path / f"{name}.json"
        targets = [a for addr in addresses for a in ("--target", f"domain-controllers={addr}")]
        main(["scan", *targets, "--target", f"dns-servers={addresses[0]}", "--profile", "active-directory",
              "--set", "domain=lab.test", "--json", str(out), "--quiet"])  # fmt: skip
        rows = json.loads(out.read_text())["rows"]
        by_row: dict[tuple[str, str], set[tuple[str, str, str]]] = {}
        for r in rows:
            if r["role"] == "domain-controllers":
                by_row.setdefault((r["row"], r["target"]), set()).update(
                    (c["probe"], str(c["port"]), f"{c['status']}/{c['reason']}") for c in r["checks"])
        return by_row

    try:
        alone = scan([host.ipv4], "alone")
        many = scan([host.ipv4, *aliases], "many")
    finally:
        dc.stop()
    reference = {row: checks for (row, _target), checks in alone.items()}
    assert len(many) == len(reference) * 25
    wrong = {key: checks ^ reference[key[0]] for key, checks in many.items() if checks != reference[key[0]]}
    assert not wrong, sorted(wrong.items())[:5]


# -- a UDP service that answers one datagram at a time ------------------------------------------
def _serial_udp_server(hosts: list[str], service: float) -> tuple[int, Callable[[], int]]:
    """A real UDP server on every address of `hosts` that answers each datagram, one at a time,
    `service` seconds each, as Samba's LDAP ping server does; a TCP listener on the same port
    gives each host its round trip. Returns the port and a function that stops the server and
    says how many datagrams it received."""
    tcp = socket.socket()
    tcp.bind(("0.0.0.0", 0))
    tcp.listen(512)
    port = tcp.getsockname()[1]
    udps = []
    for host in hosts:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((host, port))  # replies leave from the address asked, as a DC's do
        udps.append(sock)
    received = [0]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            readable, _, _ = select.select(udps, [], [], 0.1)
            for sock in readable:
                data, peer = sock.recvfrom(2048)
                received[0] += 1
                time.sleep(service)
                with contextlib.suppress(OSError):
                    sock.sendto(b"answer:" + data[:16], peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def close() -> int:
        stop.set()
        thread.join(2)
        for sock in (tcp, *udps):
            sock.close()
        return received[0]

    return port, close


@pytest.mark.parametrize("strategy", ["datagram-endpoint", "thread"])  # Linux's path, and Windows'
def test_udp_service_answering_late_from_its_queue_is_waited_for_not_asked_again(
    strategy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """24 addresses of one server whose UDP service answers one datagram at a time (40 ms each):
    the last answer comes ~1 s after the first datagram, far beyond the host's round trip.
    Sending again would only lengthen the queue (each copy is answered too); the check waits
    on the service's own latency (Karn), and every check passes. Before, most datagrams were
    sent twice, the copies queued too, and the last addresses read `inconclusive no-answer`
    even after the retry pass: a busy service taken for silence."""
    monkeypatch.setenv("PORTREADY_UDP_STRATEGY", strategy)
    hosts = [f"127.0.0.{k}" for k in range(2, 26)]
    port, close = _serial_udp_server(hosts, 0.04)
    try:
        rows = [_row(CheckSpec(Transport.TCP, "tcp", port), CheckSpec(Transport.UDP, "udp", port))]
        results = _scan(rows, hosts, Settings(timeout=3.0, retries=1))
    finally:
        received = close()
    checks = [c for r in results for c in r.checks if c.protocol == "udp"]
    wrong = [c.detail for c in checks if c.status is not Status.PASS]
    assert len(checks) == 24 and not wrong, wrong[:2]
    resent = received - 24
    assert resent <= 6, f"{resent} datagrams sent again to a service that was answering its queue"


# -- UDP pacing: the budget starts at the send --------------------------------------------------
def test_udp_checks_queued_behind_the_pacer_are_sent_at_its_pace_never_all_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """40 UDP checks, a pacer held at 20 datagrams/s and a budget (0.4 s) far shorter than the
    queue (2 s). The engine takes a check's first token before its budget starts, so every
    datagram leaves at the pacer's pace and every check is answered. Before, checks whose wait
    for a token outlasted the budget sent their datagram unpaced: 27 of the 40 arrived within
    a quarter second, the burst an ICMP rate limit drops."""
    import scanner.engine as engine
    from scanner.timing import Pacer

    monkeypatch.setattr(engine, "Pacer", lambda: Pacer(rate=20.0, ceiling=20.0, floor=20.0, burst=1))
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(0.2)
    port = server.getsockname()[1]
    arrivals: list[float] = []
    stop = threading.Event()

    def echo() -> None:
        while not stop.is_set():
            try:
                data, peer = server.recvfrom(2048)
            except OSError:
                continue
            arrivals.append(time.monotonic())
            server.sendto(b"answer", peer)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    try:
        rows = [_row(*(CheckSpec(Transport.UDP, "udp", port) for _ in range(40)))]
        results = _scan(rows, ["127.0.0.1"], Settings(timeout=0.2, retries=0), per_host=64, concurrency=64)
    finally:
        stop.set()
        thread.join(2)
        server.close()
    checks = results[0].checks
    assert len(checks) == 40 and {c.status for c in checks} == {Status.PASS}, [c.detail for c in checks][:2]
    arrivals.sort()
    busiest = max(sum(1 for t in arrivals if start <= t < start + 0.25) for start in arrivals)
    assert busiest <= 1 + 20 * 0.25 + 2, f"{busiest} datagrams within 0.25 s at a pace of 20/s"
