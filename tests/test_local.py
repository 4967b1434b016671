"""`portready local` time skew: the DC's clock comes from the probes that declare `clock_evidence`."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from scanner.local import TimeSource, check_time_skew, time_sources
from scanner.models import CheckSpec, Direction, Reason, Row, Status, Target, Transport
from scanner.probes import base
from scanner.probes.base import Outcome, Probe, ProbeContext, Settings, failed, passed, register
from scanner.probes.netio import connect_tcp
from scanner.profiles import load_catalogue

DC = Target("domain-controllers", "127.0.0.1")
FAST = Settings(timeout=1.0, retries=0)


def _row(*checks: CheckSpec, target: str = "domain-controllers", direction: Direction = Direction.OUTBOUND) -> Row:
    return Row(profile="t", id=f"r{len(checks)}", section="t", doc_port="", doc_protocol="TCP", doc_source="a",
               doc_target="b", purpose="p", direction=direction, source="auditor-server", target=target,
               checks=checks)  # fmt: skip


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once closed: the kernel answers RST


def test_the_builtin_rows_give_the_ldap_then_smb_clock_on_their_documented_ports() -> None:
    sources = time_sources(load_catalogue().rows())
    assert sources == [TimeSource("ldap", 389, "current_time"), TimeSource("smb", 445, "server_time")]


def test_only_outbound_rows_to_the_dc_role_and_probes_with_a_clock_count() -> None:
    rows = [
        _row(CheckSpec(Transport.TCP, "tcp", 389)),  # no clock
        _row(CheckSpec(Transport.TCP, "ldap", 3268), target="monitored-computers"),  # another role
        _row(CheckSpec(Transport.TCP, "smb", 445), direction=Direction.INBOUND),
        _row(CheckSpec(Transport.TCP, "ldap", 3268), CheckSpec(Transport.TCP, "ldap", 389)),  # first port per probe
    ]
    assert time_sources(rows) == [TimeSource("ldap", 3268, "current_time")]
    assert time_sources([]) == []


def test_no_source_is_inconclusive_and_says_why() -> None:
    (row,) = asyncio.run(check_time_skew([DC], FAST, []))
    check = row.checks[0]
    assert check.status is Status.INCONCLUSIVE and check.reason is Reason.NO_ANSWER
    assert "no row to the domain controllers checks a port with a probe that reads the clock" in check.detail


def test_a_missing_and_a_hostile_dc_leave_the_clock_unknown_with_what_each_said(hostile: Callable[..., tuple[str, int]]) -> None:
    _, garbage = hostile("garbage")
    refused = _closed_port()
    sources = [TimeSource("ldap", refused, "current_time"), TimeSource("smb", garbage, "server_time")]
    (row,) = asyncio.run(check_time_skew([DC], FAST, sources))
    check = row.checks[0]
    assert check.status is Status.INCONCLUSIVE and check.reason is Reason.NO_ANSWER
    assert f"ldap on {refused}: refused" in check.detail
    assert f"smb on {garbage}: " in check.detail
    assert row.row.doc_port == f"{refused}, {garbage}"


@pytest.mark.lab
def test_a_dropped_dc_port_leaves_the_clock_unknown_as_filtered(second_host: Any) -> None:
    second_host.firewall.drop(389, "tcp")
    try:
        target = Target("domain-controllers", second_host.ipv4)
        (row,) = asyncio.run(check_time_skew([target], FAST, [TimeSource("ldap", 389, "current_time")]))
    finally:
        second_host.firewall.clear()
    check = row.checks[0]
    assert check.status is Status.INCONCLUSIVE
    assert "ldap on 389: filtered" in check.detail


_CLOCK_PROBE = "throwaway-clock"


@pytest.fixture
def clock_probe() -> Iterator[str]:
    """A probe that reads an ISO time line from its peer: declared once, used by `local` untouched."""

    @register
    class ClockLineProbe(Probe):
        name = _CLOCK_PROBE
        clock_evidence = "peer_clock"

        async def run(self, ctx: ProbeContext) -> Outcome:
            reader, writer = await connect_tcp(ctx)
            try:
                line = await asyncio.wait_for(reader.readline(), ctx.step_timeout())
            finally:
                writer.close()
            text = line.decode("ascii", "replace").strip()
            return passed("clock read", peer_clock=text) if text else failed(Reason.PROTOCOL, "no time line")

    try:
        yield _CLOCK_PROBE
    finally:
        base._REGISTRY.pop(_CLOCK_PROBE, None)


def test_a_new_probe_declaring_clock_evidence_is_used_without_editing_local(clock_probe: str) -> None:
    ahead = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=10)

    async def go() -> Any:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(ahead.isoformat().encode() + b"\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            sources = time_sources([_row(CheckSpec(Transport.TCP, clock_probe, port))])
            assert sources == [TimeSource(clock_probe, port, "peer_clock")]
            return await check_time_skew([DC], FAST, sources)

    (row,) = asyncio.run(go())
    check = row.checks[0]
    assert check.status is Status.FAIL and check.reason is Reason.TIME_SKEW
    assert check.evidence["time_source"] == f"{clock_probe}:{row.checks[0].port}"
    assert 590 < float(check.evidence["skew_seconds"]) < 610


def test_local_help_offers_only_what_local_uses_and_old_flags_are_ignored_aloud() -> None:
    helptext = subprocess.run([sys.executable, "-m", "scanner", "local", "--help"], capture_output=True, text=True, timeout=60)
    assert helptext.returncode == 0 and "--timeout" in helptext.stdout
    for flag in ("--depth", "--concurrency", "--per-host", "--proxy", "--ca-bundle", "--trust-private-ca"):
        assert flag not in helptext.stdout
    run = subprocess.run([sys.executable, "-m", "scanner", "local", "--depth", "port", "--no-time-skew", "--quiet", "--json", "-"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode in (0, 1), run.stderr  # 1 when a port the Auditor needs is held on this machine
    assert "--depth does nothing here" in run.stderr and '"kind": "local"' in run.stdout
    bad = subprocess.run([sys.executable, "-m", "scanner", "local", "--depth", "deep"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
