"""SMB2 NEGOTIATE, SMB1 negotiate and the NetBIOS session service, built and parsed by hand.

Pure functions (no I/O) so that the probe and the tests share them:

    frame = nbss_frame(negotiate_request())       # MS-SMB2 2.2.3, over direct TCP (2.1)
    info = parse_negotiate_response(body)         # MS-SMB2 2.2.4 -> NegotiateInfo

References: MS-SMB2 2.2.1 (header), 2.2.3 (NEGOTIATE request and its negotiate
contexts 2.2.3.1.1/2.2.3.1.2), 2.2.4 (response); MS-CIFS 2.2.4.52 (SMB1
NEGOTIATE); RFC 1002 4.3 (NetBIOS session service packets).
"""

from __future__ import annotations

import datetime as dt
import os
import struct
import uuid as uuid_module
from dataclasses import dataclass, field

SMB2_MAGIC = b"\xfeSMB"
SMB1_MAGIC = b"\xffSMB"
DIALECTS = {0x0202: "2.0.2", 0x0210: "2.1", 0x0300: "3.0", 0x0302: "3.0.2", 0x0311: "3.1.1", 0x02FF: "2.???"}
OFFERED = (0x0202, 0x0210, 0x0300, 0x0302, 0x0311)
CAPABILITIES = {
    0x01: "dfs", 0x02: "leasing", 0x04: "large-mtu", 0x08: "multi-channel",
    0x10: "persistent-handles", 0x20: "directory-leasing", 0x40: "encryption",
}  # fmt: skip
CIPHERS = {1: "AES-128-CCM", 2: "AES-128-GCM", 3: "AES-256-CCM", 4: "AES-256-GCM"}
NT_STATUS = {
    0xC00000BB: "STATUS_NOT_SUPPORTED",
    0xC0000022: "STATUS_ACCESS_DENIED",
    0xC000006D: "STATUS_LOGON_FAILURE",
    0xC0000016: "STATUS_MORE_PROCESSING_REQUIRED",
    0xC000000D: "STATUS_INVALID_PARAMETER",
    0xC0000002: "STATUS_NOT_IMPLEMENTED",
}
# RFC 1002 4.3.4 negative session response error codes.
NBSS_ERRORS = {
    0x80: "not listening on the called name",
    0x81: "not listening for the calling name",
    0x82: "the called name is not present",
    0x83: "the called name is present, but insufficient resources",
    0x8F: "unspecified error",
}
_FILETIME_EPOCH = dt.datetime(1601, 1, 1, tzinfo=dt.timezone.utc)


def nbss_frame(payload: bytes, kind: int = 0x00) -> bytes:
    """A NetBIOS session message (also the direct-TCP 445 framing): type + 24-bit length."""
    return bytes([kind]) + len(payload).to_bytes(3, "big") + payload


def netbios_encode(name: str, suffix: int = 0x20) -> bytes:
    """First-level encoding (RFC 1001 14.1) of a 15-char name + suffix, as a length-prefixed label."""
    raw = name.upper().encode("ascii", "replace")[:15].ljust(15, b" ") + bytes([suffix])
    if name == "*":
        raw = b"*" + b"\x00" * 15
    encoded = bytes(c for b in raw for c in (0x41 + (b >> 4), 0x41 + (b & 0x0F)))
    return b"\x20" + encoded + b"\x00"


def session_request(called: str, calling: str = "PORTREADY") -> bytes:
    """RFC 1002 4.3.2 SESSION REQUEST (type 0x81) to `called` (server service, suffix 0x20)."""
    return nbss_frame(netbios_encode(called, 0x20) + netbios_encode(calling, 0x00), 0x81)


def negotiate_request(client_guid: bytes | None = None, message_id: int = 0) -> bytes:
    """SMB2 NEGOTIATE offering 2.0.2 through 3.1.1, with the 3.1.1 negotiate contexts."""
    header = SMB2_MAGIC + struct.pack(
        "<HHIHHIIQII8s16s", 64, 0, 0, 0, 31, 0, 0, message_id, 0xFEFF, 0, b"\x00" * 8, b"\x00" * 16
    )
    dialects = b"".join(struct.pack("<H", d) for d in OFFERED)
    fixed_len = 36
    offset = 64 + fixed_len + len(dialects)
    pad = (-offset) % 8
    contexts_at = offset + pad
    preauth = struct.pack("<HHH", 1, 32, 0x0001) + os.urandom(32)  # SHA-512, 32-byte salt
    ciphers = struct.pack("<H4H", 4, 2, 1, 4, 3)  # AES-128-GCM, -128-CCM, -256-GCM, -256-CCM
    contexts = struct.pack("<HHI", 1, len(preauth), 0) + preauth
    contexts += b"\x00" * ((-len(contexts)) % 8)
    contexts += struct.pack("<HHI", 2, len(ciphers), 0) + ciphers
    body = struct.pack(
        "<HHHHI16sIHH", fixed_len, len(OFFERED), 0x01, 0, 0x7F,
        client_guid or uuid_module.uuid4().bytes, contexts_at, 2, 0,
    )  # fmt: skip
    return header + body + dialects + b"\x00" * pad + contexts


def smb1_negotiate_request() -> bytes:
    """SMB1 NEGOTIATE offering only "NT LM 0.12" (what an SMB1-only server speaks)."""
    header = SMB1_MAGIC + struct.pack("<BIBHH8sHHHHH", 0x72, 0, 0x18, 0xC801, 0, b"\x00" * 8, 0, 0xFFFF, 0xFEFF, 0, 0)
    dialects = b"\x02NT LM 0.12\x00"
    return header + struct.pack("<BH", 0, len(dialects)) + dialects


@dataclass(frozen=True)
class NegotiateInfo:
    status: int
    dialect: int
    signing_enabled: bool
    signing_required: bool
    server_guid: str
    capabilities: list[str]
    max_transact: int
    max_read: int
    max_write: int
    server_time: str | None
    cipher: str | None = None
    contexts: list[int] = field(default_factory=list)

    @property
    def dialect_name(self) -> str:
        return DIALECTS.get(self.dialect, f"0x{self.dialect:04x}")

    def evidence(self) -> dict[str, object]:
        out: dict[str, object] = {
            "dialect": self.dialect_name,
            "signing_required": self.signing_required,
            "signing_enabled": self.signing_enabled,
            "server_guid": self.server_guid,
            "capabilities": self.capabilities,
            "max_read": self.max_read,
            "max_write": self.max_write,
        }
        if self.server_time:
            out["server_time"] = self.server_time
        if self.cipher:
            out["cipher"] = self.cipher
        return out


def filetime(value: int) -> str | None:
    """FILETIME (100 ns since 1601) as ISO 8601 UTC; None for 0 or nonsense."""
    if value <= 0:
        return None
    try:
        when = _FILETIME_EPOCH + dt.timedelta(microseconds=value // 10)
    except OverflowError:
        return None
    if not 2000 <= when.year <= 2200:
        return None
    return when.isoformat().replace("+00:00", "Z")


def status_name(status: int) -> str:
    return NT_STATUS.get(status, f"0x{status:08x}")


def parse_negotiate_response(msg: bytes) -> NegotiateInfo:
    """Parse an SMB2 NEGOTIATE response (the whole message). ValueError when malformed."""
    if len(msg) < 64 or msg[:4] != SMB2_MAGIC:
        raise ValueError("not an SMB2 message")
    structure, _credit, status, command = struct.unpack("<HHIH", msg[4:14])
    if structure != 64:
        raise ValueError(f"SMB2 header size {structure}")
    if command != 0:
        raise ValueError(f"SMB2 command {command} where NEGOTIATE belongs")
    if status != 0:
        return NegotiateInfo(status, 0, False, False, "", [], 0, 0, 0, None)
    body = msg[64:]
    if len(body) < 64:
        raise ValueError(f"a NEGOTIATE response body of {len(body)} bytes (at least 64)")
    (size, mode, dialect, ctx_count, guid, caps, max_t, max_r, max_w, systime, _start,
     _sec_off, _sec_len, ctx_off) = struct.unpack("<HHHH16sIIIIQQHHI", body[:64])  # fmt: skip
    if size != 65:
        raise ValueError(f"NEGOTIATE response structure size {size} (65 expected)")
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect 0x{dialect:04x}")
    cipher: str | None = None
    kinds: list[int] = []
    if dialect == 0x0311 and ctx_count:
        pos = ctx_off
        for _ in range(min(ctx_count, 16)):
            pos += (-pos) % 8
            if pos + 8 > len(msg):
                break
            ctype, dlen = struct.unpack("<HH", msg[pos : pos + 4])
            data = msg[pos + 8 : pos + 8 + dlen]
            kinds.append(ctype)
            if ctype == 2 and len(data) >= 4:
                cipher = CIPHERS.get(struct.unpack("<H", data[2:4])[0])
            pos += 8 + dlen
    return NegotiateInfo(
        status=0,
        dialect=dialect,
        signing_enabled=bool(mode & 0x01),
        signing_required=bool(mode & 0x02),
        server_guid=str(uuid_module.UUID(bytes_le=guid)),
        capabilities=[name for bit, name in CAPABILITIES.items() if caps & bit],
        max_transact=max_t,
        max_read=max_r,
        max_write=max_w,
        server_time=filetime(systime),
        cipher=cipher,
        contexts=kinds,
    )


def smb1_dialect_index(msg: bytes) -> int | None:
    """The dialect index an SMB1 NEGOTIATE response picked, or None (0xFFFF = none)."""
    if len(msg) < 35 or msg[:4] != SMB1_MAGIC or msg[4] != 0x72:
        return None
    word_count = msg[32]
    if word_count < 1:
        return None
    index = int(struct.unpack("<H", msg[33:35])[0])
    return None if index == 0xFFFF else index


# -- session setup, tree connect and signing (MS-SMB2 2.2.5-2.2.10, 3.1.4.1-3.1.4.2) ----------

NEGOTIATE, SESSION_SETUP, TREE_CONNECT = 0x0000, 0x0001, 0x0003
FLAG_SERVER_TO_REDIR, FLAG_ASYNC, FLAG_SIGNED = 0x01, 0x02, 0x08
STATUS_PENDING = 0x00000103
STATUS_MORE_PROCESSING = 0xC0000016
SESSION_IS_GUEST, SESSION_IS_NULL, SESSION_ENCRYPT_DATA = 0x01, 0x02, 0x04
NT_STATUS.update({
    0xC0000064: "STATUS_NO_SUCH_USER", 0xC000006A: "STATUS_WRONG_PASSWORD",
    0xC000006E: "STATUS_ACCOUNT_RESTRICTION", 0xC000006F: "STATUS_INVALID_LOGON_HOURS",
    0xC0000070: "STATUS_INVALID_WORKSTATION", 0xC0000071: "STATUS_PASSWORD_EXPIRED",
    0xC0000072: "STATUS_ACCOUNT_DISABLED", 0xC0000193: "STATUS_ACCOUNT_EXPIRED",
    0xC0000224: "STATUS_PASSWORD_MUST_CHANGE", 0xC0000234: "STATUS_ACCOUNT_LOCKED_OUT",
    0xC000015B: "STATUS_LOGON_TYPE_NOT_GRANTED", 0xC000018D: "STATUS_TRUSTED_RELATIONSHIP_FAILURE",
    0xC00000CC: "STATUS_BAD_NETWORK_NAME", 0xC0000203: "STATUS_USER_SESSION_DELETED",
    0xC000035C: "STATUS_NETWORK_SESSION_EXPIRED", 0xC000A100: "STATUS_INVALID_SIGNATURE",
    0x00000103: "STATUS_PENDING", 0xC0000225: "STATUS_NOT_FOUND",
})  # fmt: skip
# NT statuses that mean "this account may not log on" (reason auth), not a broken server.
ACCOUNT_REJECTED = frozenset({
    0xC000006D, 0xC0000064, 0xC000006A, 0xC000006E, 0xC000006F, 0xC0000070, 0xC0000071,
    0xC0000072, 0xC0000193, 0xC0000224, 0xC0000234, 0xC000015B, 0xC0000022,
    0xC0000225,  # Samba 4.17, NTLM logon by UPN with a wrong password
})  # fmt: skip


@dataclass(frozen=True)
class Header:
    status: int
    command: int
    flags: int
    message_id: int
    tree_id: int
    session_id: int
    signature: bytes


def parse_header(msg: bytes) -> Header:
    """The SMB2 header of any message (sync or async form). ValueError when malformed."""
    if len(msg) < 64 or msg[:4] != SMB2_MAGIC:
        raise ValueError("not an SMB2 message")
    (_magic, size, _charge, status, command, _credits, flags, _next, mid, _reserved, tree_id, session_id,
     signature) = struct.unpack("<4sHHIHHIIQIIQ16s", msg[:64])  # fmt: skip
    if size != 64:
        raise ValueError(f"SMB2 header size {size}")
    if flags & FLAG_ASYNC:  # async form: AsyncId (8 bytes) where Reserved + TreeId sit
        tree_id = 0
    return Header(status, command, flags, mid, tree_id, session_id, signature)


def request_header(command: int, message_id: int, session_id: int = 0, tree_id: int = 0, charge: int = 1) -> bytes:
    return struct.pack(
        "<4sHHIHHIIQIIQ16s", SMB2_MAGIC, 64, charge, 0, command, 64, 0, 0, message_id, 0xFEFF, tree_id,
        session_id, b"\x00" * 16,
    )  # fmt: skip


def session_setup_request(token: bytes, message_id: int, session_id: int, charge: int = 1) -> bytes:
    """SESSION_SETUP (2.2.5): signing enabled, DFS capability, one SPNEGO token."""
    body = struct.pack("<HBBIIHHQ", 25, 0, 0x01, 0x01, 0, 64 + 24, len(token), 0)
    return request_header(SESSION_SETUP, message_id, session_id, charge=charge) + body + token


def parse_session_setup_response(msg: bytes) -> tuple[Header, int, bytes]:
    """(header, session flags, security token) of a SESSION_SETUP response (2.2.6)."""
    head = parse_header(msg)
    if head.command != SESSION_SETUP:
        raise ValueError(f"SMB2 command {head.command} where SESSION_SETUP belongs")
    if head.status not in (0, STATUS_MORE_PROCESSING):
        return head, 0, b""
    if len(msg) < 64 + 8:
        raise ValueError("a SESSION_SETUP response shorter than its fixed part")
    size, flags, offset, length = struct.unpack("<HHHH", msg[64:72])
    if size != 9:
        raise ValueError(f"SESSION_SETUP response structure size {size} (9 expected)")
    if length and (offset < 72 or offset + length > len(msg)):
        raise ValueError("a security token outside the message")
    return head, flags, msg[offset : offset + length] if length else b""


def tree_connect_request(path: str, message_id: int, session_id: int, charge: int = 1) -> bytes:
    """TREE_CONNECT (2.2.9) to a UNC path such as \\\\dc1\\IPC$."""
    raw = path.encode("utf-16-le")
    body = struct.pack("<HHHH", 9, 0, 64 + 8, len(raw))
    return request_header(TREE_CONNECT, message_id, session_id, charge=charge) + body + raw


def preauth_hash(previous: bytes, message: bytes) -> bytes:
    """One step of the 3.1.1 preauth integrity hash (SHA-512, 3.2.5.2 / 3.2.5.3.1)."""
    import hashlib

    return hashlib.sha512(previous + message).digest()


PREAUTH_START = b"\x00" * 64


def signing_key(session_key: bytes, dialect: int, preauth: bytes | None) -> bytes:
    """The key that signs this session's messages (3.2.5.3.1): the session key itself for
    2.x; SP800-108 KDF (counter mode, HMAC-SHA256) for 3.x."""
    key = session_key[:16].ljust(16, b"\x00")
    if dialect < 0x0300:
        return key
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode

    if dialect == 0x0311:
        label, context = b"SMBSigningKey\x00", preauth or PREAUTH_START
    else:
        label, context = b"SMB2AESCMAC\x00", b"SmbSign\x00"
    kdf = KBKDFHMAC(
        algorithm=hashes.SHA256(), mode=Mode.CounterMode, length=16, rlen=4, llen=4,
        location=CounterLocation.BeforeFixed, label=label, context=context, fixed=None,
    )  # fmt: skip
    return kdf.derive(key)


def signature(msg: bytes, key: bytes, dialect: int) -> bytes:
    """The 16-byte signature of a message (its signature field zeroed), 3.1.4.1."""
    data = msg[:48] + b"\x00" * 16 + msg[64:]
    if dialect < 0x0300:
        import hashlib
        import hmac

        return hmac.new(key, data, hashlib.sha256).digest()[:16]
    from cryptography.hazmat.primitives import cmac
    from cryptography.hazmat.primitives.ciphers import algorithms

    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def sign(msg: bytes, key: bytes, dialect: int) -> bytes:
    """The message with SMB2_FLAGS_SIGNED set and its signature filled in."""
    flags = struct.unpack("<I", msg[16:20])[0] | FLAG_SIGNED
    msg = msg[:16] + struct.pack("<I", flags) + msg[20:]
    return msg[:48] + signature(msg, key, dialect) + msg[64:]


def signature_valid(msg: bytes, key: bytes, dialect: int) -> bool:
    import hmac

    return hmac.compare_digest(msg[48:64], signature(msg, key, dialect))
