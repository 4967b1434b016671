"""Passive capture: confirm arrivals on ports another process holds, without binding them.

    reason = capture_unavailable()       # None when scapy is importable and we may capture
    cap = PassiveCapture([(Transport.UDP, 514)], listener.store)
    await cap.start(); ...; await cap.stop()

After install, the Auditor's own services hold its ports, so `listen` cannot bind them;
capturing what reaches the interface still proves the network path. Uses scapy's
AsyncSniffer (optional extra `portready[capture]`; needs root / CAP_NET_RAW, Npcap on
Windows). TCP is not reassembled: a SYN counts as a connection and each segment's
payload is searched for a test tag on its own. Packets are handed to the event loop
with a bounded backlog; what exceeds it is counted in `store.drops["capture_backlog"]`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from typing import Any

from scanner.listener.server import ArrivalStore, normalize_address
from scanner.models import Transport

_MAX_BACKLOG = 20000


def capture_unavailable() -> str | None:
    """Why passive capture cannot run here, in words an admin acts on; None if it can."""
    try:
        import scapy.all  # noqa: F401
    except ImportError:
        return ("passive capture needs scapy, which is not installed (pip install 'portready[capture]'"
                + ("; on Windows also Npcap" if sys.platform == "win32" else "") + ")")
    except Exception as exc:  # noqa: BLE001 - scapy fails in many ways without capture support
        return f"passive capture is unavailable: scapy could not load ({type(exc).__name__}: {exc})"
    if sys.platform != "win32" and hasattr(os, "geteuid") and os.geteuid() != 0:
        return "passive capture needs root or CAP_NET_RAW (run with sudo)"
    return None


def bpf_filter(ports: list[tuple[Transport, int]]) -> str:
    parts = [f"({proto.value} dst port {port})" for proto, port in sorted(set(ports), key=lambda p: (p[1], p[0].value))]
    return " or ".join(parts) if parts else "none"


class PassiveCapture:
    """Feeds captured arrivals into an ArrivalStore (`via` "capture")."""

    def __init__(self, ports: list[tuple[Transport, int]], store: ArrivalStore, iface: str | None = None) -> None:
        self.ports = sorted(set(ports), key=lambda p: (p[1], p[0].value))
        self.store = store
        self.iface = iface
        self.error: str | None = None
        self._sniffer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._backlog = 0
        self._lock = threading.Lock()

    async def start(self) -> bool:
        """Start capturing; False (and `error` says why) when it cannot."""
        reason = capture_unavailable()
        if reason is not None:
            self.error = reason
            return False
        from scapy.all import AsyncSniffer

        self._loop = asyncio.get_running_loop()
        try:
            self._sniffer = AsyncSniffer(filter=bpf_filter(self.ports), prn=self._packet, store=False, iface=self.iface)
            self._sniffer.start()
            await asyncio.sleep(0.2)  # let the capture socket open before traffic is expected
        except Exception as exc:  # noqa: BLE001 - scapy raises OSError, Scapy_Exception, ...
            self.error = f"passive capture could not start: {type(exc).__name__}: {exc}"
            self._sniffer = None
            return False
        return True

    async def stop(self) -> None:
        sniffer, self._sniffer = self._sniffer, None
        if sniffer is not None:
            await asyncio.get_running_loop().run_in_executor(None, _stop_quietly, sniffer)

    def _packet(self, pkt: Any) -> None:
        """Runs in scapy's thread: extract the little we keep, hand it to the loop."""
        from scapy.all import IP, TCP, UDP, IPv6

        ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
        if ip is None:
            return
        layer = pkt.getlayer(UDP)
        proto = Transport.UDP
        kind = "datagram"
        if layer is None:
            layer = pkt.getlayer(TCP)
            proto = Transport.TCP
            if layer is None:
                return
        payload = bytes(layer.payload)[:65536]
        if proto is Transport.TCP:
            flags = int(layer.flags)
            if flags & 0x02 and not flags & 0x10:  # SYN without ACK: a connection attempt
                kind = "connection"
            elif payload:
                kind = "message"
            else:
                return
        with self._lock:
            if self._backlog >= _MAX_BACKLOG:
                self.store.drops["capture_backlog"] += 1
                return
            self._backlog += 1
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._deliver, proto, int(layer.dport), normalize_address(str(ip.src)), kind, payload)

    def _deliver(self, proto: Transport, port: int, source: str, kind: str, payload: bytes) -> None:
        with self._lock:
            self._backlog -= 1
        self.store.record(proto, port, source, kind, payload, via="capture")


def _stop_quietly(sniffer: Any) -> None:
    try:
        sniffer.stop()
    except Exception:  # noqa: BLE001 - a sniffer that never started cannot stop cleanly
        pass
