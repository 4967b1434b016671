"""Facts read once per scan (scanner/probes/_memo.py): single flight, what is kept, and the
three users against real peers: a certificate chain judged once per chain and trust store
(TLS servers on loopback, counted by the server), the LDAP policy once per DC (the Samba
DC, on two of its ports), the endpoint mapper's listing once per address (Samba's mapper).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from scanner.models import Reason
from scanner.probes import _tls
from scanner.probes._memo import ScanMemo
from scanner.probes.base import ProbeError, Settings
from scanner.testing import make_context, run_probe
from tests.lab.loopback import LoopbackPeer
from tests.lab.samba_dc import SambaDC
from tests.lab.tls import TLS_HOSTNAME, TlsCerts


# -- the memo ----------------------------------------------------------------------------------
async def test_one_computation_for_checks_that_ask_at_once() -> None:
    memo, calls = ScanMemo(), []

    async def read() -> str:
        calls.append(1)
        await asyncio.sleep(0.05)
        return "required"

    results = await asyncio.gather(*(memo.once(("k",), read) for _ in range(5)))
    assert len(calls) == 1
    assert [value for value, _ in results] == ["required"] * 5
    assert sorted(reused for _, reused in results) == [False, True, True, True, True]
    assert await memo.once(("k",), read) == ("required", True) and len(calls) == 1


async def test_a_value_keep_rejects_is_not_stored_and_the_next_check_asks_itself() -> None:
    memo, calls = ScanMemo(), []

    async def read() -> str:
        calls.append(1)
        return "unknown"

    assert await memo.once(("k",), read, keep=lambda v: v != "unknown") == ("unknown", False)
    assert await memo.once(("k",), read, keep=lambda v: v != "unknown") == ("unknown", False)
    assert len(calls) == 2 and memo.get(("k",)) is None


async def test_waiters_ask_themselves_when_the_first_check_fails_or_is_cancelled() -> None:
    memo = ScanMemo()
    started = asyncio.Event()

    async def broken() -> str:
        started.set()
        await asyncio.sleep(0.05)
        raise OSError("reset")

    async def fine() -> str:
        return "never"

    first = asyncio.ensure_future(memo.once(("k",), broken))
    await started.wait()
    second = await memo.once(("k",), fine)
    with pytest.raises(OSError):
        await first
    assert second == ("never", False)

    hung = asyncio.ensure_future(memo.once(("c",), lambda: asyncio.sleep(30)))  # type: ignore[arg-type, return-value]
    await asyncio.sleep(0.01)
    waiter = asyncio.ensure_future(memo.once(("c",), fine))
    await asyncio.sleep(0.01)
    hung.cancel()
    assert await asyncio.wait_for(waiter, 2) == ("never", False)  # not cancelled with it


async def test_a_waiter_waits_no_longer_than_asked() -> None:
    memo = ScanMemo()
    slow = asyncio.ensure_future(memo.once(("k",), lambda: asyncio.sleep(5, "late")))  # type: ignore[arg-type, return-value]
    await asyncio.sleep(0.01)

    async def own() -> str:
        return "own"

    assert await asyncio.wait_for(memo.once(("k",), own, wait=0.05), 1) == ("own", False)
    slow.cancel()


def test_the_memo_is_bounded_whatever_the_peers_call_themselves() -> None:
    from scanner.probes import _memo

    memo = ScanMemo()
    for i in range(_memo._MAX_KEYS + 500):
        memo.put(("dc", str(i)), i)
        memo.count(("n", i))
    assert len(memo._values) == _memo._MAX_KEYS and len(memo.counters) == _memo._MAX_KEYS


# -- a certificate chain is judged once per chain and trust store -------------------------------
class CountingTlsServer(LoopbackPeer):
    """A real TLS server on one loopback address that counts the connections it accepts
    (a refused verification still costs the server a connection and its key operation)."""

    def __init__(self, certs: TlsCerts, kind: str, address: str = "127.0.0.1", port: int = 0) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certs.cert(kind), certs.key(kind))
        super().__init__(address, port, threaded=True)

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(3)
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except ssl.SSLError:
            pass


@pytest.fixture
def tls_servers(loopback_tls_certs: TlsCerts) -> Iterator[Any]:
    started: list[CountingTlsServer] = []

    def start(kind: str, address: str = "127.0.0.1", port: int = 0) -> CountingTlsServer:
        server = CountingTlsServer(loopback_tls_certs, kind, address, port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


async def _session(port: int, memo: ScanMemo, certs: TlsCerts | None, address: str = "127.0.0.1") -> _tls.TlsSession:
    settings = Settings(timeout=2.0, retries=0, ca_bundle=str(certs.ca_bundle) if certs else None)
    ctx = make_context(TLS_HOSTNAME, address, port, probe="tls", settings=settings, memo=memo)
    session = await _tls.open_tls(ctx)
    session.abort()
    return session


async def test_an_untrusted_chain_met_again_takes_one_handshake_with_the_same_verdict(
    tls_servers: Any, loopback_tls_certs: TlsCerts
) -> None:
    server = tls_servers("self_signed")
    memo = ScanMemo()
    sessions = [await _session(server.port, memo, loopback_tls_certs) for _ in range(4)]
    assert [s.handshakes for s in sessions] == [2, 1, 1, 1]
    assert server.accepted == 5  # a refused verifying handshake + the kept one, then one each
    assert {(s.trusted, s.trust_error, s.trust_code) for s in sessions} == {
        (sessions[0].trusted, sessions[0].trust_error, sessions[0].trust_code)
    }
    assert sessions[0].trusted is False and sessions[0].trust_error


async def test_checks_that_meet_a_port_at_once_wait_for_its_first_verdict(
    tls_servers: Any, loopback_tls_certs: TlsCerts
) -> None:
    """Before any verdict on a port, each concurrent check would guess "verify first" and pay
    a refused handshake for a self-signed certificate; one finds out, the others follow."""
    server = tls_servers("self_signed")
    memo = ScanMemo()
    sessions = await asyncio.gather(*(_session(server.port, memo, loopback_tls_certs) for _ in range(8)))
    assert sorted(s.handshakes for s in sessions) == [1] * 7 + [2]
    assert server.accepted == 9 and all(s.trusted is False and s.trust_error for s in sessions)


async def test_when_the_first_check_of_a_port_fails_the_waiting_ones_judge_on_their_own(
    tls_servers: Any, loopback_tls_certs: TlsCerts
) -> None:
    server = tls_servers("self_signed", "127.0.0.1")
    memo = ScanMemo()

    async def closed_first() -> Any:
        try:
            return await _session(server.port, memo, loopback_tls_certs, "127.0.0.3")  # nothing listens there
        except ProbeError as exc:
            return exc.outcome

    first, *others = await asyncio.gather(
        closed_first(), *(_session(server.port, memo, loopback_tls_certs) for _ in range(4))
    )
    assert first.reason is Reason.REFUSED, first
    assert all(s.trusted is False and s.trust_error for s in others)


async def test_checks_that_meet_a_trusted_port_at_once_take_one_handshake_each(
    tls_servers: Any, loopback_tls_certs: TlsCerts
) -> None:
    server = tls_servers("valid")
    memo = ScanMemo()
    sessions = await asyncio.gather(*(_session(server.port, memo, loopback_tls_certs) for _ in range(8)))
    assert [s.handshakes for s in sessions] == [1] * 8 and server.accepted == 8
    assert all(s.trusted for s in sessions)


async def test_a_trusted_chain_always_takes_one_handshake(tls_servers: Any, loopback_tls_certs: TlsCerts) -> None:
    server = tls_servers("valid")
    memo = ScanMemo()
    sessions = [await _session(server.port, memo, loopback_tls_certs) for _ in range(3)]
    assert [s.handshakes for s in sessions] == [1, 1, 1] and server.accepted == 3
    assert all(s.trusted for s in sessions)


async def test_another_chain_on_the_same_port_is_judged_by_its_own_handshake(
    tls_servers: Any, loopback_tls_certs: TlsCerts
) -> None:
    """Once the port's certificates were mostly untrusted, a new chain there is still judged
    by the verifier, never given the verdict of the chain before it."""
    untrusted = tls_servers("self_signed", "127.0.0.1")
    try:
        trusted = tls_servers("valid", "127.0.0.2", untrusted.port)
    except OSError:
        pytest.skip("127.0.0.2 is not usable on this loopback")
    memo = ScanMemo()
    first = [await _session(untrusted.port, memo, loopback_tls_certs, "127.0.0.1") for _ in range(2)]
    other = await _session(untrusted.port, memo, loopback_tls_certs, "127.0.0.2")
    assert [s.trusted for s in first] == [False, False]
    assert other.trusted is True and other.trust_error is None
    assert other.handshakes == 2 and trusted.accepted == 2  # kept without verification, judged apart


class PlainPeer(LoopbackPeer):
    """A TCP peer on one loopback address that is not TLS: it sends text, or says nothing."""

    def __init__(self, address: str, port: int, mode: str) -> None:
        self.mode = mode
        super().__init__(address, port)

    def handle(self, conn: socket.socket) -> None:
        if self.mode == "garbage":
            conn.sendall(b"220 not TLS at all\r\n" * 512)  # past the 8 KiB record its first bytes announce
        threading.Timer(3.0, conn.close).start()


@pytest.mark.parametrize("mode", ["garbage", "silent", "missing"])
async def test_once_a_port_reads_untrusted_a_peer_that_is_not_tls_still_fails(
    tls_servers: Any, loopback_tls_certs: TlsCerts, mode: str
) -> None:
    """The first handshake without verification is no shortcut past the handshake itself: a
    port with no TLS fails `tls`, a silent one reads `no-reply`, a missing one `refused`."""
    from scanner.models import Reason
    from scanner.probes.base import ProbeError

    untrusted = tls_servers("self_signed", "127.0.0.1")
    memo = ScanMemo()
    for _ in range(2):
        await _session(untrusted.port, memo, loopback_tls_certs)
    assert _tls._describe_first(make_context("x", "127.0.0.1", untrusted.port, memo=memo), untrusted.port)
    try:
        peer = PlainPeer("127.0.0.2", untrusted.port, mode) if mode != "missing" else None
    except OSError:
        pytest.skip("127.0.0.2 is not usable on this loopback")
    try:
        with pytest.raises(ProbeError) as caught:
            await _session(untrusted.port, memo, loopback_tls_certs, "127.0.0.2")
    finally:
        if peer is not None:
            peer.close()
    reason = caught.value.outcome.reason
    assert reason is {"garbage": Reason.TLS, "silent": Reason.NO_REPLY, "missing": Reason.REFUSED}[mode], (
        caught.value.outcome.detail
    )


async def test_a_verdict_is_not_carried_to_another_trust_store(tls_servers: Any, loopback_tls_certs: TlsCerts) -> None:
    server = tls_servers("valid")
    memo = ScanMemo()
    without_ca = [await _session(server.port, memo, None) for _ in range(2)]
    with_ca = await _session(server.port, memo, loopback_tls_certs)
    assert [s.trusted for s in without_ca] == [False, False]
    assert with_ca.trusted is True


async def test_checks_with_no_memo_in_common_judge_on_their_own(tls_servers: Any, loopback_tls_certs: TlsCerts) -> None:
    server = tls_servers("self_signed")
    sessions = [await _session(server.port, ScanMemo(), loopback_tls_certs) for _ in range(2)]
    assert [s.handshakes for s in sessions] == [2, 2] and server.accepted == 4


def test_the_sent_chain_is_read_from_the_ssl_object_or_not_at_all() -> None:
    class Public:
        def get_unverified_chain(self) -> list[bytes]:
            return [b"leaf", b"ca"]

    class Private:
        class _sslobj:  # noqa: N801 - the private attribute's name
            @staticmethod
            def get_unverified_chain() -> list[Any]:
                class Cert:
                    def public_bytes(self, _encoding: int) -> bytes:
                        return b"leaf"

                return [Cert()]

    class Broken:
        def get_unverified_chain(self) -> list[Any]:
            raise RuntimeError("changed")

    assert _tls.sent_chain(Public()) == (b"leaf", b"ca")
    assert _tls.sent_chain(Private()) == (b"leaf",)
    assert _tls.sent_chain(Broken()) is None and _tls.sent_chain(object()) is None


# -- the LDAP policy once per DC; the mapper's listing once per address (the Samba DC) ---------
@pytest.mark.lab
async def test_the_ldap_policy_is_read_once_per_dc_and_carried_to_its_other_ports(dc: SambaDC) -> None:
    memo = ScanMemo()
    results = []
    for port, options in ((389, {}), (3268, {"gc": True})):
        ctx = make_context(dc.fqdn, dc.address, port, probe="ldap", options=options, memo=memo)
        results.append(await run_probe("ldap", ctx))
    first, second = results
    assert first.evidence["ldap_signing"] == second.evidence["ldap_signing"] == "required"
    assert "ldap_signing_result" in first.evidence and "ldap_signing_read_on" not in first.evidence
    assert second.evidence["ldap_signing_read_on"] == f"{dc.address} TCP 389"
    assert second.evidence["rootdse_result"] == "success"  # its own port still proven
    alone = await run_probe("ldap", make_context(dc.fqdn, dc.address, 3268, probe="ldap", options={"gc": True}))
    assert "ldap_signing_read_on" not in alone.evidence and alone.evidence["ldap_signing"] == "required"


@pytest.mark.lab
async def test_the_mapper_listing_is_read_once_per_address_by_epm_and_rpc_dynamic(
    dc: SambaDC, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scanner.probes import epm

    lookups: list[int] = []
    real = epm.ept_lookup

    async def counted(conn: Any, *args: Any, **kwargs: Any) -> Any:
        lookups.append(1)
        return await real(conn, *args, **kwargs)

    monkeypatch.setattr(epm, "ept_lookup", counted)
    memo = ScanMemo()
    listed = await run_probe("epm", make_context(dc.fqdn, dc.address, 135, probe="epm", memo=memo))
    dynamic_ctx = make_context(
        dc.fqdn, dc.address, "1024-65535", probe="rpc-dynamic", options={"interfaces": ["any"]}, memo=memo
    )
    ranged = await run_probe("rpc-dynamic", dynamic_ctx)
    assert listed.status.value == "pass", listed.detail
    assert ranged.status.value == "pass" and ranged.evidence["range_verdict"] == "reachable", ranged.detail
    assert len(lookups) == 1
