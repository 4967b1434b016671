"""rpc-dynamic probe: ask the mapper for each interface's port, then connect and bind there.

Against the lab's Samba DC, which registers (TCP, dynamic ports 49152+) netlogon, lsarpc,
samr, drsuapi, even6 (Remote Event Log), dnsserver, backupkey, dssetup, wkssvc, but not
svcctl, winreg, ITaskSchedulerService, the MS-EVEN eventlog interface or any DCOM: so the
reachable path is tested with the testing option ``uuid:<uuid>`` (netlogon) and with
``eventlog`` (even6), and WMI must come out not-registered. Local FakeRpcServer peers
(tests/probes/test_epm.py) cover the mixes Samba cannot produce.
"""

from __future__ import annotations

import contextlib
import socket

import pytest

from scanner.models import CheckResult, Reason, Status
from scanner.probes.rpc_dynamic import RpcDynamicProbe, parse_interfaces
from scanner.testing import make_context, run_probe
from tests.probes.test_epm import NETLOGON, FakeRpcServer, serve

TIMEOUT = 1.0
SVCCTL = "367abb81-9844-35f1-ad32-98f038001003"


async def dynamic(address: str, interfaces: list[str], mapper_port: int | None = None) -> CheckResult:
    options: dict[str, object] = {"interfaces": interfaces}
    if mapper_port is not None:
        options["mapper_port"] = mapper_port
    ctx = make_context("dc1", address, "1024-65535", probe="rpc-dynamic", options=options, timeout=TIMEOUT, retries=0)
    return await run_probe("rpc-dynamic", ctx)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def by_interface(result: CheckResult) -> dict[str, dict[str, object]]:
    return {str(r["interface"]): r for r in result.evidence["interfaces"]}


# -- options -------------------------------------------------------------------------------------


def test_options_accept_names_uuids_and_any_and_reject_the_rest() -> None:
    wanted = parse_interfaces(["wmi", "scm", "uuid:12345678-1234-ABCD-EF00-01234567CFFB:1.0", "any"])
    assert [w.label for w in wanted] == ["wmi", "scm", "uuid:12345678-1234-abcd-ef00-01234567cffb:1.0", "any"]
    assert wanted[2].candidates[0].major == 1
    bad_options: list[dict[str, object]] = [
        {"interfaces": []},
        {"interfaces": ["wmii"]},
        {"interfaces": ["uuid:not-a-uuid"]},
        {"interfaces": ["scm"], "mapper_port": "135"},
        {"interfaces": ["scm"], "extra": 1},
    ]
    for bad in bad_options:
        with pytest.raises(ValueError):
            RpcDynamicProbe.validate(bad)
    RpcDynamicProbe.validate({"interfaces": ["eventlog", "pla"], "mapper_port": 1135})


# -- the lab's Samba DC ------------------------------------------------------------------------------


@pytest.mark.lab
async def test_registered_interface_is_bound_on_its_dynamic_port(dc) -> None:  # type: ignore[no-untyped-def]
    result = await dynamic(dc.address, [f"uuid:{NETLOGON}"])
    assert result.status is Status.PASS, result.detail
    (entry,) = result.evidence["interfaces"]
    assert entry["status"] == "reachable" and entry["name"] == "netlogon"
    assert 1024 <= entry["port"] <= 65535 and entry["port"] != 135


@pytest.mark.lab
async def test_remote_event_log_is_reachable_and_missing_services_are_named(dc) -> None:  # type: ignore[no-untyped-def]
    result = await dynamic(dc.address, ["eventlog", "scm", "winreg", "tasksched"])
    # Samba serves svcctl/winreg on pipes only: the row cannot prove those services on TCP,
    # says so, and still gives the range verdict beside it.
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NOT_REGISTERED), result.detail
    found = by_interface(result)
    assert found["eventlog"]["status"] == "reachable"  # even6 on Samba
    assert {found[n]["status"] for n in ("scm", "winreg", "tasksched")} == {"not-registered"}
    assert "scm, winreg, tasksched cannot be tested on dc1, but the dynamic RPC range answers" in result.detail
    assert "\\PIPE\\winreg" in result.detail
    assert result.evidence["range_verdict"] == "reachable"


@pytest.mark.lab
async def test_wmi_on_samba_is_not_registered_but_the_range_is_still_proven(dc) -> None:  # type: ignore[no-untyped-def]
    result = await dynamic(dc.address, ["wmi"])
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NOT_REGISTERED), result.detail
    assert by_interface(result)["wmi"]["status"] == "not-registered"
    # Samba has no DCOM, yet the range is bound on a few distinct ports the mapper lists.
    assert result.evidence["range_verdict"] == "reachable"
    sampled = result.evidence["range"]
    assert len({r["port"] for r in sampled}) >= 2
    assert all(r["status"] == "reachable" and r["port"] >= 49152 and r["interface"] for r in sampled)
    assert "the dynamic RPC range answers" in result.detail and "no DCOM on this host" in result.detail
    assert by_interface(result)["wmi"]["asked"] == "alter_context"  # Samba rejects it on the mapper's association


@pytest.mark.lab
async def test_wmi_row_with_the_range_dropped_fails_filtered_although_wmi_is_missing(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.drop_range(49152, 65535)
    result = await dynamic(dc.address, ["wmi"])
    assert (result.status, result.reason) == (Status.FAIL, Reason.FILTERED), result.detail
    assert result.evidence["range_verdict"] == "filtered"
    assert {r["status"] for r in result.evidence["range"]} == {"filtered"}
    assert by_interface(result)["wmi"]["status"] == "not-registered"  # still said, beside the verdict
    assert "stealth mode" in result.detail and "the endpoint mapper lists a service" in result.detail


@pytest.mark.lab
async def test_wmi_row_with_the_range_rejected_fails_refused(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.apply_script(["tcp dport 49152-65535 reject with tcp reset"])
    result = await dynamic(dc.address, ["wmi"])
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED), result.detail
    assert {r["status"] for r in result.evidence["range"]} == {"refused"}


@pytest.mark.lab
async def test_rejected_135_fails_refused_before_any_dynamic_port(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.reject(135)
    result = await dynamic(dc.address, ["wmi"])
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED), result.detail
    assert "endpoint mapper cannot be asked" in result.detail


@pytest.mark.lab
async def test_rejected_445_leaves_the_dynamic_range_proven(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.reject(445)
    result = await dynamic(dc.address, ["wmi"])
    assert result.evidence["range_verdict"] == "reachable", result.detail


@pytest.mark.lab
async def test_any_binds_every_dynamic_port_the_mapper_lists(dc) -> None:  # type: ignore[no-untyped-def]
    result = await dynamic(dc.address, ["any"])
    assert result.status is Status.PASS, result.detail
    ports = {r["port"] for r in result.evidence["interfaces"]}
    assert len(ports) >= 2 and all(p >= 1024 and p != 135 for p in ports)


@pytest.mark.lab
async def test_dropped_dynamic_range_fails_filtered_while_135_answers(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.drop_range(49152, 65535)
    result = await dynamic(dc.address, [f"uuid:{NETLOGON}", "eventlog"])
    assert (result.status, result.reason) == (Status.FAIL, Reason.FILTERED), result.detail
    assert "endpoint mapper answers" in result.detail
    assert {r["status"] for r in result.evidence["interfaces"]} == {"filtered"}


@pytest.mark.lab
async def test_rejected_dynamic_range_fails_refused(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.apply_script(["tcp dport 49152-65535 reject with tcp reset"])
    result = await dynamic(dc.address, [f"uuid:{NETLOGON}"])
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED), result.detail


@pytest.mark.lab
async def test_dropped_135_fails_filtered_and_says_the_mapper_is_unreachable(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.drop(135)
    result = await dynamic(dc.address, ["eventlog"])
    assert (result.status, result.reason) == (Status.FAIL, Reason.FILTERED), result.detail
    assert "endpoint mapper cannot be asked" in result.detail
    assert "stealth mode" in result.detail and "answers SMB (TCP 445)" in result.detail


# -- local peers ------------------------------------------------------------------------------------------


async def test_reachable_and_unregistered_interfaces_are_inconclusive_with_per_interface_evidence() -> None:
    service = FakeRpcServer()
    async with serve(service) as service_port:
        async with serve(FakeRpcServer({SVCCTL: service_port})) as mapper_port:
            result = await dynamic("127.0.0.1", ["scm", "winreg"], mapper_port)
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NOT_REGISTERED), result.detail
    assert result.evidence["range_verdict"] == "reachable"
    found = by_interface(result)
    assert found["scm"] == {**found["scm"], "status": "reachable", "port": service_port, "uuid": SVCCTL}
    assert found["winreg"]["status"] == "not-registered"
    assert service.binds == [SVCCTL]  # the dynamic port itself was bound


async def test_dynamic_port_that_accepts_but_never_answers_fails_protocol(hostile) -> None:  # type: ignore[no-untyped-def]
    _address, silent_port = hostile("silent")
    async with serve(FakeRpcServer({SVCCTL: silent_port})) as mapper_port:
        result = await dynamic("127.0.0.1", ["scm"], mapper_port)
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL), result.detail


async def test_dynamic_port_with_nothing_listening_fails_refused() -> None:
    async with serve(FakeRpcServer({SVCCTL: free_port()})) as mapper_port:
        result = await dynamic("127.0.0.1", ["scm"], mapper_port)
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED), result.detail


async def test_dynamic_port_that_refuses_the_interface_fails_protocol() -> None:
    async with serve(FakeRpcServer(accept={NETLOGON})) as other_port:
        async with serve(FakeRpcServer({SVCCTL: other_port})) as mapper_port:
            result = await dynamic("127.0.0.1", ["scm"], mapper_port)
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL), result.detail
    assert "bind refused" in result.detail


async def test_wmi_with_a_dcom_resolver_is_proven_at_range_level() -> None:
    service = FakeRpcServer()
    async with serve(service) as service_port:
        async with serve(FakeRpcServer({NETLOGON: service_port})) as mapper_port:
            result = await dynamic("127.0.0.1", ["wmi"], mapper_port)
    assert result.status is Status.PASS, result.detail
    wmi = by_interface(result)["wmi"]
    assert wmi["status"] == "reachable" and wmi["port"] == service_port
    assert "range-level" in str(wmi["reason"])
    assert service.binds == [NETLOGON]


OXID_RESOLVER = "99fcfec4-5260-101b-bbcb-00aa0021347a"


async def test_the_dcom_resolver_is_asked_on_the_mapper_s_own_connection() -> None:
    mapper = FakeRpcServer()
    async with serve(mapper) as mapper_port:
        result = await dynamic("127.0.0.1", ["wmi"], mapper_port)
    wmi = by_interface(result)["wmi"]
    assert (wmi["status"], wmi["asked"]) == ("unverified", "alter_context"), result.detail
    assert mapper.alters == [OXID_RESOLVER] and OXID_RESOLVER not in mapper.binds
    assert mapper.connections == 1  # one association: EPM bound, then the resolver added


async def test_a_resolver_rejected_on_the_mapper_s_connection_means_no_dcom() -> None:
    from scanner.wire.rpc import EPM

    mapper = FakeRpcServer(accept={EPM.uuid})  # Samba's answer: abstract syntax not supported
    async with serve(mapper) as mapper_port:
        result = await dynamic("127.0.0.1", ["wmi"], mapper_port)
    wmi = by_interface(result)["wmi"]
    assert (wmi["status"], wmi["asked"]) == ("not-registered", "alter_context"), result.detail
    assert "no DCOM on this host" in str(wmi["reason"]) and mapper.connections == 1


@pytest.mark.parametrize("alter", ["fault", "close", "garbage", "silent"])
async def test_a_mapper_that_does_not_add_contexts_is_asked_with_a_bind_of_its_own(alter: str) -> None:
    # A FAULT, a hang-up, garbage or silence on alter_context says nothing about DCOM: the
    # resolver is then bound on a fresh connection, as a client without alter_context would.
    mapper = FakeRpcServer(alter=alter)
    async with serve(mapper) as mapper_port:
        result = await dynamic("127.0.0.1", ["wmi"], mapper_port)
    wmi = by_interface(result)["wmi"]
    assert wmi["status"] == "unverified" and "asked" not in wmi, result.detail
    assert mapper.alters == [OXID_RESOLVER] and mapper.binds.count(OXID_RESOLVER) == 1
    assert mapper.connections == 2


async def test_the_range_is_bound_on_distinct_ports_other_than_the_named_interface_s() -> None:
    services = [FakeRpcServer() for _ in range(5)]
    async with contextlib.AsyncExitStack() as stack:
        ports = [await stack.enter_async_context(serve(s)) for s in services]
        uuids = [SVCCTL, *(f"00000000-0000-0000-0000-00000000000{i}" for i in range(4))]
        mapper_port = await stack.enter_async_context(serve(FakeRpcServer(dict(zip(uuids, ports, strict=True)))))
        result = await dynamic("127.0.0.1", ["scm"], mapper_port)
    assert result.status is Status.PASS, result.detail
    sampled = {r["port"] for r in result.evidence["range"]}
    assert len(sampled) == 3 and ports[0] not in sampled  # scm's own port is bound by its check
    assert sum(1 for s in services if s.binds) == 4


async def test_mapper_listing_nothing_in_range_says_the_range_is_untested() -> None:
    async with serve(FakeRpcServer()) as mapper_port:
        result = await dynamic("127.0.0.1", ["scm"], mapper_port)
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NOT_REGISTERED), result.detail
    assert result.evidence["range_verdict"] == "untested"
    assert "the range itself cannot be tested" in result.detail


async def test_wmi_with_a_dcom_resolver_but_a_refused_range_fails() -> None:
    async with serve(FakeRpcServer({NETLOGON: free_port()})) as mapper_port:
        result = await dynamic("127.0.0.1", ["wmi"], mapper_port)
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED), result.detail


async def test_wmi_with_a_dcom_resolver_and_no_listed_endpoint_is_inconclusive() -> None:
    async with serve(FakeRpcServer()) as mapper_port:
        result = await dynamic("127.0.0.1", ["wmi"], mapper_port)
    assert result.status is Status.INCONCLUSIVE, result.detail
    assert by_interface(result)["wmi"]["status"] == "unverified"


@pytest.mark.parametrize("mode", ["garbage", "truncated", "drip", "silent"])
async def test_hostile_mapper_fails_cleanly_within_the_timeout(hostile, mode: str) -> None:  # type: ignore[no-untyped-def]
    address, port = hostile(mode)
    result = await dynamic(address, ["scm"], port)
    if mode in ("silent", "drip"):  # connected, then no (complete) answer: slowness, not a verdict
        assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
    else:
        assert result.status is Status.FAIL and result.reason in (Reason.PROTOCOL, Reason.FILTERED), result.detail


@pytest.mark.lab
async def test_mapper_and_dynamic_ports_work_over_ipv6(dc) -> None:  # type: ignore[no-untyped-def]
    result = await dynamic(dc.address6, [f"uuid:{NETLOGON}", "eventlog"])
    assert result.status is Status.PASS, result.detail
    assert {r["status"] for r in result.evidence["interfaces"]} == {"reachable"}


def test_range_verdict_treats_any_other_failure_as_a_failure() -> None:
    from scanner.probes.rpc_dynamic import range_verdict

    assert range_verdict([]) == "untested"
    assert range_verdict([{"status": "reachable"}]) == "reachable"
    assert range_verdict([{"status": "reachable"}, {"status": "filtered"}]) == "filtered"
    assert range_verdict([{"status": "permission"}]) == "permission"
    assert range_verdict([{"status": "refused"}, {"status": "filtered"}]) == "filtered"
