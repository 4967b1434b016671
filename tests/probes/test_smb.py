"""smb probe: SMB2 NEGOTIATE against the lab's Samba DC (445, and 139 through a NetBIOS
session), login with and without the right password, and hostile or SMB1-only peers.

The SMB1-only and NetBIOS-refusing peers are small in-process servers written here: they
answer with the bytes MS-CIFS 2.2.4.52.2 (SMB1 NEGOTIATE response) and RFC 1002 4.3.4
(NEGATIVE SESSION RESPONSE) prescribe, which Windows Server 2003 / a NetBIOS-less server send.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from scanner.models import CheckResult, Reason, Status
from scanner.probes._smb2 import (
    OFFERED,
    SMB1_MAGIC,
    SMB2_MAGIC,
    nbss_frame,
    negotiate_request,
    parse_negotiate_response,
)
from scanner.probes.base import Credentials
from scanner.testing import make_context, run_probe

TIMEOUT = 1.0
# deadline = timeout x (retries + 1) + timeout x exchanges, plus the engine's grace
BOUND = TIMEOUT * (1 + 4) + 1.5


async def smb(address: str, port: int, **kw: object) -> CheckResult:
    ctx = make_context(kw.pop("host", "dc1"), address, port, probe="smb", timeout=TIMEOUT, retries=0, **kw)  # type: ignore[arg-type]
    return await run_probe("smb", ctx)


@contextlib.asynccontextmanager
async def peer(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], object]) -> AsyncIterator[int]:
    """A loopback TCP server running `handler` per connection; yields its port."""

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)  # type: ignore[misc]
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readexactly(4), 2)
    return await asyncio.wait_for(reader.readexactly(int.from_bytes(head[1:], "big")), 2)


def smb1_negotiate_response() -> bytes:
    """SMB1 NEGOTIATE response choosing dialect 0 (NT LM 0.12), 17 words (MS-CIFS 2.2.4.52.2)."""
    header = SMB1_MAGIC + struct.pack("<BIBHH8sHHHHH", 0x72, 0, 0x98, 0xC801, 0, b"\x00" * 8, 0, 0, 0xFEFF, 0, 0)
    words = struct.pack("<HBHHIIII8sHB", 0, 0x03, 50, 1, 16644, 65536, 0, 0xE3FD, b"\x00" * 8, 0, 0)
    return header + bytes([17]) + words + struct.pack("<H", 0)


# -- packets -----------------------------------------------------------------------------------


def test_negotiate_request_offers_smb2_to_311_with_aligned_contexts() -> None:
    msg = negotiate_request()
    assert msg[:4] == SMB2_MAGIC and len(msg) > 64 + 36
    size, count, mode = struct.unpack("<HHH", msg[64:70])
    assert (size, count) == (36, len(OFFERED)) and mode & 0x01
    dialects = struct.unpack(f"<{count}H", msg[100 : 100 + 2 * count])
    assert dialects == (0x0202, 0x0210, 0x0300, 0x0302, 0x0311)
    ctx_offset, ctx_count = struct.unpack("<IH", msg[64 + 28 : 64 + 34])
    assert ctx_offset % 8 == 0 and ctx_count == 2
    assert struct.unpack("<H", msg[ctx_offset : ctx_offset + 2])[0] == 1  # preauth integrity first


def test_negotiate_response_parser_reads_dialect_signing_and_clock() -> None:
    filetime = (int(dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc).timestamp()) + 11644473600) * 10**7
    header = SMB2_MAGIC + struct.pack("<HHIHHIIQII8s16s", 64, 0, 0, 0, 1, 1, 0, 0, 0, 0, b"\0" * 8, b"\0" * 16)
    body = struct.pack(
        "<HHHH16sIIIIQQHHI",
        65,
        0x03,
        0x0302,
        0,
        bytes(range(16)),
        0x05,
        1 << 20,
        1 << 20,
        1 << 20,
        filetime,
        0,
        128,
        0,
        0,
    )
    info = parse_negotiate_response(header + body)
    assert info.dialect_name == "3.0.2"
    assert info.signing_enabled and info.signing_required
    assert info.capabilities == ["dfs", "large-mtu"]
    assert info.server_time == "2024-05-01T12:00:00Z"
    with pytest.raises(ValueError):
        parse_negotiate_response(header + body[:40])


# -- the lab's Samba DC --------------------------------------------------------------------------


@pytest.mark.lab
async def test_smb_445_negotiates_smb3_with_signing_and_the_server_clock(dc) -> None:  # type: ignore[no-untyped-def]
    result = await smb(dc.address, 445)
    assert result.status is Status.PASS, result.detail
    ev = result.evidence
    assert ev["dialect"] in ("3.0", "3.0.2", "3.1.1") and ev["transport"] == "direct-tcp"
    assert ev["signing_required"] is True  # a DC requires signing
    server_time = dt.datetime.fromisoformat(ev["server_time"].replace("Z", "+00:00"))
    assert abs((server_time - dt.datetime.now(dt.timezone.utc)).total_seconds()) < 300
    assert len(ev["server_guid"]) == 36


@pytest.mark.lab
async def test_smb_139_negotiates_through_a_netbios_session(dc) -> None:  # type: ignore[no-untyped-def]
    result = await smb(dc.address, 139)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["transport"] == "netbios-session"
    assert result.evidence["called_name"] == "*SMBSERVER"
    assert result.evidence["dialect"].startswith(("2.", "3."))


@pytest.mark.lab
async def test_dropped_445_is_filtered_within_the_timeout(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.drop(445)
    started = time.monotonic()
    result = await smb(dc.address, 445)
    assert (result.status, result.reason) == (Status.FAIL, Reason.FILTERED), result.detail
    assert time.monotonic() - started < BOUND


@pytest.mark.lab
async def test_rejected_445_is_refused(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.reject(445)
    result = await smb(dc.address, 445)
    assert (result.status, result.reason) == (Status.FAIL, Reason.REFUSED), result.detail


@pytest.mark.lab
async def test_login_with_the_right_password_reaches_ipc(dc) -> None:  # type: ignore[no-untyped-def]
    creds = Credentials(dc.admin_user, dc.admin_password, dc.domain)
    result = await smb(dc.address, 445, credentials=creds, host=dc.fqdn)
    assert result.status is Status.PASS, result.detail
    assert result.evidence["login"] == "ok"
    assert dc.admin_password not in json.dumps(result.to_dict())


@pytest.mark.lab
async def test_wrong_password_fails_auth_and_never_shows_the_secret(dc) -> None:  # type: ignore[no-untyped-def]
    secret = "Wrong-" + dc.admin_password[::-1]
    result = await smb(dc.address, 445, credentials=Credentials(dc.admin_user, secret, dc.domain))
    assert (result.status, result.reason) == (Status.FAIL, Reason.AUTH), result.detail
    assert "dialect" in result.evidence  # the port and SMB were fine: only the account failed
    text = json.dumps(result.to_dict())
    assert secret not in text and dc.admin_password not in text


# -- peers that are not (modern) SMB servers --------------------------------------------------------


async def test_smb1_only_server_fails_protocol_and_says_so() -> None:
    async def smb1_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_frame(reader)
        if request[:4] == SMB1_MAGIC:
            writer.write(nbss_frame(smb1_negotiate_response()))
            await writer.drain()
            await asyncio.sleep(1)
        # an SMB1-only server drops the connection on an SMB2 NEGOTIATE

    async with peer(smb1_only) as port:
        result = await smb("127.0.0.1", port)
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL), result.detail
    assert "speaks only SMB1" in result.detail and result.evidence["smb1"] is True


async def test_server_answering_smb2_negotiate_in_smb1_fails_protocol() -> None:
    async def smb1_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        writer.write(nbss_frame(smb1_negotiate_response()))
        await writer.drain()
        await asyncio.sleep(1)

    async with peer(smb1_answer) as port:
        result = await smb("127.0.0.1", port)
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL)
    assert "speaks only SMB1" in result.detail


async def test_negative_netbios_session_response_is_explained_in_words() -> None:
    calls: list[bytes] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readexactly(4), 2)
        calls.append(await reader.readexactly(int.from_bytes(head[1:], "big")))
        writer.write(b"\x83\x00\x00\x01\x82")  # NEGATIVE SESSION RESPONSE: called name not present
        await writer.drain()

    async with peer(refuse) as port:
        result = await smb("127.0.0.1", port, host="fs1.lab.test", options={"netbios": True})
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL)
    assert "called name is not present" in result.detail
    assert len(calls) == 2  # *SMBSERVER first, then the host's own NetBIOS name FS1
    assert result.evidence["netbios_error"] == "0x82"


async def test_smb2_error_status_fails_protocol_with_the_status_name() -> None:
    async def not_supported(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_frame(reader)
        if request[:4] == SMB2_MAGIC:
            header = SMB2_MAGIC + struct.pack(
                "<HHIHHIIQII8s16s", 64, 0, 0xC00000BB, 0, 1, 1, 0, 0, 0, 0, b"\0" * 8, b"\0" * 16
            )
            writer.write(nbss_frame(header + struct.pack("<HBBI", 9, 0, 0, 0)))
            await writer.drain()
            await asyncio.sleep(1)

    async with peer(not_supported) as port:
        result = await smb("127.0.0.1", port)
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL)
    assert "STATUS_NOT_SUPPORTED" in result.detail


SMB1_ONLY_CONF = """\
[global]
  server role = standalone server
  netbios name = OLDFS
  server min protocol = NT1
  server max protocol = NT1
  smb ports = {port}
  interfaces = lo
  bind interfaces only = yes
  disable netbios = yes
  load printers = no
  printcap name = /dev/null
{dirs}
[share]
  path = {root}/share
"""


@pytest.fixture
def smb1_only_samba(tmp_path: Path) -> Iterator[int]:
    """A real smbd on loopback that speaks only SMB1 (NT1), all its state under tmp_path."""
    if shutil.which("smbd") is None or os.geteuid() != 0:
        pytest.skip("needs root and smbd (tests/lab/install.sh)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Every folder smbd writes to lives under tmp_path: nothing of the machine's Samba is touched.
    settings = {
        "lock directory": "lock", "state directory": "state", "cache directory": "cache",
        "pid directory": "pid", "private dir": "private", "ncalrpc dir": "ncalrpc",
    }  # fmt: skip
    for folder in (*settings.values(), "log", "share"):
        (tmp_path / folder).mkdir()
    dirs = "\n".join(f"  {key} = {tmp_path / folder}" for key, folder in settings.items())
    dirs += f"\n  log file = {tmp_path / 'log' / 'log.%m'}"
    conf = tmp_path / "smb.conf"
    conf.write_text(SMB1_ONLY_CONF.format(port=port, dirs=dirs, root=tmp_path))
    proc = subprocess.Popen(
        ["smbd", "--foreground", "--no-process-group", "--debug-stdout", "-s", str(conf)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"smbd (SMB1 only) did not start on {port}")
            time.sleep(0.1)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # smbd's own group (start_new_session): its children too
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


async def test_real_samba_limited_to_smb1_fails_protocol(smb1_only_samba: int) -> None:
    result = await smb("127.0.0.1", smb1_only_samba, host="oldfs")
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL), result.detail
    assert "speaks only SMB1; the rows need SMB 2.0/3.0" in result.detail


@pytest.mark.parametrize(
    ("mode", "netbios"),
    [
        ("garbage", False),
        ("truncated", False),
        ("oversized", False),
        ("drip", False),
        ("silent", False),
        ("garbage", True),
        ("drip", True),
    ],
)
async def test_hostile_peer_fails_cleanly_within_the_timeout(hostile, mode: str, netbios: bool) -> None:  # type: ignore[no-untyped-def]
    address, port = hostile(mode, flavor="smb")
    started = time.monotonic()
    result = await smb(address, port, options={"netbios": netbios})
    if mode in ("silent", "drip"):  # connected, then no (complete) answer: slowness, not a verdict
        assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_REPLY), result.detail
    else:
        assert result.status is Status.FAIL, result.detail
        assert result.reason in (Reason.PROTOCOL, Reason.FILTERED), result.detail
    assert time.monotonic() - started < BOUND


@pytest.mark.lab
async def test_smb_negotiates_over_ipv6(dc) -> None:  # type: ignore[no-untyped-def]
    result = await smb(dc.address6, 445)
    assert result.status is Status.PASS, result.detail
