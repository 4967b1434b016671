"""The README's footprint table lists every registered probe with the footprint it declares."""

from __future__ import annotations

import re
from pathlib import Path

from scanner.probes.base import Probe, registry

README = Path(__file__).parents[1] / "README.md"


def _table() -> dict[str, str]:
    text = README.read_text()
    block = text.split("<!-- footprint:start -->", 1)[1].split("<!-- footprint:end -->", 1)[0]
    rows = {}
    for line in block.splitlines():
        m = re.match(r"^\| `([^`]+)` \| (.*) \| (.*) \|$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_every_probe_is_in_the_footprint_table_with_its_declared_footprint() -> None:
    table = _table()
    # the project's own probes (tests register throwaway ones in the same registry)
    probes = {n: c for n, c in registry().items() if c.__module__.startswith("scanner.probes.")}
    assert set(table) == set(probes), f"missing: {set(probes) - set(table)}, stale: {set(table) - set(probes)}"
    for name, cls in probes.items():
        assert table[name] == (cls.footprint or "nothing known"), name


def test_footprint_defaults_to_nothing_known() -> None:
    assert Probe.footprint == ""
