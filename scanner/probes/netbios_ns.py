"""NetBIOS name service (UDP 137): a node status (NBSTAT) query.

RFC 1002 4.2.17 NODE STATUS REQUEST for the name ``*`` (type 0x21); the answer
(4.2.18) lists the names the node registered (name, suffix, group flag) and its
MAC address. An answer proves the NetBIOS name service is reachable; ICMP
port-unreachable fails as refused; silence stays inconclusive (UDP cannot tell
a drop from a quiet service). The same query is the port-level UDP payload for 137.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any

from scanner.models import Reason, Transport
from scanner.probes._windows_firewall import NETBIOS_FIREWALL
from scanner.probes.base import Outcome, Probe, ProbeContext, failed, inconclusive, passed, register
from scanner.probes.netio import udp_exchange
from scanner.probes.udp import udp_payload

NBSTAT = 0x0021
MAX_NAMES = 64
SUFFIXES = {
    0x00: "workstation", 0x03: "messenger", 0x1B: "domain master browser", 0x1C: "domain controllers",
    0x1D: "master browser", 0x1E: "browser election", 0x20: "file server",
}  # fmt: skip


def nbstat_query(transaction_id: int | None = None) -> bytes:
    """NODE STATUS REQUEST for '*' (RFC 1002 4.2.17)."""
    tid = transaction_id if transaction_id is not None else int.from_bytes(os.urandom(2), "big")
    header = struct.pack(">HHHHHH", tid, 0x0000, 1, 0, 0, 0)
    name = b"\x20" + b"CK" + b"AA" * 15 + b"\x00"  # '*' + 15 NUL bytes, first-level encoded
    return header + name + struct.pack(">HH", NBSTAT, 0x0001)


@dataclass(frozen=True)
class NodeStatus:
    names: list[dict[str, object]]
    mac: str | None


def _skip_name(data: bytes, pos: int) -> int:
    """Position after an RR_NAME (labels, or a compression pointer)."""
    for _ in range(64):
        if pos >= len(data):
            raise ValueError("the answer ends inside its name")
        length = data[pos]
        if length & 0xC0 == 0xC0:
            return pos + 2
        if length == 0:
            return pos + 1
        pos += 1 + length
    raise ValueError("a name of more than 64 labels")


def parse_nbstat(data: bytes, transaction_id: int | None = None) -> NodeStatus:
    """Parse a NODE STATUS RESPONSE (RFC 1002 4.2.18). ValueError when it is not one."""
    if len(data) < 12:
        raise ValueError(f"{len(data)} bytes is shorter than a NetBIOS header")
    tid, flags, _qd, an, _ns, _ar = struct.unpack(">HHHHHH", data[:12])
    if transaction_id is not None and tid != transaction_id:
        raise ValueError("another transaction's answer")
    if not flags & 0x8000:
        raise ValueError("a request, not a response")
    rcode = flags & 0x000F
    if rcode:
        raise ValueError(f"an error answer (RCODE {rcode})")
    if an < 1:
        raise ValueError("a response without an answer record")
    pos = _skip_name(data, 12)
    if pos + 10 > len(data):
        raise ValueError("the answer record is truncated")
    rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", data[pos : pos + 10])
    if rtype != NBSTAT:
        raise ValueError(f"record type 0x{rtype:04x}, not NBSTAT")
    rdata = data[pos + 10 : pos + 10 + rdlen]
    if len(rdata) < 1:
        raise ValueError("an empty node status")
    count = rdata[0]
    names: list[dict[str, object]] = []
    off = 1
    for _ in range(count):
        if off + 18 > len(rdata):
            raise ValueError(f"the name table announces {count} names but holds fewer")
        raw = rdata[off : off + 15]
        suffix = rdata[off + 15]
        nflags = int.from_bytes(rdata[off + 16 : off + 18], "big")
        off += 18
        if len(names) < MAX_NAMES:
            entry: dict[str, object] = {
                "name": raw.decode("latin-1").rstrip(" \x00"),
                "suffix": f"<{suffix:02x}>",
                "group": bool(nflags & 0x8000),
                "active": bool(nflags & 0x0400),
            }
            if suffix in SUFFIXES:
                entry["meaning"] = SUFFIXES[suffix]
            names.append(entry)
    mac = rdata[off : off + 6]
    mac_text = "-".join(f"{b:02X}" for b in mac) if len(mac) == 6 else None
    return NodeStatus(names, mac_text)


def ipv4_only(ctx: ProbeContext) -> Outcome:
    """NetBIOS over TCP/IP (RFC 1001/1002) exists on IPv4 only: an IPv6 address proves nothing."""
    return inconclusive(
        Reason.NOT_VERIFIABLE,
        f"not verifiable over IPv6: NetBIOS runs over IPv4 only, and {ctx.host} was reached at "
        f"{ctx.address}; target its IPv4 address to check UDP {ctx.port}",
        address=ctx.address,
    )


@udp_payload(137)
def _nbstat_payload(ctx: ProbeContext) -> bytes:
    return nbstat_query()


@register
class NetbiosNameProbe(Probe):
    name = "netbios-ns"
    transports = (Transport.UDP,)
    summary = "NetBIOS name service: node status (NBSTAT) query on UDP 137 — name table and MAC"
    exchanges = 1
    firewall = NETBIOS_FIREWALL

    async def run(self, ctx: ProbeContext) -> Outcome:
        if ":" in ctx.address:
            return ipv4_only(ctx)
        tid = int.from_bytes(os.urandom(2), "big")
        # A connected UDP socket only hears the target's port 137, and every try sends the
        # same transaction id: any datagram that arrives is the target's answer to judge.
        reply = await udp_exchange(ctx, nbstat_query(tid), what="NetBIOS node status answer")
        try:
            status = parse_nbstat(reply, tid)
        except (ValueError, struct.error) as exc:
            return failed(
                Reason.PROTOCOL,
                f"{ctx.where()} answered, but not with a NetBIOS node status ({exc})",
                reply_bytes=len(reply),
            )
        unique = [n for n in status.names if not n["group"]]
        host = next((str(n["name"]) for n in unique if n["suffix"] == "<00>"), None)
        domain = next((str(n["name"]) for n in status.names if n["group"] and n["suffix"] == "<00>"), None)
        evidence: dict[str, Any] = {"names": status.names, "name_count": len(status.names)}
        if status.mac:
            evidence["mac"] = status.mac
        if host:
            evidence["netbios_name"] = host
        if domain:
            evidence["netbios_domain"] = domain
        return passed(
            f"NetBIOS name service on {ctx.host} UDP {ctx.port} answered a node status query "
            f"({len(status.names)} names" + (f", {host}" if host else "") + (f" in {domain}" if domain else "") + ")",
            **evidence,
        )
