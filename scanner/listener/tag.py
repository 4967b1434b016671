"""The test tag that `portready send` puts in what it sends and `portready listen` looks for.

    tag = new_tag("qumulo", "syslog-514")
    text = format_tag(tag)          # "portready-test 3f9c2a7d1e04b6a8 qumulo/syslog-514"
    find_tag(b"<14>1 ... " + text.encode())  == tag

The nonce ties an arrival to one run of `send`; the profile/row says which documented
row the sender meant (an ad-hoc port is written `port/tcp-9999`). Only this fixed,
printable shape is recognised: the listener never interprets anything else it receives.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

TAG_PREFIX = "portready-test"
_TAG_RE = re.compile(
    rb"portready-test ([0-9a-f]{8,32}) ([a-z0-9][a-z0-9-]{0,62})/([a-z0-9][a-z0-9-]{0,62})"
)
# Only the start of a message is searched: tags are short and `send` puts them early,
# and a flood of huge datagrams must not cost a full scan each.
SEARCH_WINDOW = 4096


@dataclass(frozen=True)
class Tag:
    nonce: str
    profile: str
    row: str

    @property
    def key(self) -> str:
        return f"{self.profile}/{self.row}"

    def __str__(self) -> str:
        return format_tag(self)


def new_tag(profile: str, row: str, nonce: str | None = None) -> Tag:
    """A fresh tag (a random 16-hex-digit nonce unless one is given)."""
    return Tag(nonce or secrets.token_hex(8), profile, row)


def port_row_id(protocol: str, port: int) -> str:
    """The row id used for an ad-hoc `--port`: `tcp-9999`."""
    return f"{protocol.lower()}-{port}"


def format_tag(tag: Tag) -> str:
    return f"{TAG_PREFIX} {tag.nonce} {tag.profile}/{tag.row}"


def find_tag(data: bytes | str) -> Tag | None:
    """The first tag in the start of `data`, or None."""
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    window = data[:SEARCH_WINDOW]
    if b"portready-test" not in window:  # fast path for floods of untagged traffic
        return None
    m = _TAG_RE.search(window)
    if m is None:
        return None
    return Tag(m.group(1).decode(), m.group(2).decode(), m.group(3).decode())
