"""CLDAP (UDP 389): the netlogon "LDAP ping" a domain-joined client sends to find its DC.

What a pass proves: a datagram reached UDP 389 and the DC answered the ping
with a well-formed NETLOGON_SAM_LOGON_RESPONSE_EX (MS-ADTS 6.3.1.9); the
evidence is what the DC said about itself: forest, domain, DC name, NetBIOS
names, site, and the role flags (PDC, GC, KDC, time server, writable...).

The request is a base-object search with filter
``(&(DnsDomain=<domain>)(NtVer=\\x06\\x00\\x00\\x00))`` and attribute Netlogon;
the domain comes from the inventory (`settings.values["domain"]`). Without
one the filter is just ``(NtVer=...)``: Samba and Windows answer that too,
for the DC's own domain.

Silence is inconclusive (UDP), ICMP port-unreachable is refused, an answer
that is not CLDAP is `protocol`.
"""

from __future__ import annotations

import os
import struct
import uuid
from dataclasses import dataclass
from typing import Any

from scanner.models import Reason, Transport
from scanner.probes._options import option
from scanner.probes.base import Outcome, Probe, ProbeContext, ProbeError, failed, options_of, passed, register, warned
from scanner.probes.netio import udp_exchange
from scanner.probes.udp import udp_payload
from scanner.wire import ldap as wire

NTVER_5EX = b"\x06\x00\x00\x00"  # NETLOGON_NT_VERSION_5 | NETLOGON_NT_VERSION_5EX
MAX_NAME = 255
MAX_POINTER_JUMPS = 16

# MS-ADTS 6.3.1.2 DS_FLAG values.
DS_FLAGS = {
    0x00000001: "pdc",
    0x00000004: "gc",
    0x00000008: "ldap",
    0x00000010: "ds",
    0x00000020: "kdc",
    0x00000040: "timeserv",
    0x00000080: "closest",
    0x00000100: "writable",
    0x00000200: "good-timeserv",
    0x00000400: "ndnc",
    0x00000800: "rodc-selected",
    0x00001000: "full-secret-domain-6",
    0x00002000: "ws",
    0x00004000: "ds-8",
    0x00008000: "ds-9",
    0x00010000: "ds-10",
    0x20000000: "dns-controller",
    0x40000000: "dns-domain",
    0x80000000: "dns-forest",
}
OPCODES = {23: "LOGON_SAM_LOGON_RESPONSE_EX", 25: "LOGON_SAM_USER_UNKNOWN_EX", 21: "LOGON_SAM_PAUSE_RESPONSE_EX"}


class NetlogonError(ValueError):
    """The Netlogon attribute is not a NETLOGON_SAM_LOGON_RESPONSE_EX."""


def ping_request(message_id: int, domain: str | None) -> bytes:
    ntver = wire.equals("NtVer", NTVER_5EX)
    filter_ = wire.and_(wire.equals("DnsDomain", domain), ntver) if domain else wire.and_(ntver)
    return wire.search_request(message_id, "", ["Netlogon"], filter_)


def read_name(blob: bytes, pos: int) -> tuple[str, int]:
    """A compressed DNS name (RFC 1035 4.1.4) at `pos`; pointers are offsets into `blob`.

    Defends against loops (pointers must go backwards, at most 16 jumps) and
    overlong names. Returns the name and the position after it in the stream.
    """
    labels: list[str] = []
    total = 0
    after: int | None = None
    jumps = 0
    while True:
        if pos >= len(blob):
            raise NetlogonError("name runs past the end")
        length = blob[pos]
        if length == 0:
            pos += 1
            break
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(blob):
                raise NetlogonError("truncated name pointer")
            target = ((length & 0x3F) << 8) | blob[pos + 1]
            if after is None:
                after = pos + 2
            jumps += 1
            if jumps > MAX_POINTER_JUMPS or target >= pos:
                raise NetlogonError("name pointer loop")
            pos = target
            continue
        if length & 0xC0:
            raise NetlogonError(f"bad label length byte 0x{length:02x}")
        label = blob[pos + 1 : pos + 1 + length]
        if len(label) != length:
            raise NetlogonError("truncated label")
        total += length + 1
        if total > MAX_NAME:
            raise NetlogonError("name longer than 255 bytes")
        labels.append(label.decode("utf-8", "replace"))
        pos += 1 + length
    return ".".join(labels), (after if after is not None else pos)


def parse_netlogon(blob: bytes) -> dict[str, Any]:
    """NETLOGON_SAM_LOGON_RESPONSE_EX → evidence (MS-ADTS 6.3.1.9)."""
    if len(blob) < 24:
        raise NetlogonError(f"{len(blob)} bytes is too short")
    opcode, _sbz, flags = struct.unpack_from("<HHI", blob, 0)
    if opcode not in OPCODES:
        raise NetlogonError(f"opcode {opcode} is not a SAM logon response EX")
    guid = str(uuid.UUID(bytes_le=bytes(blob[8:24])))
    pos = 24
    names: list[str] = []
    for _ in range(8):  # forest, domain, host, NetBIOS domain, NetBIOS host, user, DC site, client site
        name, pos = read_name(blob, pos)
        names.append(name)
    forest, domain, host, nb_domain, nb_host, user, dc_site, client_site = names
    out: dict[str, Any] = {
        "opcode": OPCODES[opcode],
        "forest": forest,
        "domain": domain,
        "dc_name": host,
        "netbios_domain": nb_domain,
        "netbios_name": nb_host,
        "dc_site": dc_site,
        "client_site": client_site,
        "domain_guid": guid,
        "flags": [name for bit, name in DS_FLAGS.items() if flags & bit],
    }
    if user:
        out["user"] = user
    return out


def _first_entry(data: bytes, message_id: int) -> bytes | None:
    """The Netlogon value from a CLDAP reply datagram (entry and done back to back)."""
    for msg in wire.split_messages(data):
        if msg.message_id != message_id:
            continue
        if msg.op == wire.SEARCH_ENTRY:
            _dn, attrs = wire.parse_search_entry(msg.body)
            for name, values in attrs.items():
                if name.lower() == "netlogon" and values:
                    return values[0]
        if msg.op == wire.SEARCH_DONE:
            result = wire.parse_result(msg.body)
            if result.code != 0:
                raise wire.BerError(f"the ping ended with {result.name}")  # not the peer's own text
    return None


@udp_payload(389)
def cldap_payload(ctx: ProbeContext) -> bytes:
    """The port-level UDP 389 check sends a real LDAP ping."""
    return ping_request(1, _domain(ctx))


@dataclass(frozen=True)
class CldapOptions:
    domain: str | None = option(None, "the AD domain named in the LDAP ping; unset: the inventory's domain")


def _domain(ctx: ProbeContext) -> str | None:
    value = options_of(ctx, CldapOptions, foreign_ok=True).domain or ctx.settings.values.get("domain")
    return str(value) if value else None


@register
class CldapProbe(Probe):
    name = "cldap"
    transports = (Transport.UDP,)
    summary = "CLDAP: netlogon LDAP ping (forest, domain, DC name, site, DC flags)"
    exchanges = 1

    Options = CldapOptions

    async def run(self, ctx: ProbeContext) -> Outcome:
        mid = int.from_bytes(os.urandom(2), "big") + 1
        domain = _domain(ctx)

        def ours(data: bytes) -> bool:
            # Any datagram from the port is an answer; only stray replies to other ids are ignored.
            try:
                first = next(wire.split_messages(data), None)
            except wire.BerError:
                return True
            return first is None or first.message_id == mid

        reply = await udp_exchange(ctx, ping_request(mid, domain), accept=ours, what="LDAP ping answer")
        try:
            blob = _first_entry(reply, mid)
            if blob is None and domain:
                # A well-formed LDAP answer without Netlogon: a DC, but not of that domain.
                return warned(
                    Reason.PROTOCOL,
                    f"{ctx.host} answers LDAP pings on {ctx.where()}, but says it serves no domain "
                    f"named {domain} — check the domain set in the inventory",
                    asked_domain=domain,
                    reply_bytes=len(reply),
                )
            if blob is None:
                raise wire.BerError("no Netlogon attribute in the answer")
            evidence = parse_netlogon(blob)
        except (wire.BerError, NetlogonError) as exc:
            raise ProbeError(
                failed(
                    Reason.PROTOCOL,
                    f"{ctx.host} answered on {ctx.where()}, but not with a netlogon LDAP ping "
                    f"response ({exc}) — another service listens there, or it is not a domain controller",
                    reply_bytes=len(reply),
                )
            ) from None
        evidence["asked_domain"] = domain or "(none: the DC's own)"
        return passed(
            f"CLDAP ping answered: {evidence['dc_name'] or '?'} of domain {evidence['domain'] or '?'} "
            f"(site {evidence['dc_site'] or '?'})",
            **evidence,
        )
