"""Windows Firewall's stealth mode: a silent port is either blocked or simply unused.

With its firewall on, Windows drops packets to a port where nothing listens exactly as it
drops a blocked one, so "filtered" alone cannot tell the two apart. Where a second signal
exists, it decides: the endpoint mapper lists a service on that port (it listens: a
firewall drops it), or the host answers SMB / WS-Management (a live Windows host, whose RPC
service always listens on 135)::

    words = await second_signal(ctx, silent_port=135)   # "" when nothing else answers
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from scanner.probes.base import ProbeContext

# Ports every Windows server of the Auditor's targets answers on when it is up.
WINDOWS_SIGNS = {445: "SMB (TCP 445)", 5985: "WS-Management (TCP 5985)"}
BOTH = (
    "A Windows firewall drops both blocked ports and ports where nothing listens (stealth mode), "
    "so silence alone cannot tell them apart"
)


async def _answers(ctx: ProbeContext, port: int, wait: float) -> bool:
    """One TCP connect (no retry): True when the port accepts."""
    family = socket.AF_INET6 if ":" in ctx.address else socket.AF_INET
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(ctx.address, port, family=family), wait)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True


async def second_signal(ctx: ProbeContext, silent_port: int) -> str:
    """Words for a filtered `silent_port`: stealth mode explained, and the second signal if any."""
    wait = min(ctx.step_timeout(), max(0.2, ctx.remaining() - 0.2))
    others = [p for p in WINDOWS_SIGNS if p != silent_port]
    if wait <= 0 or not others:
        return f"{BOTH}."
    alive = await asyncio.gather(*(_answers(ctx, p, wait) for p in others))
    up = [WINDOWS_SIGNS[p] for p, ok in zip(others, alive, strict=True) if ok]
    if not up:
        return f"{BOTH}; nothing else answered either (SMB, WS-Management), so the host may also be down."
    if silent_port == 135:
        return (
            f"{BOTH}; but {ctx.host} answers {' and '.join(up)}, and Windows' RPC service always listens "
            "on 135: a firewall drops it"
        )
    return f"{BOTH}; {ctx.host} answers {' and '.join(up)}, so the host is up: a blocked port or an unused one."
