"""sql-browser probe: SQL Server Browser (MC-SQLR) on UDP, against the simulator."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from scanner.models import Reason, Status
from scanner.probes.udp import payload_for
from scanner.testing import make_context, run_probe
from scanner.wire.mcsqlr import McsqlrError, parse_svr_resp
from tests.lab.netns import Host
from tests.lab.simulators import tds as sim
from tests.probes.test_tds import start_simulator, stop


def svr_resp(text: str, size: int | None = None) -> bytes:
    data = text.encode("latin-1")
    return struct.pack("<BH", 0x05, len(data) if size is None else size) + data


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_svr_resp_lists_instances_with_ports_and_pipes() -> None:
    text = (
        "ServerName;SQL1;InstanceName;MSSQLSERVER;IsClustered;No;Version;15.0.2000.5;tcp;1433;"
        "np;\\\\SQL1\\pipe\\sql\\query;;"
        "ServerName;SQL1;InstanceName;SQLEXPRESS;IsClustered;Yes;Version;16.0.1000.6;tcp;50123;;"
        "ServerName;SQL1;InstanceName;PIPES;IsClustered;No;Version;16.0.1000.6;np;\\\\SQL1\\pipe\\x;;"
    )
    instances = parse_svr_resp(svr_resp(text))
    assert [(i.name, i.tcp_port, i.clustered) for i in instances] == [
        ("MSSQLSERVER", 1433, False),
        ("SQLEXPRESS", 50123, True),
        ("PIPES", None, False),
    ]
    assert instances[0].pipe == "\\\\SQL1\\pipe\\sql\\query"
    assert instances[0].is_default and not instances[1].is_default


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x05\x00",  # no size
        b"\x04\x05\x00hello",  # wrong type
        svr_resp("ServerName;A;InstanceName;B;tcp;1433;;", size=500),  # size over the datagram
        svr_resp("ServerName;A;InstanceName;B;tcp;1433;"),  # no ';;'
        svr_resp("ServerName;A;IsClustered;No;;"),  # no instance name
        svr_resp("ServerName;A;InstanceName;;"),  # key without value
    ],
)
def test_malformed_svr_resp_is_rejected(data: bytes) -> None:
    with pytest.raises(McsqlrError):
        parse_svr_resp(data)


def test_an_entry_with_an_invalid_port_is_kept_without_a_port() -> None:
    text = "ServerName;A;InstanceName;B;tcp;99999;;ServerName;A;InstanceName;C;tcp;1500;;"
    bad, good = parse_svr_resp(svr_resp(text))
    assert (bad.tcp_port, bad.invalid_tcp) == (None, "99999")
    assert good.tcp_port == 1500


def test_huge_instance_list_is_capped() -> None:
    entry = "ServerName;A;InstanceName;I{};tcp;1500;;"
    text = "".join(entry.format(n) for n in range(1000))[:65000]
    text = text[: text.rfind(";;") + 2]
    assert len(parse_svr_resp(svr_resp(text))) == 256


async def test_port_level_udp_probe_asks_the_browser_a_real_question() -> None:
    ctx = make_context("sql1", "127.0.0.1", 1434, "udp", probe="udp")
    assert payload_for(ctx) == b"\x03"


async def test_browser_answer_passes_with_instances() -> None:
    async with sim.tds_server(instances={"SQLEXPRESS": 0, "SALES": 0}) as srv:
        ctx = make_context("sql1", "127.0.0.1", srv.browser_port, "udp", probe="sql-browser")
        result = await run_probe("sql-browser", ctx)
        ports = dict(srv.instance_ports)
    assert result.status is Status.PASS, result.detail
    found = {i["name"]: i["tcp_port"] for i in result.evidence["instances"]}
    assert found["SQLEXPRESS"] == ports["SQLEXPRESS"]
    assert found["SALES"] == ports["SALES"]
    assert "MSSQLSERVER" in found
    assert f"SQLEXPRESS (TCP {ports['SQLEXPRESS']})" in result.detail


async def test_closed_browser_port_is_refused() -> None:
    ctx = make_context("sql1", "127.0.0.1", free_udp_port(), "udp", probe="sql-browser", timeout=1.0)
    result = await run_probe("sql-browser", ctx)
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED), result.detail


async def test_silent_browser_is_inconclusive_never_pass() -> None:
    # A UDP socket that reads and never answers: the Browser stopped behind an open port.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
        quiet.bind(("127.0.0.1", 0))
        port = quiet.getsockname()[1]
        ctx = make_context("sql1", "127.0.0.1", port, "udp", probe="sql-browser", timeout=0.5)
        result = await run_probe("sql-browser", ctx)
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_ANSWER)
    assert "Browser" in result.detail


@pytest.mark.parametrize("mode", ["udp-garbage", "udp-oversized"])
async def test_hostile_udp_answers_fail_protocol(hostile, mode: str) -> None:  # type: ignore[no-untyped-def]
    address, port = hostile(mode, cap=1 << 20)
    ctx = make_context("sql1", address, port, "udp", probe="sql-browser", timeout=1.0)
    started = time.monotonic()
    result = await run_probe("sql-browser", ctx)
    assert time.monotonic() - started < 3.0
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL), result.detail


@pytest.mark.lab
async def test_lab_browser_dropped_is_inconclusive_and_rejected_is_refused(second_host: Host) -> None:
    proc = start_simulator(
        second_host,
        ["tds", "--bind", "0.0.0.0", "--port", "1433", "--instance", "SQLEXPRESS=50123"],
    )
    try:
        ok = await run_probe("sql-browser", make_context("sql1", second_host.ipv4, 1434, "udp", probe="sql-browser"))
        assert ok.status is Status.PASS, ok.detail
        assert {"SQLEXPRESS": 50123}.items() <= {i["name"]: i["tcp_port"] for i in ok.evidence["instances"]}.items()

        second_host.firewall.drop(1434, "udp")
        dropped = await run_probe(
            "sql-browser", make_context("sql1", second_host.ipv4, 1434, "udp", probe="sql-browser", timeout=0.5)
        )
        assert (dropped.status, dropped.reason) == (Status.INCONCLUSIVE, Reason.NO_ANSWER)

        second_host.firewall.clear()
        second_host.firewall.reject(1434, "udp")
        rejected = await run_probe(
            "sql-browser", make_context("sql1", second_host.ipv4, 1434, "udp", probe="sql-browser", timeout=0.5)
        )
        assert (rejected.status, rejected.reason) == (Status.FAIL, Reason.REFUSED)
    finally:
        stop(proc)
