"""The JSON report writer: same values as `json.dump(indent=2)` wrote, escapes intact, streamed.

`_old_render_json` is the writer as it was before the layout changed (pure-Python indented
encoder, a regex per token): the document's values are the contract, so every new output
must parse to exactly what the old one parsed to (key order included).
"""

from __future__ import annotations

import datetime
import io
import json
import re
from pathlib import Path
from typing import Any, Mapping, TextIO

import pytest

from scanner.models import Reason, Status
from scanner.report import build_document
from scanner.reporters import RenderOptions
from scanner.reporters.json_report import json_text, render_json

from . import samples

_OLD_RAW = re.compile("[\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]")
BIDI = "dc1 \u202egnp.exe\u2066x\u2069 \x85\x9b31m \u200b\ufeff\ufffb\u2028end\x7f"


class _OldEscapingWriter:
    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, chunk: str) -> int:
        return self._out.write(_OLD_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", chunk))


def _old_render_json(doc: Mapping[str, Any], out: TextIO) -> None:
    json.dump(doc, _OldEscapingWriter(out), indent=2, ensure_ascii=False, default=str)
    out.write("\n")


def _new(doc: Any) -> str:
    buf = io.StringIO()
    render_json(doc, buf, RenderOptions())
    return buf.getvalue()


def _old(doc: Any) -> str:
    buf = io.StringIO()
    _old_render_json(doc, buf)
    return buf.getvalue()


def _same_values(a: str, b: str) -> None:
    va, vb = json.loads(a), json.loads(b)
    assert va == vb
    assert json.dumps(va) == json.dumps(vb), "same members in the same order"


def _big_doc(targets: int = 300) -> dict[str, Any]:
    endpoints = [{"uuid": f"{i:08x}-1234-abcd-ef00-0123456789ab", "version": "1.0", "protocol": "tcp",
                  "port": 49664 + i, "annotation": "Impl friendly name"} for i in range(53)]
    results = []
    for i in range(targets):
        rows = (samples.LDAP, samples.GC_SSL, samples.WMI, samples.SCM)
        results.append(samples.result(
            rows[i % len(rows)], f"dc{i}", f"198.18.{i // 256}.{i % 256}",
            samples.check("tcp", 389, "ldap", Status.PASS, Reason.OK, "RootDSE", 3.1, banner=BIDI if i % 7 == 0 else "ok"),
            samples.check("tcp", 3269, "ldaps", Status.WARN if i % 5 else Status.PASS, Reason.CERTIFICATE, "TLSv1.3", 8.0,
                          **samples.cert("CN=dc1.lab.test", "2026-06-01T00:00:00+00:00", 120, "bb" * 32)),
            samples.check("tcp", 135, "epm", Status.FAIL if i % 3 == 0 else Status.PASS,
                          Reason.FILTERED if i % 3 == 0 else Reason.OK, "mapper", 5.0, endpoints=endpoints[: 5 + i % 48]),
        ))
    return build_document("scan", results, started="2026-01-10T10:00:00+00:00", finished="2026-01-10T10:01:00+00:00",
                          options={"depth": "protocol", "timeout": 3.0}, inventory={"path": "inv.yaml", "roles": {}},
                          extra={"notes": ["a note"]})


@pytest.mark.parametrize("name", ["old", "new", "hostile", "listen", "big"])
def test_same_values_as_the_indented_writer(name: str) -> None:
    doc = {"old": lambda: samples.scan_doc("old"), "new": lambda: samples.scan_doc("new"),
           "hostile": samples.hostile_doc, "listen": samples.listen_doc, "big": _big_doc}[name]()
    _same_values(_new(doc), _old(doc))


def test_odd_values_are_encoded_as_before() -> None:
    """Non-str keys, tuples, empty containers, objects only str() can show, top-level scalars."""
    doc: dict[Any, Any] = {
        "rows": (1, 2.5, None, True, {"x": ()}), "findings": [], "summary": {}, 3: "int key", 1.5: {None: False, 2: [{}]},
        True: [Path("/tmp/x"), datetime.date(2026, 1, 2)], "when": datetime.datetime(2026, 1, 2, 3, 4),
        "s": "\u202e", "n": 10**30, "options": {"path": Path("p"), "nested": {"deep": [[BIDI]]}},
    }
    _same_values(_new(doc), _old(doc))
    for value in ([], {}, [1, {"a": BIDI}], "text", 5, None, Path("x")):
        _same_values(_new(value), _old(value))
        _same_values(json_text(value), _old(value))
    with pytest.raises(TypeError):
        _new({"rows": [{(1, 2): "tuple key"}]})  # as json.dump: keys must be str, int, float, bool or None


def test_c1_and_bidi_characters_in_nested_evidence_are_escaped_and_round_trip() -> None:
    doc = samples.scan_doc("new")
    doc["rows"][0]["checks"][0]["evidence"]["nested"] = {"list": [BIDI, {"deeper": BIDI}], "banner": BIDI}
    doc["findings"].append({"detail": BIDI})
    doc["options"]["note"] = BIDI
    for text in (_new(doc), json_text(doc)):
        assert not _OLD_RAW.search(text), "no C1 control or bidi/format character reaches the output raw"
        assert "\\u202e" in text and "\\u0085" in text and "\\u009b" in text and "\\u2066" in text
        back = json.loads(text)
        assert back["rows"][0]["checks"][0]["evidence"]["nested"] == {"list": [BIDI, {"deeper": BIDI}], "banner": BIDI}
        assert back["findings"][-1] == {"detail": BIDI} and back["options"]["note"] == BIDI
    # non-ASCII text stays as it is (ensure_ascii=False)
    assert json.loads(_new({"name": "héllo ☃"})) == {"name": "héllo ☃"} and "héllo ☃" in _new({"name": "héllo ☃"})


def test_json_text_is_the_reports_layout_with_a_final_newline() -> None:
    doc = samples.scan_doc("old")
    assert json_text(doc) == _new(doc) and json_text(doc).endswith("}\n")


def test_a_large_report_is_written_in_pieces_one_row_per_line() -> None:
    doc = _big_doc(600)
    writes: list[int] = []

    class Sink(io.StringIO):
        def write(self, s: str) -> int:
            writes.append(len(s))
            return super().write(s)

    sink = Sink()
    render_json(doc, sink, RenderOptions())
    total = len(sink.getvalue())
    assert total > 2_000_000 and len(writes) > 10 and max(writes) < total / 10, "streamed, not one huge string"
    lines = sink.getvalue().splitlines()
    start = lines.index('  "rows": [')
    assert lines[start + 1 + len(doc["rows"])] == "  ],", "one row per line"
    _same_values(sink.getvalue(), _old(doc))
