"""What arrived, bounded: one record per (transport, port, source), samples, tags, losses.

    store = ArrivalStore(max_sources=1024, expected={"198.18.1.2"})
    store.record(Transport.UDP, 514, "198.18.1.2", "datagram", data)
    store.loss(Transport.TCP, 514, "198.18.1.2", "frames_truncated")
    store.records[(Transport.UDP, 514, "198.18.1.2")].tags

Expected sources are always recorded; other addresses get at most `max_sources` records
(plus the first source of each port, which proves the port), and the rest is summed per
port in `overflow`. Safe to call from the event loop thread only.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from scanner.listener.syslog import SyslogMessage, parse_syslog
from scanner.listener.tag import SEARCH_WINDOW, Tag, find_tag
from scanner.models import Transport

MAX_STRANGERS = 1024


@dataclass
class TagSeen:
    tag: Tag
    count: int
    first: float
    last: float


@dataclass
class Sample:
    time: float
    kind: str  # "datagram", "message" or "connection"
    size: int
    raw: bytes  # at most sample_bytes

    def syslog(self) -> SyslogMessage | None:
        if self.kind == "connection" or not self.raw:
            return None
        return parse_syslog(self.raw)


@dataclass
class SourceRecord:
    """Everything kept about one source address on one port."""

    protocol: Transport
    port: int
    source: str
    first: float
    last: float
    count: int = 0  # datagrams + messages + connections
    datagrams: int = 0
    connections: int = 0
    messages: int = 0
    byte_count: int = 0
    first_sample: Sample | None = None
    tags: dict[str, TagSeen] = field(default_factory=dict)
    via: str = "socket"  # "socket" or "capture"
    tagged: int = 0  # messages carrying a test tag, kept or not
    losses: Counter[str] = field(default_factory=Counter)  # what of this source was lost, and why
    # The last arrival, kept as plain fields: building a Sample per datagram costs a flood dearly.
    last_raw: bytes | None = None
    last_kind: str = ""
    last_size: int = 0

    @property
    def last_sample(self) -> Sample | None:
        if self.last_raw is None:
            return None
        return Sample(self.last, self.last_kind, self.last_size, self.last_raw)

    @property
    def samples(self) -> list[Sample]:
        return [s for s in (self.first_sample, self.last_sample) if s is not None]


_NORMALIZED: dict[str, str] = {}


def normalize_address(address: str) -> str:
    """'::ffff:198.18.1.2' -> '198.18.1.2', 'fe80::1%eth0' -> 'fe80::1' (cached: floods repeat)."""
    cached = _NORMALIZED.get(address)
    if cached is not None:
        return cached
    if len(_NORMALIZED) >= 4096:
        _NORMALIZED.clear()
    _NORMALIZED[address] = result = _normalize(address)
    return result


def _normalize(address: str) -> str:
    address = address.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


@dataclass
class Overflow:
    """Arrivals from strangers past `max_strangers`, summed per port."""

    arrivals: int = 0
    byte_count: int = 0
    addresses: set[str] = field(default_factory=set)  # at most _OVERFLOW_ADDRESSES
    more_addresses: bool = False

    @property
    def distinct(self) -> str:
        return f"{len(self.addresses)}{'+' if self.more_addresses else ''}"


_OVERFLOW_ADDRESSES = 4096


class ArrivalStore:
    """Bounded record of what arrived; safe to call from the event loop thread only."""

    def __init__(
        self,
        *,
        max_sources: int = MAX_STRANGERS,
        max_tags_per_source: int = 1024,
        max_tags_total: int = 65536,
        sample_bytes: int = 2048,
        expected: set[str] | None = None,
        on_news: Callable[[], None] | None = None,
    ) -> None:
        self.max_sources = max_sources  # records for strangers; expected sources are always kept
        self.max_tags_per_source = max_tags_per_source
        self.max_tags_total = max_tags_total
        self.sample_bytes = sample_bytes
        self.expected: set[str] = set(expected or ())
        self.records: dict[tuple[Transport, int, str], SourceRecord] = {}
        self.overflow: dict[tuple[Transport, int], Overflow] = {}
        self.drops: Counter[str] = Counter()
        self.port_drops: dict[tuple[Transport, int], Counter[str]] = {}
        self.total = 0
        self.tags_kept = 0
        self.strangers = 0
        self._ports_seen: set[tuple[Transport, int]] = set()
        self.on_news = on_news  # called when a new source or a new tag appears

    def record(
        self,
        protocol: Transport,
        port: int,
        source: str,
        kind: str,
        data: bytes = b"",
        size: int | None = None,
        now: float | None = None,
        via: str = "socket",
    ) -> None:
        now = time.time() if now is None else now
        size = len(data) if size is None else size
        self.total += 1
        key = (protocol, port, source)
        rec = self.records.get(key)
        news = False
        if rec is None:
            stranger = source not in self.expected
            if stranger and self.strangers >= self.max_sources and (protocol, port) in self._ports_seen:
                self._overflow(protocol, port, source, size)
                return
            self._ports_seen.add((protocol, port))  # a port's first source is always kept: it proves the port
            self.strangers += stranger
            rec = self.records[key] = SourceRecord(protocol, port, source, now, now, via=via)
            news = True
        rec.last = now
        rec.count += 1
        rec.byte_count += size
        if kind == "datagram":
            rec.datagrams += 1
        elif kind == "connection":
            rec.connections += 1
        else:
            rec.messages += 1
        first = rec.first_sample
        if first is None or (first.kind == "connection" and kind != "connection"):
            rec.first_sample = Sample(now, kind, size, bytes(data[: self.sample_bytes]))
        elif kind != "connection":
            rec.last_raw = data if len(data) <= self.sample_bytes else data[: self.sample_bytes]
            rec.last_kind = kind
            rec.last_size = size
        if data and b"portready-test" in data[:SEARCH_WINDOW]:
            tag = find_tag(data)
            if tag is not None:
                rec.tagged += 1
                seen = rec.tags.get(tag.nonce)
                if seen is not None and seen.tag == tag:
                    seen.count += 1
                    seen.last = now
                elif len(rec.tags) >= self.max_tags_per_source or self.tags_kept >= self.max_tags_total:
                    self.drops["tags_over_cap"] += 1
                    rec.losses["tags_over_cap"] += 1
                else:
                    rec.tags[tag.nonce] = TagSeen(tag, 1, now, now)
                    self.tags_kept += 1
                    news = True
        if news and self.on_news is not None:
            self.on_news()

    def _overflow(self, protocol: Transport, port: int, source: str, size: int) -> None:
        self.drops["sources_over_cap"] += 1
        over = self.overflow.get((protocol, port))
        if over is None:
            over = self.overflow[(protocol, port)] = Overflow()
        over.arrivals += 1
        over.byte_count += size
        if source not in over.addresses:
            if len(over.addresses) < _OVERFLOW_ADDRESSES:
                over.addresses.add(source)
            else:
                over.more_addresses = True

    def loss(self, protocol: Transport, port: int, source: str | None, what: str, n: int = 1) -> None:
        """Count `n` of `what` lost, globally, per port and on the source's record."""
        if n <= 0:
            return
        self.drops[what] += n
        self.port_drops.setdefault((protocol, port), Counter())[what] += n
        rec = self.records.get((protocol, port, source)) if source is not None else None
        if rec is not None:
            rec.losses[what] += n

    def tags(self) -> list[tuple[SourceRecord, TagSeen]]:
        return [(rec, seen) for rec in self.records.values() for seen in rec.tags.values()]
