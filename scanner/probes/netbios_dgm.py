"""NetBIOS datagram service (UDP 138): no request/answer exists, so it cannot pass.

The datagram service (RFC 1002 4.4) carries one-way datagrams (browser
announcements, mailslot messages); nothing answers a datagram. We send a
harmless one — a DIRECT_GROUP datagram to the name ``*`` with no user data,
which a Windows or Samba node drops — and listen: ICMP port-unreachable proves
nothing listens (fail, refused); silence, or any stray answer, is reported as
inconclusive with words, never as pass.
"""

from __future__ import annotations

import os
import struct

from scanner.models import Reason, Transport
from scanner.probes._windows_firewall import NETBIOS_FIREWALL
from scanner.probes.base import Outcome, Probe, ProbeContext, ProbeError, inconclusive, register
from scanner.probes.netbios_ns import ipv4_only
from scanner.probes.netio import udp_exchange
from scanner.probes.udp import udp_payload


def _encoded(name: bytes) -> bytes:
    raw = name[:15].ljust(15, b" ") + b"\x00" if name != b"*" else b"*" + b"\x00" * 15
    return b"\x20" + bytes(c for b in raw for c in (0x41 + (b >> 4), 0x41 + (b & 0x0F))) + b"\x00"


def probe_datagram() -> bytes:
    """A DIRECT_GROUP datagram (type 0x11) from PORTREADY to '*' with no user data."""
    names = _encoded(b"PORTREADY") + _encoded(b"*")
    dgm_id = int.from_bytes(os.urandom(2), "big")
    # MSG_TYPE, FLAGS (first fragment, B node), DGM_ID, SOURCE_IP 0.0.0.0, SOURCE_PORT 138,
    # DGM_LENGTH, PACKET_OFFSET; then source name, destination name, no user data.
    return struct.pack(">BBH4sHHH", 0x11, 0x02, dgm_id, b"\x00" * 4, 138, len(names), 0) + names


@udp_payload(138)
def _datagram_payload(ctx: ProbeContext) -> bytes:
    return probe_datagram()


@register
class NetbiosDatagramProbe(Probe):
    name = "netbios-dgm"
    transports = (Transport.UDP,)
    summary = "NetBIOS datagram service (UDP 138): refused or not verifiable (one-way protocol)"
    exchanges = 1
    firewall = NETBIOS_FIREWALL

    async def run(self, ctx: ProbeContext) -> Outcome:
        if ":" in ctx.address:
            return ipv4_only(ctx)
        try:
            reply = await udp_exchange(ctx, probe_datagram(), what="answer (none is expected)")
        except ProbeError as exc:
            if exc.outcome.reason is Reason.NO_ANSWER:
                return inconclusive(
                    Reason.NO_ANSWER,
                    f"no answer on UDP {ctx.port} from {ctx.host}, as expected: the NetBIOS datagram "
                    "service never answers, so silence cannot tell an open port from a firewall that "
                    f"drops UDP {ctx.port}; no ICMP port-unreachable came back, so it is not refused",
                    expected_silence=True,
                )
            raise
        # Something answered: a NetBIOS DATAGRAM ERROR (0x13) or another service entirely.
        what = "a NetBIOS datagram error packet" if reply[:1] == b"\x13" else f"{len(reply)} bytes that are not NetBIOS"
        return inconclusive(
            Reason.NO_ANSWER,
            f"UDP {ctx.port} on {ctx.host} sent back {what}; the datagram service has no request/answer "
            "exchange to prove, so this check stays not verifiable (the port is not refused)",
            reply_bytes=len(reply),
        )
