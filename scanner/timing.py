"""Adaptive timeouts per host, the way nmap does it.

Until a host has answered anything, a silent port gets the full user timeout.
Once it has answered (a connection accepted or refused), a silent port is
declared filtered after a few smoothed round trips, bounded below by
`floor` and above by the user's timeout (RFC 6298 style estimator).
"""

from __future__ import annotations

import asyncio


class HostTiming:
    """Round-trip estimate for one address, shared by every probe against it."""

    def __init__(self, ceiling: float, floor: float = 0.25) -> None:
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.samples = 0
        self.exact = False  # whether srtt comes from the kernel's own measurement
        self._first: asyncio.Future[None] | None = None

    @property
    def answered(self) -> bool:
        return self.srtt is not None

    def first_answer(self) -> asyncio.Future[None]:
        """A future that completes when the host answers for the first time.

        Probes waiting on a silent port wake on it to shrink their budget from the
        full timeout to the adaptive one.
        """
        if self._first is None:
            self._first = asyncio.get_running_loop().create_future()
            if self.srtt is not None:
                self._first.set_result(None)
        return self._first

    def observe(self, rtt: float, exact: bool = False) -> None:
        """Record the round trip of an answer (a SYN-ACK, a reset, a reply).

        `exact` samples come from the kernel (TCP_INFO); once there is one, the
        estimate uses only those, since loop-timed samples include scheduling delay.
        """
        rtt = max(rtt, 0.0)
        if exact and not self.exact:
            self.exact = True
            self.srtt = None  # restart the estimator from kernel samples only
        elif self.exact and not exact:
            self.samples += 1
            return
        if self.srtt is None:
            self.srtt = rtt
            self.rttvar = rtt / 2
            if self._first is not None and not self._first.done():
                self._first.set_result(None)
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.samples += 1

    def timeout(self) -> float:
        """How long to wait for an answer from this host now."""
        if self.srtt is None:
            return self.ceiling
        # RFC 6298's retransmission timeout, as nmap uses it, within [floor, ceiling].
        return min(self.ceiling, max(self.floor, self.srtt + 4 * self.rttvar))

    def describe(self) -> str:
        if self.srtt is None:
            return "the host has not answered anything yet"
        return f"the host answers other ports in {self.srtt * 1000:.1f} ms"
