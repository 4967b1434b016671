"""sql-named-instances: Browser list, then TDS PRELOGIN to every announced instance's port."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from scanner.models import Reason, Status
from scanner.probes.base import Settings
from scanner.probes.sql_named_instances import SqlNamedInstancesProbe
from scanner.testing import make_context, run_probe
from tests.lab.netns import Host
from tests.lab.simulators import tds as sim
from tests.probes.test_tds import start_simulator, stop

PROBE = "sql-named-instances"


def ctx_for(browser_port: int, address: str = "127.0.0.1", timeout: float = 1.0, values: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
    settings = Settings(timeout=timeout, retries=1, values=values or {})
    return make_context(
        "sql1", address, "1024-65535", probe=PROBE, options={"browser_port": browser_port}, settings=settings
    )


async def test_every_announced_instance_answering_passes() -> None:
    async with sim.tds_server(instances={"SQLEXPRESS": 0, "SALES": 0}) as srv:
        result = await run_probe(PROBE, ctx_for(srv.browser_port))
        ports = dict(srv.instance_ports)
    assert result.status is Status.PASS, result.detail
    checked = {i["name"]: i for i in result.evidence["instances"]}
    assert set(checked) == {"SQLEXPRESS", "SALES"}  # the default instance is the 1433 row's
    assert checked["SQLEXPRESS"]["tcp_port"] == ports["SQLEXPRESS"]
    assert checked["SALES"]["product"] == "SQL Server 2019"
    assert checked["SALES"]["instance_matches"] is True


async def test_announced_instance_not_answering_fails_by_name_and_port() -> None:
    with socket.socket() as s:  # a port nothing will listen on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    async with sim.tds_server(instances={"SQLEXPRESS": 0, "SALES": dead}, silent_instances=("SALES",)) as srv:
        result = await run_probe(PROBE, ctx_for(srv.browser_port))
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED), result.detail
    assert f"instance SALES announces TCP {dead}" in result.detail
    assert "SQLEXPRESS" not in result.detail
    states = {i["name"]: i["status"] for i in result.evidence["instances"]}
    assert states == {"SQLEXPRESS": "pass", "SALES": "fail"}


async def test_silent_browser_without_inventory_ports_is_inconclusive() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
        quiet.bind(("127.0.0.1", 0))
        result = await run_probe(PROBE, ctx_for(quiet.getsockname()[1], timeout=0.5))
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_ANSWER)
    assert "sql_instances" in result.detail


async def test_silent_browser_with_inventory_ports_checks_those() -> None:
    async with sim.tds_server(instances={"SQLEXPRESS": 0}, browser=False) as srv:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
            quiet.bind(("127.0.0.1", 0))
            ctx = ctx_for(
                quiet.getsockname()[1], timeout=0.5,
                values={"sql_instances": {"SQLEXPRESS": srv.instance_ports["SQLEXPRESS"]}},
            )  # fmt: skip
            result = await run_probe(PROBE, ctx)
    assert result.status is Status.PASS, result.detail
    assert "checked the ports set in sql_instances only" in result.detail
    assert result.evidence["instances"][0]["source"] == "inventory"


async def test_instance_announcing_no_usable_port_is_named_not_failed() -> None:
    async with sim.tds_server(instances={"SQLEXPRESS": 0}) as srv:
        browser = sim.BrowserServer(instances={"SQLEXPRESS": srv.instance_ports["SQLEXPRESS"], "BROKEN": 0})
        await browser.start()
        try:
            result = await run_probe(PROBE, ctx_for(browser.port))
        finally:
            await browser.stop()
    assert result.status is Status.PASS, result.detail
    assert "BROKEN (invalid TCP port '0')" in result.detail


async def test_only_the_default_instance_is_skipped_as_not_registered() -> None:
    async with sim.tds_server() as srv:
        result = await run_probe(PROBE, ctx_for(srv.browser_port))
    assert (result.status, result.reason) == (Status.SKIP, Reason.NOT_REGISTERED)
    assert result.evidence["announced"][0]["name"] == "MSSQLSERVER"


async def test_port_answering_as_another_instance_fails_protocol() -> None:
    async with sim.tds_server() as srv:  # default instance only
        browser = sim.BrowserServer(instances={"SQLEXPRESS": srv.port})  # stale: points at MSSQLSERVER
        await browser.start()
        try:
            result = await run_probe(PROBE, ctx_for(browser.port))
        finally:
            await browser.stop()
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL), result.detail
    assert "stale" in result.detail


@pytest.mark.parametrize("mode", ["garbage", "silent", "drip"])
async def test_hostile_peer_on_an_announced_port_fails_protocol_in_time(hostile, mode: str) -> None:  # type: ignore[no-untyped-def]
    _address, port = hostile(mode, flavor="tds")
    browser = sim.BrowserServer(instances={"SQLEXPRESS": port})
    await browser.start()
    try:
        started = time.monotonic()
        result = await run_probe(PROBE, ctx_for(browser.port))
        elapsed = time.monotonic() - started
    finally:
        await browser.stop()
    if mode in ("silent", "drip"):  # connected, then no (complete) answer: slowness, not a verdict
        assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
    else:
        assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL), result.detail
    assert f"instance SQLEXPRESS announces TCP {port}" in result.detail
    assert elapsed < 4.0


def test_options_are_validated() -> None:
    SqlNamedInstancesProbe.validate({"browser_port": 1434})
    with pytest.raises(ValueError):
        SqlNamedInstancesProbe.validate({"browser_port": "x"})
    with pytest.raises(ValueError):
        SqlNamedInstancesProbe.validate({"bogus": 1})


async def test_bad_inventory_setting_is_inconclusive_not_configured() -> None:
    result = await run_probe(PROBE, ctx_for(1, values={"sql_instances": {"SQLEXPRESS": "high"}}))
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NOT_CONFIGURED)


@pytest.mark.lab
async def test_lab_dropped_dynamic_port_names_the_instance(second_host: Host) -> None:
    proc = start_simulator(
        second_host,
        ["tds", "--bind", "0.0.0.0", "--port", "1433",
         "--instance", "SQLEXPRESS=50123", "--instance", "SALES=50124"],
    )  # fmt: skip
    try:
        ok = await run_probe(PROBE, ctx_for(1434, second_host.ipv4))
        assert ok.status is Status.PASS, ok.detail

        second_host.firewall.drop(50123)
        dropped = await run_probe(PROBE, ctx_for(1434, second_host.ipv4))
        assert (dropped.status, dropped.reason) == (Status.FAIL, Reason.FILTERED), dropped.detail
        assert "instance SQLEXPRESS announces TCP 50123 but a firewall drops it" in dropped.detail
        assert "SALES" not in dropped.detail

        second_host.firewall.clear()
        second_host.firewall.reject(50124)
        rejected = await run_probe(PROBE, ctx_for(1434, second_host.ipv4))
        assert (rejected.status, rejected.reason) == (Status.FAIL, Reason.REFUSED), rejected.detail
        assert "instance SALES announces TCP 50124" in rejected.detail

        second_host.firewall.clear()
        second_host.firewall.drop(1434, "udp")
        silent = await run_probe(PROBE, ctx_for(1434, second_host.ipv4, timeout=0.5))
        assert (silent.status, silent.reason) == (Status.INCONCLUSIVE, Reason.NO_ANSWER)
    finally:
        stop(proc)
