"""Syslog parsing (RFC 5424, RFC 3164) and TCP framing (RFC 6587), bounded and lenient.

    msg = parse_syslog(b"<14>1 2024-05-01T10:00:00Z nas1 qumulo - - - hello")
    msg.format, msg.host, msg.app, msg.message      # "rfc5424", "nas1", "qumulo", "hello"

    framer = TcpFramer(max_frame=65536)
    for frame in framer.feed(chunk): ...            # octet-counted or newline-framed

Devices deviate from both RFCs, so the parser never raises: what it cannot read is
kept as the message, with `format` "unknown". Nothing received is ever interpreted
beyond splitting it into these fields; every field is length-bounded text (invalid
UTF-8 is replaced), and the framer never holds more than `max_frame` bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_FIELD = 255  # host, app, procid, msgid: RFC 5424 allows at most 255 (host), 48 (app)
MAX_MESSAGE = 2048  # what a report shows of one message
MAX_FRAME = 64 * 1024  # RFC 5424 receivers must accept 480 octets, SHOULD 2048; UDP max is 64 KiB
_MONTHS = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
_PRI = re.compile(rb"^<(\d{1,3})>")
_BSD_TS = re.compile(rf"^(?:{_MONTHS}) [ 0-3]\d \d\d:\d\d:\d\d(?:\.\d+)?(?: \d{{4}})? ")
_ISO_TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)? ")
_BSD_TAG = re.compile(r"^([^\s:\[\]]{1,48})(?:\[([^\]\s]{0,128})\])?:? ?")


@dataclass(frozen=True)
class SyslogMessage:
    """One parsed message; every text field is bounded and safe to keep as data."""

    format: str  # "rfc5424", "rfc3164" or "unknown"
    facility: int | None
    severity: int | None
    timestamp: str | None
    host: str | None
    app: str | None
    procid: str | None
    msgid: str | None
    message: str
    length: int  # bytes received for this message (before any truncation)
    truncated: bool = False

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"syslog_format": self.format, "message": self.message}
        for name in ("host", "app", "timestamp", "facility", "severity", "procid", "msgid"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.truncated:
            out["truncated"] = True
        return out


def _text(data: bytes, limit: int) -> str:
    text = data[: limit * 4].decode("utf-8", "replace")
    if text.startswith("\ufeff"):  # RFC 5424 MSG may start with a BOM
        text = text[1:]
    # Control characters are kept as visible escapes: a message is data, not terminal input.
    text = "".join(ch if ch.isprintable() or ch == " " else f"\\x{ord(ch):02x}" for ch in text[:limit])
    return text[:limit]


def _nil(value: str) -> str | None:
    return None if value in ("-", "") else value[:MAX_FIELD]


def _skip_structured_data(text: str) -> str:
    """Text after RFC 5424 STRUCTURED-DATA ('-' or [id k="v"]...); escapes \\] \\" \\\\ honoured."""
    if text.startswith("-"):
        return text[1:].lstrip(" ")
    i, n = 0, len(text)
    while i < n and text[i] == "[":
        in_quotes = False
        i += 1
        while i < n:
            ch = text[i]
            if ch == "\\" and in_quotes:
                i += 2
                continue
            if ch == '"':
                in_quotes = not in_quotes
            elif ch == "]" and not in_quotes:
                i += 1
                break
            i += 1
    return text[i:].lstrip(" ")


def parse_syslog(data: bytes, max_message: int = MAX_MESSAGE) -> SyslogMessage:
    """Parse one syslog message; never raises, whatever `data` holds."""
    length = len(data)
    truncated = length > MAX_FRAME
    data = data[:MAX_FRAME].rstrip(b"\r\n\x00")
    m = _PRI.match(data)
    if m is None or int(m.group(1)) > 191:
        return SyslogMessage("unknown", None, None, None, None, None, None, None,
                             _text(data, max_message), length, truncated)  # fmt: skip
    pri = int(m.group(1))
    facility, severity = pri >> 3, pri & 7
    rest = data[m.end():]
    if rest[:2] == b"1 ":
        parts = rest[2:].split(b" ", 5)
        if len(parts) == 6:
            f_ts, f_host, f_app, f_procid, f_msgid, tail = (p.decode("utf-8", "replace") for p in parts)
            message = _skip_structured_data(tail)
            return SyslogMessage(
                "rfc5424", facility, severity, _nil(f_ts), _nil(_text(f_host.encode(), MAX_FIELD)),
                _nil(_text(f_app.encode(), 48)), _nil(_text(f_procid.encode(), 128)),
                _nil(_text(f_msgid.encode(), 32)),
                _text(message.encode("utf-8", "replace"), max_message), length, truncated,
            )  # fmt: skip
    text = rest[: max_message * 4 + 512].decode("utf-8", "replace")
    timestamp: str | None = None
    ts = _BSD_TS.match(text) or _ISO_TS.match(text)
    if ts is not None:
        timestamp = ts.group(0).strip()
        text = text[ts.end():]
    host: str | None = None
    first, _, after = text.partition(" ")
    # "host tag: msg" or "tag: msg" (many devices omit the host).
    if ts is not None and first and not first.endswith(":") and "[" not in first and after:
        host = _text(first.encode(), MAX_FIELD)
        text = after
    app: str | None = None
    procid: str | None = None
    tag = _BSD_TAG.match(text)
    if tag is not None and (tag.group(0).rstrip().endswith(":") or tag.group(2) is not None):
        app = _text(tag.group(1).encode(), 48)
        procid = tag.group(2)
        text = text[tag.end():]
    return SyslogMessage(
        "rfc3164", facility, severity, timestamp, host, app, procid, None,
        _text(text.encode("utf-8", "replace"), max_message), length, truncated,
    )  # fmt: skip


# A frame header inside an octet-counted stream: "LEN SP <PRI>", LEN not glued to a digit.
_FRAME_START = re.compile(rb"(?<![0-9])([1-9][0-9]{0,9}) <[0-9]{1,3}>")
# What may follow a correctly counted frame: the next header (or its start), a line
# frame, a trailer some senders add (LF, CRLF, NUL), or nothing yet.
_GOOD_FOLLOWER = re.compile(rb"[1-9][0-9]{0,9} <[0-9]{1,3}>|<[0-9]{1,3}>|[\r\n\x00]")
_FOLLOWER_PREFIX = re.compile(rb"[1-9][0-9]{0,9}(?: (?:<[0-9]{0,3})?)?|<[0-9]{0,3}|")
_TRAILER = b"\r\n\x00"


class TcpFramer:
    """Split a TCP syslog stream into messages (RFC 6587), holding at most `max_frame` bytes.

    Each frame decides its own method, as rsyslog does: a leading digit means octet
    counting (`LEN SP MSG`), anything else runs to the next LF (or NUL). A frame longer
    than `max_frame` is cut: its start is returned (`truncated` counts it) and the rest
    is discarded as it arrives, so a bogus count like 99999999999 or a line that never
    ends costs no more memory than one frame.

    A wrong octet count is detected when the count does not land on the next frame
    (`LEN SP <PRI>`): too large, the next header shows up inside the claimed frame; too
    small, the rest of the message shows up where a header should be. The frame is then
    cut at the next header, returned once and counted in `miscounted`, and framing goes
    on from there, so one bad count costs no other message. When the peer closes,
    `flush()` returns a last line without LF (counted in `unterminated`) but never the
    start of an octet-counted frame that did not arrive whole (counted in `truncated`).
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._pos = 0  # start of the unconsumed data in _buf
        self._discard = 0  # octet-counted bytes still to throw away
        self._discard_line = False  # throw away up to the next LF
        self._junk = False  # after a bad count: skipping to the next frame header
        self._octet = False  # this stream has used octet counting
        self._final = False  # the peer closed: what is whole is a frame
        self._scanned = 0  # how far the pending frame was already searched (no rescans on drips)
        self.frames = 0
        self.truncated = 0
        self.miscounted = 0
        self.unterminated = 0
        self.discarded_bytes = 0

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    @property
    def in_frame(self) -> bool:
        """A frame has begun and not ended (held, or being discarded past max_frame)."""
        return self.buffered > 0 or bool(self._discard) or self._discard_line or self._junk

    def feed(self, chunk: bytes) -> list[bytes]:
        out: list[bytes] = []
        if self._discard and not self.buffered:
            n = min(self._discard, len(chunk))  # the common case of a bogus count: no copy
            self._discard -= n
            self.discarded_bytes += n
            chunk = chunk[n:]
        self._buf += chunk
        while self._pos < len(self._buf):
            if self._discard:
                n = min(self._discard, len(self._buf) - self._pos)
                self._pos += n
                self._discard -= n
                self.discarded_bytes += n
                continue
            if self._discard_line:
                end = self._find_end(self._pos)
                if end < 0:
                    self.discarded_bytes += len(self._buf) - self._pos
                    self._pos = len(self._buf)
                    break
                self.discarded_bytes += end + 1 - self._pos
                self._pos = end + 1
                self._discard_line = False
                continue
            first = self._buf[self._pos]
            if self._octet and first in _TRAILER:
                self._pos += 1  # LF / CRLF / NUL after an octet-counted frame
                continue
            if self._junk or (self._octet and not (48 <= first <= 57 or first == 60)):
                if not self._skip_junk():
                    break
                continue
            frame = self._octet_frame() if 48 <= first <= 57 else self._line_frame()
            if frame is None:
                break
            if frame:
                out.append(frame)
                self.frames += 1
        self._compact()
        return out

    def _compact(self) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._scanned = max(0, self._scanned - self._pos)
            self._pos = 0

    def _find_end(self, start: int) -> int:
        nl = self._buf.find(b"\n", start)
        nul = self._buf.find(b"\x00", start, nl if nl >= 0 else len(self._buf))
        return nul if nul >= 0 else nl

    def _take(self, start: int, end: int, resume: int) -> bytes:
        frame = bytes(self._buf[start:end])
        self._pos = resume
        self._scanned = 0
        return frame

    def _skip_junk(self) -> bool:
        """Bytes where a header belongs: the tail of a miscounted message. Skip to a header."""
        if not self._junk:
            self._junk = True
            self.miscounted += 1
        m = _FRAME_START.search(self._buf, max(self._pos, self._scanned - 16))
        if m is None:
            keep = min(len(self._buf) - self._pos, 16)  # a header may be arriving
            if len(self._buf) - self._pos - keep > 0:
                self.discarded_bytes += len(self._buf) - self._pos - keep
                self._pos = len(self._buf) - keep
            return False
        at = self._header_at(m)
        if at is None:
            return False
        self.discarded_bytes += at - self._pos
        self._pos = at
        self._junk = False
        return True

    def _resync(self, start: int, at: int) -> bytes:
        """The count was wrong: the frame runs to the header found at `at`."""
        self.miscounted += 1
        if at - start > self.max_frame:
            self.truncated += 1
            self.discarded_bytes += at - start - self.max_frame
            return self._take(start, start + self.max_frame, at)
        return self._take(start, at, at)

    def _octet_frame(self) -> bytes | None:
        buf, pos = self._buf, self._pos
        sp = buf.find(b" ", pos, pos + 12)
        if sp < 0:
            if len(buf) - pos < 12 and buf[pos:].isdigit():
                return None  # the count is still arriving
            return self._line_frame()  # not a count after all: treat as a line
        digits = bytes(buf[pos:sp])
        if not digits.isdigit():
            return self._line_frame()
        count = int(digits)
        start = sp + 1
        self._octet = True
        end = start + count
        limit = start + min(count, self.max_frame)
        # Too large a count: the next header shows inside the claimed frame (a header may
        # straddle the claimed end, hence the 16 bytes past it).
        m = _FRAME_START.search(buf, max(start + 1, self._scanned - 16), min(len(buf), limit + 16))
        if m is not None and m.start() < limit and not (m.start() < end < m.end(1) and buf[end] != 48):
            # ('seq=21' + '55 <13>' reads as '2155 <13>': a header at the claimed end is fine)
            at = self._header_at(m)
            return None if at is None else self._resync(start, at)
        self._scanned = max(self._scanned, min(len(buf), limit))
        if count > self.max_frame:
            # Bogus or huge count: keep the first max_frame bytes, discard the rest as it comes.
            if len(buf) < limit:
                return None
            self._discard = count - self.max_frame
            self.truncated += 1
            return self._take(start, limit, limit)
        if len(buf) < end:
            return None
        follower = bytes(buf[end : end + 16])
        if _GOOD_FOLLOWER.match(follower):
            return self._take(start, end, end)
        if len(follower) < 16 and _FOLLOWER_PREFIX.fullmatch(follower):
            if self._final:
                return self._take(start, end, end)
            return None  # cannot tell yet whether the count was right
        # Too small a count: the rest of the message sits where the next header belongs.
        m = _FRAME_START.search(buf, max(end, self._scanned - 16), start + self.max_frame + 16)
        if m is not None:
            at = self._header_at(m)
            return None if at is None else self._resync(start, at)
        self._scanned = len(buf)
        if self._final:
            self.miscounted += 1
            return self._take(start, len(buf), len(buf))
        if len(buf) - start >= self.max_frame:
            self.truncated += 1
            self._junk = True
            self.miscounted += 1
            return self._take(start, start + self.max_frame, start + self.max_frame)
        return None

    def _header_at(self, m: re.Match[bytes]) -> int | None:
        """Where a found header really starts: 'seq=7055 <13>' is 'seq=70' + '55 <13>'.

        Each split of the digits is tried: the right one's count lands on the next header
        (or the end of the stream). None: cannot tell until more arrives.
        """
        digits = m.group(1)
        unsure = False
        for skip in range(len(digits)):
            at = m.start() + skip
            if self._buf[at] == 48:
                continue
            count = int(digits[skip:])
            nxt = at + len(digits) - skip + 1 + count
            if _GOOD_FOLLOWER.match(self._buf, nxt) or (self._final and nxt == len(self._buf)):
                return at
            if nxt + 16 > len(self._buf) and count <= self.max_frame:
                unsure = True
        if unsure and not self._final and self.buffered < 2 * self.max_frame:
            return None
        return m.start()

    def _line_frame(self) -> bytes | None:
        pos = self._pos
        end = self._find_end(max(pos, self._scanned))
        if end < 0:
            self._scanned = len(self._buf)
        if end >= 0 and end - pos <= self.max_frame:
            frame = self._take(pos, end, end + 1)
            return frame.rstrip(b"\r") or b""
        if end >= 0 or len(self._buf) - pos >= self.max_frame:
            frame = self._take(pos, pos + self.max_frame, pos + self.max_frame)
            self._discard_line = True
            self.truncated += 1
            return frame
        return None

    def flush(self, cut: bool = False) -> list[bytes]:
        """What is left when the stream ends: the frames still held, a last line without LF.

        The start of an octet-counted frame that did not arrive whole is counted as
        truncated, never returned as a message; so is the start of an over-long line, and
        with `cut` (we end the stream: a deadline, a cap, stopping) a line without LF.
        """
        self._final = True
        out = self.feed(b"")
        rest = bytes(self._buf[self._pos :]).strip(_TRAILER) if self._octet else bytes(self._buf[self._pos :])
        self._buf.clear()
        self._pos = self._scanned = 0
        if not rest:
            return out
        if self._discard or self._discard_line or self._junk:
            self.discarded_bytes += len(rest)
        elif self._octet or rest[:1].isdigit() or cut:
            self.truncated += 1  # an octet-counted frame cut short (or its count)
            self.discarded_bytes += len(rest)
        else:
            self.unterminated += 1
            self.frames += 1
            out.append(rest[: self.max_frame].rstrip(b"\r"))
        return out
