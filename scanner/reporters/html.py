"""HTML report: one self-contained file (inline CSS and JS), readable on screen and on paper.

    get_reporter("html")(doc, "report.html")   # -> the document's exit code

The page is rendered from reports/report.html.j2 (Jinja2, autoescape on: every value from
the document, peers included, is escaped) over the shared view (`_view.build_view`):
the findings first (identical outcomes grouped across targets), then the matrix (grouped
by verdict when there are many targets), then every row of every profile and target.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, TextIO

from scanner import remediation
from scanner.models import REASON_WORDS, reason_words
from scanner.report import exit_code
from scanner.reporters import RenderOptions, reporter
from scanner.reporters._out import write_text
from scanner.reporters._view import (
    STATUS_ORDER,
    build_view,
    clip,
    evidence_items,
    header_view,
    render_template,
    slug,
    stream_template,
    worst,
)

# Kept importable from here for the modules that used to (the view now lives in _view, the
# words in models, the writer in _out); new code imports them from their own modules.
__all__ = ["REASON_WORDS", "STATUS_ORDER", "build_view", "clip", "evidence_items", "header_view", "reason_words",
           "render_html", "render_template", "slug", "worst", "write_text"]


def render_html(doc: Mapping[str, Any]) -> str:
    return "".join(_pieces(doc))


def _pieces(doc: Mapping[str, Any]) -> Iterator[str]:
    fixes = remediation.plan_fixes(doc)
    summary = doc.get("summary") or {}
    code = exit_code(doc)
    return stream_template(
        "report.html.j2",
        head=header_view(doc),
        view=build_view(doc),
        summary={k: summary.get(k, 0) for k in ("rows", *STATUS_ORDER)},
        strict=bool(summary.get("strict", False)),
        code=code,
        fixes=fixes,
        # remediation's text carries the rows' (peer-influenced) words: sanitised like every other value
        fix_table=[{k: clip(v, 600) for k, v in row.items()} for row in remediation.table_rows(fixes)],
        fix_advice=[clip(f.advice, 1200) for f in fixes],
        powershell=remediation.powershell(fixes) if any(f.opens for f in fixes) else "",
        netsh=remediation.netsh(fixes) if any(f.opens for f in fixes) else "",
        ontap=remediation.ontap(fixes) if any(f.ontap_services for f in fixes) else "",
        unexpected=evidence_items({"unexpected sources": list(doc.get("unexpected") or [])[:200]})
        if doc.get("unexpected") else [],
        listener=evidence_items(doc.get("listener")) if isinstance(doc.get("listener"), Mapping) else [],
    )


@reporter("html", flag="--html", help="write a self-contained HTML report")
def write_html(doc: Mapping[str, Any], out: TextIO, options: RenderOptions) -> None:
    for piece in _pieces(doc):
        out.write(piece)
