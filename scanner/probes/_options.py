"""Typed probe options: a probe declares a frozen dataclass, and a profile's options are parsed once.

    @dataclass(frozen=True)
    class WinRmOptions:
        tls: bool | None = option(None, "TLS (HTTPS); default: on port 5986")
        path: str = option("/wsman", "the WS-Management path")

        def __post_init__(self) -> None:      # richer checks raise ValueError
            ...

    class WinRmProbe(Probe):
        Options = WinRmOptions
        async def run(self, ctx):
            opts = options_of(ctx, WinRmOptions)   # parsed at load, no cast

`parse_options` refuses unknown keys, wrong types and a bool where a number belongs, with the
words the hand-written checks used; `portready profiles --probes` prints `describe()`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def option(default: Any = dataclasses.MISSING, help: str = "") -> Any:  # noqa: A002 - the word a reader expects
    """A dataclass field with its default (none: required) and one line of help (`profiles --probes`)."""
    return dataclasses.field(default=default, metadata={"help": help})


class ParsedOptions(dict[str, Any]):
    """A check's options as the profile wrote them (plans and reports print these), carrying the
    probe's typed view parsed at load (`typed`; None when built elsewhere: parsed on first use)."""

    def __init__(self, raw: Any = (), typed: Any = None) -> None:
        super().__init__(raw)
        self.typed = typed


def _allowed(hint: Any) -> tuple[type, ...] | None:
    """The runtime types a hint admits; None: anything (the dataclass checks it itself)."""
    if hint is Any or hint is object:
        return None
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        out: list[type] = []
        for arg in typing.get_args(hint):
            sub = _allowed(arg)
            if sub is None:
                return None
            out.extend(sub)
        return tuple(out)
    if hint is None or hint is type(None):
        return (type(None),)
    if origin is not None:  # tuple[str, ...], list[int]: a YAML list
        return (list, tuple)
    return (hint,) if isinstance(hint, type) else None


def parse_options(probe: str, kind: type[T], raw: Mapping[str, Any]) -> T:
    """`raw` as `kind`, or ValueError in words a profile author acts on."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"probe {probe!r}: options must be a mapping, not {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(kind) if f.init}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in set(raw) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise ValueError(f"probe {probe!r} does not take option(s) {', '.join(map(repr, unknown))}; it takes: {known}")
    missing = [name for name, f in fields.items() if f.default is dataclasses.MISSING and name not in raw]
    if missing:
        raise ValueError(f"probe {probe!r} needs option(s) {', '.join(map(repr, missing))}")
    hints = typing.get_type_hints(kind)
    for key, value in raw.items():
        allowed = _allowed(hints[key])
        if allowed is None:
            continue
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            if set(allowed) <= {bool, type(None)}:
                raise ValueError(f"probe {probe!r}: option {key!r} must be true or false")
            raise ValueError(f"probe {probe!r}: option {key!r} has the wrong type ({type(value).__name__})")
    return kind(**raw)


def describe(kind: type) -> list[tuple[str, str, str]]:
    """(name, default, help) of each option, for `portready profiles --probes`."""
    out: list[tuple[str, str, str]] = []
    for f in dataclasses.fields(kind):
        if not f.init:  # derived in __post_init__ (e.g. parsed interface names)
            continue
        default = "required" if f.default is dataclasses.MISSING else repr(f.default)
        out.append((f.name, default, str(f.metadata.get("help", ""))))
    return out
