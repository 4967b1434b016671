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
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from scanner.models import CheckResult, Reason, Status
from scanner.probes.base import Credentials
from scanner.testing import make_context, run_probe
from scanner.wire.smb2 import (
    OFFERED,
    SMB1_MAGIC,
    SMB2_MAGIC,
    nbss_frame,
    negotiate_request,
    parse_negotiate_response,
)

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
    with _smbd(tmp_path, SMB1_ONLY_CONF) as port:
        yield port


SMB2_CONF = """\
[global]
  server role = standalone server
  netbios name = FS1
  workgroup = LABFS
  server min protocol = {min}
  server max protocol = {max}
  server signing = {signing}
  map to guest = {guest}
  smb ports = {port}
  interfaces = lo
  bind interfaces only = yes
  disable netbios = yes
  load printers = no
  printcap name = /dev/null
  passdb backend = tdbsam
{dirs}
[share]
  path = {root}/share
"""
FS_PASSWORD = "Fs-" + os.urandom(6).hex() + "-9a"


@contextlib.contextmanager
def _smbd(tmp_path: Path, template: str, **values: str) -> Iterator[int]:
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
    conf.write_text(template.format(port=port, dirs=dirs, root=tmp_path, **values))
    if "passdb backend" in template:  # an SMB account for root, in this smbd's own passdb
        subprocess.run(
            ["smbpasswd", "-c", str(conf), "-s", "-a", "root"], input=f"{FS_PASSWORD}\n{FS_PASSWORD}\n",
            text=True, check=True, capture_output=True,
        )  # fmt: skip
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
                pytest.fail(f"smbd ({conf.name}) did not start on {port}")
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


@pytest.fixture
def fs_samba(tmp_path: Path) -> Callable[..., contextlib.AbstractContextManager[int]]:
    """factory: fs_samba(min="SMB2_02", max="SMB3_11", signing="default") -> a real standalone
    smbd on loopback (its own passdb, account root / FS_PASSWORD)."""

    def start(
        min: str = "SMB2_02", max: str = "SMB3_11", signing: str = "default", guest: str = "never"
    ) -> contextlib.AbstractContextManager[int]:
        folder = tmp_path / str(len(list(tmp_path.iterdir())))  # short: smbd's socket paths have a limit
        folder.mkdir()
        return _smbd(folder, SMB2_CONF, min=min, max=max, signing=signing, guest=guest)

    return start


FS_CREDS = Credentials("root", FS_PASSWORD, "FS1")


@pytest.mark.parametrize(("signing", "required"), [("default", False), ("mandatory", True), ("disabled", False)])
async def test_signing_evidence_is_the_servers_own_security_mode(fs_samba, signing: str, required: bool) -> None:  # type: ignore[no-untyped-def]
    """A standalone Samba does not require signing by default (a DC does); the evidence must
    say what the server announced, not what a client library would insist on."""
    with fs_samba(signing=signing) as port:
        result = await smb("127.0.0.1", port, host="fs1")
    assert result.status is Status.PASS, result.detail
    assert result.evidence["dialect"] == "3.1.1"
    assert result.evidence["signing_required"] is required
    assert result.evidence["signing_enabled"] is True  # SMB2+ servers always support signing
    assert ("signing required" in result.detail) is required


@pytest.mark.parametrize(
    ("low", "high", "dialect"),
    [("SMB2_02", "SMB2_02", "2.0.2"), ("SMB2_10", "SMB2_10", "2.1"), ("SMB3_00", "SMB3_00", "3.0"),
     ("SMB3_02", "SMB3_02", "3.0.2"), ("SMB3_11", "SMB3_11", "3.1.1")],
)  # fmt: skip
async def test_login_signs_the_tree_connect_with_each_dialects_key(fs_samba, low: str, high: str, dialect: str) -> None:  # type: ignore[no-untyped-def]
    """HMAC-SHA256 (2.x), AES-CMAC with the 3.0 KDF, and 3.1.1's preauth-hash KDF: mandatory
    signing means a wrong key is refused, and the server's signed reply must verify."""
    with fs_samba(min=low, max=high, signing="mandatory") as port:
        result = await smb("127.0.0.1", port, host="fs1", credentials=FS_CREDS)
    assert result.status is Status.PASS, result.detail
    ev = result.evidence
    assert (ev["dialect"], ev["login"], ev["auth_protocol"]) == (dialect, "ok", "ntlm")
    assert ev["signed_reply"] is True
    assert FS_PASSWORD not in json.dumps(result.to_dict())


async def test_wrong_password_on_a_standalone_server_is_auth_not_guest(fs_samba) -> None:  # type: ignore[no-untyped-def]
    with fs_samba() as port:
        result = await smb("127.0.0.1", port, host="fs1", credentials=Credentials("root", "nope-" + FS_PASSWORD, "FS1"))
    assert (result.status, result.reason) == (Status.FAIL, Reason.AUTH), result.detail
    assert result.evidence["login"] == "rejected" and result.evidence["status"] == "STATUS_LOGON_FAILURE"
    assert FS_PASSWORD not in json.dumps(result.to_dict())


async def test_unknown_account_mapped_to_guest_is_not_a_login(fs_samba) -> None:  # type: ignore[no-untyped-def]
    """`map to guest = bad user` turns an unknown name into a guest session: that is no proof
    the Auditor's account works, so the login fails `auth`."""
    with fs_samba(guest="bad user") as port:
        result = await smb("127.0.0.1", port, host="fs1", credentials=Credentials("nobody-" + os.urandom(3).hex(), "x", "FS1"))
    assert (result.status, result.reason) == (Status.FAIL, Reason.AUTH), result.detail
    assert "guest" in result.detail


@pytest.mark.lab
async def test_dc_login_is_ntlm_signed_and_verified(dc) -> None:  # type: ignore[no-untyped-def]
    creds = Credentials(dc.admin_user, dc.admin_password, dc.domain)
    result = await smb(dc.address, 445, credentials=creds, host=dc.fqdn)
    assert result.status is Status.PASS, result.detail
    ev = result.evidence
    assert (ev["login"], ev["auth_protocol"], ev["signing_required"]) == ("ok", "ntlm", True)
    assert ev["login_signed"] is True and ev["signed_reply"] is True  # 3.1.1 signs the session setup


@pytest.mark.lab
async def test_dc_login_over_139_goes_through_the_netbios_session(dc) -> None:  # type: ignore[no-untyped-def]
    creds = Credentials(dc.admin_user, dc.admin_password, dc.domain)
    result = await smb(dc.address, 139, credentials=creds, host=dc.fqdn)
    assert result.status is Status.PASS, result.detail
    assert (result.evidence["transport"], result.evidence["login"]) == ("netbios-session", "ok")


@pytest.mark.lab
async def test_login_with_445_dropped_is_filtered_and_never_says_auth(dc, dc_firewall) -> None:  # type: ignore[no-untyped-def]
    dc_firewall.drop(445)
    creds = Credentials(dc.admin_user, dc.admin_password, dc.domain)
    result = await smb(dc.address, 445, credentials=creds, host=dc.fqdn)
    assert (result.status, result.reason) == (Status.FAIL, Reason.FILTERED), result.detail


@pytest.mark.parametrize("mode", ["garbage-after-negotiate", "bad-token", "pending-forever", "early-success"])
async def test_hostile_session_setup_answers_fail_protocol(mode: str) -> None:
    """A peer that negotiates properly, then answers the session setup with nonsense."""
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        writer.write(nbss_frame(_negotiate_response(0x0302)))
        await writer.drain()
        request = await read_frame(reader)
        mid = struct.unpack("<Q", request[24:32])[0]
        if mode == "garbage-after-negotiate":
            writer.write(nbss_frame(b"\xfeSMB" + os.urandom(80)))
        elif mode == "bad-token":  # a success whose security buffer points outside the message
            writer.write(nbss_frame(_reply(1, mid, 0xC0000016) + struct.pack("<HHHH", 9, 0, 72, 4000)))
        elif mode == "pending-forever":
            for _ in range(6):
                writer.write(nbss_frame(_reply(1, mid, 0x103, flags=0x03) + struct.pack("<HBBI", 9, 0, 0, 0)))
        else:  # "success" before the NTLM exchange could finish, with a signature no key produces
            msg = _reply(1, mid, 0, flags=0x09) + struct.pack("<HHHH", 9, 0, 0, 0)
            writer.write(nbss_frame(msg[:48] + os.urandom(16) + msg[64:]))
        await writer.drain()
        await asyncio.sleep(1.5)

    async with peer(server) as port:
        result = await smb("127.0.0.1", port, credentials=Credentials("u", "pw-not-shown", "D"))
    assert (result.status, result.reason) == (Status.FAIL, Reason.PROTOCOL), result.detail
    assert "pw-not-shown" not in json.dumps(result.to_dict())


def _reply(command: int, mid: int, status: int, flags: int = 0x01) -> bytes:
    return SMB2_MAGIC + struct.pack(
        "<HHIHHIIQIIQ16s", 64, 1, status, command, 1, flags, 0, mid, 0, 0, 0x1234, b"\0" * 16
    )


def _negotiate_response(dialect: int) -> bytes:
    body = struct.pack("<HHHH16sIIIIQQHHI", 65, 0x01, dialect, 0, bytes(16), 0, 1 << 16, 1 << 16, 1 << 16, 0, 0, 128, 0, 0)
    return _reply(0, 0, 0) + body


@pytest.mark.parametrize("dialect", [0x0210, 0x0300, 0x0311])
def test_signature_check_refuses_a_tampered_message(dialect: int) -> None:
    from scanner.wire.smb2 import sign, signature_valid, signing_key, tree_connect_request

    key = signing_key(os.urandom(16), dialect, os.urandom(64))
    msg = sign(tree_connect_request("\\\\fs1\\IPC$", 3, 77), key, dialect)
    assert signature_valid(msg, key, dialect)
    tampered = msg[:-2] + b"X\x00"
    assert not signature_valid(tampered, key, dialect)
    assert not signature_valid(msg, signing_key(os.urandom(16), dialect, None), dialect)


@pytest.mark.skipif(sys.platform == "win32", reason="on Windows SSPI logs on as the current user")
async def test_integrated_logon_off_windows_is_inconclusive_in_words(fs_samba) -> None:  # type: ignore[no-untyped-def]
    """Integrated logon takes the same path (_auth.client_context without a password); off
    Windows, with no Kerberos ticket cache, it cannot log on: that is not an `auth` verdict."""
    with fs_samba() as port:
        result = await smb("127.0.0.1", port, host="fs1", credentials=Credentials("", "", "FS1", integrated=True))
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.PERMISSION), result.detail
    assert "integrated logon" in result.detail and "SSPI" in result.detail
    assert result.evidence["login"] == "not-tried" and "dialect" in result.evidence


async def test_a_rejected_account_is_tried_once_per_run_not_once_per_target(fs_samba) -> None:  # type: ignore[no-untyped-def]
    """Lockout safety: the second target is not asked to check a password the first rejected."""
    wrong = Credentials("root", "nope-" + FS_PASSWORD, "FS1")
    with fs_samba() as port:
        first = await smb("127.0.0.1", port, host="fs1", credentials=wrong)
        second = await smb("127.0.0.1", port, host="fs1", credentials=wrong)
        right = await smb("127.0.0.1", port, host="fs1", credentials=FS_CREDS)
    assert (first.status, first.reason, first.evidence["login"]) == (Status.FAIL, Reason.AUTH, "rejected")
    assert (second.status, second.reason, second.evidence["login"]) == (Status.INCONCLUSIVE, Reason.AUTH, "not-tried")
    assert "already rejected this account" in second.detail and "lockout" in second.detail
    assert right.status is Status.PASS, right.detail


def test_mutated_session_setup_responses_raise_only_value_errors() -> None:
    from scanner.wire.smb2 import parse_session_setup_response

    token = os.urandom(40)
    good = _reply(1, 2, 0xC0000016) + struct.pack("<HHHH", 9, 0, 72, len(token)) + token
    variants = [good[:n] for n in range(len(good))]
    variants += [good[:i] + bytes([v]) + good[i + 1 :] for i in range(80) for v in (0x00, 0x7F, 0xFF)]
    for data in variants:
        try:
            head, _flags, tok = parse_session_setup_response(data)
        except ValueError:
            continue
        assert len(tok) <= len(data) and head.command == 1
