"""Adaptive timeouts per host and congestion control for the whole scan, the way nmap does it.

Until a host has answered anything, a silent port gets the full user timeout.
Once it has answered (a connection accepted or refused), a silent port is
declared filtered after a few smoothed round trips, bounded below by
`floor` and above by the user's timeout (RFC 6298 style estimator).

How many checks run at once is not fixed either: a `Window` per host and one
for the scan start small, grow while answers come back in time and halve when
they do not (AIMD, as TCP and nmap do), within the user's `--concurrency` and
`--per-host`. UDP datagrams go out through a `Pacer` whose rate follows the
replies (and ICMP errors) the path gives back, since routers and hosts
rate-limit ICMP port-unreachable (Linux: 1000/s, burst 50, per namespace).
"""

from __future__ import annotations

import asyncio
from collections import deque

# A SYN lost to a full accept queue (or a congested path) is sent again by TCP
# after its initial retransmission timeout: 1 s (RFC 6298 2.1, Linux TCP_TIMEOUT_INIT).
SYN_RETRY = 1.0


class Window:
    """An AIMD congestion window: how many checks may be in flight at once.

    Slow start (+1 per answer, doubling every round) up to `ssthresh`, then +1 per
    window of answers; a loss halves the window once per round: losses of checks
    that started before the last cut are the same congestion event, not new ones.
    """

    def __init__(self, ceiling: int, start: int, floor: int = 1) -> None:
        self.ceiling = max(1, ceiling)
        self.floor = max(1, min(floor, self.ceiling))
        self.size = float(max(self.floor, min(start, self.ceiling)))
        self.ssthresh = float(self.ceiling)
        self.inflight = 0
        self.epoch = 0  # bumped on every cut; a check remembers the epoch it started in
        self.cuts = 0

    def allows(self) -> bool:
        return self.inflight < int(self.size)

    def grow(self) -> None:
        if self.size < self.ssthresh:
            self.size += 1.0
        else:
            self.size += 1.0 / self.size
        self.size = min(self.size, float(self.ceiling))

    def cut(self, started_epoch: int, factor: float = 0.5) -> bool:
        """React to a loss seen by a check that started in `started_epoch`; True if cut."""
        if started_epoch != self.epoch:
            return False
        self.ssthresh = max(float(self.floor), self.size * factor)
        self.size = self.ssthresh
        self.epoch += 1
        self.cuts += 1
        return True

    def cap(self, ceiling: int) -> None:
        """Lower the ceiling (the retry pass runs with fewer checks at once)."""
        self.ceiling = max(1, min(self.ceiling, ceiling))
        self.floor = min(self.floor, self.ceiling)
        self.size = min(self.size, float(self.ceiling))
        self.ssthresh = min(self.ssthresh, float(self.ceiling))


def _smoothed(srtt: float | None, rttvar: float, sample: float) -> tuple[float, float]:
    """RFC 6298 (2.2, 2.3): the smoothed round trip and its variation after one more sample."""
    if srtt is None:
        return sample, sample / 2
    return 0.875 * srtt + 0.125 * sample, 0.75 * rttvar + 0.25 * abs(srtt - sample)


class ServiceLatency:
    """How long a UDP service takes to answer, across the scan: when a datagram is sent again.

    A host's round trip (`HostTiming`) says when a kernel's answer (ICMP, a SYN-ACK) is due;
    a service's answer can queue behind others on a loaded server (Samba answers LDAP pings
    one at a time). Sending again then only lengthens the queue: every copy is answered.
    RFC 6298's estimator over answers to a first try only, and Karn's rule: after a datagram
    is sent again the wait doubles, and stays doubled until an answer to a first try comes.
    """

    MAX_BACKOFF = 8.0

    def __init__(self) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.backoff = 1.0
        self.resends = 0
        self._backed_at = float("-inf")

    def observe(self, seconds: float) -> None:
        """An answer to a first try, `seconds` after it was sent."""
        self.srtt, self.rttvar = _smoothed(self.srtt, self.rttvar, max(seconds, 0.0))
        self.backoff = 1.0

    def resent(self, sent_at: float, now: float) -> None:
        """A first try went unanswered for a whole wait and is sent again.

        Datagrams sent before the last doubling waited under the shorter wait: their
        resends are the same event (as `Window.cut`), not new ones."""
        self.resends += 1
        if sent_at >= self._backed_at:
            self.backoff = min(self.MAX_BACKOFF, self.backoff * 2)
            self._backed_at = now

    def wait(self) -> float:
        """The service's share of the wait before a datagram is sent again (0: nothing known)."""
        if self.srtt is None:
            return 0.0
        return (self.srtt + 4 * self.rttvar) * self.backoff


class Pacer:
    """Spaces UDP datagrams to the rate the path answers: a token bucket with a FIFO of senders.

    `await acquire()` returns when a datagram may go. The rate is read at every release,
    so a rate that rises while senders wait lets them go sooner. Answers (a reply or an
    ICMP error) raise the rate by one per second each (at most doubling per second, like
    slow start); silence from a host that answers other ports halves it, once per round.
    """

    def __init__(self, rate: float = 500.0, ceiling: float = 5000.0, floor: float = 20.0, burst: int = 50) -> None:
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.rate = max(self.floor, min(rate, ceiling))
        self.burst = float(max(1, burst))
        self.epoch = 0
        self.tokens = self.burst
        self._last: float | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._services: dict[int, ServiceLatency] = {}

    def service(self, port: int) -> ServiceLatency:
        """The answer latency of the scan's UDP services on `port` (one estimate for all hosts)."""
        found = self._services.get(port)
        if found is None:
            found = self._services[port] = ServiceLatency()
        return found

    def _refill(self, now: float) -> None:
        if self._last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = now

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        self._refill(loop.time())
        if self.tokens >= 1 and not self._waiters:
            self.tokens -= 1
            return
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        self._arm(loop)
        await waiter

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None and self._waiters:
            self._timer = loop.call_later(max(0.0, (1 - self.tokens) / self.rate), self._release, loop)

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._refill(loop.time())
        while self._waiters and self.tokens >= 1:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a cancelled sender takes no token
                self.tokens -= 1
                waiter.set_result(None)
        self._arm(loop)

    def answered(self) -> None:
        self.rate = min(self.ceiling, self.rate + 1.0)

    def silent(self, started_epoch: int) -> None:
        if started_epoch != self.epoch:
            return
        self.rate = max(self.floor, self.rate / 2)
        self.epoch += 1

    def slow_down(self, factor: float = 0.25) -> None:
        self.rate = max(self.floor, self.rate * factor)
        self.epoch += 1


class HostTiming:
    """Round-trip estimate for one address, shared by every probe against it."""

    def __init__(self, ceiling: float, floor: float = 0.25, pacer: Pacer | None = None) -> None:
        self.ceiling = ceiling
        self.floor = min(floor, ceiling)
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.min_rtt: float | None = None
        self.samples = 0
        self.exact = False  # whether srtt comes from the kernel's own measurement
        self.late = 0  # connections accepted only after a SYN was sent again (congestion)
        self.stalls = 0  # connections accepted, then no answer in time (overload)
        self.pacer = pacer  # the scan's UDP pacer, shared by every host (None: no pacing)
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
            self.min_rtt = None
        elif self.exact and not exact:
            self.samples += 1
            return
        if self.min_rtt is None or rtt < self.min_rtt:
            self.min_rtt = rtt
        first = self.srtt is None
        self.srtt, self.rttvar = _smoothed(self.srtt, self.rttvar, rtt)
        if first and self._first is not None and not self._first.done():
            self._first.set_result(None)
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
