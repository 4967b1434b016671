"""The lab itself works: real DC services, firewall cases, TLS peers, hostile peers, teardown.

If these fail, every probe test built on the lab would prove nothing.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.lab.firewall import Firewall
from tests.lab.hostile import FLAVORS, HostileServer, hostile_server
from tests.lab.netns import STATE_DIR, Host, Lab, _list_links, _list_netns, _pid_alive
from tests.lab.samba_dc import SambaDC
from tests.lab.tls import KINDS, TLS_HOSTNAME, TlsCerts, TlsPeer

DC_TCP_PORTS = (53, 88, 135, 139, 389, 445, 464, 636, 3268, 3269)


def connect_outcome(address: str, port: int, timeout: float = 1.0) -> str:
    """'open', 'refused' or 'timeout' for one TCP connect."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"


def udp_outcome(address: str, port: int, payload: bytes, timeout: float = 1.0) -> str:
    """'answer', 'refused' (ICMP port unreachable) or 'timeout' on a connected UDP socket."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((address, port))
        sock.send(payload)
        try:
            sock.recv(65535)
            return "answer"
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "timeout"


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + content


def cldap_netlogon_request(dns_domain: str) -> bytes:
    """A CLDAP "LDAP ping" (search RootDSE for Netlogon), as Windows clients send to UDP 389."""

    def octet(v: bytes | str) -> bytes:
        return _tlv(0x04, v.encode() if isinstance(v, str) else v)

    flt = _tlv(
        0xA0,
        _tlv(0xA3, octet("DnsDomain") + octet(dns_domain)) + _tlv(0xA3, octet("NtVer") + octet(b"\x06\x00\x00\x00")),
    )
    search = _tlv(
        0x63,
        octet("")
        + _tlv(0x0A, b"\x00") + _tlv(0x0A, b"\x00")
        + _tlv(0x02, b"\x00") + _tlv(0x02, b"\x00") + _tlv(0x01, b"\x00")
        + flt + _tlv(0x30, octet("Netlogon")),
    )  # fmt: skip
    return _tlv(0x30, _tlv(0x02, b"\x01") + search)


def nbstat_request() -> bytes:
    """NetBIOS node status query for "*" (what `nmblookup -A` sends to UDP 137)."""
    name = b"*" + b"\x00" * 15
    encoded = bytes(b for c in name for b in (0x41 + (c >> 4), 0x41 + (c & 0x0F)))
    header = b"\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    return header + b"\x20" + encoded + b"\x00" + b"\x00\x21\x00\x01"


# -- the domain controller -------------------------------------------------------------------
@pytest.mark.lab
def test_dc_answers_on_every_ad_tcp_port(dc: SambaDC) -> None:
    outcomes = {port: connect_outcome(dc.address, port) for port in DC_TCP_PORTS}
    assert outcomes == {port: "open" for port in DC_TCP_PORTS}


@pytest.mark.lab
def test_dc_answers_over_ipv6(dc: SambaDC) -> None:
    assert connect_outcome(dc.address6, 389) == "open"
    assert connect_outcome(dc.address6, 445) == "open"


@pytest.mark.lab
def test_rootdse_names_the_domain_and_simple_bind_needs_strong_auth(dc: SambaDC) -> None:
    url = f"ldap://{dc.address}"
    rootdse = subprocess.run(
        ["ldapsearch", "-LLL", "-x", "-H", url, "-s", "base", "-b", "",
         "defaultNamingContext", "dnsHostName"],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    assert rootdse.returncode == 0, rootdse.stderr
    assert f"defaultNamingContext: {dc.base_dn}" in rootdse.stdout
    assert f"dnsHostName: {dc.fqdn}" in rootdse.stdout
    secret = dc.root / "bind-password"
    secret.touch(mode=0o600)
    secret.write_text(dc.admin_password)  # -y reads it: the password stays off argv
    try:
        simple = subprocess.run(
            ["ldapsearch", "-LLL", "-x", "-H", url, "-D", f"{dc.admin_user}@{dc.realm}",
             "-y", str(secret), "-s", "base", "-b", dc.base_dn],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    finally:
        secret.unlink()
    assert simple.returncode == 8, simple.stderr  # LDAP_STRONG_AUTH_REQUIRED
    assert "Strong(er) authentication required" in simple.stderr


@pytest.mark.lab
@pytest.mark.parametrize("port", [636, 3269])
def test_ldaps_ports_speak_tls(dc: SambaDC, port: int) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # Samba's self-signed certificate
    raw = socket.create_connection((dc.address, port), timeout=5)
    with context.wrap_socket(raw) as tls:
        assert tls.getpeercert(binary_form=True)
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.lab
def test_kinit_gets_a_ticket_from_the_kdc(dc: SambaDC) -> None:
    result = dc.kinit()
    assert result.returncode == 0, result.stderr
    klist = subprocess.run(["klist"], capture_output=True, text=True, env=dc.env(), check=False)
    assert f"krbtgt/{dc.realm}@{dc.realm}" in klist.stdout


@pytest.mark.lab
def test_dns_serves_dc_srv_records_pointing_at_the_dc(dc: SambaDC) -> None:
    import dns.message
    import dns.query
    import dns.rdatatype

    query = dns.message.make_query("_ldap._tcp.dc._msdcs.lab.test", "SRV")
    answer = dns.query.udp(query, dc.address, timeout=3)
    targets = {(r.target.to_text(), r.port) for rrset in answer.answer for r in rrset}
    assert targets == {(f"{dc.fqdn}.", 389)}
    a = dns.query.tcp(dns.message.make_query(dc.fqdn, "A"), dc.address, timeout=3)
    assert [r.address for rrset in a.answer for r in rrset] == [dc.address]
    aaaa = dns.query.udp(dns.message.make_query(dc.fqdn, "AAAA"), dc.address, timeout=3)
    assert [r.address for rrset in aaaa.answer for r in rrset] == [dc.address6]


@pytest.mark.lab
def test_smb_login_as_admin_lists_sysvol(dc: SambaDC) -> None:
    from impacket.smbconnection import SMBConnection

    conn = SMBConnection(dc.address, dc.address, sess_port=445, timeout=10)
    try:
        conn.login(dc.admin_user, dc.admin_password, dc.domain)
        shares = {s["shi1_netname"][:-1] for s in conn.listShares()}
    finally:
        conn.close()
    assert {"sysvol", "netlogon", "IPC$"} <= shares


@pytest.mark.lab
def test_endpoint_mapper_maps_interfaces_to_dynamic_ports(dc: SambaDC) -> None:
    from impacket.dcerpc.v5 import drsuapi, epm, nrpc, samr

    ports = set()
    for uuid in (drsuapi.MSRPC_UUID_DRSUAPI, samr.MSRPC_UUID_SAMR, nrpc.MSRPC_UUID_NRPC):
        binding = epm.hept_map(dc.address, uuid, protocol="ncacn_ip_tcp")
        ports.add(int(binding.rsplit("[", 1)[1].rstrip("]")))
    assert ports and all(49152 <= p <= 65535 for p in ports)
    assert all(connect_outcome(dc.address, p) == "open" for p in ports)


@pytest.mark.lab
def test_cldap_ping_is_answered_on_udp_389(dc: SambaDC) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(cldap_netlogon_request("lab.test"), (dc.address, 389))
        reply = sock.recv(4096)
    assert reply[0] == 0x30 and b"\x64" in reply[:12]  # LDAPMessage carrying searchResEntry


@pytest.mark.lab
def test_netbios_node_status_is_answered_on_udp_137(dc: SambaDC) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.sendto(nbstat_request(), (dc.address, 137))
        reply = sock.recv(4096)
    assert reply[:2] == b"\x12\x34" and reply[2] & 0x80  # a response to our transaction


# -- firewall cases --------------------------------------------------------------------------
@pytest.mark.lab
def test_dropped_tcp_port_times_out_others_stay_open(dc: SambaDC, dc_firewall: Firewall) -> None:
    dc_firewall.drop(445)
    assert connect_outcome(dc.address, 445) == "timeout"
    assert connect_outcome(dc.address6, 445) == "timeout"
    assert connect_outcome(dc.address, 389) == "open"


@pytest.mark.lab
def test_rejected_tcp_port_is_refused(dc: SambaDC, dc_firewall: Firewall) -> None:
    dc_firewall.reject(389)
    assert connect_outcome(dc.address, 389) == "refused"
    dc_firewall.clear()
    assert connect_outcome(dc.address, 389) == "open"


@pytest.mark.lab
def test_rejected_udp_port_gives_icmp_refused_every_time(dc: SambaDC, dc_firewall: Firewall) -> None:
    probe = cldap_netlogon_request("lab.test")
    assert udp_outcome(dc.address, 389, probe) == "answer"
    dc_firewall.reject(389, "udp")
    # icmp_ratelimit=0: twenty quick probes all get their port-unreachable.
    assert [udp_outcome(dc.address, 389, probe) for _ in range(20)] == ["refused"] * 20
    assert udp_outcome(dc.address6, 389, probe) == "refused"


@pytest.mark.lab
def test_dropped_udp_port_is_silent(dc: SambaDC, dc_firewall: Firewall) -> None:
    dc_firewall.drop(389, "udp")
    assert udp_outcome(dc.address, 389, cldap_netlogon_request("lab.test")) == "timeout"


@pytest.mark.lab
def test_dynamic_rpc_range_dropped_while_135_answers(dc: SambaDC, dc_firewall: Firewall) -> None:
    from impacket.dcerpc.v5 import epm, samr

    binding = epm.hept_map(dc.address, samr.MSRPC_UUID_SAMR, protocol="ncacn_ip_tcp")
    dynamic = int(binding.rsplit("[", 1)[1].rstrip("]"))
    dc_firewall.drop_range(49152, 65535)
    assert connect_outcome(dc.address, 135) == "open"
    assert epm.hept_map(dc.address, samr.MSRPC_UUID_SAMR, protocol="ncacn_ip_tcp") == binding
    assert connect_outcome(dc.address, dynamic) == "timeout"


@pytest.mark.lab
def test_drop_all_makes_the_host_silent(dc: SambaDC, dc_firewall: Firewall) -> None:
    dc_firewall.drop_all()
    assert connect_outcome(dc.address, 389, timeout=0.5) == "timeout"
    assert udp_outcome(dc.address, 53, b"\x00" * 12, timeout=0.5) == "timeout"


@pytest.mark.lab
def test_one_alias_address_can_be_dropped_alone(second_host: Host, lab_hostile: Callable[..., object]) -> None:
    aliases = second_host.add_aliases(3)
    lab_hostile("silent", 7000, bind="0.0.0.0")
    assert all(connect_outcome(a, 7000) == "open" for a in aliases)
    second_host.firewall.drop(7000, address=aliases[1])
    assert [connect_outcome(a, 7000) for a in aliases] == ["open", "timeout", "open"]
    assert connect_outcome(second_host.ipv4, 7000) == "open"


@pytest.mark.lab
def test_second_and_third_host_reach_each_other(second_host: Host, third_host: Host) -> None:
    server = second_host.popen(
        ["python3", "-c", ("import socket,time;s=socket.create_server(('0.0.0.0',7100));"
                           "c,_=s.accept();c.sendall(b'hi');time.sleep(1)")],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        while True:
            probe = third_host.run(
                ["python3", "-c", ("import socket;print(socket.create_connection("
                                   f"('{second_host.ipv4}',7100),1).recv(2))")],
                capture_output=True, text=True, timeout=10,
            )  # fmt: skip
            if probe.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert probe.stdout.strip() == "b'hi'"
    finally:
        server.kill()
        server.wait()


# -- TLS peers -------------------------------------------------------------------------------
def _peer_certificate(address: str, port: int) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with context.wrap_socket(socket.create_connection((address, port), timeout=5)) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _verify_error(certs: TlsCerts, address: str, port: int) -> str | None:
    context = ssl.create_default_context(cafile=str(certs.ca_bundle))
    raw = socket.create_connection((address, port), timeout=5)
    try:
        with context.wrap_socket(raw, server_hostname=TLS_HOSTNAME):
            return None
    except ssl.SSLCertVerificationError as exc:
        return str(exc.verify_message)
    finally:
        raw.close()


@pytest.mark.lab
@pytest.mark.parametrize("kind", KINDS)
def test_tls_peer_presents_the_requested_certificate(
    kind: str, tls_peer: Callable[..., TlsPeer], tls_certs: TlsCerts
) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    peer = tls_peer(kind, port=8443)
    expected = tls_certs.certificate(kind).public_bytes(Encoding.DER)
    assert _peer_certificate(peer.address, peer.port) == expected
    error = _verify_error(tls_certs, peer.address, peer.port)
    expected_error = {
        "valid": None,
        "expired": "certificate has expired",
        "not_yet_valid": "certificate is not yet valid",
        "self_signed": "self-signed certificate",
        "wrong_name": "Hostname mismatch",
    }[kind]
    if expected_error is None:
        assert error is None
    else:
        assert error is not None and expected_error in error


def test_loopback_tls_peer_serves_http(loopback_tls_peer: Callable[..., TlsPeer]) -> None:
    peer = loopback_tls_peer("valid")
    context = ssl.create_default_context(cafile=str(peer.certs.ca_bundle))
    raw = socket.create_connection((peer.address, peer.port), timeout=5)
    with context.wrap_socket(raw, server_hostname=TLS_HOSTNAME) as tls:
        tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
        head = tls.recv(64)
    assert head.startswith(b"HTTP/1.0 200")


# -- hostile peers ---------------------------------------------------------------------------
def _read_all(address: str, port: int, timeout: float, limit: int = 1 << 30) -> tuple[bytes, str]:
    """Everything the peer sends until it closes ('closed') or goes quiet ('timeout')."""
    data = bytearray()
    with socket.create_connection((address, port), timeout=timeout) as sock:
        sock.sendall(b"\x16\x03\x01\x00\x00")
        try:
            while len(data) < limit:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    return bytes(data), "closed"
                data += chunk
        except TimeoutError:
            return bytes(data), "timeout"
    return bytes(data), "limit"


def test_garbage_peer_sends_random_bytes_and_closes(hostile: Callable[..., tuple[str, int]]) -> None:
    data, end = _read_all(*hostile("garbage"), timeout=3)
    assert (len(data), end) == (512, "closed")


def test_truncated_peer_sends_a_short_plausible_answer(hostile: Callable[..., tuple[str, int]]) -> None:
    data, end = _read_all(*hostile("truncated", flavor="ldap"), timeout=3)
    assert (data, end) == (FLAVORS["ldap"], "closed")


def test_oversized_peer_stops_at_its_cap(hostile: Callable[..., tuple[str, int]]) -> None:
    data, end = _read_all(*hostile("oversized", cap=4 << 20), timeout=5)
    assert (len(data), end) == (4 << 20, "closed")


def test_drip_peer_sends_about_one_byte_a_second(hostile: Callable[..., tuple[str, int]]) -> None:
    started = time.monotonic()
    data, end = _read_all(*hostile("drip", lifetime=2.5), timeout=5)
    assert end == "closed" and 2 <= len(data) <= 4
    assert time.monotonic() - started >= 2


def test_silent_peer_accepts_but_never_answers(hostile: Callable[..., tuple[str, int]]) -> None:
    data, end = _read_all(*hostile("silent"), timeout=1)
    assert (data, end) == (b"", "timeout")


@pytest.mark.parametrize(("mode", "size"), [("udp-garbage", range(64, 513)),
                                            ("udp-oversized", [65507])])  # fmt: skip
def test_udp_hostile_peers_answer_every_datagram(
    hostile: Callable[..., tuple[str, int]], mode: str, size: range
) -> None:
    address, port = hostile(mode)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        for _ in range(3):
            sock.sendto(b"ping", (address, port))
            assert len(sock.recv(70000)) in size


def test_hostile_server_stops_after_its_lifetime() -> None:
    server = HostileServer("silent", lifetime=0.5)
    address, port = server.start()
    time.sleep(1.0)
    assert connect_outcome(address, port) == "refused"
    server.stop()


def test_hostile_server_context_manager_frees_the_port() -> None:
    with hostile_server("garbage") as (address, port):
        assert connect_outcome(address, port) == "open"
    assert connect_outcome(address, port) == "refused"


@pytest.mark.lab
def test_hostile_peer_runs_inside_a_lab_host(second_host: Host, lab_hostile: Callable[..., object]) -> None:
    lab_hostile("garbage", 7200)
    data, end = _read_all(second_host.ipv4, 7200, timeout=3)
    assert (len(data), end) == (512, "closed")
    data6, _ = _read_all(second_host.ipv6, 7200, timeout=3)
    assert len(data6) == 512


# -- lifecycle -------------------------------------------------------------------------------
@pytest.mark.lab
def test_teardown_leaves_no_namespace_link_or_process(lab: Lab) -> None:
    other = Lab("teardown-test").up()
    try:
        assert other.subnet != lab.subnet  # concurrent labs never share a subnet
        host = other.add_host("t1")
        proc = host.popen(["sleep", "300"])
        # A process started behind the lab's back (no popen) must die with the namespace.
        orphan = subprocess.Popen(host.argv(["sleep", "300"]), start_new_session=True)
        assert host.netns in _list_netns()
    finally:
        other.down()
    orphan.wait(timeout=5)
    assert proc.poll() is not None and not _pid_alive(proc.pid)
    assert not [ns for ns in _list_netns() if ns.startswith(other.tag)]
    assert not [link for link in _list_links() if link.startswith(other.tag)]
    assert not other.workdir.exists()
    other.down()  # safe to repeat


@pytest.mark.lab
def test_stale_lab_of_a_dead_owner_is_reaped() -> None:
    stale = Lab("stale-test").up()
    try:
        stale.add_host("s1")
        state = stale.state()
        state["owner_pid"] = 2**22 + 1  # above the default pid_max: no such process
        (STATE_DIR / f"{stale.tag}.json").write_text(json.dumps(state))
        assert stale.tag in Lab.reap_stale()
        assert not [ns for ns in _list_netns() if ns.startswith(stale.tag)]
    finally:
        stale.down()
