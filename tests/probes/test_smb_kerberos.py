"""SMB logon over Kerberos against the lab's Samba DC, through pyspnego + python-gssapi:
with a password, and integrated (no password handed over: the ticket cache of the current
user, which is what SSPI gives on Windows), proving the integrated code path end to end.

The krb5.conf written here names the KDC by address and turns off every DNS lookup
(dns_canonicalize_hostname, rdns, dns_lookup_*): libkrb5 resolves names itself, below the
tests' resolver guard, so nothing may make it ask the machine's DNS.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from scanner.models import Reason, Status
from scanner.probes.base import Credentials
from tests.probes.test_smb import smb

pytest.importorskip("krb5", reason="pyspnego[kerberos] (test extra; builds against libkrb5-dev)")
pytest.importorskip("gssapi", reason="pyspnego[kerberos] (test extra; builds against libkrb5-dev)")

pytestmark = pytest.mark.lab


@pytest.fixture
def krb5_env(dc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:  # type: ignore[no-untyped-def]
    conf = tmp_path / "krb5.conf"
    conf.write_text(
        "[libdefaults]\n"
        f"  default_realm = {dc.realm}\n"
        "  dns_lookup_realm = false\n  dns_lookup_kdc = false\n  rdns = false\n"
        "  dns_canonicalize_hostname = false\n  udp_preference_limit = 0\n"
        f"[realms]\n  {dc.realm} = {{\n    kdc = {dc.address}\n  }}\n"
        f"[domain_realm]\n  .{dc.realm.lower()} = {dc.realm}\n  {dc.realm.lower()} = {dc.realm}\n"
    )
    env = {"KRB5_CONFIG": str(conf), "KRB5CCNAME": f"FILE:{tmp_path / 'ccache'}"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


async def test_kerberos_logon_with_a_password_signs_ipc(dc, krb5_env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    creds = Credentials(f"{dc.admin_user}@{dc.realm}", dc.admin_password)
    result = await smb(dc.address, 445, credentials=creds, host=dc.fqdn)
    assert result.status is Status.PASS, result.detail
    ev = result.evidence
    assert (ev["login"], ev["auth_protocol"], ev["signed_reply"]) == ("ok", "kerberos", True)
    assert dc.admin_password not in json.dumps(result.to_dict())


async def test_integrated_logon_uses_the_current_users_ticket_and_no_password(dc, krb5_env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    done = subprocess.run(
        ["kinit", f"{dc.admin_user}@{dc.realm}"], input=dc.admin_password + "\n", capture_output=True,
        text=True, env={**os.environ, **krb5_env}, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = await smb(dc.address, 445, credentials=Credentials("", "", integrated=True), host=dc.fqdn)
    assert result.status is Status.PASS, result.detail
    assert (result.evidence["login"], result.evidence["auth_protocol"]) == ("ok", "kerberos")
    assert "integrated logon" in result.detail


async def test_integrated_logon_without_a_ticket_is_inconclusive_not_auth(dc, krb5_env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    result = await smb(dc.address, 445, credentials=Credentials("", "", integrated=True), host=dc.fqdn)
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.PERMISSION), result.detail
    assert result.evidence["login"] == "not-tried"


async def test_kerberos_logon_with_a_wrong_password_is_auth(dc, krb5_env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    secret = "Wrong-" + dc.admin_password[::-1]
    result = await smb(dc.address, 445, credentials=Credentials(f"{dc.admin_user}@{dc.realm}", secret), host=dc.fqdn)
    assert (result.status, result.reason) == (Status.FAIL, Reason.AUTH), result.detail
    assert secret not in json.dumps(result.to_dict())
