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
    assert out == [a]  # the last frame is held until what follows shows its count was right
    assert f.flush() == [b]


def test_framer_splits_newline_frames_and_mixes_methods() -> None:
    f = TcpFramer()
    out = f.feed(b"<13>first\r\n<13>second\n12 <13>counted!")
    assert out + f.flush() == [b"<13>first", b"<13>second", b"<13>counted!"]


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


def _octet(msgs: list[bytes], wrong: dict[int, int] | None = None) -> bytes:
    """An octet-counted stream; `wrong[i]` adds to message i's count (a sender bug)."""
    wrong = wrong or {}
    return b"".join(str(len(m) + wrong.get(i, 0)).encode() + b" " + m for i, m in enumerate(msgs))


def _messages(n: int) -> list[bytes]:
    return [f"<13>1 2026-12-01T10:00:{i:02d}Z nas1 app - - - event {i} seq={i * 7}".encode() for i in range(n)]


def _feed_all(f: TcpFramer, stream: bytes, step: int) -> list[bytes]:
    out: list[bytes] = []
    for i in range(0, len(stream), step):
        out += f.feed(stream[i : i + step])
    return out + f.flush()


def test_a_count_too_large_costs_no_other_frame() -> None:
    msgs = _messages(31)
    for step in (1, 7, 100000):
        f = TcpFramer()
        out = _feed_all(f, _octet(msgs, {10: 5}), step)
        assert len(out) == 31 and f.miscounted == 1, step
        assert out[:10] == msgs[:10] and out[11:] == msgs[11:]
        assert out[10] == msgs[10]  # the header that follows shows where it really ends


def test_a_count_too_small_costs_no_other_frame() -> None:
    msgs = _messages(31)
    for step in (1, 13, 100000):
        f = TcpFramer()
        out = _feed_all(f, _octet(msgs, {10: -6}), step)
        assert len(out) == 31 and f.miscounted == 1, step
        assert out[:10] == msgs[:10] and out[11:] == msgs[11:]


def test_a_wildly_wrong_count_is_resynchronised() -> None:
    msgs = _messages(31)
    f = TcpFramer()
    out = _feed_all(f, _octet(msgs, {3: 99000}), 4096)
    assert len(out) == 31 and f.miscounted == 1 and f.truncated == 0


def test_last_count_too_small_at_close_is_one_message() -> None:
    msgs = _messages(3)
    f = TcpFramer()
    out = _feed_all(f, _octet(msgs, {2: -4}), 100000)
    assert len(out) == 3 and f.miscounted == 1


def test_a_frame_cut_by_close_is_truncated_not_a_message() -> None:
    msgs = _messages(5)
    stream = _octet(msgs)
    f = TcpFramer()
    out = _feed_all(f, stream[:-10], 100000)
    assert out == msgs[:4] and f.truncated == 1 and f.frames == 4
    f = TcpFramer()
    assert _feed_all(f, stream + b"12", 100000) == msgs  # a count cut in its digits
    assert f.truncated == 1


def test_an_unterminated_last_line_is_a_message_and_counted_as_such() -> None:
    f = TcpFramer()
    assert _feed_all(f, b"<13>one\n<13>two", 100000) == [b"<13>one", b"<13>two"]
    assert f.unterminated == 1 and f.truncated == 0


def test_trailers_after_octet_frames_are_not_junk() -> None:
    msgs = _messages(4)
    stream = b"".join(str(len(m)).encode() + b" " + m + b"\r\n" for m in msgs)
    f = TcpFramer()
    assert _feed_all(f, stream, 5) == msgs and f.miscounted == 0


def test_random_streams_never_raise_and_stay_bounded() -> None:
    rnd = __import__("random").Random(7)
    pieces = [b"12 ", b"<13>", b"\n", b"\x00", b"99999999 ", b"0 ", b"5 <1>", b"x" * 300, b"\r\n", b"31 <13>1 - "]
    for _ in range(300):
        f = TcpFramer(max_frame=512)
        stream = b"".join(rnd.choice(pieces) for _ in range(rnd.randrange(1, 60))) + os.urandom(rnd.randrange(0, 200))
        for i in range(0, len(stream), rnd.randrange(1, 50)):
            for frame in f.feed(stream[i : i + 50]):
                assert len(frame) <= 512
            assert f.buffered <= 512 + 50 + 16
        f.flush()
        assert f.buffered == 0
