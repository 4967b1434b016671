"""The `portready` command: global handling around subcommands found in scanner/commands/.

Each module of scanner/commands defines `add_parser(subparsers)` and sets
`func(args) -> int` (the exit code) on its parser.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI; with `command` (the one argv names), only that command's options are
    built and the others are bare names: a scan does not import every other command."""
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
        if command in names and name != command:
            sub.add_parser(name)  # never parsed: argv names another command
        else:
            importlib.import_module(f"scanner.commands.{name}").add_parser(sub)
    return parser


def _command_of(argv: list[str]) -> str | None:
    """The subcommand argv names (its first word, as argparse reads it), else None."""
    return argv[0] if argv and not argv[0].startswith("-") else None


def _stdout_closed() -> None:
    """The reader of our stdout went away (`| head`): stop writing, and let exit not fail on flush."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (tests capture it)
        pass


def _raised_by_broken_pipe_handler(exc: BaseException) -> bool:
    """Whether rich's Console.on_broken_pipe raised this SystemExit (on any platform)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_name == "on_broken_pipe"


def _stdout_is_devnull() -> bool:
    try:
        out, null = os.fstat(sys.stdout.fileno()), os.stat(os.devnull)
    except (OSError, ValueError, AttributeError):
        return False
    # st_rdev tells character devices apart on POSIX; Windows' stat has none (nor a /dev/null inode)
    return (out.st_dev, out.st_ino, getattr(out, "st_rdev", 0)) == (null.st_dev, null.st_ino, getattr(null, "st_rdev", 0))


def _is_broken_pipe(exc: BaseException) -> bool:
    return isinstance(exc, BrokenPipeError) or (isinstance(exc, OSError) and exc.errno in (errno.EPIPE, errno.EINVAL) and _stdout_gone())


def _stdout_gone() -> bool:
    try:
        sys.stdout.flush()
    except (BrokenPipeError, OSError, ValueError):
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_command_of(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    was_devnull = _stdout_is_devnull()
    try:
        return int(args.func(args))
    except SystemExit as exc:
        # rich handles a broken pipe itself: stdout onto os.devnull, then SystemExit(1).
        if exc.code == 1 and (_raised_by_broken_pipe_handler(exc) or (not was_devnull and _stdout_is_devnull())):
            return int(getattr(args, "verdict", None) or 0)
        raise
    except PortreadyError as exc:
        print(f"portready: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("portready: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: say it, exit 3
        if _is_broken_pipe(exc):
            # A reader that stopped reading is ordinary; a command that already knows its
            # verdict (scan, local) still returns it, a listing ends with 0.
            _stdout_closed()
            return int(getattr(args, "verdict", None) or 0)
        print(f"portready: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_TOOL


def run() -> None:
    try:
        code = main()
    except KeyboardInterrupt:  # Ctrl-C while starting up or parsing: no traceback either
        print("portready: interrupted", file=sys.stderr)
        code = 130
    try:
        sys.stdout.flush()
    except (BrokenPipeError, OSError, ValueError):
        _stdout_closed()
    sys.exit(code)
