"""Probes: one module per protocol, each registering itself by name.

Adding a protocol is one new module here (plus its tests); nothing else
changes. `load_all()` imports every module of this package so their
`@register` decorators run.
"""

from __future__ import annotations

import importlib
import pkgutil

from scanner.probes.base import (
    Credentials,
    Outcome,
    Probe,
    ProbeContext,
    ProbeError,
    Settings,
    failed,
    get_probe,
    inconclusive,
    passed,
    register,
    registry,
    skipped,
    warned,
)

__all__ = [
    "Credentials",
    "Outcome",
    "Probe",
    "ProbeContext",
    "ProbeError",
    "Settings",
    "failed",
    "get_probe",
    "inconclusive",
    "load_all",
    "passed",
    "register",
    "registry",
    "skipped",
    "warned",
]

_NOT_PROBES = {"base", "netio"}
_loaded = False


def load_all() -> None:
    """Import every probe module once (cheap after the first call)."""
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _NOT_PROBES:
            continue
        importlib.import_module(f"{__name__}.{info.name}")
    _loaded = True
