"""Options and steps shared by the commands that read inputs and write reports."""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from scanner.errors import UsageError

if TYPE_CHECKING:  # imported when a command runs, so `--help` and `init` stay light
    from scanner.inventory import Inventory
    from scanner.probes.base import Settings
    from scanner.profiles import Catalogue

DEFAULT_TIMEOUT = 3.0
DEFAULT_RETRIES = 1
DEFAULT_CONCURRENCY = 256
DEFAULT_PER_HOST = 32


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 300:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 300 seconds")
    return value


def bounded_int(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}")
        return value

    return parse


def add_input_options(parser: argparse.ArgumentParser, *, target_flag: str = "--target") -> None:
    parser.add_argument("--inventory", "-i", type=Path, metavar="FILE", help="inventory file (YAML); see `portready init`")
    parser.add_argument(
        target_flag, action="append", default=[], metavar="ROLE=HOST[,HOST...]", dest="targets",
        help="hosts of a role: names, addresses, CIDR blocks or ranges like 10.0.5.10-40 (repeatable)",
    )
    parser.add_argument("--profile", "-p", action="append", default=[], metavar="ID", dest="profiles",
                        help="profile to run (repeatable; default: every profile that has targets)")
    parser.add_argument("--profiles", type=Path, action="append", default=[], metavar="DIR", dest="profile_dirs",
                        help="extra folder of profiles: same id overrides, new ids add (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set_values",
                        help="a setting, as in the inventory's settings (e.g. domain=corp.example, ports.nutanix-port=9900)")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The scan options (`plan` and `local` declare the few they use themselves)."""
    parser.add_argument("--timeout", type=positive_float, metavar="S", help=f"longest wait for one answer (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--retries", type=bounded_int(0, 10), metavar="N", help=f"extra tries after silence (default {DEFAULT_RETRIES})")
    parser.add_argument("--concurrency", type=bounded_int(1, 10000), metavar="N", help=f"probes at once (default {DEFAULT_CONCURRENCY})")
    parser.add_argument("--per-host", type=bounded_int(1, 1000), metavar="N", help=f"probes at once per host (default {DEFAULT_PER_HOST})")
    parser.add_argument("--depth", choices=["port", "protocol"], help="port: reachability only; protocol: deepest probe (default)")
    parser.add_argument("--ca-bundle", type=Path, metavar="PEM", help="extra trusted CA certificates (e.g. a private enterprise CA)")
    parser.add_argument("--trust-private-ca", action="store_true", help="trust only --ca-bundle for TLS checks (private PKI labs)")
    parser.add_argument("--proxy", metavar="URL", help="HTTP proxy for internet rows (default: HTTPS_PROXY)")


def add_report_options(parser: argparse.ArgumentParser) -> None:
    """One option per registered report format (`scanner.reporters`), plus how the console reads."""
    from scanner.reporters import file_formats

    for fmt in file_formats():
        assert fmt.flag is not None
        parser.add_argument(fmt.flag, metavar="FILE", dest=fmt.dest_attr,
                            help=f"{fmt.help}; - for stdout")
    parser.add_argument("--strict", action="store_true", help="warn and inconclusive count as failures")
    parser.add_argument("--quiet", "-q", action="store_true", help="no console output or progress")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="the console lists every row x target, not only the findings (large runs)")


_INT = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: str.isdigit() accepts superscripts
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_NESTED = ("ports", "sql_instances")  # --set ports.NAME=PORT, --set sql_instances.NAME=PORT
_TEXT = ("domain", "ca_bundle", "proxy", "oracle_service")  # kept as typed, even when numeric


def _scalar(value: str) -> Any:
    """A --set value typed as the same text would be in the inventory's YAML."""
    if _INT.fullmatch(value):
        return int(value)
    if _FLOAT.fullmatch(value):
        return float(value)
    if value.lower() in ("true", "false", "yes", "no"):
        return value.lower() in ("true", "yes")
    return value


def _parse_set(values: list[str], port_settings: set[str] | None = None) -> dict[str, Any]:
    """--set KEY=VALUE items, checked exactly as the inventory's `settings:` are (exit 2)."""
    from scanner.errors import ConfigError
    from scanner.inventory import check_settings

    out: dict[str, Any] = {}
    for item in values:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set {item!r}: expected KEY=VALUE")
        parsed = value.strip() if key in _TEXT else _scalar(value.strip())
        head, dot, name = key.partition(".")
        one: dict[str, Any]
        if dot and head in _NESTED:
            if not name:
                raise UsageError(f"--set {key}: expected {head}.NAME=PORT")
            if head == "ports" and port_settings is not None and name not in port_settings:
                known = ", ".join(sorted(port_settings)) or "none"
                raise UsageError(f"--set {key}: no profile has a port setting {name!r}; known: {known}")
            one = {head: {name: parsed}}
        elif key in _NESTED:
            raise UsageError(f"--set {key}: give one entry at a time, as {key}.NAME=PORT")
        else:
            one = {key: parsed}
        try:
            check_settings(one, "--set", lambda _mapping, _key: None)
        except ConfigError as exc:
            raise UsageError(f"--set {item}: {exc.message}") from None
        for k, v in one.items():
            if k in _NESTED:
                out.setdefault(k, {}).update(v)
            else:
                out[k] = v
    return out


@dataclass
class RunInputs:
    catalogue: Catalogue
    inventory: Inventory
    settings: Settings
    profiles: list[str]  # explicitly chosen (CLI, else inventory); empty = automatic
    concurrency: int
    per_host: int
    depth: str


def load_run_inputs(args: argparse.Namespace, *, need_credentials: bool = True) -> RunInputs:
    """Catalogue, inventory (+ --target), settings: everything validated before any packet."""
    from scanner.inventory import Inventory, load_inventory, parse_target_option, resolve_credentials
    from scanner.probes.base import Settings
    from scanner.profiles import load_catalogue

    catalogue = load_catalogue(list(getattr(args, "profile_dirs", []) or []))
    inv = load_inventory(args.inventory, catalogue.roles) if getattr(args, "inventory", None) else Inventory()
    for value in getattr(args, "targets", []) or []:
        role, targets = parse_target_option(value, catalogue.roles)
        inv.add(role, targets)
    profiles = list(getattr(args, "profiles", []) or []) or list(inv.profiles)
    for pid in profiles:
        if pid not in catalogue.profiles:
            raise UsageError(f"unknown profile {pid!r}; see `portready profiles`")
    values: dict[str, Any] = dict(inv.settings)
    port_settings = {spec.setting for p in catalogue.profiles.values() for r in p.rows for spec in r.checks if spec.setting}
    for key, value in _parse_set(getattr(args, "set_values", []) or [], port_settings).items():
        if key in _NESTED:
            values[key] = {**(values.get(key) or {}), **value}
        else:
            values[key] = value

    def pick(name: str, default: Any) -> Any:
        cli = getattr(args, name, None)
        return cli if cli is not None else values.get(name, default)

    ca_bundle = getattr(args, "ca_bundle", None)
    if ca_bundle is not None and not Path(ca_bundle).is_file():
        raise UsageError(f"--ca-bundle {ca_bundle}: no such file")
    creds = resolve_credentials(inv.credential_refs) if need_credentials and inv.credential_refs else {}
    settings = Settings(
        timeout=float(pick("timeout", DEFAULT_TIMEOUT)),
        retries=int(pick("retries", DEFAULT_RETRIES)),
        ca_bundle=str(ca_bundle) if ca_bundle else values.get("ca_bundle"),
        trust_private_ca=bool(getattr(args, "trust_private_ca", False) or values.get("trust_private_ca", False)),
        proxy=getattr(args, "proxy", None) or values.get("proxy"),
        credentials=creds,
        values=values,
    )
    return RunInputs(
        catalogue=catalogue,
        inventory=inv,
        settings=settings,
        profiles=profiles,
        concurrency=int(pick("concurrency", DEFAULT_CONCURRENCY)),
        per_host=int(pick("per_host", DEFAULT_PER_HOST)),
        depth=str(pick("depth", "protocol")),
    )


def write_each(
    formats: Iterable[Any], args: argparse.Namespace, write: Callable[[Any, str], None], noun: str, others: str
) -> tuple[bool, bool]:
    """Write every format the command line asked for, each on its own: one bad path does not
    cost the others (it is named on stderr). Returns (some failed, some went to stdout)."""
    failed = to_stdout = False
    for fmt in formats:
        dest = getattr(args, fmt.dest_attr, None)
        if not dest:
            continue
        to_stdout = to_stdout or dest == "-"
        try:
            write(fmt, dest)
        except BrokenPipeError:
            raise  # a closed stdout: the command line ends quietly
        except (OSError, UnicodeError) as exc:
            failed = True
            why = getattr(exc, "strerror", None) or str(exc)
            print(f"portready: could not write the {fmt.name} {noun} to {dest}: {why}; {others}", file=sys.stderr)
    return failed, to_stdout


def write_reports(doc: Mapping[str, Any], args: argparse.Namespace) -> int:
    """Write every requested format, each on its own; the console last (unless -q or a format uses stdout).

    Every format returns the document's exit code. A format that cannot be written is
    reported on stderr and the others are still written; the run then exits 3.
    """
    from scanner.report import EXIT_TOOL, exit_code
    from scanner.reporters import RenderOptions, file_formats, get_reporter

    options = RenderOptions(verbose=bool(getattr(args, "verbose", False)))
    code = exit_code(doc)
    failed, to_stdout = write_each(
        file_formats(), args, lambda fmt, dest: fmt.write(doc, dest, options), "report", "the other reports were written"
    )
    if not getattr(args, "quiet", False) and not to_stdout:
        get_reporter("console").write(doc, None, options)
    return EXIT_TOOL if failed else code


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
