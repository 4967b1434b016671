"""Our secrets never leave in a report, whatever a peer echoes back.

A proxy that repeats the Proxy-Authorization header, or a server that quotes the bind
request, would otherwise put a password in the detail or the evidence of a check.
Every check result passes through `scrub` (in the engine) with the fragments of every
secret this run holds: the passwords, `user:password`, its Base64 (the Basic token),
URL-encoded and hex forms, and 8-character windows of each, so a clipped or partly
echoed secret is caught too. Matching ignores case; a match is widened to the whole
run of token characters around it, so no tail of a secret survives next to the mark.

    fragments = secret_fragments(settings)
    detail = scrub(detail, fragments)
"""

from __future__ import annotations

import base64
import functools
import os
import re
from typing import Any, Iterable
from urllib.parse import quote, unquote, urlsplit

from scanner.probes.base import Settings

REDACTED = "[redacted]"
_WINDOW = 8
# The characters a token (Base64, hex, URL-encoded, a password) is made of: a match grows
# over them, so what remains beside the mark is never a piece of the secret.
_TOKEN_CHARS = re.compile(r"[^\s\"'<>(),;\[\]{}]")


def _proxy_secrets(url: str | None) -> list[tuple[str, str]]:
    if not url or "@" not in url:
        return []
    try:
        parts = urlsplit(url if "://" in url else "http://" + url)
    except ValueError:
        return []
    if parts.password is None:
        return []
    return [(unquote(parts.username or ""), unquote(parts.password))]


def _variants(username: str, password: str) -> set[str]:
    if not password:
        return set()
    pair = f"{username}:{password}"
    forms = {pair, base64.b64encode(pair.encode()).decode()}
    if len(password) >= 4:  # a shorter one alone would match ordinary words; its pair still counts
        forms |= {password, quote(password, safe=""), password.encode("utf-16-le").hex()}  # UTF-16: NTLM
    forms |= {f.encode().hex() for f in list(forms)}
    return {f for f in forms if f}


@functools.lru_cache(maxsize=32)
def _fragments(pairs: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    out: set[str] = set()
    for username, password in pairs:
        for form in _variants(username, password):
            out.add(form.lower())
            if len(form) > _WINDOW:
                out.update(form[i : i + _WINDOW].lower() for i in range(len(form) - _WINDOW + 1))
    return tuple(sorted(out, key=len, reverse=True))


def secret_fragments(settings: Settings) -> tuple[str, ...]:
    """What must never appear in a result of this run (lower case, longest first)."""
    pairs = [(c.username, c.password) for c in settings.credentials.values() if getattr(c, "password", None)]
    proxy = settings.proxy or os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    pairs += _proxy_secrets(proxy)
    return _fragments(tuple(pairs))


@functools.lru_cache(maxsize=32)
def _pattern(fragments: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(f) for f in fragments), re.IGNORECASE)


def _scrub_text(text: str, fragments: tuple[str, ...]) -> str:
    lowered = text.lower()
    if not any(f in lowered for f in fragments):
        return text
    spans: list[tuple[int, int]] = []
    pattern = _pattern(fragments)
    pos = 0
    while (m := pattern.search(text, pos)) is not None:
        start, end = m.start(), max(m.end(), m.start() + 1)
        while start > 0 and _TOKEN_CHARS.match(text[start - 1]):
            start -= 1
        while end < len(text) and _TOKEN_CHARS.match(text[end]):
            end += 1
        spans.append((start, end))
        pos = end
    out, last = [], 0
    for start, end in spans:
        out.append(text[last:start])
        out.append(REDACTED)
        last = end
    out.append(text[last:])
    return "".join(out)


def scrub(value: Any, fragments: Iterable[str]) -> Any:
    """`value` (text, or JSON-like data) with every secret fragment replaced by [redacted]."""
    frags = tuple(fragments)
    if not frags:
        return value
    if isinstance(value, str):
        return _scrub_text(value, frags)
    if isinstance(value, dict):
        return {scrub(k, frags): scrub(v, frags) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, frags) for v in value]
    return value
