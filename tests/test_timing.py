"""Adaptive timeouts: the full timeout until a host answers, then a few round trips."""

from __future__ import annotations

import asyncio

from scanner.timing import HostTiming


def test_silent_host_gets_the_full_timeout() -> None:
    timing = HostTiming(ceiling=3.0, floor=0.25)
    assert not timing.answered
    assert timing.timeout() == 3.0


def test_answering_host_gets_a_bounded_adaptive_timeout() -> None:
    timing = HostTiming(ceiling=3.0, floor=0.25)
    timing.observe(0.0002)
    assert timing.answered
    assert timing.timeout() == 0.25  # a LAN round trip: the floor bounds it below
    slow = HostTiming(ceiling=3.0, floor=0.25)
    for rtt in (0.4, 0.5, 0.45):
        slow.observe(rtt)
    assert 0.45 < slow.timeout() < 3.0  # srtt + 4 rttvar
    slower = HostTiming(ceiling=3.0, floor=0.25)
    slower.observe(5.0)
    assert slower.timeout() == 3.0  # the user's timeout bounds it above


def test_kernel_samples_replace_loop_timed_ones() -> None:
    timing = HostTiming(ceiling=3.0, floor=0.1)
    timing.observe(0.9)  # inflated by a busy event loop
    assert timing.timeout() > 0.9
    timing.observe(0.0001, exact=True)
    assert timing.exact and timing.timeout() == 0.1
    timing.observe(0.9)  # later loop-timed samples no longer move the estimate
    assert timing.timeout() == 0.1


def test_first_answer_wakes_waiters_once() -> None:
    async def scenario() -> tuple[bool, bool]:
        timing = HostTiming(ceiling=3.0)
        waiter = timing.first_answer()
        before = waiter.done()
        asyncio.get_running_loop().call_later(0.01, timing.observe, 0.001)
        await asyncio.wait_for(waiter, 1.0)
        return before, timing.first_answer().done()

    before, after = asyncio.run(scenario())
    assert before is False and after is True


# -- congestion control ----------------------------------------------------------------------
def test_window_starts_modest_grows_on_answers_and_halves_once_per_round() -> None:
    from scanner.timing import Window

    window = Window(ceiling=64, start=4)
    assert int(window.size) == 4
    for _ in range(20):
        window.grow()
    assert int(window.size) == 24  # slow start: +1 per answer
    started_in = window.epoch
    assert window.cut(started_in) is True
    assert int(window.size) == 12
    assert window.cut(started_in) is False  # a second loss of the same round is the same event
    for _ in range(5000):
        window.grow()  # congestion avoidance after the cut: +1 per window of answers
    assert window.size == 64  # the user's limit is the ceiling


def test_pacer_releases_senders_at_its_rate_and_slows_on_silence() -> None:
    from scanner.timing import Pacer

    async def scenario() -> tuple[list[float], float]:
        pacer = Pacer(rate=50.0, burst=1)
        loop = asyncio.get_running_loop()
        begun = loop.time()
        released: list[float] = []

        async def send() -> None:
            await pacer.acquire()
            released.append(loop.time() - begun)

        await asyncio.gather(*(send() for _ in range(4)))
        return released, pacer.rate

    released, _rate = asyncio.run(scenario())
    assert len(released) == 4 and released == sorted(released)
    assert released[-1] >= 2 / 50  # at 50/s with a burst of 1: one every 20 ms after the first
    pacer = Pacer(rate=100.0)
    epoch = pacer.epoch
    pacer.silent(epoch)
    assert pacer.rate == 50.0
    pacer.silent(epoch)  # same round: no second cut
    assert pacer.rate == 50.0
    pacer.answered()
    assert pacer.rate > 50.0


# -- a UDP service's answer latency ------------------------------------------------------------
def test_service_latency_waits_for_a_queue_and_backs_off_once_per_round_until_a_first_try_answers() -> None:
    from scanner.timing import ServiceLatency

    service = ServiceLatency()
    assert service.wait() == 0.0  # nothing known: the host's own timeout decides
    for seconds in (0.04, 0.08, 0.12, 0.16):  # answers queued one behind the other
        service.observe(seconds)
    queued = service.wait()
    assert queued > 0.16  # srtt + 4 rttvar: above the latest answer, so its successors are waited for
    service.resent(sent_at=1.0, now=1.3)
    assert service.wait() == 2 * queued and service.resends == 1
    service.resent(sent_at=1.1, now=1.35)  # sent before the doubling: the same event
    assert service.wait() == 2 * queued and service.resends == 2
    for k in range(10):
        service.resent(sent_at=2.0 + k, now=2.0 + k)
    assert service.wait() == ServiceLatency.MAX_BACKOFF * queued  # bounded (and the user's timeout bounds it too)
    service.observe(0.01)  # an answer to a first try: Karn's rule ends the backoff
    assert service.backoff == 1.0 and service.wait() < ServiceLatency.MAX_BACKOFF * queued


def test_pacer_keeps_one_latency_estimate_per_udp_port_for_the_whole_scan() -> None:
    from scanner.timing import Pacer

    pacer = Pacer()
    assert pacer.service(389) is pacer.service(389)
    assert pacer.service(389) is not pacer.service(88)
