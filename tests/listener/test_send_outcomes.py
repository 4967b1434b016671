"""`portready send` says what became of its message: taken, refused, dropped, reset, or unconfirmed.

Real peers only: our own Listener (accepting, at its cap, parking), a port with nothing
behind it, nftables drop and reject in a lab namespace, and hostile loopback servers.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from scanner.listener.sender import CLOSED, NO_REPLY, send_tagged
from scanner.listener.server import Binding, Listener
from scanner.listener.tag import new_tag
from scanner.models import Reason, Status, Transport
from tests.lab.netns import Host, Lab
from tests.listener.test_listener_lab import ENV, free_port

TAG = new_tag("port", "tcp-test")


async def test_a_message_the_listener_read_is_reported_taken() -> None:
    port = free_port()
    listener = Listener([Binding(Transport.TCP, port, "127.0.0.1")])
    await listener.start()
    try:
        result = await send_tagged("127.0.0.1", port, Transport.TCP, TAG, count=3, syslog=True)
    finally:
        await listener.stop()
    assert (result.status, result.reason, result.accepted) == (Status.PASS, Reason.OK, 3), result.detail
    rec = listener.store.records[(Transport.TCP, port, "127.0.0.1")]
    assert rec.messages == 3 and rec.tags[TAG.nonce].count == 3 and rec.tagged == 3


async def test_a_listener_at_its_cap_resets_and_send_says_not_accepted() -> None:
    port = free_port()
    listener = Listener([Binding(Transport.TCP, port, "127.0.0.1")], max_connections_per_source=1,
                        shed_after=3600.0, frame_timeout=3600.0)  # fmt: skip
    await listener.start()
    hogs = []
    try:
        for _ in range(1 + listener.max_parked_per_source):  # one open, the rest parked: all full
            hogs.append(await asyncio.open_connection("127.0.0.1", port))
        await asyncio.sleep(0.2)
        result = await send_tagged("127.0.0.1", port, Transport.TCP, TAG, syslog=True)
    finally:
        for _, writer in hogs:
            writer.close()
        await listener.stop()
    assert result.status is Status.FAIL and result.reason is CLOSED and not result.ok
    assert result.detail.startswith("not accepted:") and "cap" in result.detail
    rec = listener.store.records[(Transport.TCP, port, "127.0.0.1")]
    assert rec.losses["connections_over_source_cap"] == 1 and rec.messages == 0


async def test_a_parked_message_is_unconfirmed_then_counted_once_a_slot_frees() -> None:
    port = free_port()
    listener = Listener([Binding(Transport.TCP, port, "127.0.0.1")], max_connections_per_source=1,
                        shed_after=3600.0, frame_timeout=3600.0)  # fmt: skip
    await listener.start()
    try:
        _, hog = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.2)
        result = await send_tagged("127.0.0.1", port, Transport.TCP, TAG, syslog=True, receipt_wait=1.0)
        assert result.status is Status.INCONCLUSIVE and result.reason is NO_REPLY and result.ok
        hog.close()  # the slot frees: the parked connection is read, nothing was lost
        loop = asyncio.get_running_loop()
        await listener.wait(lambda: TAG.nonce in listener.store.records[(Transport.TCP, port, "127.0.0.1")].tags,
                            loop.time() + 10)  # fmt: skip
    finally:
        await listener.stop()
    rec = listener.store.records[(Transport.TCP, port, "127.0.0.1")]
    assert rec.tags[TAG.nonce].count == 1 and not rec.losses


@contextmanager
def hostile_tcp(mode: str) -> Iterator[int]:
    """A loopback server: 'reset' (RST on accept), 'close' (FIN without reading), 'silent', 'answer'."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            if mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            elif mode == "close":
                conn.close()
            elif mode == "answer":
                conn.settimeout(2)
                with __import__("contextlib").suppress(OSError):
                    while conn.recv(65536):
                        pass
                    conn.sendall(b"\x1b[31mHELLO portready-test deadbeefdeadbeef x/y\r\n" * 100)
                conn.close()
            else:
                held.append(conn)

    import threading

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        srv.close()
        for conn in held:
            conn.close()


@pytest.mark.parametrize("mode", ["reset", "close"])
async def test_a_service_that_resets_or_closes_unread_is_not_accepted(mode: str) -> None:
    with hostile_tcp(mode) as port:
        result = await send_tagged("127.0.0.1", port, Transport.TCP, TAG, syslog=True)
    assert result.status is Status.FAIL and result.reason is CLOSED, result.detail
    assert result.detail.startswith("not accepted:")


async def test_a_silent_service_is_unconfirmed_not_ok_or_failed() -> None:
    with hostile_tcp("silent") as port:
        result = await send_tagged("127.0.0.1", port, Transport.TCP, TAG, syslog=True, receipt_wait=1.0)
    assert result.status is Status.INCONCLUSIVE and result.reason is NO_REPLY


async def test_a_service_that_answers_is_taken_and_its_answer_not_echoed() -> None:
    with hostile_tcp("answer") as port:
        result = await send_tagged("127.0.0.1", port, Transport.TCP, TAG, syslog=True)
    assert result.status is Status.PASS and "not a plain syslog receiver" in result.detail
    assert "\x1b" not in result.detail and "HELLO" not in result.detail


@pytest.mark.lab
async def test_nothing_listening_is_refused(lab: Lab, second_host: Host) -> None:
    result = await send_tagged(second_host.ipv4, free_port(), Transport.TCP, TAG, syslog=True)
    assert result.status is Status.FAIL and result.reason is Reason.REFUSED


@pytest.mark.lab
async def test_dropped_is_filtered_and_rejected_is_refused(lab: Lab, second_host: Host) -> None:
    port = free_port()
    second_host.firewall.drop(port)
    dropped = await send_tagged(second_host.ipv4, port, Transport.TCP, TAG, syslog=True, timeout=1.0)
    second_host.firewall.clear()
    second_host.firewall.reject(port)
    rejected = await send_tagged(second_host.ipv4, port, Transport.TCP, TAG, syslog=True, timeout=1.0)
    second_host.firewall.clear()
    assert dropped.status is Status.FAIL and dropped.reason is Reason.FILTERED
    assert rejected.status is Status.FAIL and rejected.reason is Reason.REFUSED


@pytest.mark.lab
async def test_send_command_prints_not_accepted_and_exits_1(lab: Lab, second_host: Host) -> None:
    """The real command from a lab host against our listener at its cap (one address, held full)."""
    port = free_port()
    listener = Listener([Binding(Transport.TCP, port, "0.0.0.0")], max_connections_per_source=1,
                        shed_after=3600.0, frame_timeout=3600.0)  # fmt: skip
    await listener.start()
    try:
        hog = await asyncio.to_thread(second_host.popen, [
            sys.executable, "-m", "tests.listener._sender", "drip", lab.gateway4, str(port),
            "--connections", str(1 + listener.max_parked_per_source), "--seconds", "30",
        ], env=ENV, stdout=subprocess.DEVNULL)  # fmt: skip
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while loop.time() < deadline and len(listener._parked) < listener.max_parked_per_source:
            await asyncio.sleep(0.1)
        proc = await asyncio.to_thread(second_host.run, [
            sys.executable, "-m", "scanner", "send", "--to", lab.gateway4, "--port", str(port), "--protocol", "tcp",
        ], capture_output=True, text=True, env=ENV, timeout=60)  # fmt: skip
        hog.kill()
    finally:
        await listener.stop()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith("FAIL") and "not accepted" in proc.stdout


def test_row_without_profile_is_found_or_explained() -> None:
    import subprocess

    from tests.listener.test_listener_lab import REPO

    def send(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "scanner", "send", "--to", "127.0.0.1", *args], cwd=REPO,
                              env=ENV, capture_output=True, text=True, timeout=60)  # fmt: skip

    missing = send("--row", "nosuchrow")
    assert missing.returncode == 2 and "unknown row 'nosuchrow'" in missing.stderr and "no profile has an inbound row" in missing.stderr
    assert "None" not in missing.stderr
    shared = send("--row", "syslog-514")
    assert shared.returncode == 2 and "qumulo" in shared.stderr and "--row PROFILE/syslog-514" in shared.stderr
