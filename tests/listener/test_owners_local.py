"""Port owners, local readiness rows, time-skew verdicts, the bounded store, port options."""

from __future__ import annotations

import datetime as dt
import os
import socket

import psutil
import pytest

from scanner.commands.listen import parse_port_options
from scanner.errors import UsageError
from scanner.listener.matching import ExpectedSource, match, plan_inbound
from scanner.listener.owners import parse_netstat_windows, parse_ss, parse_tasklist, port_owners
from scanner.listener.server import ArrivalStore
from scanner.local import check_local_ports, local_ports, skew_outcome
from scanner.models import CheckSpec, Direction, PortRange, Reason, Row, Status, Target, Transport


def inbound_row(*checks: CheckSpec, source: str = "nutanix-files") -> Row:
    return Row(
        profile="t", id="r", section="t", doc_port="x", doc_protocol="TCP", doc_source="src",
        doc_target="Netwrix Auditor Server", purpose="p", direction=Direction.INBOUND, source=source,
        target="auditor-server", checks=checks,
    )  # fmt: skip


def test_ss_output_names_the_process() -> None:
    text = (
        'UNCONN 0 0 0.0.0.0:514 0.0.0.0:* users:(("rsyslogd",pid=612,fd=6))\n'
        'UNCONN 0 0 [::]:514 [::]:* users:(("rsyslogd",pid=612,fd=7))\n'
        "UNCONN 0 0 0.0.0.0:5140 0.0.0.0:*\n"
    )
    owners = parse_ss(text, Transport.UDP, 514)
    assert {(o.pid, o.name) for o in owners} == {(612, "rsyslogd")}


def test_windows_netstat_and_tasklist_give_pid_and_image() -> None:
    netstat = (
        "  Proto  Local Address          Foreign Address        State           PID\n"
        "  TCP    0.0.0.0:135            0.0.0.0:0              LISTENING       1044\n"
        "  TCP    0.0.0.0:9004           0.0.0.0:0              LISTENING       3312\n"
        "  TCP    10.0.0.5:9004          10.0.0.9:50122         ESTABLISHED     3312\n"
        "  UDP    0.0.0.0:514            *:*                                    2900\n"
    )
    assert parse_netstat_windows(netstat, Transport.TCP, 9004) == [(3312, "0.0.0.0")]
    assert parse_netstat_windows(netstat, Transport.UDP, 514) == [(2900, "0.0.0.0")]
    names = parse_tasklist('"svchost.exe","1044","Services","0","12,000 K"\n"NwCoreSvc.exe","3312","Services","0","9 K"\n')
    assert names == {1044: "svchost.exe", 3312: "NwCoreSvc.exe"}


async def test_held_port_names_this_process_and_warns() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        owners = port_owners(Transport.TCP, port)
        assert os.getpid() in {o.pid for o in owners}
        row = inbound_row(CheckSpec(Transport.TCP, "listen", 9898, setting="nutanix-port"))
        ports = local_ports([row], ["auditor-server"], {"ports": {"nutanix-port": port}})
        (result,) = await check_local_ports(ports)
    assert result.row.key == f"local/port-{port}"
    assert result.status is Status.WARN and psutil.Process().name() in result.detail
    assert result.checks[0].evidence["needed_by"] == ["t/r"]


async def test_free_port_passes() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ports = local_ports([inbound_row(CheckSpec(Transport.TCP, "listen", port))], ["auditor-server"])
    (result,) = await check_local_ports(ports)
    assert result.status is Status.PASS and result.detail.startswith("free")


def test_time_skew_thresholds() -> None:
    now = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    assert skew_outcome(now + dt.timedelta(seconds=2), now, "ldap", "dc1")[0] is Status.PASS
    status, reason, detail, skew = skew_outcome(now - dt.timedelta(seconds=120), now, "ldap", "dc1")
    assert (status, reason, skew) == (Status.WARN, Reason.TIME_SKEW, -120.0) and "behind" in detail
    status, reason, _, _ = skew_outcome(now + dt.timedelta(minutes=6), now, "ldap", "dc1")
    assert (status, reason) == (Status.FAIL, Reason.TIME_SKEW)


def test_store_caps_sources_and_counts_drops() -> None:
    store = ArrivalStore(max_sources=10, max_tags_per_source=3)
    for i in range(100):
        store.record(Transport.UDP, 514, f"10.0.0.{i}", "datagram", b"x" * 100000)
    assert len(store.records) == 10 and store.drops["sources_over_cap"] == 90
    assert all(len(s.raw) <= store.sample_bytes for r in store.records.values() for s in r.samples)
    for i in range(5):
        store.record(Transport.UDP, 514, "10.0.0.1", "datagram", f"portready-test {i:016x} a/b".encode())
    assert len(store.records[(Transport.UDP, 514, "10.0.0.1")].tags) == 3 and store.drops["tags_over_cap"] == 2


def test_setting_port_and_ranges_in_the_plan() -> None:
    row = inbound_row(CheckSpec(Transport.TCP, "listen", 9898, setting="nutanix-port"),
                      CheckSpec(Transport.TCP, "listen", PortRange(1024, 65535)))  # fmt: skip
    (irow,) = plan_inbound([row], {"ports": {"nutanix-port": 9900}}, {(Transport.TCP, 9900): 19900})
    fixed, dynamic = irow.checks
    assert (fixed.doc_port, fixed.port) == (9900, 19900)
    assert dynamic.port is None and dynamic.why_not is not None and dynamic.why_not.reason is Reason.NOT_VERIFIABLE
    store = ArrivalStore()
    store.record(Transport.TCP, 19900, "198.18.1.2", "connection")
    report = match([irow], {"nutanix-files": [ExpectedSource(Target("nutanix-files", "nas"), ("198.18.1.2",))]}, store)
    (result,) = report.rows
    assert result.status is Status.PASS and [c.status for c in result.checks] == [Status.PASS, Status.SKIP]
    assert report.complete


def test_role_without_sources_accepts_anyone() -> None:
    (irow,) = plan_inbound([inbound_row(CheckSpec(Transport.UDP, "listen", 514), source="network-devices")])
    store = ArrivalStore()
    report = match([irow], {}, store, waited=5)
    assert report.rows[0].status is Status.FAIL and report.rows[0].target.host == "any"
    store.record(Transport.UDP, 514, "198.18.1.9", "datagram", b"<13>x")
    report = match([irow], {}, store)
    assert report.rows[0].status is Status.PASS and report.unexpected == []


def test_port_options() -> None:
    opts = parse_port_options(["9999/tcp", "514/UDP=15514"])
    assert opts.adhoc == [(Transport.TCP, 9999)] and opts.mapping == {(Transport.UDP, 514): 15514}
    for bad in ("514", "514/icmp", "70000/tcp", "514/udp=0"):
        with pytest.raises(UsageError):
            parse_port_options([bad])
