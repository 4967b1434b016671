"""Adaptive timeouts per host, the way nmap does it.

Until a host has answered anything, a silent port gets the full user timeout.
Once it has answered (a connection accepted or refused), a silent port is
declared filtered after a few smoothed round trips, bounded below by
`floor` and above by the user's timeout (RFC 6298 style estimator).
"""

from __future__ import annotations


class HostTiming:
    """Round-trip estimate for one address, shared by every probe against it."""

    def __init__(self, ceiling: float, floor: float = 0.25) -> None:
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.samples = 0

    @property
    def answered(self) -> bool:
        return self.srtt is not None

    def observe(self, rtt: float) -> None:
        """Record the round trip of an answer (a SYN-ACK, a reset, a reply)."""
        rtt = max(rtt, 0.0)
        if self.srtt is None:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.samples += 1

    def timeout(self) -> float:
        """How long to wait for an answer from this host now."""
        if self.srtt is None:
            return self.ceiling
        estimate = self.srtt + 4 * self.rttvar
        # Several round trips of slack: a busy peer's SYN-ACK can lag its average.
        return min(self.ceiling, max(self.floor, 4 * estimate))

    def describe(self) -> str:
        if self.srtt is None:
            return "the host has not answered anything yet"
        return f"the host answers other ports in {self.srtt * 1000:.1f} ms"
