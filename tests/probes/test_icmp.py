"""icmp-echo probe: real echo requests to loopback and lab hosts, by every method.

The lab tests run the probe as an unprivileged user (nobody) inside a lab client
namespace whose net.ipv4.ping_group_range is widened or not, so the "no admin
rights" paths are exercised for real, not assumed.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scanner.models import Reason, Status
from scanner.probes import icmp_echo
from scanner.probes.icmp_echo import IcmpEchoProbe, checksum, echo_request, match_reply
from scanner.testing import make_context, run_probe
from tests.lab.netns import Host, Lab

REPO = Path(__file__).resolve().parents[2]
PROBE = "icmp-echo"


def ctx(address: str, method: str = "auto", timeout: float = 1.0):  # type: ignore[no-untyped-def]
    return make_context(address, address, None, "icmp", probe=PROBE, options={"method": method}, timeout=timeout)


# -- bytes -----------------------------------------------------------------------------------
def test_echo_request_checksum_verifies() -> None:
    packet = echo_request(socket.AF_INET, 0x1234, 1)
    assert packet[0] == 8 and checksum(packet) == 0


def test_raw_ipv4_reply_is_matched_by_id_and_sequence() -> None:
    ip_header = bytes([0x45]) + b"\x00" * 19
    reply = ip_header + struct.pack("!BBHHH", 0, 0, 0, 0x1234, 7) + b"x"
    assert match_reply(socket.AF_INET, reply, 0x1234, 7, raw=True) == "reply"
    assert match_reply(socket.AF_INET, reply, 0x9999, 7, raw=True) is None  # someone else's ping
    assert match_reply(socket.AF_INET, reply, 0x1234, 8, raw=True) is None


def test_datagram_reply_ignores_the_kernel_chosen_id() -> None:
    reply = struct.pack("!BBHHH", 129, 0, 0, 4242, 1)
    assert match_reply(socket.AF_INET6, reply, None, 1, raw=False) == "reply"
    assert match_reply(socket.AF_INET6, b"\x81\x00", None, 1, raw=False) is None  # truncated


def test_destination_unreachable_quoting_our_request_is_recognised() -> None:
    ours = bytes([0x45]) + b"\x00" * 19 + struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1)
    error = bytes([0x45]) + b"\x00" * 19 + struct.pack("!BBHI", 3, 1, 0, 0) + ours
    assert match_reply(socket.AF_INET, error, 0x1234, 1, raw=True) == "unreachable"


def test_options_are_validated() -> None:
    IcmpEchoProbe.validate({"method": "command"})
    with pytest.raises(ValueError):
        IcmpEchoProbe.validate({"method": "carrier-pigeon"})
    with pytest.raises(ValueError):
        IcmpEchoProbe.validate({"port": 1})


# -- loopback --------------------------------------------------------------------------------
@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
@pytest.mark.parametrize("method", ["auto", "socket", "command"])
async def test_loopback_answers_echo(address: str, method: str) -> None:
    if method != "socket" and icmp_echo.ping_command(address, 1.0) is None:
        pytest.skip("no ping command on this machine")
    result = await run_probe(PROBE, ctx(address, method))
    if result.reason is Reason.PERMISSION:
        pytest.skip(f"this process may not send ICMP: {result.detail}")
    assert result.status is Status.PASS, result.detail
    assert result.evidence["method"] in ("datagram socket", "raw socket", "ping command")
    if method == "command":
        assert result.evidence["method"] == "ping command"
    assert "rtt_ms" in result.evidence


async def test_no_means_to_ping_is_inconclusive_permission(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_socket(family: int, notes: list[str]) -> None:
        notes.append("unprivileged ICMP sockets are not allowed for this user (net.ipv4.ping_group_range)")

    monkeypatch.setattr(icmp_echo, "open_icmp_socket", no_socket)
    monkeypatch.setattr(icmp_echo.shutil, "which", lambda name: None)
    result = await run_probe(PROBE, ctx("127.0.0.1"))
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.PERMISSION)
    assert "ping_group_range" in result.detail and "install ping" in result.detail


async def test_ping_command_refused_by_the_os_is_inconclusive_permission(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = ["sh", "-c", "echo 'ping: socket: Operation not permitted'; exit 2"]
    monkeypatch.setattr(icmp_echo, "ping_command", lambda address, timeout: fake)
    result = await run_probe(PROBE, ctx("127.0.0.1", "command"))
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.PERMISSION)


async def test_hanging_ping_command_is_killed_within_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(icmp_echo, "ping_command", lambda address, timeout: ["sleep", "60"])
    c = ctx("127.0.0.1", "command", timeout=0.5)
    result = await run_probe(PROBE, c)
    assert (result.status, result.reason) == (Status.FAIL, Reason.FILTERED)
    assert result.duration_ms < 6000


# -- in the lab ------------------------------------------------------------------------------
_RUNNER = """
import asyncio, json, sys
from scanner.testing import make_context, run_probe
async def main():
    address, method = sys.argv[1], sys.argv[2]
    ctx = make_context(address, address, None, "icmp", probe="icmp-echo",
                       options={"method": method}, timeout=1.0)
    r = await run_probe("icmp-echo", ctx)
    print(json.dumps({"status": r.status.value, "reason": r.reason.value,
                      "detail": r.detail, "evidence": dict(r.evidence)}))
asyncio.run(main())
"""


_AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", "PYTHONDONTWRITEBYTECODE=1"]


@dataclass
class IcmpClient:
    host: Host
    python: str


@pytest.fixture(scope="module")
def icmp_client(lab: Lab) -> Iterator[IcmpClient]:
    """A lab namespace to run the probe from as user nobody, with a Python nobody may run."""
    host = lab.hosts.get("icmpc") or lab.add_host("icmpc")
    for python in (sys.executable, "/usr/bin/python3"):
        check = host.run(
            [*_AS_NOBODY, python, "-c", "import scanner.testing, scanner.probes.icmp_echo"],
            cwd=REPO, capture_output=True, timeout=30,
        )  # fmt: skip
        if check.returncode == 0:
            yield IcmpClient(host, python)
            return
    pytest.skip("no Python interpreter that user nobody can run with portready importable")


def run_as_nobody(client: IcmpClient, address: str, method: str, group_range: str) -> dict[str, Any]:
    client.host.run(["sysctl", "-q", "-w", f"net.ipv4.ping_group_range={group_range}"], check=True)
    proc = client.host.run(
        [*_AS_NOBODY, client.python, "-c", _RUNNER, address, method],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


@pytest.mark.lab
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
async def test_lab_host_answers_and_dropped_echo_is_filtered(second_host: Host, family: str) -> None:
    address = getattr(second_host, family)
    ok = await run_probe(PROBE, ctx(address))
    assert ok.status is Status.PASS, ok.detail

    second_host.firewall.apply_script(["icmp type echo-request drop", "icmpv6 type echo-request drop"])
    for method in ("socket", "command"):
        dropped = await run_probe(PROBE, ctx(address, method, timeout=0.5))
        assert (dropped.status, dropped.reason) == (Status.FAIL, Reason.FILTERED), dropped.detail
        assert "a firewall drops ICMP echo" in dropped.detail
        assert dropped.duration_ms < 0.5 * 2 * 1000 + 1500


@pytest.mark.lab
async def test_lab_fallback_ping_command_passes(second_host: Host) -> None:
    result = await run_probe(PROBE, ctx(second_host.ipv4, "command"))
    assert result.status is Status.PASS, result.detail
    assert result.evidence["method"] == "ping command"


@pytest.mark.lab
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_lab_unprivileged_user_pings_with_a_datagram_socket(
    icmp_client: IcmpClient, second_host: Host, family: str
) -> None:
    out = run_as_nobody(icmp_client, getattr(second_host, family), "socket", "0 2147483647")
    assert out["status"] == "pass", out
    assert out["evidence"]["method"] == "datagram socket"


@pytest.mark.lab
def test_lab_unprivileged_user_without_icmp_sockets_is_inconclusive(icmp_client: IcmpClient, second_host: Host) -> None:
    out = run_as_nobody(icmp_client, second_host.ipv4, "socket", "1 0")
    assert (out["status"], out["reason"]) == ("inconclusive", "permission"), out
    assert "ping_group_range" in out["detail"]


@pytest.mark.lab
def test_lab_unprivileged_user_falls_back_to_the_ping_command(icmp_client: IcmpClient, second_host: Host) -> None:
    if icmp_echo.ping_command(second_host.ipv4, 1.0) is None:
        pytest.skip("no ping command on this machine")
    out = run_as_nobody(icmp_client, second_host.ipv4, "auto", "1 0")
    assert out["status"] == "pass", out
    assert out["evidence"]["method"] == "ping command"


@pytest.mark.lab
def test_lab_unprivileged_dropped_echo_is_filtered(icmp_client: IcmpClient, second_host: Host) -> None:
    second_host.firewall.apply_script(["icmp type echo-request drop"])
    out = run_as_nobody(icmp_client, second_host.ipv4, "socket", "0 2147483647")
    assert (out["status"], out["reason"]) == ("fail", "filtered"), out
    assert out["evidence"]["method"] == "datagram socket"


def test_firewall_reject_is_told_apart_from_no_route() -> None:
    ours = bytes([0x45]) + b"\x00" * 19 + struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1)
    rejected = bytes([0x45]) + b"\x00" * 19 + struct.pack("!BBHI", 3, 13, 0, 0) + ours
    assert match_reply(socket.AF_INET, rejected, 0x1234, 1, raw=True) == "prohibited"
    ours6 = b"\x00" * 40 + struct.pack("!BBHHH", 128, 0, 0, 0x1234, 1)
    rejected6 = struct.pack("!BBHI", 1, 1, 0, 0) + ours6
    assert match_reply(socket.AF_INET6, rejected6, 0x1234, 1, raw=True) == "prohibited"


@pytest.mark.lab
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
async def test_lab_rejected_echo_fails_refused_not_filtered(second_host: Host, family: str) -> None:
    second_host.firewall.apply_script(
        [
            "icmp type echo-request reject with icmp type admin-prohibited",
            "icmpv6 type echo-request reject with icmpv6 type admin-prohibited",
        ]
    )
    result = await run_probe(PROBE, ctx(getattr(second_host, family), "socket"))
    assert result.status is Status.FAIL, result.detail
    if result.evidence["method"] == "raw socket":
        assert result.reason is Reason.REFUSED, result.detail
    else:  # a datagram socket only learns EHOSTUNREACH from the kernel
        assert result.reason in (Reason.REFUSED, Reason.UNREACHABLE), result.detail
    assert result.duration_ms < 1500  # an answer, not a timeout


@pytest.mark.lab
def test_lab_unprivileged_rejected_echo_fails_fast(icmp_client: IcmpClient, second_host: Host) -> None:
    second_host.firewall.apply_script(["icmp type echo-request reject with icmp type admin-prohibited"])
    out = run_as_nobody(icmp_client, second_host.ipv4, "socket", "0 2147483647")
    assert out["status"] == "fail", out
    assert out["reason"] in ("refused", "unreachable"), out


def test_raw_socket_ignores_replies_and_errors_about_other_hosts() -> None:
    def ipv4(src: str, dst: str) -> bytes:
        return bytes([0x45]) + b"\x00" * 11 + socket.inet_aton(src) + socket.inet_aton(dst)

    reply = ipv4("198.18.0.9", "198.18.0.1") + struct.pack("!BBHHH", 0, 0, 0, 0x1234, 1)
    assert match_reply(socket.AF_INET, reply, 0x1234, 1, True, "198.18.0.9") == "reply"
    assert match_reply(socket.AF_INET, reply, 0x1234, 1, True, "198.18.0.8") is None
    quoted = ipv4("198.18.0.1", "198.18.0.7") + struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1)
    error = ipv4("198.18.0.254", "198.18.0.1") + struct.pack("!BBHI", 3, 13, 0, 0) + quoted
    assert match_reply(socket.AF_INET, error, 0x1234, 1, True, "198.18.0.7") == "prohibited"
    assert match_reply(socket.AF_INET, error, 0x1234, 1, True, "198.18.0.9") is None
    reply6 = struct.pack("!BBHHH", 129, 0, 0, 0x1234, 1)
    assert match_reply(socket.AF_INET6, reply6, 0x1234, 1, True, "fd5e::2", "fd5e::2") == "reply"
    assert match_reply(socket.AF_INET6, reply6, 0x1234, 1, True, "fd5e::2", "fd5e::3") is None


@pytest.mark.lab
async def test_lab_concurrent_pings_to_several_hosts_do_not_cross_talk(second_host: Host, third_host: Host) -> None:
    import asyncio

    third_host.firewall.apply_script(["icmp type echo-request drop"])
    ok, dropped = await asyncio.gather(
        run_probe(PROBE, ctx(second_host.ipv4, "socket")),
        run_probe(PROBE, ctx(third_host.ipv4, "socket", timeout=0.5)),
    )
    assert ok.status is Status.PASS, ok.detail
    assert (dropped.status, dropped.reason) == (Status.FAIL, Reason.FILTERED), dropped.detail
