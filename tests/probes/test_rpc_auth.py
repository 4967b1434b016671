"""rpc-auth probe: authenticated binds and the calls that prove access, against the lab's real
Samba DC (svcctl, eventlog and winreg over SMB named pipes; Samba has no Task Scheduler, so
tasksched is honestly not-registered), with the admin password, a wrong password, no
credentials, 445 dropped and rejected, and hostile peers on the port.
"""

from __future__ import annotations

import json

import pytest

from scanner.models import CheckResult, Reason, Status
from scanner.probes.base import Credentials
from scanner.probes.rpc_auth import RpcAuthProbe
from scanner.testing import make_context, run_probe

TIMEOUT = 2.0


async def rpc_auth(
    address: str, interfaces: list[str], port: int = 445, credentials: Credentials | None = None, **options: object
) -> CheckResult:
    ctx = make_context(
        "dc1", address, port, probe="rpc-auth", options={"interfaces": interfaces, **options},
        timeout=TIMEOUT, retries=0, credentials=credentials,
    )  # fmt: skip
    return await run_probe("rpc-auth", ctx)


def by_interface(result: CheckResult) -> dict[str, dict[str, object]]:
    return {str(r["interface"]): r for r in result.evidence["interfaces"]}


def admin(dc) -> Credentials:  # type: ignore[no-untyped-def]
    return Credentials(dc.admin_user, dc.admin_password, dc.domain)


def test_options_are_checked_before_anything_is_sent() -> None:
    RpcAuthProbe.validate({"interfaces": ["scm", "eventlog", "winreg", "tasksched"], "log": "System"})
    for bad in ({}, {"interfaces": []}, {"interfaces": ["wmi"]}, {"interfaces": ["scm"], "log": 3},
                {"interfaces": ["scm"], "other": 1}):  # fmt: skip
        with pytest.raises(ValueError):
            RpcAuthProbe.validate(bad)


@pytest.mark.lab
async def test_admin_password_opens_the_scm_and_the_registry_over_pipes(dc) -> None:  # type: ignore[no-untyped-def]
    result = await rpc_auth(dc.address, ["scm", "winreg"], credentials=admin(dc))
    assert result.status is Status.PASS, result.detail
    found = by_interface(result)
    assert {r["status"] for r in found.values()} == {"ok"}
    assert found["winreg"]["transport"] == "\\PIPE\\winreg" and found["scm"]["call"] == "ROpenSCManagerW"
    assert "packet integrity" in result.detail
    assert dc.admin_password not in json.dumps(result.to_dict())


@pytest.mark.lab
async def test_event_log_bind_works_and_a_missing_log_reads_not_registered(dc) -> None:  # type: ignore[no-untyped-def]
    # Samba's eventlog service has no logs unless smb.conf lists them ("eventlog list"):
    # the authenticated bind is accepted, ElfrOpenELW("Security") answers "no such object".
    result = await rpc_auth(dc.address, ["eventlog"], credentials=admin(dc))
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NOT_REGISTERED), result.detail
    entry = by_interface(result)["eventlog"]
    assert entry["step"] == "call" and "authenticated bind accepted" in str(entry["reason"])


@pytest.mark.lab
async def test_task_scheduler_missing_on_samba_is_not_registered(dc) -> None:  # type: ignore[no-untyped-def]
    result = await rpc_auth(dc.address, ["scm", "tasksched"], credentials=admin(dc))
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NOT_REGISTERED), result.detail
    found = by_interface(result)
    assert found["scm"]["status"] == "ok" and found["tasksched"]["status"] == "not-registered"


@pytest.mark.lab
async def test_wrong_password_fails_auth_and_never_shows_either_secret(dc) -> None:  # type: ignore[no-untyped-def]
    secret = "Wrong-" + dc.admin_password[::-1]
    result = await rpc_auth(dc.address, ["scm", "winreg"], credentials=Credentials(dc.admin_user, secret, dc.domain))
    assert (result.status, result.reason) == (Status.FAIL, Reason.AUTH), result.detail
    assert "wrong user name or password" in result.detail
    text = json.dumps(result.to_dict())
    assert secret not in text and dc.admin_password not in text


@pytest.mark.lab
async def test_without_credentials_it_says_what_a_credentialed_run_adds(dc) -> None:  # type: ignore[no-untyped-def]
    result = await rpc_auth(dc.address, ["scm"])
    assert (result.status, result.reason) == (Status.SKIP, Reason.NOT_CONFIGURED), result.detail
    assert "a credentialed run adds an authenticated bind and call for scm (ROpenSCManagerW)" in result.detail


@pytest.mark.lab
async def test_dropped_445_fails_filtered(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.drop(445)
    result = await rpc_auth(dc.address, ["scm"], credentials=admin(dc))
    assert (result.status, result.reason) == (Status.FAIL, Reason.FILTERED), result.detail


@pytest.mark.lab
async def test_rejected_445_fails_refused(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.reject(445)
    result = await rpc_auth(dc.address, ["scm", "winreg"], credentials=admin(dc))
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED), result.detail


@pytest.mark.lab
async def test_over_tcp_the_mapper_is_asked_and_pipe_only_services_are_not_registered(dc) -> None:  # type: ignore[no-untyped-def]
    # Samba registers svcctl on named pipes only: asked through 135, the SCM is not registered on TCP.
    result = await rpc_auth(dc.address, ["scm"], port=135, credentials=admin(dc))
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NOT_REGISTERED), result.detail
    assert by_interface(result)["scm"]["transport"] == "tcp"


@pytest.mark.lab
async def test_over_tcp_the_event_log_is_opened_on_its_dynamic_port(dc) -> None:  # type: ignore[no-untyped-def]
    # Samba registers even6 on a dynamic TCP port and answers EvtRpcRegisterLogQuery.
    result = await rpc_auth(dc.address, ["eventlog"], port=135, credentials=admin(dc))
    assert result.status is Status.PASS, result.detail
    entry = by_interface(result)["eventlog"]
    assert entry["call"] == "EvtRpcRegisterLogQuery" and entry["transport"] == "tcp"
    assert int(str(entry["port"])) >= 49152


@pytest.mark.lab
async def test_over_tcp_a_dropped_dynamic_range_fails_filtered(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.drop_range(49152, 65535)
    result = await rpc_auth(dc.address, ["eventlog"], port=135, credentials=admin(dc))
    assert (result.status, result.reason) == (Status.FAIL, Reason.FILTERED), result.detail


@pytest.mark.lab
async def test_over_tcp_a_wrong_password_fails_auth(dc) -> None:  # type: ignore[no-untyped-def]
    secret = "Wrong-" + dc.admin_password[::-1]
    creds = Credentials(dc.admin_user, secret, dc.domain)
    result = await rpc_auth(dc.address, ["eventlog"], port=135, credentials=creds)
    assert (result.status, result.reason) == (Status.FAIL, Reason.AUTH), result.detail
    assert secret not in json.dumps(result.to_dict())


@pytest.mark.lab
async def test_rejected_135_fails_refused_over_tcp(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.reject(135)
    result = await rpc_auth(dc.address, ["scm"], port=135, credentials=admin(dc))
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED), result.detail


@pytest.mark.parametrize("mode", ["garbage", "truncated", "silent", "drip"])
async def test_hostile_peer_on_the_smb_port_fails_cleanly(hostile, mode: str) -> None:  # type: ignore[no-untyped-def]
    address, port = hostile(mode)
    result = await rpc_auth(address, ["scm"], port=port, credentials=Credentials("u", "Secret-Pw-1", "D"))
    if mode in ("silent", "drip"):  # connected, then no (complete) answer: slowness, not a verdict
        assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
    else:
        assert result.status is Status.FAIL and result.reason in (Reason.PROTOCOL, Reason.FILTERED), result.detail
    assert "Secret-Pw-1" not in json.dumps(result.to_dict())


@pytest.mark.parametrize("mode", ["garbage", "truncated", "silent"])
async def test_hostile_mapper_over_tcp_fails_cleanly(hostile, mode: str) -> None:  # type: ignore[no-untyped-def]
    address, port = hostile(mode)
    result = await rpc_auth(address, ["scm"], port=port, credentials=Credentials("u", "Secret-Pw-1", "D"))
    if mode == "silent":  # connected, then no answer: slowness, not a verdict
        assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
    else:
        assert result.status is Status.FAIL and result.reason in (Reason.PROTOCOL, Reason.FILTERED), result.detail


async def test_without_impacket_the_check_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import scanner.probes.rpc_auth as module

    monkeypatch.setattr(module, "load_impacket", lambda: False)
    result = await rpc_auth("127.0.0.1", ["scm"], credentials=Credentials("u", "p", "D"))
    assert (result.status, result.reason) == (Status.SKIP, Reason.NOT_CONFIGURED), result.detail
    assert "install portready[dcom]" in result.detail


async def test_integrated_windows_logon_is_a_skip_that_says_what_to_give() -> None:
    import types

    creds = types.SimpleNamespace(username="", password="", domain="", integrated=True)
    result = await rpc_auth("127.0.0.1", ["scm"], credentials=creds)  # type: ignore[arg-type]
    assert (result.status, result.reason) == (Status.SKIP, Reason.NOT_CONFIGURED), result.detail
    assert "integrated" in result.detail and "password_env" in result.detail


def test_the_rpc_and_dcom_probes_import_impacket_only_when_a_check_runs() -> None:
    import subprocess
    import sys

    code = (
        "import sys, scanner.probes.rpc_auth, scanner.probes.dcom, scanner.probes.rpc_dynamic, scanner.probes.epm;"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('impacket')}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


async def test_any_failure_reason_fails_the_check_never_a_silent_pass() -> None:
    from scanner.probes.rpc_auth import verdict

    ctx = make_context("dc1", "127.0.0.1", 445, probe="rpc-auth", options={"interfaces": ["scm"]})
    for status in ("tls", "unresolved", "permission"):
        outcome = verdict(ctx, [{"interface": "scm", "status": status, "reason": "words"}], "a")
        assert (outcome.status, outcome.reason.value) == (Status.FAIL, status)
