"""The one place that opens report destinations.

    with open_dest("out/report.html") as out:   # parent folders are created
        out.write(text)
    with open_dest("-") as out:                 # "-" or None: standard output (left open)
        out.write(text)

Formats never open files themselves: they receive the writer, so every format gets
the same folder creation, encoding and error handling (an OSError names the path).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator, TextIO


def is_stdout(dest: str | Path | None) -> bool:
    return dest is None or str(dest) == "-"


@contextlib.contextmanager
def open_dest(dest: str | Path | None, *, encoding: str = "utf-8", newline: str | None = None) -> Iterator[TextIO]:
    """A text writer for `dest`; standard output for None or "-" (never closed here)."""
    if is_stdout(dest):
        # A format that writes its own line ends (CSV's \r\n) would get \r\r\n from a Windows
        # console or pipe, which translates \n itself: hand it \n.
        out = _Stdout(sys.stdout, own_line_ends=newline == "" and os.linesep != "\n")
        yield out  # type: ignore[misc]  # the part of TextIO that formats use
        out.flush()
        return
    path = Path(str(dest))
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding=encoding, newline=newline) as fh:
        yield fh


def write_text(dest: str | Path | None, text: str, *, encoding: str = "utf-8") -> None:
    """Write a whole text to `dest` (standard output for None or "-")."""
    with open_dest(dest, encoding=encoding) as out:
        out.write(text)


class _Stdout:
    """Standard output that never fails on a character its encoding lacks (a Windows pipe is cp1252).

    The text is written with that character replaced ("?"), instead of the report being lost.
    """

    def __init__(self, stream: TextIO, *, own_line_ends: bool = False) -> None:
        self._stream = stream
        self._own_line_ends = own_line_ends

    def write(self, text: str) -> int:
        if self._own_line_ends:
            text = text.replace("\r\n", "\n")
        try:
            return self._stream.write(text)
        except UnicodeEncodeError:
            encoding = getattr(self._stream, "encoding", None) or "ascii"
            return self._stream.write(text.encode(encoding, "replace").decode(encoding, "replace"))

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return bool(getattr(self._stream, "isatty", lambda: False)())
