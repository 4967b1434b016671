"""Syslog parsing, RFC 6587 framing and the test tag: pure logic, hostile input included."""

from __future__ import annotations

import os

from scanner.listener.syslog import MAX_FRAME, MAX_MESSAGE, TcpFramer, parse_syslog
from scanner.listener.tag import find_tag, format_tag, new_tag


def test_rfc5424_fields_are_parsed_and_structured_data_skipped() -> None:
    raw = b'<165>1 2003-10-11T22:14:15.003Z nas1.lab qumulo 812 ID47 [ex@32473 iut="3" x="a\\]b"] \xef\xbb\xbfdisk full'
    msg = parse_syslog(raw)
    assert (msg.format, msg.facility, msg.severity) == ("rfc5424", 20, 5)
    assert (msg.host, msg.app, msg.procid, msg.msgid) == ("nas1.lab", "qumulo", "812", "ID47")
    assert msg.timestamp == "2003-10-11T22:14:15.003Z"
    assert msg.message == "disk full"


def test_rfc5424_nil_values_are_none() -> None:
    msg = parse_syslog(b"<13>1 - - - - - - bare")
    assert msg.format == "rfc5424"
    assert (msg.timestamp, msg.host, msg.app, msg.procid, msg.msgid) == (None, None, None, None, None)
    assert msg.message == "bare"


def test_rfc3164_with_host_tag_and_pid() -> None:
    msg = parse_syslog(b"<34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed for lonvick")
    assert (msg.format, msg.host, msg.app, msg.procid) == ("rfc3164", "mymachine", "su", "230")
    assert msg.message == "'su root' failed for lonvick"


def test_rfc3164_without_host_keeps_the_tag_as_app() -> None:
    msg = parse_syslog(b"<13>Jan  5 01:02:03 switch-core: port 7 down")
    assert msg.app == "switch-core" and msg.host is None
    assert msg.message == "port 7 down"


def test_text_without_priority_is_kept_as_unknown() -> None:
    msg = parse_syslog(b"hello there")
    assert msg.format == "unknown" and msg.message == "hello there" and msg.facility is None


def test_priority_out_of_range_is_not_syslog() -> None:
    assert parse_syslog(b"<999>1 - - - - - - x").format == "unknown"


def test_invalid_utf8_and_control_characters_become_visible_text() -> None:
    msg = parse_syslog(b"<13>1 - h app - - - bad \xff\xfe bytes \x1b[31m red \x00")
    assert "\ufffd" in msg.message
    assert "\x1b" not in msg.message and "\\x1b" in msg.message


def test_binary_garbage_never_raises() -> None:
    for _ in range(200):
        data = os.urandom(int.from_bytes(os.urandom(2), "big") % 3000)
        msg = parse_syslog(data)
        assert len(msg.message) <= MAX_MESSAGE
    for data in (b"<", b"<1", b"<13>", b"<13>1", b"<13>1 ", b"<13>1 - - - - - [unterminated", b"\x00" * 10):
        parse_syslog(data)


def test_huge_message_is_bounded_and_marked_truncated() -> None:
    msg = parse_syslog(b"<13>1 - h app - - - " + b"A" * (MAX_FRAME * 3))
    assert msg.truncated and len(msg.message) <= MAX_MESSAGE and msg.length > MAX_FRAME


def test_framer_splits_octet_counted_frames_across_chunks() -> None:
    f = TcpFramer()
    a, b = b"<13>1 - h a - - - one", b"<13>1 - h a - - - two two"
    stream = f"{len(a)} ".encode() + a + f"{len(b)} ".encode() + b
    out: list[bytes] = []
    for i in range(len(stream)):  # one byte at a time: the worst split
        out += f.feed(stream[i : i + 1])
    assert out == [a, b]


def test_framer_splits_newline_frames_and_mixes_methods() -> None:
    f = TcpFramer()
    out = f.feed(b"<13>first\r\n<13>second\n12 <13>counted!")
    assert out == [b"<13>first", b"<13>second", b"<13>counted!"]


def test_bogus_octet_count_costs_one_frame_at_most() -> None:
    f = TcpFramer(max_frame=1024)
    out = f.feed(b"99999999999 " + b"x" * 5000)
    assert out == [b"x" * 1024]
    assert f.truncated == 1 and f.buffered == 0
    for _ in range(100):
        assert f.feed(b"y" * 10000) == []  # still inside the bogus frame: discarded
        assert f.buffered == 0


def test_never_ending_line_is_cut_and_memory_stays_bounded() -> None:
    f = TcpFramer(max_frame=4096)
    frames = f.feed(b"<13>" + b"z" * 10000)
    assert len(frames) == 1 and len(frames[0]) == 4096
    for _ in range(1000):
        f.feed(b"z" * 65536)
        assert f.buffered <= 4096
    assert f.feed(b"end\n<13>next\n") == [b"<13>next"]


def test_digits_without_a_space_fall_back_to_line_framing() -> None:
    f = TcpFramer()
    assert f.feed(b"1234567890123456 not a count\n") == [b"1234567890123456 not a count"]


def test_tag_round_trips_and_is_found_inside_syslog() -> None:
    tag = new_tag("qumulo", "syslog-514")
    line = f"<13>1 - nas1 portready - - - {format_tag(tag)} seq=0".encode()
    assert find_tag(line) == tag
    assert find_tag(b"portready-test nothex qumulo/syslog-514") is None
    assert find_tag(b"<13> no tag here") is None
