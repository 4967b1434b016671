"""The diff's console, JSON, Markdown and HTML forms (the comparison itself is `scanner.diff`).

Every value comes from two saved reports, which anyone may have edited: text goes through
the shared view's `clip` / `md`, and the page through the autoescaping templates.

The forms are registered like the report formats, by name with their CLI flag:

    @diff_format("markdown", flag="--markdown", help="write the diff as Markdown")
    def render_markdown(d: Mapping[str, Any]) -> str: ...

    for fmt in diff_formats(): fmt.write(d, dest)   # the shared opener (_out): folders created

`portready diff` builds its options from this registry and writes each form on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from scanner.models import Status
from scanner.reporters._out import open_dest
from scanner.reporters._view import clip, md, render_template
from scanner.reporters.json_report import json_text

DiffRender = Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True)
class DiffFormat:
    """A registered form of the diff: `write` renders it to `dest` (a path, or "-" / None: stdout)."""

    name: str
    render: DiffRender
    flag: str | None  # the `diff` option that asks for it; None: the console
    help: str

    def write(self, d: Mapping[str, Any], dest: str | Path | None) -> None:
        text = self.render(d)  # rendered before the file is opened: a failing form leaves no empty file
        with open_dest(dest) as out:
            out.write(text)

    @property
    def dest_attr(self) -> str:
        return (self.flag or self.name).lstrip("-").replace("-", "_")


_DIFF_FORMATS: dict[str, DiffFormat] = {}


def diff_format(name: str, *, flag: str | None = None, help: str = "") -> Callable[[DiffRender], DiffRender]:  # noqa: A002
    """Register a form of the diff under `name` (a name and a flag are taken once)."""

    def add(fn: DiffRender) -> DiffRender:
        existing = _DIFF_FORMATS.get(name)
        if existing is not None and existing.render is not fn:
            raise ValueError(f"diff format {name!r} is already registered")
        if flag is not None and any(f.flag == flag and f.name != name for f in _DIFF_FORMATS.values()):
            raise ValueError(f"diff flag {flag!r} is already taken")
        _DIFF_FORMATS[name] = DiffFormat(name, fn, flag, help)
        return fn

    return add


def unregister_diff_format(name: str) -> None:
    """Remove a form (for tests that register a throwaway one)."""
    _DIFF_FORMATS.pop(name, None)


def diff_formats() -> list[DiffFormat]:
    """The forms `diff` offers as options, in registration order (the console is `get_diff_format("console")`)."""
    return [f for f in _DIFF_FORMATS.values() if f.flag]


def get_diff_format(name: str) -> DiffFormat:
    return _DIFF_FORMATS[name]

KIND_WORDS = {
    "newly-failing": "newly failing",
    "new-failing": "new row × target, failing",
    "worse": "worse",
    "newly-passing": "newly passing",
    "better": "better",
    "reason-changed": "reason changed",
    "no-longer-checked": "no longer checked",
    "now-checked": "now checked",
    "added": "new row × target",
}


def change_line(c: Mapping[str, Any]) -> str:
    """'dc1 active-directory/gc-ssl-3269 (3269 TCP): pass → fail (filtered)'."""
    old = f"{c.get('old_status')}" + (f" ({c.get('old_reason')})" if c.get("old_reason") and c.get("old_reason") != "ok" else "")
    new = f"{c.get('new_status')}" + (f" ({c.get('new_reason')})" if c.get("new_reason") and c.get("new_reason") != "ok" else "")
    if c.get("old_status") is None:
        old = "—"
    if c.get("new_status") is None:
        new = "—"
    return f"{c.get('target')} {c.get('profile')}/{c.get('row')} ({c.get('doc_port')} {c.get('doc_protocol')}): {old} → {new}"


def _printable(text: Any, limit: int = 300) -> str:
    return clip(text, limit, one_line=True)


MAX_GROUPS = 50  # console lines per section; the JSON and Markdown diffs list every change


def _targets_text(targets: list[Any], named: int = 5) -> str:
    shown = ", ".join(_printable(t, 80) for t in targets[:named])
    return f"{len(targets):,} targets: {shown}" + (f" and {len(targets) - named:,} more" if len(targets) > named else "")


def _grouped_changes(changes: list[Mapping[str, Any]], mark: str) -> list[str]:
    """One line per identical change across targets (2,500 DCs losing TCP 3269 is one line)."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for c in changes:
        key = tuple(str(c.get(k)) for k in ("kind", "profile", "row", "doc_port", "doc_protocol", "old_status",
                                            "old_reason", "new_status", "new_reason"))
        groups.setdefault(key, []).append(c)
    lines = []
    for members in list(groups.values())[:MAX_GROUPS]:
        c = members[0]
        words = KIND_WORDS.get(c["kind"], c["kind"])
        if len(members) == 1:
            lines.append(f"  {mark} {words}: {_printable(change_line(c))}")
        else:
            what = change_line({**c, "target": ""}).lstrip()
            lines.append(f"  {mark} {words}: {_printable(what)} on {_targets_text([m.get('target') for m in members])}")
    if len(groups) > MAX_GROUPS:
        lines.append(f"  … and {len(groups) - MAX_GROUPS} more (see --json or --markdown)")
    return lines


def _grouped_evidence(evidence: list[Mapping[str, Any]]) -> list[str]:
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for e in evidence:
        groups.setdefault(tuple(str(e.get(k)) for k in ("profile", "row", "check", "text")), []).append(e)
    lines = []
    for (profile, row, check, text), members in list(groups.items())[:MAX_GROUPS]:
        where = (_printable(members[0].get("target")) if len(members) == 1
                 else _targets_text([m.get("target") for m in members]) + ",")
        lines.append(f"  • {where} {_printable(profile)}/{_printable(row)} {_printable(check)}: {_printable(text)}")
    if len(groups) > MAX_GROUPS:
        lines.append(f"  … and {len(groups) - MAX_GROUPS} more (see --json or --markdown)")
    return lines


@diff_format("console")
def render_text(d: Mapping[str, Any]) -> str:
    """Console text (peer text made printable: no terminal escapes)."""
    s = d["summary"]
    lines = [
        f"portready diff: {_printable(d['old'].get('started'), 40)} ({_printable(d['old'].get('host'), 120)}) → "
        f"{_printable(d['new'].get('started'), 40)} ({_printable(d['new'].get('host'), 120)})",
    ]
    regs = [c for c in d["changes"] if c["regression"]]
    others = [c for c in d["changes"] if not c["regression"]]
    if regs:
        lines.append(f"REGRESSIONS ({len(regs)}):")
        lines += _grouped_changes(regs, "✗")
    if others:
        lines.append(f"Other changes ({len(others)}):")
        lines += _grouped_changes(others, "•")
    if d["evidence"]:
        lines.append(f"Evidence ({len(d['evidence'])}):")
        lines += _grouped_evidence(d["evidence"])
    for what in ("targets", "rows"):
        for side in ("added", "removed"):
            if d[what][side]:
                lines.append(f"{what.capitalize()} {side}: {_printable(', '.join(map(str, d[what][side])), 1000)}")
    if len(lines) == 1:
        lines.append("No change.")
    verdict = f"{s['regressions']} regression(s)" if s["regressions"] else "no regression"
    lines.append(f"{verdict}, {s['improvements']} improvement(s), {s['evidence_changes']} evidence change(s) (exit {s['exit_code']}{', strict' if s['strict'] else ''})")
    return "\n".join(lines) + "\n"


@diff_format("json", flag="--json", help="write the diff as JSON (- for stdout)")
def render_json(d: Mapping[str, Any]) -> str:
    return json_text(d)


@diff_format("markdown", flag="--markdown", help="write the diff as Markdown")
def render_markdown(d: Mapping[str, Any]) -> str:
    s = d["summary"]
    lines = [
        "# portready diff",
        "",
        f"**{s['regressions']} regression(s)**, {s['improvements']} improvement(s), {s['evidence_changes']} evidence change(s) "
        f"(exit {s['exit_code']}{', strict' if s['strict'] else ''})",
        "",
        f"- Old: {md(d['old'].get('started'))} from {md(d['old'].get('host'))}, portready {md(d['old'].get('version'))}",
        f"- New: {md(d['new'].get('started'))} from {md(d['new'].get('host'))}, portready {md(d['new'].get('version'))}",
        "",
        "## Changes",
        "",
    ]
    if d["changes"]:
        lines += ["| Regression | Change | Target | Row | Port | Protocol | Purpose | Old | New | Detail |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for c in sorted(d["changes"], key=lambda c: not c["regression"]):
            old = f"{c['old_status'] or '—'} {c['old_reason'] or ''}".strip()
            new = f"{c['new_status'] or '—'} {c['new_reason'] or ''}".strip()
            lines.append("| " + " | ".join([
                "**yes**" if c["regression"] else "no", md(KIND_WORDS.get(c["kind"], c["kind"])), md(c.get("target")),
                md(f"{c.get('profile')}/{c.get('row')}"), md(c.get("doc_port")), md(c.get("doc_protocol")), md(c.get("purpose"), 200),
                md(old), md(new), md(c.get("detail")),
            ]) + " |")
    else:
        lines.append("No status or reason changed.")
    lines += ["", "## Evidence", ""]
    if d["evidence"]:
        lines += ["| Target | Row | Check | Change |", "| --- | --- | --- | --- |"]
        for e in d["evidence"]:
            lines.append(f"| {md(e.get('target'))} | {md(str(e.get('profile')) + '/' + str(e.get('row')))} | {md(e.get('check'))} | {md(e.get('text'))} |")
    else:
        lines.append("No evidence changed.")
    lines += ["", "## Targets and rows", ""]
    for what in ("targets", "rows"):
        for side in ("added", "removed"):
            items = d[what][side]
            lines.append(f"- {what.capitalize()} {side}: " + (", ".join(md(x, 120) for x in items[:500]) if items else "none"))
    return "\n".join(lines) + "\n"


@diff_format("html", flag="--html", help="write the diff as a self-contained HTML page")
def render_html(d: Mapping[str, Any]) -> str:
    def c(v: Any, limit: int = 400) -> str:
        return clip(v if v is not None else "—", limit)

    changes = [
        {**{k: c(v) for k, v in ch.items() if k not in ("regression",)}, "regression": ch["regression"],
         "kind_words": KIND_WORDS.get(ch["kind"], ch["kind"]),
         "old_cls": ch["old_status"] if ch["old_status"] in {s.value for s in Status} else "skip",
         "new_cls": ch["new_status"] if ch["new_status"] in {s.value for s in Status} else "skip"}
        for ch in sorted(d["changes"], key=lambda ch: not ch["regression"])
    ]
    evidence = [{k: c(v) for k, v in e.items() if k in ("target", "profile", "row", "check", "text", "doc_port")} for e in d["evidence"]]
    return render_template(
        "diff.html.j2",
        d={"old": {k: c(v) for k, v in d["old"].items() if not isinstance(v, (dict, list))},
           "new": {k: c(v) for k, v in d["new"].items() if not isinstance(v, (dict, list))}},
        summary=d["summary"],
        changes=changes,
        evidence=evidence,
        targets={k: [c(x, 200) for x in v[:500]] for k, v in d["targets"].items()},
        rows={k: [c(x, 200) for x in v[:500]] for k, v in d["rows"].items()},
    )
