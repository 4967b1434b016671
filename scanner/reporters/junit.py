"""JUnit XML: one testsuite per profile, one testcase per row x target (Jenkins, GitLab).

An interrupted run says so on every testsuite (`<property name="interrupted" .../>`),
so a CI job that timed out still shows what finished and that the rest is missing.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from typing import Any, Mapping, TextIO

from scanner.models import Status, is_failure
from scanner.reporters import RenderOptions, reporter
from scanner.reporters._view import check_summary, footprint_view, interrupted_view

# XML 1.0 cannot carry most control characters; C1 controls are legal XML but would
# drive a terminal (`--junit -`). Peers may send any of them.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ufffe\uffff]")


def _clean(text: Any) -> str:
    return _INVALID_XML.sub("\ufffd", str(text))


def _check_lines(row: Mapping[str, Any]) -> str:
    lines = []
    for c in row.get("checks", []):
        summary = check_summary(c)
        lines.append(f"{str(c.get('protocol', '')).upper()} {c.get('port')} [{c.get('probe')}]: {c['status']} "
                     f"({c['reason']}) {c.get('detail', '')}" + (f" — {summary}" if summary else ""))
    return "\n".join(lines)


@reporter("junit", flag="--junit", help="write JUnit XML (one testsuite per profile)")
def render_junit(doc: Mapping[str, Any], out: TextIO, options: RenderOptions) -> None:
    strict = bool(doc.get("summary", {}).get("strict", False))
    suites = ET.Element("testsuites", name=f"portready {_clean(doc.get('kind', 'scan'))}")
    interrupted = interrupted_view(doc)
    footprint = "; ".join(item["text"] for item in footprint_view(doc))
    by_profile: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in doc.get("rows", []):
        by_profile[str(row.get("profile"))].append(row)
    if interrupted and not by_profile:
        by_profile["portready"] = []  # a suite to carry the property when nothing finished
    total = failures = errors = skipped = 0
    for profile, rows in by_profile.items():
        suite = ET.SubElement(suites, "testsuite", name=_clean(profile))
        if interrupted or footprint:
            props = ET.SubElement(suite, "properties")
            if interrupted:
                ET.SubElement(props, "property", name="interrupted", value=_clean(interrupted["text"]))
            if footprint:  # what the run left in the targets' security logs (the same on every suite)
                ET.SubElement(props, "property", name="footprint", value=_clean(footprint))
        s_fail = s_err = s_skip = 0
        s_time = 0.0
        for row in rows:
            status = Status(row["status"])
            duration = sum(float(c.get("duration_ms", 0)) for c in row.get("checks", [])) / 1000
            s_time += duration
            case = ET.SubElement(
                suite,
                "testcase",
                classname=_clean(f"{profile}.{row['row']}"),
                name=_clean(f"{row.get('doc_port', '')} {row.get('doc_protocol', '')} -> {row['target']}"),
                time=f"{duration:.3f}",
            )
            message = _clean(f"{row['status']} ({row['reason']}): {row.get('detail', '')}")
            if status is Status.ERROR:
                s_err += 1
                ET.SubElement(case, "error", message=message, type=_clean(row["reason"])).text = _clean(_check_lines(row))
            elif is_failure(status, strict):
                s_fail += 1
                ET.SubElement(case, "failure", message=message, type=_clean(row["reason"])).text = _clean(_check_lines(row))
            elif status is Status.SKIP:
                s_skip += 1
                ET.SubElement(case, "skipped", message=message)
            else:
                ET.SubElement(case, "system-out").text = _clean(f"{message}\n{_check_lines(row)}")
        suite.set("tests", str(len(rows)))
        suite.set("failures", str(s_fail))
        suite.set("errors", str(s_err))
        suite.set("skipped", str(s_skip))
        suite.set("time", f"{s_time:.3f}")
        total += len(rows)
        failures += s_fail
        errors += s_err
        skipped += s_skip
    suites.set("tests", str(total))
    suites.set("failures", str(failures))
    suites.set("errors", str(errors))
    suites.set("skipped", str(skipped))
    ET.indent(suites)
    out.write(ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n")
