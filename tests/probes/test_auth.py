"""_auth.client_context: one pyspnego factory for every probe, integrated logon included.

The exchanges themselves are proven against real servers (tests/probes/test_smb.py: Samba
DC and standalone smbd over NTLM); these tests pin what the factory hands pyspnego.
"""

from __future__ import annotations

import sys

import pytest
import spnego

from scanner.probes._auth import INTEGRATED_NEEDS_WINDOWS, account_name, client_context, local_failure
from scanner.probes.base import Credentials


@pytest.mark.parametrize(
    ("creds", "expected"),
    [
        (Credentials("svc", "pw", "CORP"), "CORP\\svc"),
        (Credentials("CORP\\svc", "pw", "OTHER"), "CORP\\svc"),
        (Credentials("svc@corp.example", "pw", "CORP"), "svc@corp.example"),
        (Credentials("svc", "pw"), "svc"),
    ],
)
def test_account_names_are_given_the_way_pyspnego_reads_them(creds: Credentials, expected: str) -> None:
    assert account_name(creds) == expected


def test_a_password_account_produces_a_real_ntlm_negotiate_token() -> None:
    ctx = client_context(Credentials("svc", "pw-secret", "CORP"), hostname="dc1.corp.example", service="cifs")
    token = ctx.step(None)
    assert token and token.startswith(b"\x60")  # SPNEGO NegTokenInit (GSS-API framing)
    assert b"NTLMSSP\x00\x01" in token and b"pw-secret" not in token


def test_integrated_logon_hands_pyspnego_no_password(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}
    real = spnego.client

    def spy(username: object, password: object, **kw: object) -> object:
        seen.update(username=username, password=password, **kw)
        return real(username, password, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(spnego, "client", spy)
    client_context(Credentials("", "", "CORP", integrated=True), hostname="dc1", service="cifs")
    assert (seen["username"], seen["password"], seen["service"]) == (None, None, "cifs")


@pytest.mark.skipif(sys.platform == "win32", reason="SSPI has the logged-on user")
def test_integrated_logon_off_windows_explains_itself() -> None:
    ctx = client_context(Credentials("", "", integrated=True), hostname="dc1", service="cifs")
    with pytest.raises(spnego.exceptions.SpnegoError) as err:
        ctx.step(None)
    words = local_failure(Credentials("", "", integrated=True), err.value)
    assert words == INTEGRATED_NEEDS_WINDOWS and "password_env" in words
