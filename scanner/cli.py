"""The `portready` command: global handling around subcommands found in scanner/commands/.

Each module of scanner/commands defines `add_parser(subparsers)` and sets
`func(args) -> int` (the exit code) on its parser.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from scanner import __version__
from scanner.errors import PortreadyError
from scanner.report import EXIT_TOOL, EXIT_USAGE

# Order in `portready --help`; other command modules follow alphabetically.
_ORDER = ["profiles", "init", "plan", "scan", "listen", "send", "local", "report", "diff", "fix"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    import scanner.commands as commands

    parser = _Parser(
        prog="portready",
        description="Prove that the network lets a Netwrix Auditor server reach everything it audits.",
        epilog="Exit codes: 0 no row failed, 1 some row failed, 2 usage/inventory/profile error, 3 tool failure.",
    )
    parser.add_argument("--version", action="version", version=f"portready {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    names = sorted(
        (m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")),
        key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n),
    )
    for name in names:
        importlib.import_module(f"scanner.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except PortreadyError as exc:
        print(f"portready: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("portready: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: say it, exit 3
        print(f"portready: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_TOOL


def run() -> None:
    sys.exit(main())
