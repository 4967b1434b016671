"""JSON report: the report document itself (schema in the README)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Mapping

from scanner.report import exit_code
from scanner.reporters import reporter


@reporter("json")
def write_json(doc: Mapping[str, Any], dest: str | None) -> int:
    # Streamed chunk by chunk: with indent, json.dumps joins millions of small strings
    # first (over 100 MB for 20,000 checks); json.dump writes them as they come.
    if dest in (None, "-"):
        json.dump(doc, sys.stdout, indent=2, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
    else:
        with Path(dest).open("w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, ensure_ascii=False, default=str)
            fh.write("\n")
    return exit_code(doc)
