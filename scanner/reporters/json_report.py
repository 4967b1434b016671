"""JSON report: the report document itself (schema in the README), written as it is encoded.

`json.dump` streams the encoder's chunks to the writer, so a large scan is never held
twice (once as objects, once as one huge string). JSON escapes C0 controls itself;
C1 controls and bidi/format characters are escaped here too (same meaning once
parsed), so `--json -` cannot drive the terminal it is printed on.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any, Mapping, TextIO

from scanner.reporters import RenderOptions, reporter

_RAW = re.compile("[\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]")


class _EscapingWriter:
    """Writes encoder chunks with the characters above as \\uXXXX escapes (valid JSON, same value)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, chunk: str) -> int:
        return self._out.write(_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", chunk))


def json_text(value: Any) -> str:
    """`value` as indented JSON text with the same escapes as the JSON report (for `diff --json`)."""
    buf = io.StringIO()
    json.dump(value, _EscapingWriter(buf), indent=2, ensure_ascii=False, default=str)
    return buf.getvalue() + "\n"


@reporter("json", flag="--json", help="write the JSON report")
def render_json(doc: Mapping[str, Any], out: TextIO, options: RenderOptions) -> None:
    json.dump(doc, _EscapingWriter(out), indent=2, ensure_ascii=False, default=str)
    out.write("\n")
