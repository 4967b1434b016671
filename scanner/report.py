"""The report document: one JSON-able dict that every reporter renders.

Reporters work from this document, not from live objects, so a saved run
(`--json FILE`) renders again exactly (`portready report FILE --html ...`) and
every format agrees on what failed and on the exit code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from scanner import __version__
from scanner.errors import ConfigError
from scanner.models import STATUS_SEVERITY, RowResult, Status, is_failure

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1 lacks summary/findings/interrupted; it renders the same
MAX_REPORT_BYTES = 128 * 1024 * 1024  # a saved report larger than this is refused, not parsed
MAX_NESTING = 32  # evidence is bounded at depth 6 by the engine; deeper is not one of ours
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


def build_findings(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Identical outcomes (row x status x reason) grouped across targets, worst and largest first.

    `targets` lists every target of the group (reports name a few and count the rest);
    `checks` the ports that decided it (e.g. ["TCP 3269"]); `detail` is the first target's.
    """
    groups: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for row in rows:
        status = str(row.get("status"))
        key = (str(row.get("profile", "")), str(row.get("row", "")), status, str(row.get("reason", "")))
        group = groups.get(key)
        if group is None:
            group = groups[key] = {
                "profile": key[0], "row": key[1], "doc_port": row.get("doc_port", ""),
                "doc_protocol": row.get("doc_protocol", ""), "purpose": row.get("purpose", ""),
                "status": status, "reason": key[3], "detail": row.get("detail", ""),
                "checks": [], "count": 0, "targets": [],
            }
        group["count"] += 1
        group["targets"].append(str(row.get("target", "")))
        for check in row.get("checks") or ():
            if isinstance(check, Mapping) and check.get("status") == status:
                label = f"{str(check.get('protocol', '')).upper()} {check.get('port', '')}"
                if label not in group["checks"] and len(group["checks"]) < 16:
                    group["checks"].append(label)
    severity = {s.value: STATUS_SEVERITY[s] for s in Status}
    return sorted(groups.values(), key=lambda g: (-severity.get(g["status"], 9), -g["count"], g["profile"], g["row"]))


def findings_of(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The document's findings; computed from its rows when it has none (version 1)."""
    found = doc.get("findings")
    if isinstance(found, list):
        return found
    return build_findings(r for r in doc.get("rows") or [] if isinstance(r, Mapping))


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
    interrupted: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report document. `interrupted` is {signal, checks_done, checks_planned} for a cut-short run."""
    rows = [_with_summaries(r).to_dict() for r in results]
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
    if interrupted is None and extra:  # callers that pass it with the other extra fields
        interrupted = extra.get("interrupted")
    doc["interrupted"] = dict(interrupted) if interrupted else None
    doc["footprint"] = build_footprint(rows)
    doc["findings"] = build_findings(rows)
    doc["summary"] = summarize(rows, strict)
    return doc


MAX_FLAGGED = 8  # distinct per-check footprint notes kept per probe


def build_footprint(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What the checks that ran leave in the targets' security logs, per probe that declares it.

    One entry per probe with a declared `Probe.footprint` and at least one check that was not
    skipped: {probe, checks (how many ran), footprint (the declared words)}, plus `flagged`
    when checks said in their evidence that this run took the noisier path (e.g. a Kerberos
    check that fell back to an unknown principal: event 4768 0x6), with how many did.
    """
    counts: dict[str, int] = {}
    flagged: dict[str, dict[str, int]] = {}
    for row in rows:
        for check in row.get("checks") or ():
            if not isinstance(check, Mapping) or check.get("status") == Status.SKIP.value:
                continue
            probe = str(check.get("probe") or "")
            if not probe:
                continue
            counts[probe] = counts.get(probe, 0) + 1
            evidence = check.get("evidence")
            note = evidence.get("footprint") if isinstance(evidence, Mapping) else None
            if isinstance(note, str) and note:
                notes = flagged.setdefault(probe, {})
                if note[:300] in notes or len(notes) < MAX_FLAGGED:
                    notes[note[:300]] = notes.get(note[:300], 0) + 1
    out: list[dict[str, Any]] = []
    for probe, n in sorted(counts.items()):
        words = _footprint_of(probe)
        if not words:
            continue
        entry: dict[str, Any] = {"probe": probe, "checks": n, "footprint": words}
        if probe in flagged:
            entry["flagged"] = [{"footprint": k, "checks": v} for k, v in flagged[probe].items()]
        out.append(entry)
    return out


def _footprint_of(probe: str) -> str:
    # The probe modules are loaded already whenever checks ran; an unknown name declares nothing.
    from scanner.probes.base import get_probe

    try:
        return str(get_probe(probe).footprint or "")
    except KeyError:
        return ""


def _with_summaries(result: RowResult) -> RowResult:
    """Fill a check's summary the engine did not (results built outside it, e.g. by the listener)."""
    if all(c.summary or not c.evidence for c in result.checks):
        return result
    checks = []
    changed = False
    for c in result.checks:
        if not c.summary and c.evidence:
            text = _summary_of(c.probe, c.evidence)
            if text:
                c = dataclasses.replace(c, summary=text)
                changed = True
        checks.append(c)
    return dataclasses.replace(result, checks=tuple(checks)) if changed else result


_SUMMARIZERS: dict[str, Any] = {}


def _summary_of(probe: str, evidence: Mapping[str, Any]) -> str:
    # Only probes that override summarize() are asked; the engine already asked the rest.
    if probe not in _SUMMARIZERS:
        from scanner.probes.base import Probe, registry  # loaded already whenever checks ran

        cls = registry().get(probe)
        _SUMMARIZERS[probe] = cls() if cls is not None and cls.summarize is not Probe.summarize else None
    summarizer = _SUMMARIZERS[probe]
    if summarizer is None:
        return ""
    try:
        return str(summarizer.summarize(evidence))[:300]
    except Exception:  # noqa: BLE001 - a summary is a courtesy; the check stands without it
        return ""


def exit_code(doc: Mapping[str, Any], strict: bool | None = None) -> int:
    """The exit code of a document; every reporter returns this same value."""
    if strict is None:
        strict = bool(doc.get("summary", {}).get("strict", False))
    return int(summarize(doc.get("rows", []), strict)["exit_code"])


class SchemaVersionError(ConfigError):
    """A saved report of a schema version this portready does not read."""

    def __init__(self, path: str, version: Any) -> None:
        self.version = version
        super().__init__(path, None, f"report schema version {version!r}; this portready reads "
                                     f"{', '.join(map(str, READABLE_VERSIONS))}")


def _a(name: str) -> str:
    """"a list", "an int": the article for a type name in an error text."""
    return f"an {name}" if name[:1] in "aeiou" else f"a {name}"


def load_document(path: Path) -> dict[str, Any]:
    """Read a saved report (for `report`, `diff` and `fix`), trusting nothing in it.

    Refused with a ConfigError (exit 2) that says what is wrong: larger than
    MAX_REPORT_BYTES, not JSON, nested deeper than MAX_NESTING, not ours, an unknown
    schema version, or a row or check with a missing key or a value of the wrong type.
    Its summary and findings are recomputed from the rows, never taken from the file.
    """
    where = str(path)
    try:
        with open(path, "rb") as fh:
            # Refuse by size before reading; read at most one byte more for what fstat cannot size (pipes).
            size = os.fstat(fh.fileno()).st_size
            raw = fh.read(MAX_REPORT_BYTES + 1) if size <= MAX_REPORT_BYTES else b""
    except OSError as exc:
        raise ConfigError(where, None, f"cannot read the report: {exc.strerror or exc}") from None
    if size > MAX_REPORT_BYTES or len(raw) > MAX_REPORT_BYTES:
        raise ConfigError(where, None, f"larger than {MAX_REPORT_BYTES // (1024 * 1024)} MiB: not a report this "
                                       "portready reads (write one per site or profile instead)")
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ConfigError(where, None, "not a JSON report: the file is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(where, exc.lineno, f"not a JSON report: {exc.msg} (column {exc.colno})") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise ConfigError(where, None, f"not a JSON report: {str(exc)[:200]}") from None
    except RecursionError:
        raise ConfigError(where, None, f"not a portready report: nested deeper than {MAX_NESTING} levels") from None
    del raw
    if not isinstance(data, dict) or data.get("tool") != "portready" or not isinstance(data.get("rows"), list):
        raise ConfigError(where, None, "not a portready JSON report (no tool/rows)")
    version = data.get("schema_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise SchemaVersionError(where, version)
    if _nesting(data) > MAX_NESTING:
        raise ConfigError(where, None, f"not a portready report: nested deeper than {MAX_NESTING} levels")
    problem = _document_problem(data)
    if problem:
        raise ConfigError(where, None, f"not a usable portready report: {problem}")
    saved = data.get("summary")
    strict = isinstance(saved, dict) and saved.get("strict") is True
    data["summary"] = summarize(data["rows"], strict)
    data["findings"] = build_findings(data["rows"])
    data.setdefault("interrupted", None)
    if "footprint" in data:  # reports before it lack it, and keep lacking it
        data["footprint"] = _clean_footprint(data["footprint"])
    return data


def _clean_footprint(items: list[Any]) -> list[dict[str, Any]]:
    """A saved `footprint` with only entries of its own shape, bounded (the words are the scan's, kept)."""
    out: list[dict[str, Any]] = []

    def count(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**12 else 0

    for item in items[:64]:
        if not isinstance(item, dict) or not isinstance(item.get("probe"), str) or not isinstance(item.get("footprint"), str):
            continue
        entry: dict[str, Any] = {"probe": item["probe"][:40], "checks": count(item.get("checks")),
                                 "footprint": item["footprint"][:600]}
        saved = item.get("flagged")
        flagged = [{"footprint": f["footprint"][:300], "checks": count(f.get("checks"))}
                   for f in (saved if isinstance(saved, list) else [])[:MAX_FLAGGED]
                   if isinstance(f, dict) and isinstance(f.get("footprint"), str)]
        if flagged:
            entry["flagged"] = flagged
        out.append(entry)
    return out


def _nesting(value: Any) -> int:
    """How deep lists and dicts nest (iterative: a hostile file cannot exhaust the stack)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_NESTING:
            return deepest
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


_TEXT = (str,)
_ROW_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {  # key: (allowed types, required)
    "profile": (_TEXT, True), "row": (_TEXT, True), "target": (_TEXT, True), "status": (_TEXT, True),
    "reason": (_TEXT, True), "checks": ((list,), True), "section": (_TEXT, False), "doc_port": (_TEXT, False),
    "doc_protocol": (_TEXT, False), "doc_source": (_TEXT, False), "doc_target": (_TEXT, False),
    "purpose": (_TEXT, False), "direction": (_TEXT, False), "role": (_TEXT, False), "detail": (_TEXT, False),
    "address": ((str, type(None)), False),
}
_CHECK_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "status": (_TEXT, True), "reason": (_TEXT, True), "protocol": (_TEXT, False), "probe": (_TEXT, False),
    "port": ((int, str, type(None)), False), "detail": (_TEXT, False), "summary": (_TEXT, False),
    "evidence": ((dict,), False), "duration_ms": ((int, float), False),
}
_DOC_FIELDS: dict[str, tuple[type, ...]] = {
    "host": (dict,), "options": (dict,), "inventory": (dict,), "notes": (list,), "kind": (str,),
    "started": (str,), "finished": (str,), "interrupted": (dict, type(None)), "unexpected": (list,),
    "footprint": (list,),
}


def _document_problem(data: Mapping[str, Any]) -> str | None:
    for key, types in _DOC_FIELDS.items():
        if key in data and not isinstance(data[key], types):
            return f"{key!r} is {_a(type(data[key]).__name__)}, expected {' or '.join(t.__name__ for t in types)}"
    if any(not isinstance(n, str) for n in data.get("notes") or []):
        return "'notes' holds something other than text"
    statuses = {s.value for s in Status}
    for i, row in enumerate(data["rows"]):
        if not isinstance(row, dict):
            return f"row {i} is not an object"
        bad = _fields_problem(row, _ROW_FIELDS)
        if bad:
            return f"row {i}: {bad}"
        if row["status"] not in statuses:
            return f"row {i} has no valid status"
        for j, check in enumerate(row["checks"]):
            if not isinstance(check, dict):
                return f"row {i}, check {j} is not an object"
            bad = _fields_problem(check, _CHECK_FIELDS)
            if bad:
                return f"row {i}, check {j}: {bad}"
            if check["status"] not in statuses:
                return f"row {i}, check {j} has no valid status"
            duration = check.get("duration_ms", 0)
            if not -1e12 < duration < 1e12:  # NaN, Infinity and 400-digit numbers are not durations
                return f"row {i}, check {j}: 'duration_ms' is not a duration"
    return None


def _fields_problem(item: Mapping[str, Any], fields: Mapping[str, tuple[tuple[type, ...], bool]]) -> str | None:
    for key, (types, required) in fields.items():
        if key not in item:
            if required:
                return f"the key {key!r} is missing"
            continue
        value = item[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            return f"{key!r} is {_a(type(value).__name__)}, expected {' or '.join(t.__name__ for t in types)}"
    return None
