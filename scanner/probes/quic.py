"""QUIC on UDP 443: a real QUIC v1 Initial packet; any QUIC packet back proves QUIC answers.

The Initial follows RFC 9000 17.2.2 (long header, random 8-byte connection ids, a CRYPTO
frame carrying a TLS 1.3 ClientHello with ALPN h3 and QUIC transport parameters, padded
so the datagram is 1200 bytes) protected per RFC 9001 5 (keys from the destination
connection id with HKDF and the v1 salt, AES-128-GCM, AES header protection).

A QUIC server answers with an Initial (its ServerHello or a CONNECTION_CLOSE), a Retry,
or a Version Negotiation packet, all addressed to our source connection id: any of
those passes. ICMP port-unreachable is `fail refused`; silence is `inconclusive
no-answer` (a firewall dropping UDP 443 and a host without QUIC look the same); a reply
that is not QUIC for our connection is `fail protocol`.

Evidence: version, packet_type, (versions for Version Negotiation), reply_bytes.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from scanner.models import Reason, Transport
from scanner.probes.base import Outcome, Probe, ProbeContext, failed, passed, register
from scanner.probes.netio import udp_exchange
from scanner.probes.udp import udp_payload

QUIC_V1 = 0x00000001
INITIAL_SALT_V1 = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")
MIN_DATAGRAM = 1200  # RFC 9000 14.1: client Initial datagrams are at least 1200 bytes
_PN_LEN = 4
_TAG_LEN = 16
_PACKET_TYPES = {0: "Initial", 1: "0-RTT", 2: "Handshake", 3: "Retry"}
_KNOWN_VERSIONS = {
    0x00000001: "QUIC v1",
    0x6B3343CF: "QUIC v2",
    0xFF00001D: "draft-29",
}


def _varint(value: int) -> bytes:
    """RFC 9000 16: variable-length integer encoding."""
    if value < 0x40:
        return struct.pack("!B", value)
    if value < 0x4000:
        return struct.pack("!H", value | 0x4000)
    if value < 0x40000000:
        return struct.pack("!I", value | 0x80000000)
    return struct.pack("!Q", value | 0xC000000000000000)


def _hkdf_expand_label(secret: bytes, label: str, length: int) -> bytes:
    """TLS 1.3 HKDF-Expand-Label with an empty context (RFC 8446 7.1)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    full = b"tls13 " + label.encode("ascii")
    info = struct.pack("!HB", length, len(full)) + full + b"\x00"
    return HKDFExpand(hashes.SHA256(), length, info).derive(secret)


def client_initial_keys(dcid: bytes) -> tuple[bytes, bytes, bytes]:
    """(key, iv, hp) of the client Initial packets for this destination id (RFC 9001 5.2)."""
    from cryptography.hazmat.primitives import hashes, hmac

    extract = hmac.HMAC(INITIAL_SALT_V1, hashes.SHA256())
    extract.update(dcid)
    initial_secret = extract.finalize()
    client_secret = _hkdf_expand_label(initial_secret, "client in", 32)
    return (
        _hkdf_expand_label(client_secret, "quic key", 16),
        _hkdf_expand_label(client_secret, "quic iv", 12),
        _hkdf_expand_label(client_secret, "quic hp", 16),
    )


def _extension(kind: int, body: bytes) -> bytes:
    return struct.pack("!HH", kind, len(body)) + body


def _transport_parameters(scid: bytes) -> bytes:
    """RFC 9000 18.2: the parameters a client must or usually sends."""

    def param(pid: int, value: bytes) -> bytes:
        return _varint(pid) + _varint(len(value)) + value

    return b"".join(
        [
            param(0x01, _varint(10_000)),  # max_idle_timeout (ms)
            param(0x04, _varint(1 << 20)),  # initial_max_data
            param(0x05, _varint(1 << 18)),  # initial_max_stream_data_bidi_local
            param(0x06, _varint(1 << 18)),  # initial_max_stream_data_bidi_remote
            param(0x07, _varint(1 << 18)),  # initial_max_stream_data_uni
            param(0x08, _varint(100)),  # initial_max_streams_bidi
            param(0x09, _varint(100)),  # initial_max_streams_uni
            param(0x0F, scid),  # initial_source_connection_id (mandatory)
        ]
    )


def client_hello(server_name: str | None, scid: bytes) -> bytes:
    """A TLS 1.3 ClientHello handshake message as QUIC carries it (no record layer)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    extensions = []
    if server_name:
        name = server_name.encode("idna") if not server_name.isascii() else server_name.encode()
        entry = b"\x00" + struct.pack("!H", len(name)) + name
        extensions.append(_extension(0x0000, struct.pack("!H", len(entry)) + entry))
    extensions += [
        _extension(0x000A, struct.pack("!HH", 2, 0x001D)),  # supported_groups: x25519
        _extension(
            0x000D,  # signature_algorithms
            struct.pack("!H", 8) + struct.pack("!HHHH", 0x0403, 0x0804, 0x0401, 0x0805),
        ),
        _extension(0x0010, struct.pack("!H", 3) + b"\x02h3"),  # ALPN h3
        _extension(0x002B, b"\x02\x03\x04"),  # supported_versions: TLS 1.3
        _extension(0x0033, struct.pack("!HHH", 36, 0x001D, 32) + public),  # key_share
        _extension(0x0039, _transport_parameters(scid)),  # quic_transport_parameters
    ]
    ext_bytes = b"".join(extensions)
    body = (
        b"\x03\x03"
        + os.urandom(32)
        + b"\x00"  # legacy_session_id: empty in QUIC
        + struct.pack("!H", 6)
        + struct.pack("!HHH", 0x1301, 0x1302, 0x1303)
        + b"\x01\x00"  # compression: null
        + struct.pack("!H", len(ext_bytes))
        + ext_bytes
    )
    return b"\x01" + struct.pack("!I", len(body))[1:] + body


def initial_packet(dcid: bytes, scid: bytes, crypto: bytes) -> bytes:
    """A protected client Initial (packet number 0) padded to MIN_DATAGRAM bytes."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key, iv, hp = client_initial_keys(dcid)
    frame = b"\x06" + _varint(0) + _varint(len(crypto)) + crypto  # CRYPTO, offset 0
    prefix_len = 1 + 4 + 1 + len(dcid) + 1 + len(scid) + 1 + 2  # up to and with Length
    payload_len = MIN_DATAGRAM - prefix_len - _PN_LEN - _TAG_LEN
    if payload_len < len(frame):
        raise ValueError("ClientHello too large for one Initial packet")
    payload = frame + b"\x00" * (payload_len - len(frame))  # PADDING frames
    first = 0xC0 | (0 << 4) | (_PN_LEN - 1)  # long header, fixed bit, Initial, 4-byte PN
    header = (
        struct.pack("!BI", first, QUIC_V1)
        + bytes([len(dcid)]) + dcid
        + bytes([len(scid)]) + scid
        + _varint(0)  # token length
        + struct.pack("!H", 0x4000 | (_PN_LEN + payload_len + _TAG_LEN))  # 2-byte varint
    )  # fmt: skip
    packet_number = 0
    pn_bytes = packet_number.to_bytes(_PN_LEN, "big")
    nonce = (int.from_bytes(iv, "big") ^ packet_number).to_bytes(12, "big")
    aad = header + pn_bytes
    ciphertext = AESGCM(key).encrypt(nonce, payload, aad)
    sample = ciphertext[4 - _PN_LEN : 4 - _PN_LEN + 16]
    encryptor = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
    mask = encryptor.update(sample) + encryptor.finalize()
    protected_first = bytes([header[0] ^ (mask[0] & 0x0F)])
    protected_pn = bytes(b ^ m for b, m in zip(pn_bytes, mask[1 : 1 + _PN_LEN], strict=True))
    return protected_first + header[1:] + protected_pn + ciphertext


@dataclass(frozen=True)
class QuicReply:
    packet_type: str  # Initial, Handshake, Retry, 0-RTT, Version Negotiation
    version: int
    versions: tuple[int, ...] = ()  # offered in Version Negotiation


def parse_reply(data: bytes, our_scid: bytes, our_dcid: bytes) -> QuicReply | None:
    """The reply as a QUIC long-header packet addressed to us, or None if it is not one."""
    if len(data) < 7 or not data[0] & 0x80:
        return None  # short header or too short: not an answer to an Initial
    version = int.from_bytes(data[1:5], "big")
    dcid_len = data[5]
    if dcid_len > 20 or len(data) < 6 + dcid_len + 1:
        return None
    dcid = data[6 : 6 + dcid_len]
    if dcid != our_scid:
        return None  # not for our connection
    scid_len = data[6 + dcid_len]
    if scid_len > 20 or len(data) < 7 + dcid_len + scid_len:
        return None
    rest = data[7 + dcid_len + scid_len :]
    if version == 0:
        scid = data[7 + dcid_len : 7 + dcid_len + scid_len]
        if scid != our_dcid or not rest or len(rest) % 4:
            return None
        versions = tuple(int.from_bytes(rest[i : i + 4], "big") for i in range(0, min(len(rest), 64), 4))
        return QuicReply("Version Negotiation", 0, versions)
    if not data[0] & 0x40:
        return None  # the fixed bit must be set in every QUIC v1 long header
    kind = (data[0] & 0x30) >> 4
    if version == 0x6B3343CF:  # QUIC v2 renumbers the long-header types (RFC 9369 3.2)
        kind = {1: 0, 2: 1, 3: 2, 0: 3}[kind]
    return QuicReply(_PACKET_TYPES[kind], version)


def version_name(version: int) -> str:
    return _KNOWN_VERSIONS.get(version, f"0x{version:08x}")


def _server_name(ctx: ProbeContext) -> str | None:
    import ipaddress

    host = ctx.host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host or None
    return None


def _build(ctx: ProbeContext) -> tuple[bytes, bytes, bytes]:
    dcid, scid = os.urandom(8), os.urandom(8)
    return initial_packet(dcid, scid, client_hello(_server_name(ctx), scid)), dcid, scid


@udp_payload(443)
def quic_initial_payload(ctx: ProbeContext) -> bytes:
    """For the port-level UDP probe on 443: a QUIC Initial any QUIC server answers."""
    return _build(ctx)[0]


@register
class QuicProbe(Probe):
    name = "quic"
    transports = (Transport.UDP,)
    summary = "QUIC v1 Initial on UDP 443: Initial, Retry or Version Negotiation back proves QUIC"
    exchanges = 1

    async def run(self, ctx: ProbeContext) -> Outcome:
        packet, dcid, scid = _build(ctx)
        # The connected UDP socket only delivers datagrams from the target, so the first
        # reply is its answer: QUIC for us, or proof that something else listens.
        reply = await udp_exchange(ctx, packet, what="QUIC answer")
        parsed = parse_reply(reply, scid, dcid)
        if parsed is None:
            return failed(
                Reason.PROTOCOL,
                f"UDP {ctx.port} on {ctx.host} answered {len(reply)} bytes that are not a QUIC "
                "packet for our connection: something other than a QUIC server listens there",
                reply_bytes=len(reply),
                first_bytes=reply[:16].hex(),
            )
        if parsed.packet_type == "Version Negotiation":
            offered = ", ".join(version_name(v) for v in parsed.versions) or "none"
            return passed(
                f"QUIC answers on {ctx.where()}: Version Negotiation (the server offers {offered}, "
                "not QUIC v1 — the port is open to QUIC)",
                version="version-negotiation",
                packet_type=parsed.packet_type,
                versions=[version_name(v) for v in parsed.versions],
                reply_bytes=len(reply),
            )
        return passed(
            f"QUIC answers on {ctx.where()}: {version_name(parsed.version)} {parsed.packet_type} "
            "packet in reply to our Initial",
            version=version_name(parsed.version),
            packet_type=parsed.packet_type,
            reply_bytes=len(reply),
        )
