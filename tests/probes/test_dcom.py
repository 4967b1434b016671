"""dcom probe: the authenticated DCOM activation of WMI (and PLA) and the WMI login.

Real peers first: the lab's Samba DC answers 135 but has no DCOM (its endpoint mapper
rejects a bind to IRemoteSCMActivator), which must read not-registered in words, never a
pass; 135 dropped / rejected; hostile peers. No Debian package serves DCOM, so the
activation itself is tested against ``DcomSimulator`` (tests/probes/dcom_sim.py), a small
simulator written from MS-DCOM 3.1.2.5.2.3.2 (RemoteCreateInstance) and MS-WMI 3.1.4.1.4
(NTLMLogin); it is a simulator, not Windows, and says so.
"""

from __future__ import annotations

import json

import pytest

from scanner.models import CheckResult, Reason, Status
from scanner.probes.base import Credentials
from scanner.probes.dcom import DcomActivationProbe, binding_port
from scanner.testing import make_context, run_probe

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
