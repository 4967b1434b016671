"""Report formats, registered by name. A format renders a document to the writer it is given.

    @reporter("csv", flag="--csv", help="write a CSV report", encoding="utf-8-sig", newline="")
    def render_csv(doc: Mapping[str, Any], out: TextIO, options: RenderOptions) -> None: ...

    get_reporter("csv")(doc, "out/report.csv")   # opens the file (_out.open_dest), renders, returns the exit code

Adding a format is its module here and its test: the module registers itself, the CLI's
report options (`scan`, `listen`, `local`, `report`) are built from this registry, and the
exit code comes from the document (`report.exit_code`), so no format can disagree on it.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

from scanner.report import exit_code
from scanner.reporters._out import open_dest


@dataclass(frozen=True)
class RenderOptions:
    """How the user asked for the output (the console reads them; file formats mostly do not)."""

    verbose: bool = False  # the console prints every row x target, not only findings
    width: int | None = None  # the console's line width; None: the terminal's, or no wrapping off a terminal


Render = Callable[[Mapping[str, Any], TextIO, RenderOptions], None]


@dataclass(frozen=True)
class Format:
    """A registered report format. Calling it writes `doc` to `dest` and returns the exit code."""

    name: str
    render: Render
    flag: str | None  # the CLI option that asks for it; None: not chosen by a flag (the console)
    help: str
    encoding: str = "utf-8"
    newline: str | None = None

    def write(self, doc: Mapping[str, Any], dest: str | Path | None, options: RenderOptions | None = None) -> int:
        with open_dest(dest, encoding=self.encoding, newline=self.newline) as out:
            self.render(doc, out, options or RenderOptions())
        return exit_code(doc)

    def __call__(self, doc: Mapping[str, Any], dest: str | Path | None, options: RenderOptions | None = None) -> int:
        return self.write(doc, dest, options)

    @property
    def dest_attr(self) -> str:
        """The argparse attribute of the flag (--html -> html)."""
        return (self.flag or self.name).lstrip("-").replace("-", "_")


_FORMATS: dict[str, Format] = {}
_loaded = False


def reporter(name: str, *, flag: str | None = None, help: str = "", encoding: str = "utf-8",  # noqa: A002
             newline: str | None = None) -> Callable[[Render], Render]:
    """Register a format under `name` (a name is taken once); `flag` is its CLI option."""

    def add(fn: Render) -> Render:
        existing = _FORMATS.get(name)
        if existing is not None and existing.render is not fn:
            raise ValueError(f"reporter {name!r} is already registered")
        if flag is not None and any(f.flag == flag and f.name != name for f in _FORMATS.values()):
            raise ValueError(f"report flag {flag!r} is already taken")
        _FORMATS[name] = Format(name, fn, flag, help, encoding, newline)
        return fn

    return add


def unregister(name: str) -> None:
    """Remove a format (for tests that register a throwaway one)."""
    _FORMATS.pop(name, None)


def reporters() -> Mapping[str, Format]:
    """Every format, after importing every module of this package."""
    global _loaded
    if not _loaded:
        for info in pkgutil.iter_modules(__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")
        _loaded = True
    return dict(_FORMATS)


def get_reporter(name: str) -> Format:
    return reporters()[name]


def file_formats() -> list[Format]:
    """The formats the CLI offers as options, in registration order."""
    return [f for f in reporters().values() if f.flag]


def render_text(name: str, doc: Mapping[str, Any], options: RenderOptions | None = None) -> str:
    """A format's output as a string (tests, `diff`, pages that embed another format)."""
    import io

    buf = io.StringIO()
    get_reporter(name).render(doc, buf, options or RenderOptions())
    return buf.getvalue()


__all__ = ["Format", "Render", "RenderOptions", "file_formats", "get_reporter", "render_text", "reporter",
           "reporters", "unregister"]
