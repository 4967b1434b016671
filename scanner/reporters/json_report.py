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
    text = json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n"
    if dest in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(dest).write_text(text, encoding="utf-8")
    return exit_code(doc)
