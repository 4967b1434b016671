"""tns and tns-tls probes: Oracle TNS CONNECT against the listener simulator and hostile peers."""

from __future__ import annotations

import asyncio
import struct
import time

import pytest

from scanner.models import Reason, Status
from scanner.probes.base import Settings
from scanner.testing import make_context, run_probe
from scanner.wire.tns import (
    ACCEPT,
    CONNECT,
    DATA,
    REDIRECT,
    REFUSE,
    TnsError,
    build_connect,
    connect_descriptor,
    packet_length,
    parse_answer,
    vsnnum_text,
)
from tests.lab.netns import Host
from tests.lab.simulators import server_ssl_context
from tests.lab.simulators import tns as sim
from tests.lab.tls import TlsCerts
from tests.probes.test_tds import free_port, start_simulator, stop


def ctx(port: int, probe: str = "tns", address: str = "127.0.0.1", timeout: float = 2.0, **settings_kw):  # type: ignore[no-untyped-def]
    settings = Settings(timeout=timeout, retries=1, **settings_kw)
    return make_context(address, address, port, probe=probe, settings=settings)


# -- bytes -----------------------------------------------------------------------------------
def test_connect_packet_has_the_documented_fields() -> None:
    descriptor = connect_descriptor("ORCLPDB1", "db1", 1521)
    packet = build_connect(descriptor)
    length, _ck, ptype, _flags, _hck = struct.unpack_from(">HHBBH", packet)
    assert (length, ptype) == (len(packet), CONNECT)
    fields = sim.CONNECT_FIXED.unpack_from(packet, 8)
    version, compat, _opts, sdu, tdu = fields[:5]
    assert (version, compat, sdu, tdu) == (314, 300, 8192, 32767)
    assert fields[7] == 1  # value of 1 in hardware
    cd_len, cd_off = fields[8], fields[9]
    assert packet[cd_off : cd_off + cd_len].decode() == descriptor
    assert "(SERVICE_NAME=ORCLPDB1)" in descriptor and "(PROGRAM=portready)" in descriptor
    assert "(HOST=db1)(PORT=1521)" in descriptor


def test_long_connect_data_follows_in_a_data_packet() -> None:
    descriptor = connect_descriptor("S" * 200, "h" * 60, 1521)
    packet = build_connect(descriptor)
    first = struct.unpack_from(">H", packet)[0]
    fields = sim.CONNECT_FIXED.unpack_from(packet, 8)
    assert fields[9] == first  # offset points past the CONNECT packet
    assert packet[first + 4] == DATA
    assert packet[first + 10 :].decode() == descriptor


def test_descriptor_values_cannot_break_the_syntax() -> None:
    descriptor = connect_descriptor("A)(SID=X", "evil(HOST=x)", 1521)
    assert sim.parentheses_balanced(descriptor)
    assert "(SID=" not in descriptor


def test_vsnnum_decodes_oracle_versions() -> None:
    assert vsnnum_text(318767104) == "19.0.0.0.0"
    assert vsnnum_text(sim.vsnnum("12.2.0.1.0")) == "12.2.0.1.0"


def test_refuse_gives_error_and_version() -> None:
    packet = sim.encode_refuse(sim.refuse_text(12514, 318767104))
    answer = parse_answer(REFUSE, packet[8:])
    assert (answer.error, answer.vsnnum) == (12514, 318767104)
    assert answer.evidence()["version"] == "19.0.0.0.0"


def test_accept_gives_tns_version() -> None:
    packet = sim.encode_accept(314, 8192, 32767)
    answer = parse_answer(ACCEPT, packet[8:])
    assert answer.version == 314
    assert answer.evidence()["packet_type"] == "ACCEPT"


def test_redirect_gives_the_address() -> None:
    text = b"(ADDRESS=(PROTOCOL=TCP)(HOST=db2)(PORT=1522))"
    answer = parse_answer(REDIRECT, struct.pack(">H", len(text)) + text)
    assert answer.evidence()["redirect"] == text.decode()


@pytest.mark.parametrize(
    ("ptype", "body"),
    [(ACCEPT, b"\x01\x3a"), (REFUSE, b"\x22"), (REDIRECT, b"\x00"), (DATA, b"\x00\x00hello"), (99, b"")],
)
def test_short_or_unexpected_answers_are_rejected(ptype: int, body: bytes) -> None:
    with pytest.raises(TnsError):
        parse_answer(ptype, body)


def test_lengths_are_bounded_in_both_header_forms() -> None:
    assert packet_length(bytes.fromhex("0040000002000000")) == 64
    assert packet_length(bytes.fromhex("0000004002000000"), large=True) == 64
    assert packet_length(bytes.fromhex("0000004002000000")) == 64  # 4-byte form recognised
    too_big = (bytes.fromhex("0100000002000000"), True), (bytes.fromhex("0000000002000000"), False)
    for head, large in ((bytes.fromhex("0004000002000000"), False), *too_big):
        with pytest.raises(TnsError):
            packet_length(head, large)


# -- against the listener simulator ----------------------------------------------------------
async def test_unknown_placeholder_service_is_a_pass_with_version() -> None:
    async with sim.TnsListener(services={"ORCLPDB1"}) as srv:
        result = await run_probe("tns", ctx(srv.port))
    assert result.status is Status.PASS, result.detail
    ev = result.evidence
    assert (ev["packet_type"], ev["error"], ev["version"]) == ("REFUSE", 12514, "19.0.0.0.0")
    assert "oracle_service" in result.detail


async def test_configured_service_is_accepted() -> None:
    async with sim.TnsListener(services={"ORCLPDB1"}) as srv:
        result = await run_probe("tns", ctx(srv.port, values={"oracle_service": "ORCLPDB1"}))
        assert srv.accepted == 1
    assert result.status is Status.PASS, result.detail
    assert result.evidence["packet_type"] == "ACCEPT"
    assert result.evidence["tns_version"] == 314


async def test_resend_is_answered_by_sending_connect_again() -> None:
    async with sim.TnsListener(services={"ORCL"}, resend=True, version="12.2.0.1.0") as srv:
        result = await run_probe("tns", ctx(srv.port))
    assert result.status is Status.PASS, result.detail
    assert result.evidence["resend"] is True
    assert result.evidence["version"] == "12.2.0.1.0"


async def test_redirect_passes_and_names_the_address() -> None:
    text = b"(ADDRESS=(PROTOCOL=TCP)(HOST=198.18.0.9)(PORT=1522))"

    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(sim.encode_packet(REDIRECT, struct.pack(">H", len(text)) + text))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(redirect, "127.0.0.1", 0)
    try:
        result = await run_probe("tns", ctx(server.sockets[0].getsockname()[1]))
    finally:
        server.close()
    assert result.status is Status.PASS, result.detail
    assert "198.18.0.9" in result.evidence["redirect"]


async def test_closed_port_is_refused() -> None:
    result = await run_probe("tns", ctx(free_port()))
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED)


@pytest.mark.parametrize(
    ("mode", "flavor"),
    [("garbage", "tls"), ("truncated", "tns"), ("oversized", "tls"), ("drip", "tns"), ("silent", "tls"),
     ("truncated", "tds")],
)  # fmt: skip
async def test_hostile_peers_fail_protocol_within_the_timeout(hostile, mode: str, flavor: str) -> None:  # type: ignore[no-untyped-def]
    address, port = hostile(mode, flavor=flavor)
    started = time.monotonic()
    result = await run_probe("tns", ctx(port, address=address, timeout=1.0))
    if mode in ("silent", "drip"):  # connected, then no (complete) answer: slowness, not a verdict
        assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
    else:
        assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL), result.detail
    assert time.monotonic() - started < 5.0


async def test_endless_resend_is_not_followed_forever() -> None:
    handlers: list[asyncio.Task[None]] = []

    async def resend_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            handlers.append(task)  # type: ignore[arg-type]
        try:
            for _ in range(5):
                if not await reader.read(4096):
                    break
                writer.write(sim.encode_packet(sim.TNS_RESEND, b""))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        writer.close()

    server = await asyncio.start_server(resend_forever, "127.0.0.1", 0)
    try:
        result = await run_probe("tns", ctx(server.sockets[0].getsockname()[1]))
    finally:
        server.close()
        # The handler must finish (and close its socket) before this test's loop closes.
        await asyncio.wait_for(asyncio.gather(*handlers, return_exceptions=True), 5)
        await server.wait_closed()
    assert result.status is Status.PASS  # RESEND itself comes only from a listener
    assert result.evidence["packet_type"] == "RESEND"


# -- TLS (2484) ------------------------------------------------------------------------------
async def test_tls_listener_with_trusted_certificate_passes(loopback_tls_certs: TlsCerts) -> None:
    tls = server_ssl_context(str(loopback_tls_certs.cert("valid")), str(loopback_tls_certs.key("valid")))
    async with sim.TnsListener(ssl_context=tls) as srv:
        result = await run_probe(
            "tns-tls",
            ctx(srv.port, "tns-tls", ca_bundle=str(loopback_tls_certs.ca_bundle), trust_private_ca=True),
        )
    assert result.status is Status.PASS, result.detail
    ev = result.evidence
    assert ev["trusted"] is True and ev["name_matches"] is True
    assert ev["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert ev["days_left"] > 0 and "not_after" in ev and "subject" in ev
    assert ev["packet_type"] == "REFUSE"


@pytest.mark.parametrize(
    ("kind", "words"),
    [("expired", "expired"), ("self_signed", "self-signed"), ("wrong_name", "is issued for other.lab.test")],
)
async def test_tls_certificate_problems_warn_after_the_listener_answers(
    loopback_tls_certs: TlsCerts, kind: str, words: str
) -> None:
    tls = server_ssl_context(str(loopback_tls_certs.cert(kind)), str(loopback_tls_certs.key(kind)))
    async with sim.TnsListener(ssl_context=tls) as srv:
        result = await run_probe(
            "tns-tls",
            ctx(srv.port, "tns-tls", ca_bundle=str(loopback_tls_certs.ca_bundle), trust_private_ca=True),
        )
    assert (result.status, result.reason) == (Status.WARN, Reason.CERTIFICATE), result.detail
    assert words in result.detail.lower()
    ev = result.evidence
    flagged = {"expired": ev["days_left"] < 0, "self_signed": ev["trusted"] is False,
               "wrong_name": ev["name_matches"] is False}  # fmt: skip
    assert flagged[kind], ev
    assert ev["packet_type"] == "REFUSE"  # TNS answered inside TLS


async def test_untrusted_private_ca_without_bundle_warns(loopback_tls_certs: TlsCerts) -> None:
    tls = server_ssl_context(str(loopback_tls_certs.cert("valid")), str(loopback_tls_certs.key("valid")))
    async with sim.TnsListener(ssl_context=tls) as srv:
        result = await run_probe("tns-tls", ctx(srv.port, "tns-tls"))
    assert (result.status, result.reason) == (Status.WARN, Reason.CERTIFICATE), result.detail


async def test_plain_tns_on_the_tls_port_reads_no_reply_that_names_not_tls() -> None:
    async with sim.TnsListener() as srv:  # no TLS: it waits for TNS and says nothing to our ClientHello
        result = await run_probe("tns-tls", ctx(srv.port, "tns-tls", timeout=1.0))
    # Silence cannot tell "not TLS" from "hung": inconclusive, and the words name both.
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
    assert "does not speak TLS" in result.detail


@pytest.mark.parametrize("mode", ["garbage", "silent", "truncated", "drip", "oversized"])
async def test_tls_hostile_peers_fail_tls_in_time(hostile, mode: str) -> None:  # type: ignore[no-untyped-def]
    address, port = hostile(mode, flavor="tls")
    result = await run_probe("tns-tls", ctx(port, "tns-tls", address=address, timeout=1.0))
    if mode in ("silent", "drip"):  # accepted, then no complete handshake: slowness or not TLS, never a verdict
        assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
        assert "does not speak TLS" in result.detail
    else:
        assert (result.status, result.reason) == (Status.FAIL, Reason.TLS), result.detail


# -- in the lab ------------------------------------------------------------------------------
@pytest.mark.lab
async def test_lab_listener_present_dropped_rejected(second_host: Host) -> None:
    proc = start_simulator(second_host, ["tns", "--bind", "0.0.0.0", "--port", "1521", "--service", "ORCL"])
    try:
        ok = await run_probe("tns", ctx(1521, address=second_host.ipv4, values={"oracle_service": "ORCL"}))
        assert (ok.status, ok.evidence["packet_type"]) == (Status.PASS, "ACCEPT"), ok.detail

        second_host.firewall.drop(1521)
        dropped = await run_probe("tns", ctx(1521, address=second_host.ipv4, timeout=1.0))
        assert (dropped.status, dropped.reason) == (Status.FAIL, Reason.FILTERED), dropped.detail

        second_host.firewall.clear()
        second_host.firewall.reject(1521)
        rejected = await run_probe("tns", ctx(1521, address=second_host.ipv4, timeout=1.0))
        assert (rejected.status, rejected.reason) == (Status.FAIL, Reason.REFUSED), rejected.detail
    finally:
        stop(proc)


@pytest.mark.lab
async def test_lab_tls_listener_dropped_is_filtered(second_host: Host, tls_certs: TlsCerts) -> None:
    proc = start_simulator(
        second_host,
        ["tns", "--bind", "0.0.0.0", "--port", "2484",
         "--cert", str(tls_certs.cert("valid")), "--key", str(tls_certs.key("valid"))],
    )  # fmt: skip
    try:
        ok = await run_probe(
            "tns-tls",
            ctx(2484, "tns-tls", address=second_host.ipv4, ca_bundle=str(tls_certs.ca_bundle), trust_private_ca=True),
        )
        assert ok.status is Status.PASS, ok.detail
        second_host.firewall.drop(2484)
        dropped = await run_probe("tns-tls", ctx(2484, "tns-tls", address=second_host.ipv4, timeout=1.0))
        assert (dropped.status, dropped.reason) == (Status.FAIL, Reason.FILTERED), dropped.detail
    finally:
        stop(proc)
