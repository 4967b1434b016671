"""Extract the port tables of the vendor's ports document into reference_tables.json.

The catalogue test compares profiles/ with the frozen JSON, so the project's
tests pass in a clone without the reference document; when the document is
present, the test re-runs `extract()` and fails if the two have drifted.

Usage (from the repository root)::

    python tests/data/extract_reference_tables.py [REFERENCE.md] > tests/data/reference_tables.json

A port table is a markdown table whose header is exactly Port | Protocol |
Source | Target | Purpose; other tables of the document (firewall commands,
wizard settings) are not port tables. A row whose only non-empty cell is the
Port cell is a sub-header ("Dell Isilon", "Exchange Online"): it is not a row,
it names the group of the rows below it.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HEADER = ["Port", "Protocol", "Source", "Target", "Purpose"]
FIELDS = ["port", "protocol", "source", "target", "purpose"]
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_RULE = re.compile(r"^:?-{3,}:?$")
_PIPE = re.compile(r"(?<!\\)\|")  # a cell separator is a pipe not escaped by a backslash


def _cells(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [cell.strip() for cell in _PIPE.split(inner)]


def extract(text: str) -> list[dict[str, str | None]]:
    """Every row of every port table, in document order, with its section and group."""
    rows: list[dict[str, str | None]] = []
    section = ""
    lines = text.splitlines()
    i = 0
    in_fence = False
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        heading = None if in_fence else _HEADING.match(line)
        if heading:
            section = heading.group(2).strip()
            i += 1
            continue
        if not in_fence and line.lstrip().startswith("|") and _cells(line) == HEADER:
            if i + 1 >= len(lines) or not all(_RULE.match(c) for c in _cells(lines[i + 1])):
                raise ValueError(f"line {i + 1}: port table header without a separator row")
            group: str | None = None
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                cells = _cells(lines[i])
                if len(cells) != len(HEADER):
                    raise ValueError(f"line {i + 1}: {len(cells)} cells, expected {len(HEADER)}")
                if cells[0] and not any(cells[1:]):
                    group = cells[0]
                else:
                    rows.append({"section": section, "group": group, **dict(zip(FIELDS, cells, strict=True))})
                i += 1
            continue
        i += 1
    return rows


def main(argv: list[str]) -> int:
    default = Path(__file__).resolve().parents[3] / "shared/reference/ports-and-protocols.md"
    source = Path(argv[1]) if len(argv) > 1 else default
    rows = extract(source.read_text(encoding="utf-8"))
    json.dump(rows, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
