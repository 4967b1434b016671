"""dcom probe: the authenticated DCOM activation of WMI (and PLA) and the WMI login.

Real peers first: the lab's Samba DC answers 135 but has no DCOM (its endpoint mapper
rejects a bind to IRemoteSCMActivator), which must read not-registered in words, never a
pass; 135 dropped / rejected; hostile peers. No Debian package serves DCOM, so the
activation itself is tested against ``DcomSimulator`` (tests/probes/dcom_sim.py), a small
simulator written from MS-DCOM 3.1.2.5.2.3.2 (RemoteCreateInstance) and MS-WMI 3.1.4.1.4
(NTLMLogin); it is a simulator, not Windows, and says so.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from scanner.models import CheckResult, Reason, Status
from scanner.probes.base import Credentials
from scanner.probes.dcom import DcomActivationProbe, binding_port
from scanner.testing import make_context, run_probe
from tests.probes.dcom_sim import DcomSimulator, serve_dcom

TIMEOUT = 2.0
SECRET = "Sim-Secret-Pw-42"


async def dcom(
    address: str, port: int = 135, credentials: Credentials | None = None, server: str = "wmi"
) -> CheckResult:
    ctx = make_context(
        "dc1", address, port, probe="dcom", options={"server": server}, timeout=TIMEOUT, retries=0,
        credentials=credentials,
    )  # fmt: skip
    return await run_probe("dcom", ctx)


def admin(dc) -> Credentials:  # type: ignore[no-untyped-def]
    return Credentials(dc.admin_user, dc.admin_password, dc.domain)


def test_options_and_string_bindings() -> None:
    DcomActivationProbe.validate({"server": "pla"})
    for bad in ({"server": "wmic"}, {"server": 1}, {"other": "x"}):
        with pytest.raises(ValueError):
            DcomActivationProbe.validate(bad)
    assert binding_port(["DC1[49667]", "10.0.0.5[49667]"]) == 49667
    assert binding_port(["DC1", "x[0]", "x[70000]", "x[-1]", "[", ""]) is None


@pytest.mark.lab
async def test_samba_has_no_dcom_and_reads_not_registered_in_words(dc) -> None:  # type: ignore[no-untyped-def]
    result = await dcom(dc.address, credentials=admin(dc))
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NOT_REGISTERED), result.detail
    assert "no DCOM on dc1" in result.detail and result.evidence["step"] == "activation"
    assert dc.admin_password not in json.dumps(result.to_dict())


@pytest.mark.lab
async def test_without_credentials_it_says_what_a_credentialed_run_adds(dc) -> None:  # type: ignore[no-untyped-def]
    result = await dcom(dc.address)
    assert (result.status, result.reason) == (Status.SKIP, Reason.NOT_CONFIGURED), result.detail
    assert "a WMI login to root\\cimv2" in result.detail


@pytest.mark.lab
async def test_dropped_135_fails_filtered(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.drop(135)
    result = await dcom(dc.address, credentials=admin(dc))
    assert (result.status, result.reason) == (Status.FAIL, Reason.FILTERED), result.detail
    assert "a firewall drops it" in result.detail  # SMB answers: a live Windows-like host, 135 blocked


@pytest.mark.lab
async def test_rejected_135_fails_refused(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.reject(135)
    result = await dcom(dc.address, credentials=admin(dc))
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED), result.detail


@pytest.mark.parametrize("mode", ["garbage", "truncated", "silent", "drip"])
async def test_hostile_peer_on_135_fails_cleanly(hostile, mode: str) -> None:  # type: ignore[no-untyped-def]
    address, port = hostile(mode)
    result = await dcom(address, port, credentials=Credentials("u", SECRET, "D"))
    assert result.status is Status.FAIL and result.reason in (Reason.PROTOCOL, Reason.FILTERED), result.detail
    assert SECRET not in json.dumps(result.to_dict())


async def test_without_impacket_the_check_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import scanner.probes.dcom as module

    monkeypatch.setattr(module, "load_impacket", lambda: False)
    result = await dcom("127.0.0.1", credentials=Credentials("u", "p", "D"))
    assert (result.status, result.reason) == (Status.SKIP, Reason.NOT_CONFIGURED), result.detail
    assert "install portready[dcom]" in result.detail


# -- the DCOM simulator (no Debian package serves DCOM; see tests/probes/dcom_sim.py) ------------


async def test_simulated_wmi_activation_hands_out_its_port_and_the_login_passes() -> None:
    sim = DcomSimulator(SECRET)
    async with serve_dcom(sim) as port:
        result = await dcom("127.0.0.1", port, Credentials("auditor", SECRET, "SIM"))
    assert result.status is Status.PASS, result.detail
    assert result.evidence["port"] == sim.object_port and result.evidence["step"] == "login"
    assert result.evidence["bindings"] == [f"127.0.0.1[{sim.object_port}]"]
    assert sim.logons == [True, True]  # activation on the mapper port, then the object's own port
    assert "opnum 4" in sim.calls and "opnum 6" in sim.calls
    assert SECRET not in json.dumps(result.to_dict())


async def test_simulated_wrong_password_fails_auth() -> None:
    sim = DcomSimulator(SECRET)
    wrong = "Not-" + SECRET
    async with serve_dcom(sim) as port:
        result = await dcom("127.0.0.1", port, Credentials("auditor", wrong, "SIM"))
    assert (result.status, result.reason) == (Status.FAIL, Reason.AUTH), result.detail
    assert sim.logons == [False] and result.evidence["step"] == "activation"
    text = json.dumps(result.to_dict())
    assert wrong not in text and SECRET not in text


@pytest.mark.parametrize(
    ("activation", "login", "reason", "words"),
    [
        (0x80070005, "ok", Reason.POLICY, "Remote Activation"),
        (0x80040154, "ok", Reason.NOT_REGISTERED, "class is not registered"),
        ("ok", 0x80041003, Reason.POLICY, "Remote Enable"),
        ("ok", 0x8004100E, Reason.NOT_REGISTERED, "root\\cimv2 does not exist"),
    ],
)
async def test_simulated_hresults_map_to_words_an_admin_acts_on(
    activation: str | int, login: str | int, reason: Reason, words: str
) -> None:
    sim = DcomSimulator(SECRET, activation=activation, login=login)
    async with serve_dcom(sim) as port:
        result = await dcom("127.0.0.1", port, Credentials("auditor", SECRET, "SIM"))
    assert result.reason is reason and words in result.detail, result.detail
    assert result.status is (Status.INCONCLUSIVE if reason is Reason.NOT_REGISTERED else Status.FAIL)


async def test_simulated_handed_out_port_with_nothing_listening_fails_refused() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        unused = s.getsockname()[1]
    sim = DcomSimulator(SECRET, hand_out=unused)
    async with serve_dcom(sim) as port:
        result = await dcom("127.0.0.1", port, Credentials("auditor", SECRET, "SIM"))
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED), result.detail
    assert result.evidence["port"] == unused


async def test_simulated_answer_without_a_tcp_port_fails_protocol() -> None:
    sim = DcomSimulator(SECRET, hand_out=0)
    async with serve_dcom(sim) as port:
        result = await dcom("127.0.0.1", port, Credentials("auditor", SECRET, "SIM"))
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL), result.detail
    assert "names no TCP port" in result.detail


@pytest.mark.lab
@pytest.mark.parametrize("block", ["drop", "reject"])
async def test_simulator_in_a_lab_host_with_its_dynamic_port_blocked(second_host, block: str) -> None:  # type: ignore[no-untyped-def]
    """The simulator runs inside lab host h2; nftables there blocks the port activation hands out."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.lab.netns import _kill_group

    env = {**os.environ, "DCOM_SIM_PASSWORD": SECRET}
    proc = second_host.popen(
        [sys.executable, "-m", "tests.probes.dcom_sim", "--bind", second_host.ipv4, "--port", "135",
         "--object-port", "49701", "--lifetime", "60"],
        cwd=Path(__file__).parents[2], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(b"READY")
        getattr(second_host.firewall, block)(49701)
        result = await dcom(second_host.ipv4, 135, Credentials("auditor", SECRET, "SIM"))
    finally:
        second_host.firewall.clear()
        _kill_group(proc, grace=1.0)
        if proc.stdout is not None:
            proc.stdout.close()
    expected = Reason.FILTERED if block == "drop" else Reason.REFUSED
    assert (result.status, result.reason) == (Status.FAIL, expected), result.detail
    assert result.evidence["port"] == 49701
    if block == "drop":
        assert "handed out TCP 49701" in result.detail and "stealth mode" in result.detail


async def test_simulated_pla_activation_binds_its_object_port() -> None:
    sim = DcomSimulator(SECRET)
    async with serve_dcom(sim) as port:
        result = await dcom("127.0.0.1", port, Credentials("auditor", SECRET, "SIM"), server="pla")
    assert result.status is Status.PASS, result.detail
    assert result.evidence["step"] == "bind" and "opnum 6" not in sim.calls


async def test_as_a_range_check_the_activator_is_asked_on_mapper_port() -> None:
    sim = DcomSimulator(SECRET)
    async with serve_dcom(sim) as port:
        ctx = make_context(
            "dc1", "127.0.0.1", "1024-65535", probe="dcom", options={"server": "wmi", "mapper_port": port},
            timeout=TIMEOUT, retries=0, credentials=Credentials("auditor", SECRET, "SIM"),
        )  # fmt: skip
        result = await run_probe("dcom", ctx)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["port"] == sim.object_port and "in_range" not in result.evidence


@pytest.mark.parametrize("where", ["activation", "login"])
@pytest.mark.parametrize("mode", ["garbage", "truncated", "empty", "oversized", "bad-objref"])
async def test_simulated_hostile_answers_fail_protocol_without_crash_or_hang(where: str, mode: str) -> None:
    sim = DcomSimulator(SECRET, **{where: mode})  # type: ignore[arg-type]
    async with serve_dcom(sim) as port:
        result = await dcom("127.0.0.1", port, Credentials("auditor", SECRET, "SIM"))
    assert result.status is Status.FAIL and result.reason is Reason.PROTOCOL, result.detail
    assert result.evidence["step"] == where
    assert SECRET not in json.dumps(result.to_dict())


async def test_simulated_answer_that_never_ends_is_cut_at_a_bounded_size() -> None:
    sim = DcomSimulator(SECRET, activation="endless")
    async with serve_dcom(sim) as port:
        result = await dcom("127.0.0.1", port, Credentials("auditor", SECRET, "SIM"))
        # the client hangs up (the guard is a hang guard, not a speed assertion)
        await asyncio.wait_for(sim.hung_up.wait(), 30)
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL), result.detail
    assert "larger than 4 MiB" in result.detail
    assert sim.sent < 16 << 20  # what the client accepted stays bounded (socket buffers aside)


async def test_concurrent_activations_of_one_target_do_not_disturb_each_other() -> None:
    sim = DcomSimulator(SECRET)
    async with serve_dcom(sim) as port:
        results = await asyncio.gather(
            *(dcom("127.0.0.1", port, Credentials("auditor", SECRET, "SIM")) for _ in range(6))
        )
    assert [r.status for r in results] == [Status.PASS] * 6, [r.detail for r in results]
