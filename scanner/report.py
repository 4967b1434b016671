"""The report document: one JSON-able dict that every reporter renders.

Reporters work from this document, not from live objects, so a saved run
(`--json FILE`) renders again exactly (`portready report FILE --html ...`) and
every format agrees on what failed and on the exit code.
"""

from __future__ import annotations

import json
import platform
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from scanner import __version__
from scanner.errors import ConfigError
from scanner.models import RowResult, Status, is_failure

SCHEMA_VERSION = 1
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TOOL = 0, 1, 2, 3


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def source_addresses(peers: Iterable[str | None], limit: int = 64) -> list[str]:
    """The local addresses this host uses to reach the peers (what their firewalls see).

    A UDP socket's connect() only picks a route and a source address: nothing is sent.
    """
    found: list[str] = []
    for peer in list(dict.fromkeys(p for p in peers if p))[:limit]:
        family = socket.AF_INET6 if ":" in peer else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.connect((peer, 9))
                addr = str(sock.getsockname()[0])
        except (OSError, ValueError):
            continue
        if addr not in found:
            found.append(addr)
    return found


def host_info(peers: Iterable[str | None] = ()) -> dict[str, Any]:
    # Only the addresses routes pick towards the peers: resolving our own host name could
    # send a DNS query to the network, which a report header is not worth.
    name = socket.gethostname()
    addresses: list[str] = source_addresses(peers)
    return {"name": name, "addresses": addresses[:16], "os": platform.platform(), "python": platform.python_version()}


def summarize(rows: Iterable[Mapping[str, Any]], strict: bool) -> dict[str, Any]:
    counts = {s.value: 0 for s in Status}
    total = 0
    failed = 0
    for row in rows:
        total += 1
        status = Status(row["status"])
        counts[status.value] += 1
        if is_failure(status, strict):
            failed += 1
    return {
        "rows": total,
        **counts,
        "failed_rows": failed,
        "strict": strict,
        "exit_code": EXIT_FAILED if failed else EXIT_OK,
    }


def build_document(
    kind: str,
    results: Iterable[RowResult],
    *,
    started: str,
    finished: str,
    options: Mapping[str, Any],
    inventory: Mapping[str, Any] | None = None,
    strict: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    rows = [r.to_dict() for r in results]
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tool": "portready",
        "version": __version__,
        "kind": kind,
        "started": started,
        "finished": finished,
        "host": host_info(r["address"] for r in rows),
        "options": dict(options),
        "inventory": dict(inventory or {}),
        "rows": rows,
    }
    if extra:
        doc.update(extra)
    doc["summary"] = summarize(rows, strict)
    return doc


def exit_code(doc: Mapping[str, Any], strict: bool | None = None) -> int:
    """The exit code of a document; every reporter returns this same value."""
    if strict is None:
        strict = bool(doc.get("summary", {}).get("strict", False))
    return int(summarize(doc.get("rows", []), strict)["exit_code"])


def load_document(path: Path) -> dict[str, Any]:
    """Read a saved report (for `report` and `diff`), checking it is one of ours."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read the report: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(str(path), getattr(exc, "lineno", None), f"not a JSON report: {exc}") from None
    if not isinstance(data, dict) or data.get("tool") != "portready" or not isinstance(data.get("rows"), list):
        raise ConfigError(str(path), None, "not a portready JSON report (no tool/rows)")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ConfigError(str(path), None, f"report schema version {version!r}; this portready reads {SCHEMA_VERSION}")
    for i, row in enumerate(data["rows"]):
        if not isinstance(row, dict) or row.get("status") not in {s.value for s in Status}:
            raise ConfigError(str(path), None, f"row {i} has no valid status")
    return data
