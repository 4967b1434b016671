"""`closed`: the service accepted the connection, then closed or reset it (not `refused`).

Real loopback peers: one resets every connection (RST, as an IP allow-list or an overloaded
service does), one hangs up without a word (FIN, as a TLS-only port does on plaintext).
The same port passes at `--depth port`: it is open, the service rejects us.
"""

from __future__ import annotations

import errno
import json
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanner.models import Reason, Status
from scanner.probes.base import ProbeError, Settings
from scanner.probes.netio import outcome_for_oserror, wire_errors
from scanner.testing import make_context, run_probe
from tests.cli._run import portready
from tests.lab.loopback import LoopbackPeer


class ClosingPeer(LoopbackPeer):
    """Accepts on loopback, lets the client speak, then resets (RST) or hangs up (FIN)."""

    def __init__(self, mode: str) -> None:
        assert mode in ("reset", "hangup")
        self.mode = mode
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        try:
            conn.recv(4096)  # the client's request, if it sends one first
        except OSError:
            pass
        if self.mode == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()


@pytest.fixture(params=["reset", "hangup"])
def closing_peer(request: pytest.FixtureRequest) -> Iterator[ClosingPeer]:
    peer = ClosingPeer(request.param)
    yield peer
    peer.close()


_SETTINGS = Settings(timeout=2.0, retries=0, values={"domain": "lab.test", "oracle_service": "ORCL"})

# Every protocol probe that speaks over TCP in the clear (TLS ones below).
PLAIN_PROBES = [
    ("ldap", {}),
    ("ldap", {"gc": True}),  # the global catalog, 3268
    ("kerberos", {}),
    ("epm", {}),
    ("smb", {}),
    ("http", {}),
    ("tds", {}),
    ("tns", {}),
    ("dns", {}),
    ("winrm", {}),
]


@pytest.mark.parametrize(("probe", "options"), PLAIN_PROBES, ids=[f"{p}{'-gc' if o else ''}" for p, o in PLAIN_PROBES])
async def test_accepted_then_closed_is_closed_not_refused(closing_peer: ClosingPeer, probe: str, options: dict[str, object]) -> None:
    ctx = make_context("dc1.lab.test", "127.0.0.1", closing_peer.port, probe=probe, options=options, settings=_SETTINGS)
    result = await run_probe(probe, ctx)
    assert closing_peer.accepted >= 1
    assert (result.status, result.reason) == (Status.FAIL, Reason.CLOSED), result.detail
    assert "accepted the connection" in result.detail and "no service listens" not in result.detail
    assert "listed client addresses" in result.detail


TLS_PROBES = ["tls", "https", "ldaps", "tns-tls", "papi", "vsphere", "ontap"]


@pytest.mark.parametrize("probe", TLS_PROBES)
async def test_a_reset_during_the_tls_handshake_is_closed(probe: str) -> None:
    peer = ClosingPeer("reset")
    try:
        ctx = make_context("tls.lab.test", "127.0.0.1", peer.port, probe=probe, settings=_SETTINGS)
        result = await run_probe(probe, ctx)
    finally:
        peer.close()
    assert (result.status, result.reason) == (Status.FAIL, Reason.CLOSED), result.detail
    assert "TLS handshake" in result.detail


def test_the_same_port_passes_at_port_depth_and_reads_closed_at_protocol_depth(tmp_path: Path) -> None:
    peer = ClosingPeer("reset")
    try:
        for depth, status, reason in (("port", "pass", "port-depth"), ("protocol", "fail", "closed")):
            out = tmp_path / f"{depth}.json"
            proc = portready("scan", "--target", "domain-controllers=127.0.0.1", "--profile", "active-directory",
                             "--set", "domain=lab.test", "--depth", depth, "--timeout", "2", "--quiet",
                             "--json", str(out), "--profiles", str(_one_row_profile(tmp_path, peer.port)))  # fmt: skip
            assert proc.returncode in (0, 1), proc.stderr
            (check,) = [c for r in json.loads(out.read_text())["rows"] for c in r["checks"] if c["port"] == peer.port]
            assert check["status"] == status and (depth == "port" or check["reason"] == reason), check
    finally:
        peer.close()


def _one_row_profile(tmp_path: Path, port: int) -> Path:
    folder = tmp_path / "profiles"
    folder.mkdir(exist_ok=True)
    (folder / "active-directory.yaml").write_text(
        "id: active-directory\ntitle: AD\nsection: Active Directory\nrows:\n"
        "  - id: ldap-test\n    doc: {port: '389', protocol: TCP, source: a, target: b, purpose: LDAP}\n"
        "    direction: outbound\n    source: auditor-server\n    target: domain-controllers\n"
        f"    checks:\n      - {{protocol: tcp, port: {port}, probe: ldap}}\n"
    )
    return folder


# -- the one error map: Windows codes and the OS error kept as evidence -----------------------
def _oserror(code: int, text: str = "winsock") -> OSError:
    exc = OSError(code, text)
    return exc


@pytest.mark.parametrize(
    ("code", "connected", "reason"),
    [
        (10061, False, Reason.REFUSED),  # WSAECONNREFUSED
        (10054, False, Reason.REFUSED),  # WSAECONNRESET on a UDP socket: ICMP port-unreachable
        (10054, True, Reason.CLOSED),  # WSAECONNRESET on an open TCP connection
        (10053, True, Reason.CLOSED),  # WSAECONNABORTED
        (10060, False, Reason.FILTERED),  # WSAETIMEDOUT
        (10065, False, Reason.UNREACHABLE),  # WSAEHOSTUNREACH
        (10051, False, Reason.UNREACHABLE),  # WSAENETUNREACH
        (10013, False, Reason.PERMISSION),  # WSAEACCES: a local firewall forbids it
        (errno.ECONNREFUSED, False, Reason.REFUSED),
        (errno.ECONNRESET, True, Reason.CLOSED),
        (errno.EHOSTUNREACH, False, Reason.UNREACHABLE),
        (errno.ETIMEDOUT, False, Reason.FILTERED),
        (errno.EACCES, False, Reason.PERMISSION),
    ],
)
async def test_windows_and_posix_codes_map_to_the_same_reasons(code: int, connected: bool, reason: Reason) -> None:
    ctx = make_context("h", "127.0.0.1", 9, settings=_SETTINGS)
    outcome = outcome_for_oserror(ctx, _oserror(code), connected=connected)
    assert outcome.reason is reason, outcome.detail
    assert outcome.evidence["os_error"] == {"errno": code, "strerror": "winsock"}


async def test_proactor_winerror_codes_are_mapped_too() -> None:
    ctx = make_context("h", "127.0.0.1", 9, settings=_SETTINGS)
    for winerror, reason in ((1225, Reason.REFUSED), (1232, Reason.UNREACHABLE), (121, Reason.FILTERED)):
        exc = OSError(22, "proactor")
        exc.winerror = winerror  # type: ignore[attr-defined]
        assert outcome_for_oserror(ctx, exc).reason is reason


async def test_win32_codes_do_not_collide_with_posix_errno() -> None:
    ctx = make_context("h", "127.0.0.1", 9, settings=_SETTINGS)
    # 64 is ERROR_NETNAME_DELETED as a winerror, but ENONET as a Linux errno; 121 likewise.
    assert outcome_for_oserror(ctx, OSError(64, "Machine is not on the network"), connected=True).reason is not Reason.CLOSED
    assert outcome_for_oserror(ctx, OSError(121, "Remote I/O error")).reason is not Reason.FILTERED
    reset = OSError(22, "The specified network name is no longer available")
    reset.winerror = 64  # type: ignore[attr-defined]
    assert outcome_for_oserror(ctx, reset, connected=True).reason is Reason.CLOSED


async def test_wire_errors_keeps_the_cause_chain() -> None:
    ctx = make_context("h", "127.0.0.1", 9, settings=_SETTINGS)
    with pytest.raises(ProbeError) as err:
        with wire_errors(ctx, "LDAP answer"):
            raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    assert err.value.outcome.reason is Reason.CLOSED
    assert isinstance(err.value.__cause__, ConnectionResetError)
    assert err.value.outcome.evidence["os_error"]["errno"] == errno.ECONNRESET


def _unused_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("probe", "transport"),
    [("dns", "tcp"), ("dns", "udp"), ("cldap", "udp"), ("kerberos", "tcp"), ("kerberos", "udp"), ("smb", "tcp"),
     # every UDP probe shares udp_exchange, whose waits and pacing this work changed
     ("udp", "udp"), ("netbios-ns", "udp"), ("netbios-dgm", "udp"), ("quic", "udp"), ("sql-browser", "udp")],  # fmt: skip
)
async def test_nothing_listening_is_refused_never_a_protocol_verdict(probe: str, transport: str) -> None:
    # The peer is missing: a TCP RST or an ICMP port-unreachable, on a real loopback port.
    port = _unused_port(socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM)
    ctx = make_context("peer", "127.0.0.1", port, probe=probe, protocol=transport, timeout=1.0, retries=0)
    result = await run_probe(probe, ctx)
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED), result.detail
