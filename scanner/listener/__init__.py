"""The inbound side: a listener on the Auditor host, the sender for sources, capture, owners.

    syslog.py    RFC 5424 / 3164 parsing, RFC 6587 TCP framing (pure, bounded)
    tag.py       the test tag shared by `send` and `listen`
    server.py    Listener (UDP + TCP, IPv4 + IPv6): connection caps, deadlines, shedding
    store.py     the bounded ArrivalStore: records, samples, tags, losses per source
    matching.py  arrivals -> RowResults per inbound row x expected source, unexpected sources
    sender.py    tagged test traffic for `portready send`
    owners.py    which process holds a port
    capture.py   passive capture (scapy) for ports another process holds
"""

from __future__ import annotations

from scanner.listener.matching import ExpectedSource, InboundRow, MatchReport, match, plan_bindings, plan_inbound
from scanner.listener.server import ArrivalStore, Binding, Listener
from scanner.listener.syslog import SyslogMessage, TcpFramer, parse_syslog
from scanner.listener.tag import Tag, find_tag, format_tag, new_tag

__all__ = [
    "ArrivalStore",
    "Binding",
    "ExpectedSource",
    "InboundRow",
    "Listener",
    "MatchReport",
    "SyslogMessage",
    "Tag",
    "TcpFramer",
    "find_tag",
    "format_tag",
    "match",
    "new_tag",
    "parse_syslog",
    "plan_bindings",
    "plan_inbound",
]
