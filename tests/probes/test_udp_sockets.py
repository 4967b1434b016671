"""UDP on Windows: the thread path (a connected socket in a worker thread) that sees ICMP
port-unreachable where the Proactor loop swallows it, and the Windows error codes.

The thread path is run here on Linux against the same real peers as the event-loop path
(PORTREADY_UDP_STRATEGY=thread): the lab KDC answering, rejecting (nftables reject: ICMP
port-unreachable) and dropping UDP 88, a closed loopback port, and hostile answers.
What was not run: the path on a real Windows host (this project's CI is Linux only).
"""

from __future__ import annotations

import contextlib
import errno
import socket

import pytest

from scanner.models import Reason, Status
from scanner.probes import netio
from scanner.probes.netio import is_port_unreachable, outcome_for_oserror, udp_strategy
from scanner.testing import make_context, run_probe
from tests.probes.test_ldap import canned_udp


@pytest.fixture
def thread_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTREADY_UDP_STRATEGY", "thread")


def test_windows_selects_the_thread_path_and_linux_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORTREADY_UDP_STRATEGY", raising=False)
    monkeypatch.setattr(netio.sys, "platform", "win32")
    assert udp_strategy() == "thread"
    monkeypatch.setattr(netio.sys, "platform", "linux")
    assert udp_strategy() == "datagram-endpoint"
    monkeypatch.setenv("PORTREADY_UDP_STRATEGY", "thread")
    assert udp_strategy() == "thread"
    monkeypatch.setenv("PORTREADY_UDP_STRATEGY", "nonsense")
    assert udp_strategy() == "datagram-endpoint"


def _winerror(code: int) -> OSError:
    exc = OSError(22, "Windows error")
    exc.winerror = code  # type: ignore[attr-defined]  # what CPython sets on Windows
    return exc


@pytest.mark.parametrize(
    ("exc", "unreachable"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), True),
        (ConnectionResetError(10054, "WSAECONNRESET"), True),
        (OSError(10054, "An existing connection was forcibly closed by the remote host"), True),
        (_winerror(10054), True),
        (_winerror(1234), True),  # ERROR_PORT_UNREACHABLE from an overlapped receive
        (_winerror(10060), False),  # WSAETIMEDOUT
        (OSError(errno.EHOSTUNREACH, "no route"), False),
    ],
)
def test_port_unreachable_in_every_form_windows_reports_it(exc: OSError, unreachable: bool) -> None:
    assert is_port_unreachable(exc) is unreachable


async def test_wsaeconnreset_maps_to_refused_in_the_one_error_map() -> None:
    ctx = make_context("dc1", "127.0.0.1", 88, "udp", probe="udp")
    assert outcome_for_oserror(ctx, OSError(10054, "WSAECONNRESET")).reason is Reason.REFUSED


async def krb_udp(address: str, **kw: object) -> object:
    host = str(kw.pop("host", "dc1"))
    ctx = make_context(host, address, kw.pop("port", 88), "udp", probe="kerberos", timeout=1.0, retries=0, **kw)  # type: ignore[arg-type]
    return await run_probe("kerberos", ctx)


async def test_thread_path_sees_a_closed_loopback_port_as_refused(thread_path: None) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # closed again (synchronously): the kernel answers ICMP port-unreachable
    result = await krb_udp("127.0.0.1", port=port)
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED), result.detail  # type: ignore[attr-defined]


async def test_thread_path_passes_an_answer_through_the_parser(thread_path: None) -> None:
    async with canned_udp(lambda data: data) as port:  # an echo is not Kerberos
        result = await krb_udp("127.0.0.1", port=port)
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL), result.detail  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["udp-garbage", "udp-oversized"])
async def test_thread_path_with_hostile_udp_peers(thread_path: None, hostile, mode: str) -> None:  # type: ignore[no-untyped-def]
    address, port = hostile(mode, cap=1024 * 1024)
    result = await krb_udp(address, port=port)
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL), result.detail  # type: ignore[attr-defined]


@pytest.mark.lab
async def test_thread_path_against_the_lab_kdc_answering_rejecting_and_dropping(thread_path: None, dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    ok = await krb_udp(dc.address, host=dc.fqdn)
    assert ok.status is Status.PASS, ok.detail  # type: ignore[attr-defined]
    dc_firewall.reject(88, "udp")
    rejected = await krb_udp(dc.address)
    assert (rejected.status, rejected.reason) == (Status.FAIL, Reason.REFUSED), rejected.detail  # type: ignore[attr-defined]
    dc_firewall.clear()
    dc_firewall.drop(88, "udp")
    dropped = await krb_udp(dc.address)
    assert (dropped.status, dropped.reason) == (Status.INCONCLUSIVE, Reason.NO_ANSWER), dropped.detail  # type: ignore[attr-defined]


@pytest.mark.parametrize("strategy", ["datagram-endpoint", "thread"])
@pytest.mark.parametrize("retries", [0, 1])
async def test_a_silent_port_backs_the_service_wait_off_only_when_a_datagram_is_sent_again(
    strategy: str, retries: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Karn's backoff is for a datagram sent again; a check with no try left sends nothing
    more, so it must not lengthen the wait of every later check of that port."""
    import dataclasses

    from scanner.probes.base import ProbeError
    from scanner.probes.netio import udp_exchange
    from scanner.timing import HostTiming, Pacer

    monkeypatch.setenv("PORTREADY_UDP_STRATEGY", strategy)
    pacer = Pacer()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, never answers: silence, not ICMP
        port = silent.getsockname()[1]
        ctx = make_context("dc1", "127.0.0.1", port, "udp", probe="udp", timeout=0.3, retries=retries)
        ctx = dataclasses.replace(ctx, timing=HostTiming(0.3, 0.1, pacer))
        with pytest.raises(ProbeError):
            await udp_exchange(ctx, b"x")
        received = 0
        silent.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while silent.recv(64):
                received += 1
    assert received == retries + 1
    assert pacer.service(port).backoff == (2.0 if retries else 1.0)


async def test_silence_where_the_service_answers_others_slowly_says_so_not_only_firewall() -> None:
    """A UDP service that answers other hosts of the scan only after ~0.8 s, silent here within
    the timeout: the words name the slowness and the remedy, so it is not read as a firewall."""
    import dataclasses

    from scanner.probes.base import ProbeError
    from scanner.probes.netio import udp_exchange
    from scanner.timing import HostTiming, Pacer

    pacer = Pacer()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        for _ in range(4):
            pacer.service(port).observe(0.8)
        ctx = make_context("dc1", "127.0.0.1", port, "udp", probe="udp", timeout=0.3, retries=0)
        ctx = dataclasses.replace(ctx, timing=HostTiming(0.3, 0.1, pacer))
        with pytest.raises(ProbeError) as err:
            await udp_exchange(ctx, b"x")
        quiet = make_context("dc1", "127.0.0.1", port, "udp", probe="udp", timeout=0.3, retries=0)
        with pytest.raises(ProbeError) as plain:
            await udp_exchange(quiet, b"x")  # no scan estimate: the usual words only
    outcome = err.value.outcome
    assert (outcome.status, outcome.reason) == (Status.INCONCLUSIVE, Reason.NO_ANSWER)
    assert "only after 0.8 s on average" in outcome.detail and "longer --timeout" in outcome.detail
    assert plain.value.outcome.reason is Reason.NO_ANSWER and "on average" not in plain.value.outcome.detail
