"""Report formats, registered by name. Each writes a report document and returns the exit code.

    @reporter("json")
    def write_json(doc: dict, dest: str | None) -> int: ...

Every format sees the same document and returns `report.exit_code(doc)`, so
they always agree on what failed.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable, Mapping

Writer = Callable[[Mapping[str, Any], "str | None"], int]
_REPORTERS: dict[str, Writer] = {}
_loaded = False


def reporter(name: str) -> Callable[[Writer], Writer]:
    def add(fn: Writer) -> Writer:
        if name in _REPORTERS and _REPORTERS[name] is not fn:
            raise ValueError(f"reporter {name!r} is already registered")
        _REPORTERS[name] = fn
        return fn

    return add


def reporters() -> Mapping[str, Writer]:
    global _loaded
    if not _loaded:
        for info in pkgutil.iter_modules(__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")
        _loaded = True
    return dict(_REPORTERS)


def get_reporter(name: str) -> Writer:
    return reporters()[name]
