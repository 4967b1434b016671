"""The engine against real sockets: loopback, and lab hosts behind nftables drop/reject rules."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from scanner.engine import build_plan, resolve, run_plan
from scanner.models import CheckSpec, Depth, Direction, PortRange, Reason, Row, RowResult, Status, Target, Transport
from scanner.probes.base import Settings
from tests.lab.netns import Host


def _row(*checks: CheckSpec, role: str = "monitored-computers", row_id: str = "r") -> Row:
    return Row(
        profile="t", id=row_id, section="T", doc_port="x", doc_protocol="TCP", doc_source="s",
        doc_target="t", purpose="p", direction=Direction.OUTBOUND, source="auditor-server",
        target=role, checks=checks,
    )


def _tcp(port: int | PortRange | None, probe: str = "tcp", setting: str | None = None) -> CheckSpec:
    return CheckSpec(Transport.TCP, probe, port, setting)


@pytest.fixture
def listening_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def _scan(rows: list[Row], hosts: list[str], settings: Settings | None = None, depth: Depth = Depth.PROTOCOL):
    settings = settings or Settings(timeout=2.0, retries=1)
    targets = {"monitored-computers": [Target("monitored-computers", h) for h in hosts]}
    plan = build_plan(rows, targets, depth=depth, settings=settings)
    return asyncio.run(run_plan(plan, settings))


def test_open_port_passes_and_closed_port_is_refused(listening_port: int, closed_port: int) -> None:
    results = _scan([_row(_tcp(listening_port), _tcp(closed_port))], ["127.0.0.1"])
    (row,) = results
    ok, refused = row.checks
    assert ok.status is Status.PASS and ok.reason is Reason.PORT_DEPTH
    assert refused.status is Status.FAIL and refused.reason is Reason.REFUSED
    assert row.status is Status.FAIL and row.reason is Reason.REFUSED
    assert f"TCP {closed_port}" in refused.detail


def test_row_passes_only_when_every_check_passes(listening_port: int) -> None:
    (row,) = _scan([_row(_tcp(listening_port), _tcp(listening_port))], ["127.0.0.1"])
    assert row.status is Status.PASS


def test_unconfigured_custom_port_is_skipped_with_the_setting_named() -> None:
    (row,) = _scan([_row(_tcp(None, setting="lab-custom-port"))], ["127.0.0.1"])
    assert row.checks[0].status is Status.SKIP
    assert row.checks[0].reason is Reason.NOT_CONFIGURED
    assert "ports.lab-custom-port" in row.checks[0].detail


def test_configured_custom_port_comes_from_settings(listening_port: int) -> None:
    settings = Settings(timeout=2.0, values={"ports": {"lab-custom-port": listening_port}})
    (row,) = _scan([_row(_tcp(None, setting="lab-custom-port"))], ["127.0.0.1"], settings)
    assert row.status is Status.PASS
    assert row.checks[0].port == listening_port


def test_port_depth_skips_dynamic_ranges_instead_of_guessing() -> None:
    (row,) = _scan([_row(_tcp(PortRange(1024, 65535), probe="tcp"))], ["127.0.0.1"], depth=Depth.PORT)
    assert row.checks[0].status is Status.SKIP
    assert row.checks[0].reason is Reason.NEEDS_PROTOCOL_DEPTH


def test_port_depth_replaces_protocol_probes_with_reachability(listening_port: int) -> None:
    rows = [_row(CheckSpec(Transport.TCP, "listen", listening_port)), _row(_tcp(listening_port), row_id="x")]
    settings = Settings(timeout=2.0)
    plan = build_plan(rows, {"monitored-computers": [Target("monitored-computers", "127.0.0.1")]},
                      depth=Depth.PORT, settings=settings)
    assert [c.probe for r in plan.rows for c in r.checks] == ["listen", "tcp"]


def test_inbound_rows_are_left_to_the_listener() -> None:
    inbound = Row(
        profile="t", id="in", section="T", doc_port="9004", doc_protocol="TCP", doc_source="s",
        doc_target="t", purpose="p", direction=Direction.INBOUND, source="monitored-computers",
        target="auditor-server", checks=(CheckSpec(Transport.TCP, "listen", 9004),),
    )
    plan = build_plan([inbound], {}, depth=Depth.PROTOCOL, settings=Settings())
    assert plan.rows == [] and plan.inbound == [inbound]


def test_unresolvable_name_fails_every_check_as_unresolved(listening_port: int) -> None:
    # An empty label fails in the IDNA codec, before any resolver is asked.
    (row,) = _scan([_row(_tcp(listening_port))], ["bad..name"])
    assert row.status is Status.FAIL and row.reason is Reason.UNRESOLVED
    assert row.address is None


def test_literal_addresses_skip_resolution() -> None:
    resolved = asyncio.run(resolve("::1", 1.0))
    assert resolved.address == "::1"


def test_probe_bug_is_an_error_result_not_a_crash(listening_port: int) -> None:
    from scanner.probes.base import Probe, ProbeContext, register

    @register
    class BuggyProbe(Probe):
        name = "test-buggy"

        async def run(self, ctx: ProbeContext):  # type: ignore[override]
            raise RuntimeError("boom")

    (row,) = _scan([_row(_tcp(listening_port, probe="test-buggy"))], ["127.0.0.1"])
    assert row.status is Status.ERROR and row.reason is Reason.INTERNAL
    assert "boom" in row.detail


def test_unknown_probe_name_is_an_error_result(listening_port: int) -> None:
    (row,) = _scan([_row(_tcp(listening_port, probe="no-such-probe"))], ["127.0.0.1"])
    assert row.status is Status.ERROR and row.reason is Reason.INTERNAL


# -- real firewalls in the lab ------------------------------------------------------------------
def _serve(host: Host, *ports: int) -> subprocess.Popen[bytes]:
    code = (
        "import socket,time\n"
        "socks=[]\n"
        f"for p in {list(ports)!r}:\n"
        "    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "    s.bind(('0.0.0.0', p)); s.listen(64); socks.append(s)\n"
        "print('ready', flush=True); time.sleep(120)\n"
    )
    proc = host.popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.mark.lab
def test_dropped_port_is_filtered_not_refused(second_host: Host) -> None:
    server = _serve(second_host, 8001, 8002)
    try:
        second_host.firewall.drop(8002, "tcp")
        (row,) = _scan([_row(_tcp(8001), _tcp(8002))], [second_host.ipv4], Settings(timeout=3.0, retries=1))
        ok, dropped = row.checks
        assert ok.status is Status.PASS
        assert dropped.status is Status.FAIL and dropped.reason is Reason.FILTERED
        assert "a firewall drops TCP 8002 between this host and" in dropped.detail
    finally:
        _stop(server)


@pytest.mark.lab
def test_rejected_port_is_refused_not_filtered(second_host: Host) -> None:
    server = _serve(second_host, 8001, 8002)
    try:
        second_host.firewall.reject(8002, "tcp")
        (row,) = _scan([_row(_tcp(8001), _tcp(8002))], [second_host.ipv4])
        assert row.checks[0].status is Status.PASS
        assert row.checks[1].reason is Reason.REFUSED
    finally:
        _stop(server)


@pytest.mark.lab
def test_host_unreachable_answer_reads_unreachable(second_host: Host) -> None:
    second_host.firewall.apply_script(["tcp dport 8003 reject with icmpx type host-unreachable"])
    (row,) = _scan([_row(_tcp(8003))], [second_host.ipv4])
    assert row.status is Status.FAIL and row.reason is Reason.UNREACHABLE


@pytest.mark.lab
def test_udp_dropped_is_inconclusive_and_udp_rejected_is_refused(second_host: Host) -> None:
    from scanner.testing import make_context, run_probe

    async def both() -> tuple[Status, Reason, Status, Reason]:
        second_host.firewall.drop(9100, "udp")
        second_host.firewall.reject(9101, "udp")
        dropped = await run_probe("udp", make_context("h2", second_host.ipv4, 9100, "udp", probe="udp", timeout=1.0))
        rejected = await run_probe("udp", make_context("h2", second_host.ipv4, 9101, "udp", probe="udp", timeout=1.0))
        return dropped.status, dropped.reason, rejected.status, rejected.reason

    d_status, d_reason, r_status, r_reason = asyncio.run(both())
    assert (d_status, d_reason) == (Status.INCONCLUSIVE, Reason.NO_ANSWER)
    assert (r_status, r_reason) == (Status.FAIL, Reason.REFUSED)


@pytest.mark.lab
def test_ipv6_targets_are_scanned_too(second_host: Host) -> None:
    code = (
        "import socket,time\n"
        "s=socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('::', 8004)); s.listen(8); print('ready', flush=True); time.sleep(60)\n"
    )
    proc = second_host.popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        (row,) = _scan([_row(_tcp(8004))], [second_host.ipv6])
        assert row.status is Status.PASS, row.detail
    finally:
        _stop(proc)


def test_interleave_groups_network_checks_by_host_in_plan_order(listening_port: int) -> None:
    from scanner.engine import _interleave, _round_robin

    rows = [_row(_tcp(listening_port), _tcp(None, setting="custom"), _tcp(listening_port + 1))]
    targets = {"monitored-computers": [Target("monitored-computers", h) for h in ("a", "b")]}
    plan = build_plan(rows, targets, depth=Depth.PORT, settings=Settings())
    groups = _interleave(plan)
    assert {h: list(q) for h, q in groups.items()} == {"a": [(0, 0), (0, 2)], "b": [(1, 0), (1, 2)]}  # preset left out
    assert list(_round_robin(list(groups.values()))) == [(0, 0), (1, 0), (0, 2), (1, 2)]


def test_each_host_starts_at_a_different_check_and_results_keep_plan_order() -> None:
    """Checks in flight mix kinds (host k starts at its k-th check), so targets that share one
    server do not all ask the same service at once; the rows still come back in plan order."""
    from scanner.engine import _interleave, _staggered

    rows = [_row(_tcp(1), _tcp(2), CheckSpec(Transport.UDP, "udp", 3), _tcp(4), CheckSpec(Transport.UDP, "udp", 5))]
    targets = {"monitored-computers": [Target("monitored-computers", h) for h in ("a", "b", "c", "d")]}
    plan = build_plan(rows, targets, depth=Depth.PORT, settings=Settings())
    order = [[j for _, j in q] for q in _staggered(plan, list(_interleave(plan).values()))]
    # TCP checks (0, 1, 3) rotated per host, the UDP ones (2, 4) rotated and placed after the
    # host's first 1, 2, 3, 1... TCP checks: never UDP first, and not all of them at the end.
    assert order == [[0, 2, 4, 1, 3], [1, 3, 4, 2, 0], [3, 0, 1, 2, 4], [0, 4, 2, 1, 3]]
    listener, unused = socket.socket(), socket.socket()
    listener.bind(("0.0.0.0", 0))  # every loopback address (only 127.x is asked)
    listener.listen(16)
    unused.bind(("0.0.0.0", 0))  # bound, not listening: refused
    open_port, closed = listener.getsockname()[1], unused.getsockname()[1]
    try:
        results = _scan([_row(_tcp(open_port), _tcp(closed), _tcp(open_port))], ["127.0.0.1", "127.0.0.2", "127.0.0.3"])
    finally:
        listener.close()
        unused.close()
    assert [r.target.host for r in results] == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    for r in results:
        assert [c.port for c in r.checks] == [open_port, closed, open_port]
        assert [c.status for c in r.checks] == [Status.PASS, Status.FAIL, Status.PASS]


def test_probes_declare_their_depth_and_the_port_level_probe_per_transport() -> None:
    from scanner.probes.base import port_level_probe, registry

    assert port_level_probe(Transport.TCP) == "tcp" and port_level_probe(Transport.UDP) == "udp"
    assert registry()["listen"].depth == "inert" and registry()["ldap"].depth == "protocol"


async def _hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A service that accepts and never answers (until the test ends)."""
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        pass
    writer.close()


def _interrupted_after_first_check(rows_for: Callable[[int], list[Row]]) -> list[RowResult]:
    """Scan the rows (given a port that accepts and never answers) and cancel the run once
    the first check has ended: the rows that `Interrupted` carries."""
    from scanner.engine import Interrupted

    async def scenario() -> list[RowResult]:
        server = await asyncio.start_server(_hang, "127.0.0.1", 0)
        async with server:
            settings = Settings(timeout=20.0, retries=0)
            targets = {"monitored-computers": [Target("monitored-computers", "127.0.0.1")]}
            plan = build_plan(rows_for(server.sockets[0].getsockname()[1]), targets, depth=Depth.PROTOCOL, settings=settings)
            first = asyncio.Event()
            task = asyncio.ensure_future(run_plan(plan, settings, on_check=lambda c: first.set()))
            await first.wait()  # the fast check is done, the slow one hangs
            task.cancel()
            try:
                await task
            except Interrupted as exc:
                return exc.rows
        raise AssertionError("run_plan did not raise Interrupted")

    return asyncio.run(scenario())


def test_cancelled_scan_raises_interrupted_with_the_finished_checks(listening_port: int) -> None:
    rows = _interrupted_after_first_check(lambda slow: [
        _row(_tcp(listening_port), row_id="fast"), _row(CheckSpec(Transport.TCP, "http", slow), row_id="slow")])
    assert [r.row.id for r in rows] == ["fast"]  # rows without a finished check are left out
    assert rows[0].checks[0].status is Status.PASS


def test_a_row_cut_short_reads_interrupted_never_pass(listening_port: int) -> None:
    """One row, two checks: the fast one passed, the slow one never ended. The row must not
    read pass on the strength of half its checks."""
    (row,) = _interrupted_after_first_check(lambda slow: [
        _row(_tcp(listening_port), CheckSpec(Transport.TCP, "http", slow), row_id="half")])
    assert [(c.status, c.reason) for c in row.checks] == [
        (Status.PASS, Reason.PORT_DEPTH), (Status.INCONCLUSIVE, Reason.INTERRUPTED)]
    assert row.status is Status.INCONCLUSIVE and row.reason is Reason.INTERRUPTED


def test_connect_without_the_fast_path_reads_the_same(listening_port: int, closed_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # The path Windows' proactor loop takes: one awaited connect in a task, no re-armed socket.
    import scanner.probes.netio as netio

    monkeypatch.setattr(netio, "_rearmable", lambda loop: False)
    (row,) = _scan([_row(_tcp(listening_port), _tcp(closed_port))], ["127.0.0.1"])
    assert [(c.status, c.reason) for c in row.checks] == [(Status.PASS, Reason.PORT_DEPTH), (Status.FAIL, Reason.REFUSED)]


@pytest.mark.lab
def test_dropped_port_is_filtered_without_the_fast_path_too(second_host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    import scanner.probes.netio as netio

    monkeypatch.setattr(netio, "_rearmable", lambda loop: False)
    server = _serve(second_host, 8001, 8002)
    try:
        second_host.firewall.drop(8002, "tcp")
        (row,) = _scan([_row(_tcp(8001), _tcp(8002))], [second_host.ipv4], Settings(timeout=2.0, retries=1))
        assert [c.reason for c in row.checks] == [Reason.PORT_DEPTH, Reason.FILTERED]
    finally:
        _stop(server)


def test_the_engine_names_no_probe() -> None:
    # Probes declare their depth and port-level role; the engine reads the declarations.
    from pathlib import Path

    import scanner.engine
    from scanner.probes.base import registry

    source = Path(scanner.engine.__file__).read_text(encoding="utf-8")
    named = [name for name in registry() if f'"{name}"' in source or f"'{name}'" in source]
    assert named == []


def test_test_contexts_get_the_probes_own_budget_as_the_engine_gives_it() -> None:
    from scanner.engine import probe_budget
    from scanner.probes.base import get_probe
    from scanner.testing import make_context

    async def budgets() -> dict[str, float]:
        loop = asyncio.get_running_loop()
        out = {}
        for probe in ("tcp", "vsphere", "rpc-dynamic"):
            ctx = make_context("h", "127.0.0.1", 443, probe=probe, timeout=2.0, retries=1)
            out[probe] = round(ctx.deadline - loop.time())
        return out

    settings = Settings(timeout=2.0, retries=1)
    expected = {p: round(probe_budget(settings, get_probe(p).exchanges)) for p in ("tcp", "vsphere", "rpc-dynamic")}
    assert asyncio.run(budgets()) == expected
