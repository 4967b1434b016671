"""JSON report: the report document itself (schema in the README), written as it is encoded.

The document's values are the contract, not its layout. The top level has one member per
line; a member that is an object or array (`rows`, `findings`, `summary`...) has one
member or element per line beneath it, each encoded by the C encoder on that one line.
That streams (a large scan is never held twice: once as objects, once as one huge
string) and is ~10x faster than `json.dump(..., indent=2)`, whose pure-Python encoder
yields one chunk per token.

JSON escapes C0 controls itself; C1 controls and bidi/format characters are escaped
here too (same meaning once parsed), so `--json -` cannot drive the terminal it is
printed on.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any, Mapping, TextIO

from scanner.reporters import RenderOptions, reporter

_RAW = re.compile("[\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]")

# One line per value: the C encoder (json only uses it when indent is None), same options
# as the report always had (non-ASCII kept as is, unknown objects as their str()).
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str, separators=(", ", ": "))
_BATCH = 1 << 16  # characters gathered before one write


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _member(key: Any, item: Any) -> str:
    """`"key": value`, the key coerced as the encoder does (int, float, bool, None)."""
    return _ENCODER.encode({key: item})[1:-1]


def _chunks(value: Any) -> Iterator[str]:
    """The JSON text of `value` in pieces; two levels of structure laid out one item per line."""
    if not isinstance(value, dict):
        yield _ENCODER.encode(value)
        return
    if not value:
        yield "{}"
        return
    yield "{"
    sep = "\n  "
    for key, item in value.items():
        if isinstance(item, (dict, list, tuple)) and item:
            is_dict = isinstance(item, dict)
            lines = (_member(k, v) for k, v in item.items()) if isinstance(item, dict) else map(_ENCODER.encode, item)
            yield f"{sep}{_member(key, 0)[:-1]}{'{' if is_dict else '['}"
            inner = "\n    "
            for line in lines:
                yield inner + line
                inner = ",\n    "
            yield "\n  }" if is_dict else "\n  ]"
        else:
            yield sep + _member(key, item)
        sep = ",\n  "
    yield "\n}"


def _write(value: Any, out: TextIO) -> None:
    """`value` as JSON text to `out` with the escapes above, a batch of lines at a time."""
    batch: list[str] = []
    size = 0
    for chunk in _chunks(value):
        batch.append(chunk)
        size += len(chunk)
        if size >= _BATCH:
            out.write(_RAW.sub(_escape, "".join(batch)))
            batch, size = [], 0
    batch.append("\n")
    out.write(_RAW.sub(_escape, "".join(batch)))


def json_text(value: Any) -> str:
    """`value` as JSON text with the same layout and escapes as the JSON report (for `diff --json`)."""
    buf = io.StringIO()
    _write(value, buf)
    return buf.getvalue()


@reporter("json", flag="--json", help="write the JSON report")
def render_json(doc: Mapping[str, Any], out: TextIO, options: RenderOptions) -> None:
    _write(doc, out)
