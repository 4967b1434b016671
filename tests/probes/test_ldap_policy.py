"""LDAP policy as evidence: `ldap_signing` (389/3268) and `channel_binding` (636/3269).

Proven against real Samba DCs started with each `ldap server require strong auth` value,
and, for the channel-binding states Samba cannot serve, through the decision logic on
answers shaped like the ones Windows DCs send (their exact diagnostic texts below).
Hostile LDAP peers (tests/lab/hostile.py) echo what they are sent and flood answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from scanner.models import CheckResult, Reason, Status
from scanner.probes.base import Credentials, Settings
from scanner.probes.ldap import (
    POLICY_ACCOUNT,
    bind_outcome,
    channel_binding_reading,
    diagnostic_codes,
    signing_reading,
)
from scanner.testing import make_context, run_probe
from scanner.wire import ldap as wire
from tests.lab.hostile import HostileServer
from tests.lab.netns import Lab
from tests.lab.samba_dc import SambaDC

# Diagnostics as Windows Server 2019/2022 DCs word them (LdapRelayScan / NetExec read the same).
WIN_BAD_CREDENTIALS = "80090308: LdapErr: DSID-0C090439, comment: AcceptSecurityContext error, data 52e, v4563"
WIN_BAD_BINDINGS = "80090346: LdapErr: DSID-0C090635, comment: AcceptSecurityContext error, data 80090346, v4563"
WIN_SIGNING = (
    "00002028: LdapErr: DSID-0C090259, comment: The server requires binds to turn on integrity "
    "checking if SSL\\TLS are not already active on the connection, data 0, v4563"
)
# Samba 4.17's own words.
SAMBA_BAD_CREDENTIALS = "8009030C: LdapErr: DSID-0C0904DC, comment: AcceptSecurityContext error, data 52e, v1db1"
SAMBA_SIMPLE_REFUSED = "BindSimple: Transport encryption required."


def answer(code: int, diagnostic: str) -> wire.LdapResult:
    return wire.LdapResult(code, "", diagnostic)


async def probe(name: str, address: str, port: int, host: str = "dc1", **kw: Any) -> CheckResult:
    ctx = make_context(host, address, port, probe=name, **kw)
    return await run_probe(name, ctx)


# -- the decision logic ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("result", "reading"),
    [
        (answer(8, WIN_SIGNING), "required"),
        (answer(8, SAMBA_SIMPLE_REFUSED), "required"),
        (answer(49, WIN_BAD_CREDENTIALS), "not-required"),
        (answer(49, SAMBA_BAD_CREDENTIALS), "not-required"),
        (answer(53, "unwilling"), "unknown"),
        (answer(1, ""), "unknown"),
        (None, "unknown"),
    ],
)
def test_signing_reading_from_the_made_up_accounts_simple_bind(result: wire.LdapResult | None, reading: str) -> None:
    assert signing_reading(result) == reading


@pytest.mark.parametrize(
    ("without", "wrong", "reading"),
    [
        # Windows "Always": a bind without a token is refused for the binding itself.
        (answer(49, WIN_BAD_BINDINGS), None, "always"),
        # Windows "When supported": no token is fine, a wrong token is refused.
        (answer(49, WIN_BAD_CREDENTIALS), answer(49, WIN_BAD_BINDINGS), "when-supported"),
        # Windows "Never" (and Samba, which has no channel binding mode): tokens are ignored.
        (answer(49, WIN_BAD_CREDENTIALS), answer(49, WIN_BAD_CREDENTIALS), "never"),
        (answer(49, SAMBA_BAD_CREDENTIALS), answer(49, SAMBA_BAD_CREDENTIALS), "never"),
        # A DC that refuses NTLM inside TLS outright cannot tell us: unknown, never a guess.
        (answer(53, "SASL:[GSS-SPNEGO]: Sign or Seal are not allowed if TLS is used"), None, "unknown"),
        (answer(49, WIN_BAD_CREDENTIALS), None, "unknown"),
        (None, None, "unknown"),
    ],
)
def test_channel_binding_reading(without: wire.LdapResult | None, wrong: wire.LdapResult | None, reading: str) -> None:
    assert channel_binding_reading(without, wrong) == reading


async def test_channel_binding_refusal_is_policy_in_those_words_not_invalid_credentials() -> None:
    ctx = make_context("dc1", "127.0.0.1", 636, probe="ldaps", credentials=Credentials("auditor", "pw", "LAB"))
    outcome = bind_outcome(ctx, "ntlm", answer(49, WIN_BAD_BINDINGS))
    assert outcome is not None and outcome.reason is Reason.POLICY
    assert "channel binding" in outcome.detail and "80090346" in outcome.detail
    assert "password" not in outcome.detail and "rejected" not in outcome.detail


@pytest.mark.parametrize("code", [8, 49])
async def test_signing_refusal_is_policy_in_those_words(code: int) -> None:
    ctx = make_context("dc1", "127.0.0.1", 389, probe="ldap", credentials=Credentials("auditor", "pw", "LAB"))
    outcome = bind_outcome(ctx, "simple", answer(code, WIN_SIGNING))
    assert outcome is not None and outcome.reason is Reason.POLICY
    assert "requires LDAP signing" in outcome.detail


@pytest.mark.parametrize(
    "secret", ["deadbeef", "80090346", "Data 52E", "Winter2026!", "pässwörd", "c2VjcmV0"]
)  # fmt: skip
async def test_a_diagnostic_keeps_only_known_codes_whatever_the_peer_echoes(secret: str) -> None:
    ctx = make_context("dc1", "127.0.0.1", 389, probe="ldap", credentials=Credentials("auditor", secret, "LAB"))
    said = f"{WIN_BAD_CREDENTIALS} {secret} {secret.upper()} {secret.swapcase()} {secret.encode('utf-16-le').hex()}"
    outcome = bind_outcome(ctx, "simple", answer(49, said))
    assert outcome is not None
    text = json.dumps(outcome.evidence) + outcome.detail
    for form in (secret, secret.upper(), secret.swapcase(), secret.encode("utf-16-le").hex()):
        if form.lower() not in ("80090346", "data 52e"):  # a secret equal to a code shows as that code only
            assert form not in text
    assert set(diagnostic_codes(said)) <= {"80090308", "data 52e", "80090346"}


# -- hostile LDAP peers ----------------------------------------------------------------------
async def test_a_peer_echoing_the_password_in_other_forms_never_gets_it_into_the_result(hostile) -> None:
    secret = "Sekret-Pa55word-x"
    address, port = hostile("ldap-echo")
    creds = Credentials("auditor", secret, "corp.example")
    result = await probe("ldap", address, port, credentials=creds, options={"bind": "simple"}, timeout=2.0)
    assert (result.status, result.reason) == (Status.FAIL, Reason.AUTH), result.detail
    assert result.evidence["ldap_signing"] == "not-required"  # the made-up account was weighed
    text = json.dumps(result.to_dict())
    import base64

    for form in (secret, secret.upper(), secret.lower(), secret.swapcase(), secret.encode().hex(),
                 base64.b64encode(secret.encode()).decode()[:12], " ".join(secret)):  # fmt: skip
        assert form not in text, form


async def test_a_flood_of_huge_answers_is_bounded_and_a_protocol_failure() -> None:
    """256 x 500 KiB entries (each under the per-message cap) once made one check hold
    ~128 MiB; the exchange now stops at MAX_EXCHANGE_KEPT and reads no further."""
    server = HostileServer("ldap-flood", cap=150 * 1024 * 1024, lifetime=60.0)
    address, port = server.start()
    try:
        result = await probe("ldap", address, port, timeout=5.0, retries=0)
    finally:
        server.stop()
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL), result.detail
    assert f"{wire.MAX_EXCHANGE_KEPT // 1024} KiB" in result.detail
    # What the peer got into our socket: the kept answers plus kernel buffers, not 150 MiB.
    assert server.stats.bytes_sent < 16 * 1024 * 1024, server.stats.bytes_sent


# -- real Samba DCs, one per `ldap server require strong auth` value ------------------------
STRONG_AUTH = {"yes": "required", "allow_sasl_over_tls": "required", "no": "not-required"}


@pytest.fixture(scope="module", params=sorted(STRONG_AUTH))
def policy_dc(request: pytest.FixtureRequest, lab: Lab, samba_template: Any) -> Iterator[tuple[str, SambaDC]]:
    mode: str = request.param
    name = {"yes": "pdcyes", "no": "pdcno", "allow_sasl_over_tls": "pdctls"}[mode]
    host = lab.hosts[name] if name in lab.hosts else lab.add_host(name)
    controller = SambaDC(host, samba_template, conf={"ldap server require strong auth": mode})
    controller.start()
    try:
        yield mode, controller
    finally:
        controller.stop()


@pytest.mark.lab
@pytest.mark.parametrize(("port", "options"), [(389, {}), (3268, {"gc": True})])
async def test_ldap_signing_reading_matches_the_dcs_setting(
    policy_dc: tuple[str, SambaDC], port: int, options: dict[str, Any]
) -> None:
    mode, dc = policy_dc
    result = await probe("ldap", dc.address, port, host=dc.fqdn, options=options)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["ldap_signing"] == STRONG_AUTH[mode], (mode, result.evidence.get("ldap_signing_result"))
    assert f"LDAP signing {STRONG_AUTH[mode]}" in result.detail


@pytest.mark.lab
@pytest.mark.parametrize(("port", "options"), [(636, {}), (3269, {"gc": True})])
async def test_channel_binding_on_samba_reads_never(
    policy_dc: tuple[str, SambaDC], port: int, options: dict[str, Any]
) -> None:
    """Samba 4.17 has no LDAP channel binding mode (no 'always' or 'when supported'): it
    weighs the made-up account whatever token comes, which is what "never" means. The other
    states are proven by test_channel_binding_reading on Windows-shaped answers."""
    _mode, dc = policy_dc
    result = await probe("ldaps", dc.address, port, host=dc.fqdn, options=options)
    assert result.status is Status.WARN and result.reason is Reason.CERTIFICATE, result.detail  # self-signed
    assert result.evidence["channel_binding"] == "never", result.evidence.get("channel_binding_results")
    assert result.evidence["channel_binding_results"] == ["invalidCredentials", "invalidCredentials"]


@pytest.mark.lab
async def test_credentialed_bind_says_which_mechanism_was_used(policy_dc: tuple[str, SambaDC]) -> None:
    mode, dc = policy_dc
    creds = Credentials(dc.admin_user, dc.admin_password, dc.domain)
    result = await probe("ldap", dc.address, 389, host=dc.fqdn, credentials=creds)
    assert result.status is Status.PASS, result.detail
    # Negotiate: Kerberos for ldap/<host> where this host has it, else NTLM (Linux without gssapi).
    assert result.evidence["bind_requested"] == "negotiate"
    assert result.evidence["bind_method"] in ("kerberos", "ntlm")
    assert result.evidence["sealed_search"] is True
    assert dc.admin_password not in json.dumps(result.to_dict())


@pytest.mark.lab
async def test_made_up_policy_account_is_what_the_dc_sees(policy_dc: tuple[str, SambaDC]) -> None:
    """The policy bind names POLICY_ACCOUNT, never a real account (no lockout risk)."""
    _mode, dc = policy_dc
    result = await probe("ldap", dc.address, 389, host=dc.fqdn, settings=Settings(timeout=3.0, values={"domain": "lab.test"}))
    assert result.evidence["ldap_signing_result"] in ("strongerAuthRequired", "invalidCredentials")
    assert POLICY_ACCOUNT.startswith("portready-")


@pytest.mark.lab
async def test_dropped_and_rejected_ports_still_read_as_network_reasons(dc: SambaDC, dc_firewall: Any) -> None:
    dc_firewall.drop(3269)
    dc_firewall.reject(3268)
    dropped = await probe("ldaps", dc.address, 3269, options={"gc": True}, timeout=1.0, retries=0)
    rejected = await probe("ldap", dc.address, 3268, options={"gc": True}, timeout=1.0, retries=0)
    assert (dropped.status, dropped.reason) == (Status.FAIL, Reason.FILTERED)
    assert (rejected.status, rejected.reason) == (Status.FAIL, Reason.REFUSED)
    assert "channel_binding" not in dropped.evidence and "ldap_signing" not in rejected.evidence


@pytest.fixture(scope="module")
def kerberos_dc(lab: Lab, samba_template: Any) -> Iterator[SambaDC]:
    """A DC with ldap/dc1.lab.test registered, as a Windows DC registers it itself."""
    pytest.importorskip("gssapi")
    pytest.importorskip("krb5")
    host = lab.hosts["pdckrb"] if "pdckrb" in lab.hosts else lab.add_host("pdckrb")
    controller = SambaDC(host, samba_template, spns=("ldap/dc1.lab.test",))
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def _lab_krb5(dc: SambaDC, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A krb5.conf naming the lab KDC by address that never asks DNS (libkrb5 resolves names
    itself, below the tests' resolver guard), and a private ticket cache; set in the env."""
    conf = tmp_path / "krb5.conf"
    conf.write_text(
        "[libdefaults]\n"
        f"  default_realm = {dc.realm}\n  dns_lookup_realm = false\n  dns_lookup_kdc = false\n"
        "  rdns = false\n  dns_canonicalize_hostname = false\n  udp_preference_limit = 0\n"
        f"[realms]\n  {dc.realm} = {{\n    kdc = {dc.address}\n  }}\n"
        f"[domain_realm]\n  .{dc.realm.lower()} = {dc.realm}\n  {dc.realm.lower()} = {dc.realm}\n"
    )
    env = {"KRB5_CONFIG": str(conf), "KRB5CCNAME": f"FILE:{tmp_path / 'ccache'}"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.mark.lab
async def test_negotiate_binds_with_kerberos_by_host_name_when_this_host_can(
    kerberos_dc: SambaDC, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Auditor's bind: Kerberos for ldap/<DC name>, here through MIT krb5 + python-gssapi
    (Windows uses SSPI through the same pyspnego call). The krb5.conf names the KDC by
    address and never asks DNS, so no query leaves the lab."""
    dc = kerberos_dc
    _lab_krb5(dc, tmp_path, monkeypatch)
    creds = Credentials(dc.admin_user, dc.admin_password, dc.realm.lower())
    result = await probe("ldap", dc.address, 389, host=dc.fqdn, credentials=creds)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["bind_method"] == "kerberos", result.evidence
    assert result.evidence["sealed_search"] is True
    assert dc.admin_password not in json.dumps(result.to_dict())
    # By address there is no service principal to ask for: NTLM, and the evidence says so.
    by_address = await probe("ldap", dc.address, 389, host=dc.address, credentials=creds)
    assert by_address.status is Status.PASS, by_address.detail
    assert by_address.evidence["bind_method"] == "ntlm"


@pytest.mark.parametrize(
    ("host", "account", "expected"),
    [
        ("dc1.corp.example", "auditor@CORP.EXAMPLE", True),
        ("192.0.2.10", "auditor@CORP.EXAMPLE", False),  # no ticket for an address
        ("[2001:db8::1]", "auditor@CORP.EXAMPLE", False),
        ("dc1.corp.example", "CORP\\auditor", False),  # off Windows: no realm to find a KDC for
    ],
)
def test_kerberos_is_tried_only_where_a_ticket_can_exist(
    host: str, account: str, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scanner.probes import ldap

    monkeypatch.setattr(ldap.sys, "platform", "linux")
    assert ldap.kerberos_possible(host, account) is expected
    monkeypatch.setattr(ldap.sys, "platform", "win32")  # SSPI maps NetBIOS domains itself
    assert ldap.kerberos_possible(host, account) is (expected or (host == "dc1.corp.example"))


@pytest.mark.lab
async def test_ldaps_against_a_plain_ldap_port_fails_closed_with_no_tls(dc: SambaDC) -> None:
    # Samba resets the connection at our ClientHello: accepted, then reset (`closed`), and the
    # words say the port may not speak TLS at all.
    result = await probe("ldaps", dc.address, 389, host=dc.fqdn, timeout=2.0, retries=0)
    assert (result.status, result.reason) == (Status.FAIL, Reason.CLOSED), result.detail
    assert "not speak TLS" in result.detail
    assert result.evidence["channel_binding"] == "no-tls"


# -- peers that answer the RootDSE and then misbehave on the policy binds --------------------
def _rootdse(mid: int) -> bytes:
    attrs = wire.sequence(wire.octets("defaultNamingContext"), wire.sequence(wire.octets("DC=h,DC=test"), tag=0x31))
    entry = wire.message(mid, wire.tlv(wire.SEARCH_ENTRY, wire.octets("") + wire.sequence(attrs)))
    return entry + wire.message(mid, wire.tlv(wire.SEARCH_DONE, wire.integer(0, 0x0A) + wire.octets("") * 2))


BIND_ANSWERS = {
    "malformed": lambda mid: wire.message(mid, wire.tlv(wire.BIND_RESPONSE, b"\x0a\x01")),  # truncated LDAPResult
    "garbage": lambda mid: b"\x30\x03\x02\x01\x01" + bytes(range(200)),
    "silent": lambda mid: b"",
    "notice": lambda mid: wire.message(0, wire.tlv(wire.EXTENDED_RESPONSE, wire.integer(52, 0x0A) + wire.octets("") * 2)),
}


async def _misbehaving_ldap(kind: str, tls: Any = None) -> tuple[Any, int]:
    import asyncio

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(2)
                extra = await reader.readexactly(head[1] & 0x7F) if head[1] & 0x80 else b""
                body = await reader.readexactly(int.from_bytes(extra, "big") if extra else head[1])
                msg = wire.parse_message(head + extra + body)
                writer.write(_rootdse(msg.message_id) if msg.op == wire.SEARCH_REQUEST else BIND_ANSWERS[kind](msg.message_id))
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, wire.BerError):
            pass
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("kind", sorted(BIND_ANSWERS))
async def test_a_peer_misbehaving_on_the_signing_bind_reads_unknown_not_a_crash(kind: str) -> None:
    server, port = await _misbehaving_ldap(kind)
    try:
        result = await probe("ldap", "127.0.0.1", port, timeout=1.0, retries=0)
    finally:
        server.close()
    assert result.status is Status.PASS, result.detail  # the RootDSE answered: LDAP is there
    assert result.evidence["ldap_signing"] == "unknown"


@pytest.mark.parametrize("kind", sorted(BIND_ANSWERS))
async def test_a_peer_misbehaving_on_the_channel_binding_binds_reads_unknown(kind: str, loopback_tls_certs: Any) -> None:
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(loopback_tls_certs.cert("valid"), loopback_tls_certs.key("valid"))
    server, port = await _misbehaving_ldap(kind, context)
    try:
        settings = Settings(timeout=1.0, retries=0, ca_bundle=str(loopback_tls_certs.ca_bundle))
        result = await probe("ldaps", "127.0.0.1", port, host="127.0.0.1", settings=settings)
    finally:
        server.close()
    assert result.status is Status.PASS, result.detail
    assert result.evidence["channel_binding"] == "unknown"


@pytest.mark.lab
async def test_credentialed_ntlm_bind_inside_tls_follows_the_dcs_setting(policy_dc: tuple[str, SambaDC]) -> None:
    """NTLM inside TLS, unsigned with the channel binding token: Samba allows it with
    'require strong auth = no' / allow_sasl_over_tls, and refuses it by policy with yes."""
    mode, dc = policy_dc
    creds = Credentials(dc.admin_user, dc.admin_password, dc.domain)
    result = await probe("ldaps", dc.address, 636, host=dc.fqdn, credentials=creds, options={"bind": "ntlm"})
    text = json.dumps(result.to_dict())
    assert dc.admin_password not in text
    if mode == "yes":
        assert (result.status, result.reason) == (Status.FAIL, Reason.POLICY), result.detail
        assert "requires LDAP signing" in result.detail and "rejected" not in result.detail
    else:
        assert (result.status, result.reason) == (Status.WARN, Reason.CERTIFICATE), result.detail
        assert result.evidence["bind_result"] == "success" and result.evidence["bind_method"] == "ntlm"


def test_ldap_summary_names_the_domain_policy_and_bind() -> None:
    from scanner.probes import registry

    evidence = {"default_naming_context": "DC=lab,DC=test", "ldap_signing": "required",
                "bind_method": "kerberos", "bind_result": "success"}  # fmt: skip
    assert registry()["ldap"]().summarize(evidence) == "DC=lab,DC=test, LDAP signing required, kerberos bind"  # type: ignore[attr-defined]
    assert "portready-policy-check" in registry()["ldap"].footprint  # type: ignore[attr-defined]


@pytest.mark.lab
def test_the_real_command_reports_policy_trust_store_and_the_dc_certificate(dc: SambaDC, tmp_path: Any) -> None:
    """`portready scan` as a user runs it (a subprocess, real files): the AD profile's LDAP
    rows carry the policy readings, GC over TLS honours --trust-private-ca, and the HTML
    report shows the DC's certificate."""
    import subprocess
    import sys
    from pathlib import Path

    out, html = tmp_path / "ad.json", tmp_path / "ad.html"
    ca = dc.root / "lib" / "private" / "tls" / "ca.pem"
    proc = subprocess.run(
        [sys.executable, "-m", "scanner", "scan", "--target", f"domain-controllers={dc.address}",
         "--profile", "active-directory", "--set", "domain=lab.test", "--timeout", "2",
         "--ca-bundle", str(ca), "--trust-private-ca", "--json", str(out), "--html", str(html), "--quiet"],
        capture_output=True, text=True, timeout=240, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    rows = {r["row"]: r for r in json.loads(out.read_text())["rows"]}

    def evidence(row: str, probe_name: str) -> dict[str, Any]:
        return next(c["evidence"] for c in rows[row]["checks"] if c["probe"] == probe_name)

    assert evidence("ldap-389", "ldap")["ldap_signing"] == "required"
    assert evidence("gc-3268", "ldap")["ldap_signing"] == "required"
    gc_ssl = evidence("gc-ssl-3269", "ldaps")
    assert gc_ssl["trust_store"] == "ca-bundle-only" and gc_ssl["trusted"] is True
    assert gc_ssl["channel_binding"] == "never"
    assert rows["gc-ssl-3269"]["reason"] == "certificate"  # by address: the name does not match
    assert gc_ssl["not_after"][:10] in html.read_text()


@pytest.mark.lab
async def test_integrated_logon_binds_with_the_current_users_ticket_and_no_password(
    kerberos_dc: SambaDC, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`credentials: {integrated: true}`: no password is handed over; the bind uses the logon
    of the user running portready (SSPI on Windows; here, through the same pyspnego call, the
    MIT ticket cache that `kinit` filled). Without a ticket the check says so, never `auth`."""
    import os
    import subprocess

    dc = kerberos_dc
    env = _lab_krb5(dc, tmp_path, monkeypatch)
    integrated = Credentials("", "", integrated=True)
    without_ticket = await probe("ldap", dc.address, 389, host=dc.fqdn, credentials=integrated)
    assert without_ticket.status is Status.INCONCLUSIVE and without_ticket.reason is Reason.AUTH, without_ticket.detail
    done = subprocess.run(
        ["kinit", f"{dc.admin_user}@{dc.realm}"], input=dc.admin_password + "\n", capture_output=True,
        text=True, env={**os.environ, **env}, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = await probe("ldap", dc.address, 389, host=dc.fqdn, credentials=integrated)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["bind_method"] == "kerberos", result.evidence
    assert dc.admin_password not in json.dumps(result.to_dict())
