"""UDP at port level: a datagram the service on that port would answer, if we know one.

A reply proves the port is open; ICMP port-unreachable proves it is closed or
rejected; silence proves nothing (open or filtered) and stays inconclusive.
Protocol modules add payloads for their well-known ports with `udp_payload`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from scanner.models import Reason, Transport
from scanner.probes._discovery import load_all
from scanner.probes._options import option
from scanner.probes.base import Outcome, Probe, ProbeContext, ProbeError, options_of, passed, register, skipped
from scanner.probes.netio import udp_exchange

PayloadBuilder = Callable[[ProbeContext], bytes]
_PAYLOADS: dict[int, PayloadBuilder] = {}


def udp_payload(port: int) -> Callable[[PayloadBuilder], PayloadBuilder]:
    """Decorator: the datagram a service on `port` answers (used at port depth)."""

    def add(builder: PayloadBuilder) -> PayloadBuilder:
        _PAYLOADS.setdefault(port, builder)
        return builder

    return add


def payload_for(ctx: ProbeContext) -> bytes:
    load_all()
    builder = _PAYLOADS.get(ctx.port or 0)
    return builder(ctx) if builder else b"\r\n"


@register
class UdpProbe(Probe):
    name = "udp"
    transports = (Transport.UDP,)
    summary = "UDP (port level): reply, ICMP port-unreachable, or silence (inconclusive)"
    exchanges = 1
    depth = "port"
    port_level_for = (Transport.UDP,)

    async def run(self, ctx: ProbeContext) -> Outcome:
        reply = await udp_exchange(ctx, payload_for(ctx))
        return passed(
            f"UDP {ctx.port} on {ctx.host} answered ({len(reply)} bytes; port-level check)",
            reason=Reason.PORT_DEPTH,
            depth="port",
            reply_bytes=len(reply),
        )


@dataclass(frozen=True)
class UnverifiableOptions:
    why: str = option("no service listens on this UDP port by design", "why no service answers, in the report's words")


@register
class UdpUnverifiableProbe(Probe):
    """For documented UDP ports where no service answers by design (UDP 139, UDP 445).

    A healthy Windows server answers those with silence or ICMP port-unreachable,
    so neither may fail the row: the check is reported as not verifiable, with
    what was observed, and the row is judged on its other ports.
    """

    name = "udp-unverifiable"
    transports = (Transport.UDP,)
    summary = "UDP port with no service by design: observed, reported as not verifiable"
    exchanges = 1
    depth = "port"  # already as shallow as it can honestly be

    Options = UnverifiableOptions

    async def run(self, ctx: ProbeContext) -> Outcome:
        why = options_of(ctx, UnverifiableOptions).why
        try:
            reply = await udp_exchange(ctx, payload_for(ctx))
        except ProbeError as exc:
            observed = exc.outcome.reason.value
        else:
            observed = f"reply of {len(reply)} bytes"
        return skipped(
            Reason.NOT_VERIFIABLE,
            f"not verifiable: {why}; observed {observed} on UDP {ctx.port} — this does not "
            "affect the row's verdict",
            observed=observed,
        )
