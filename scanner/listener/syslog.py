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


class TcpFramer:
    """Split a TCP syslog stream into messages (RFC 6587), holding at most `max_frame` bytes.

    Each frame decides its own method, as rsyslog does: a leading digit means octet
    counting (`LEN SP MSG`), anything else runs to the next LF (or NUL). A frame longer
    than `max_frame` is cut: its start is returned (`truncated` counts it) and the rest
    is discarded as it arrives, so a bogus count like 99999999999 or a line that never
    ends costs no more memory than one frame.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._discard = 0  # octet-counted bytes still to throw away
        self._discard_line = False  # throw away up to the next LF
        self.frames = 0
        self.truncated = 0
        self.discarded_bytes = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[bytes]:
        out: list[bytes] = []
        self._buf += chunk
        while self._buf:
            if self._discard:
                n = min(self._discard, len(self._buf))
                del self._buf[:n]
                self._discard -= n
                self.discarded_bytes += n
                continue
            if self._discard_line:
                nl = self._find_end()
                if nl < 0:
                    self.discarded_bytes += len(self._buf)
                    self._buf.clear()
                    break
                self.discarded_bytes += nl + 1
                del self._buf[: nl + 1]
                self._discard_line = False
                continue
            if self._buf[:1].isdigit():
                frame = self._octet_frame()
            else:
                frame = self._line_frame()
            if frame is None:
                break
            if frame:
                out.append(frame)
                self.frames += 1
        return out

    def _find_end(self) -> int:
        nl = self._buf.find(b"\n")
        nul = self._buf.find(b"\x00")
        ends = [i for i in (nl, nul) if i >= 0]
        return min(ends) if ends else -1

    def _octet_frame(self) -> bytes | None:
        sp = self._buf.find(b" ", 0, 12)
        if sp < 0:
            if len(self._buf) < 12 and self._buf.isdigit():
                return None  # the count is still arriving
            return self._line_frame()  # not a count after all: treat as a line
        digits = bytes(self._buf[:sp])
        if not digits.isdigit():
            return self._line_frame()
        count = int(digits)
        start = sp + 1
        if count <= self.max_frame:
            if len(self._buf) - start < count:
                return None
            frame = bytes(self._buf[start : start + count])
            del self._buf[: start + count]
            return frame
        # Bogus or huge count: keep the first max_frame bytes, discard the rest as it comes.
        if len(self._buf) - start < self.max_frame:
            return None
        frame = bytes(self._buf[start : start + self.max_frame])
        del self._buf[: start + self.max_frame]
        self._discard = count - self.max_frame
        self.truncated += 1
        return frame

    def _line_frame(self) -> bytes | None:
        end = self._find_end()
        if end >= 0:
            frame = bytes(self._buf[:end]).rstrip(b"\r")
            del self._buf[: end + 1]
            return frame
        if len(self._buf) >= self.max_frame:
            frame = bytes(self._buf[: self.max_frame])
            del self._buf[: self.max_frame]
            self._discard_line = True
            self.truncated += 1
            return frame
        return None

    def flush(self) -> bytes | None:
        """What is left when the peer closes (a last line without LF)."""
        if self._discard or self._discard_line or not self._buf:
            self._buf.clear()
            return None
        frame = bytes(self._buf[: self.max_frame])
        self._buf.clear()
        return frame
