"""ldap probe: RootDSE and binds against the lab's Samba DC, plus hostile and canned peers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from scanner.models import CheckResult, Reason, Status
from scanner.probes.base import Credentials, Settings
from scanner.probes.ldap import LdapProbe, generalized_time_to_iso
from scanner.testing import make_context, run_probe
from scanner.wire import ldap as wire

# -- small in-process peers (shared by the directory probe tests) -----------------------------


@contextlib.asynccontextmanager
async def canned_tcp(answer: Callable[[bytes], bytes], tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """A loopback TCP (or TLS) server: reads one request, writes answer(request); yields its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.read(65536), 2.0)
            writer.write(answer(request))
            await writer.drain()
            await asyncio.sleep(5)  # keep the connection open: the probe must not wait for EOF
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, answer: Callable[[bytes], bytes]) -> None:
        self.answer = answer
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: object) -> None:
        assert self.transport is not None
        self.transport.sendto(self.answer(data), addr)


@contextlib.asynccontextmanager
async def canned_udp(answer: Callable[[bytes], bytes]) -> AsyncIterator[int]:
    """A loopback UDP server answering every datagram with answer(datagram)."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(answer), local_addr=("127.0.0.1", 0))
    try:
        yield transport.get_extra_info("sockname")[1]
    finally:
        transport.close()


def request_id(request: bytes) -> int:
    return wire.parse_message(request[: wire.decode_one(request)[1]]).message_id


def rootdse_answer(attrs: dict[str, list[str]]) -> Callable[[bytes], bytes]:
    def answer(request: bytes) -> bytes:
        mid = request_id(request)
        partial = b"".join(
            wire.sequence(wire.octets(k), wire.sequence(*(wire.octets(v) for v in vals), tag=0x31))
            for k, vals in attrs.items()
        )
        entry = wire.message(mid, wire.tlv(wire.SEARCH_ENTRY, wire.octets("") + wire.sequence(partial)))
        done = wire.message(mid, wire.tlv(wire.SEARCH_DONE, wire.integer(0, 0x0A) + wire.octets("") + wire.octets("")))
        return entry + done

    return answer


async def run_ldap(address: str, port: int, **kw: object) -> CheckResult:
    ctx = make_context(kw.pop("host", "dc1"), address, port, probe="ldap", **kw)  # type: ignore[arg-type]
    return await run_probe("ldap", ctx)


# -- pure helpers -----------------------------------------------------------------------------


def test_generalized_time_becomes_iso_utc() -> None:
    assert generalized_time_to_iso("20240102030405.0Z") == "2024-01-02T03:04:05Z"
    assert generalized_time_to_iso("garbage") is None


def test_ber_decoder_refuses_lengths_beyond_the_data() -> None:
    with pytest.raises(wire.BerError):
        wire.decode_one(bytes.fromhex("3084800000000201"))  # 2^31 bytes promised
    with pytest.raises(wire.BerError):
        wire.decode_one(bytes.fromhex("3080"))  # indefinite length


def test_options_are_checked_before_anything_is_sent() -> None:
    LdapProbe.validate({"gc": True, "bind": "simple"})
    with pytest.raises(ValueError):
        LdapProbe.validate({"gc": "yes"})
    with pytest.raises(ValueError):
        LdapProbe.validate({"bind": "kerberos-v4"})


# -- canned and hostile peers -----------------------------------------------------------------


async def test_gc_that_is_not_ready_fails_with_words() -> None:
    attrs = {"defaultNamingContext": ["DC=x,DC=test"], "isGlobalCatalogReady": ["FALSE"]}
    async with canned_tcp(rootdse_answer(attrs)) as port:
        result = await run_ldap("127.0.0.1", port, options={"gc": True})
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL)
    assert "Global Catalog" in result.detail
    assert result.evidence["is_global_catalog_ready"] is False


async def test_ber_length_of_two_gigabytes_is_a_protocol_failure() -> None:
    async with canned_tcp(lambda _req: bytes.fromhex("308480000000020101")) as port:
        result = await run_ldap("127.0.0.1", port)
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL)
    assert "2147483648" in result.detail


@pytest.mark.parametrize("mode", ["garbage", "truncated", "oversized", "drip", "silent"])
async def test_hostile_peer_fails_cleanly_within_the_timeout(hostile, mode: str) -> None:
    address, port = hostile(mode, flavor="ldap", cap=8 * 1024 * 1024)
    started = time.monotonic()
    result = await run_ldap(address, port, timeout=1.0, retries=0)
    if mode in ("silent", "drip"):  # connected, then no (complete) answer: slowness, not a verdict
        assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
    else:
        assert result.status is Status.FAIL
        assert result.reason in (Reason.PROTOCOL, Reason.FILTERED)
    assert "Traceback" not in result.detail
    assert time.monotonic() - started < 1.0 * 5 + 1  # the engine's budget for this probe


async def test_closed_port_is_refused() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await run_ldap("127.0.0.1", port, timeout=1.0, retries=0)
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED)


# -- the lab's Samba DC -----------------------------------------------------------------------


@pytest.mark.lab
async def test_rootdse_of_the_dc_passes_with_naming_context_and_time(dc) -> None:
    result = await run_ldap(dc.address, 389)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["default_naming_context"] == dc.base_dn
    assert result.evidence["dns_host_name"] == dc.fqdn
    assert result.evidence["current_time"].endswith("Z")
    assert "GSS-SPNEGO" in result.evidence["supported_sasl_mechanisms"]


@pytest.mark.lab
async def test_global_catalog_port_reports_ready(dc) -> None:
    result = await run_ldap(dc.address, 3268, options={"gc": True})
    assert result.status is Status.PASS, result.detail
    assert result.evidence["is_global_catalog_ready"] is True


@pytest.mark.lab
async def test_ntlm_bind_with_signing_passes_and_never_shows_the_password(dc) -> None:
    creds = Credentials(dc.admin_user, dc.admin_password, dc.domain)
    result = await run_ldap(dc.address, 389, credentials=creds)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["bind_method"] == "ntlm"
    assert result.evidence["sealed_search"] is True
    assert dc.admin_password not in json.dumps(result.to_dict())


@pytest.mark.lab
async def test_wrong_password_is_auth_not_unreachable(dc) -> None:
    wrong = dc.admin_password + "-wrong"
    result = await run_ldap(dc.address, 389, credentials=Credentials(dc.admin_user, wrong, dc.domain))
    assert (result.status, result.reason) == (Status.FAIL, Reason.AUTH)
    assert wrong not in json.dumps(result.to_dict())


@pytest.mark.lab
async def test_simple_bind_without_tls_is_refused_by_policy(dc) -> None:
    creds = Credentials(dc.admin_user, dc.admin_password, dc.domain)
    result = await run_ldap(dc.address, 389, credentials=creds, options={"bind": "simple"})
    assert (result.status, result.reason) == (Status.FAIL, Reason.POLICY)
    assert result.evidence["bind_result"] == "strongerAuthRequired"
    assert dc.admin_password not in json.dumps(result.to_dict())


@pytest.mark.lab
async def test_dropped_ldap_port_is_filtered(dc, dc_firewall) -> None:
    dc_firewall.drop(389)
    result = await run_ldap(dc.address, 389, timeout=1.0, retries=0)
    assert (result.status, result.reason) == (Status.FAIL, Reason.FILTERED)


@pytest.mark.lab
async def test_rejected_ldap_port_is_refused(dc, dc_firewall) -> None:
    dc_firewall.reject(3268)
    result = await run_ldap(dc.address, 3268, options={"gc": True}, timeout=1.0, retries=0)
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED)


@pytest.mark.lab
async def test_rootdse_with_inventory_settings_is_unchanged(dc) -> None:
    settings = Settings(timeout=2.0, values={"domain": "lab.test"})
    result = await run_ldap(dc.address, 389, settings=settings)
    assert result.status is Status.PASS
