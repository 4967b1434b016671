"""JUnit XML: one testsuite per profile, one testcase per row x target (Jenkins, GitLab)."""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

from scanner.models import Status, is_failure
from scanner.report import exit_code
from scanner.reporters import reporter

# XML 1.0 cannot carry most control characters; peers may send them.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text: Any) -> str:
    return _INVALID_XML.sub("\ufffd", str(text))


def _check_lines(row: Mapping[str, Any]) -> str:
    lines = []
    for c in row.get("checks", []):
        lines.append(f"{c['protocol'].upper()} {c['port']} [{c['probe']}]: {c['status']} ({c['reason']}) {c['detail']}")
    return "\n".join(lines)


@reporter("junit")
def write_junit(doc: Mapping[str, Any], dest: str | None) -> int:
    strict = bool(doc.get("summary", {}).get("strict", False))
    suites = ET.Element("testsuites", name=f"portready {doc.get('kind', 'scan')}")
    by_profile: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in doc.get("rows", []):
        by_profile[str(row.get("profile"))].append(row)
    total = failures = errors = skipped = 0
    for profile, rows in by_profile.items():
        suite = ET.SubElement(suites, "testsuite", name=_clean(profile))
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
                name=_clean(f"{row['doc_port']} {row.get('doc_protocol', '')} -> {row['target']}"),
                time=f"{duration:.3f}",
            )
            message = _clean(f"{row['status']} ({row['reason']}): {row['detail']}")
            if status is Status.ERROR:
                s_err += 1
                ET.SubElement(case, "error", message=message, type=str(row["reason"])).text = _clean(_check_lines(row))
            elif is_failure(status, strict):
                s_fail += 1
                ET.SubElement(case, "failure", message=message, type=str(row["reason"])).text = _clean(_check_lines(row))
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
    data = ET.tostring(suites, encoding="unicode", xml_declaration=True)
    if dest in (None, "-"):
        sys.stdout.write(data + "\n")
    else:
        Path(dest).write_text(data + "\n", encoding="utf-8")
    return exit_code(doc)
