"""Probes: one module per protocol, each registering itself by name.

Adding a protocol is one new module here (plus its tests); nothing else
changes (README "Extending" shows one). `load_all()` (in `_discovery`) imports
every module of this package so their `@register` decorators run. The wire
codecs they speak with live in `scanner/wire/`.
"""

from __future__ import annotations

from scanner.probes._discovery import load_all
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
