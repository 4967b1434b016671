"""The catalogue (profiles/*.yaml) against the vendor's ports document.

Every row of every port table must be in the catalogue with the same section,
port, protocol, source, target and purpose cells, and the catalogue must hold
no row the document lacks (rows marked `derived` excepted). The document's rows
are frozen in tests/data/reference_tables.json so a clone without ../shared
still tests itself; when the document is there, it must still match the frozen
copy, so drift on either side fails the build. No test here sends a packet.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from scanner.profiles import builtin_profiles_dir, load_catalogue, load_roles
from scanner.yamlsrc import load_yaml
from tests.data.extract_reference_tables import extract

DATA = Path(__file__).parent / "data"
FROZEN = DATA / "reference_tables.json"
PROFILES = builtin_profiles_dir()

# The profile ids issue 2 names, one per table of the document, plus the derived NetApp one.
TABLE_PROFILES = {
    "active-directory": "Active Directory Ports",
    "adfs": "AD FS Ports",
    "exchange": "Exchange Ports",
    "dell-data-storage": "Dell Data Storage Ports",
    "dell-isilon-powerscale": "Dell Isilon/PowerScale Ports",
    "nutanix-files": "Protocols and Ports Required for Monitoring Nutanix Files",
    "qumulo": "Qumulo Ports",
    "synology": "Synology Ports",
    "windows-file-servers": "Windows File Server Ports",
    "group-policy": "Group Policy Ports",
    "logon-activity": "Logon Activity Ports",
    "exchange-online": "Exchange Online Ports",
    "entra-id": "Microsoft Entra ID Ports",
    "sharepoint-online": "SharePoint Online Ports",
    "teams": "Teams Ports",
    "network-devices": "Network Devices Ports",
    "oracle-database": "Oracle Database Ports",
    "sharepoint": "SharePoint Ports",
    "sql-server": "SQL Server Ports",
    "user-activity": "User Activity Ports",
    "vmware": "VMware Ports",
    "windows-server": "Windows Server Ports",
    "auditor-server": "Netwrix Auditor Server",
}
DERIVED_PROFILES = {"netapp-ontap": "Configure System Service Firewall Policies"}
M365_PROFILES = {"exchange-online", "entra-id", "sharepoint-online", "teams"}
CELLS = ("port", "protocol", "source", "target", "purpose")
# Derived rows name a service where a table would name a port.
SERVICE_PORTS = {"http": 80, "https": 443}
SERVICE_TRANSPORTS = {"HTTP": "tcp", "HTTPS": "tcp"}


def reference_document() -> Path:
    env = os.environ.get("PORTREADY_REFERENCE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared/reference/ports-and-protocols.md"


def frozen_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(FROZEN.read_text(encoding="utf-8"))
    return rows


def catalogue_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PROFILES.glob("*.yaml")) if p.name != "roles.yaml"}


_ROW_DEFAULTS = {"group": None, "derived": False, "note": None, "endpoints": []}
_CHECK_DEFAULTS = {"port": None, "setting": None, "options": {}}


def _view(profile: dict[str, Any]) -> SimpleNamespace:
    """A profile file as attributes, with the schema's defaults (no probe registry needed)."""
    rows = []
    for row in profile["rows"]:
        checks = [SimpleNamespace(**{**_CHECK_DEFAULTS, **c}) for c in row["checks"]]
        rows.append(SimpleNamespace(**{**_ROW_DEFAULTS, **row, "doc": SimpleNamespace(**row["doc"]), "checks": checks}))
    return SimpleNamespace(**{"derived_from": None, **profile, "rows": rows})


@lru_cache(maxsize=1)
def raw_profiles() -> dict[str, Any]:
    """The profile files as written, read without the loader (which needs every probe)."""
    return {pid: _view(load_yaml(path, "profile")) for pid, path in catalogue_files().items()}


def all_rows() -> list[tuple[Any, Any]]:
    return [(profile, row) for profile in raw_profiles().values() for row in profile.rows]


def documented_key(section: str, group: str | None, cells: dict[str, str]) -> tuple[str | None, ...]:
    return (section, group, *(cells[c] for c in CELLS))


def doc_transports(row: Any) -> set[str]:
    """The transports the Protocol cell names: 'TCP\\UDP', 'TCP/UDP' and 'UDP / TCP' are both."""
    if row.derived and row.doc.protocol in SERVICE_TRANSPORTS:
        return {SERVICE_TRANSPORTS[row.doc.protocol]}
    found = {t.lower() for t in re.findall(r"TCP|UDP|ICMP", row.doc.protocol.upper())}
    assert found, f"no transport in Protocol cell {row.doc.protocol!r}"
    return found


def doc_ports(cell: str) -> set[int | str]:
    """The ports a Port cell names: single ports, 'A through B' as each port, 'A -B' as a range."""
    if cell in SERVICE_PORTS:
        return {SERVICE_PORTS[cell]}
    ports: set[int | str] = set()
    text = cell
    for low, high in re.findall(r"(\d+)\s+through\s+(\d+)", text):
        ports.update(range(int(low), int(high) + 1))
    text = re.sub(r"(\d+)\s+through\s+(\d+)", " ", text)
    for low, high in re.findall(r"(\d+)\s*-\s*(\d+)", text):
        ports.add(f"{low}-{high}")
    text = re.sub(r"(\d+)\s*-\s*(\d+)", " ", text)
    ports.update(int(n) for n in re.findall(r"\d+", text))
    return ports


def check_port(port: int | str | None) -> int | str | None:
    if isinstance(port, str):
        low, high = (p.strip() for p in port.split("-"))
        return f"{low}-{high}"
    return port


# ---------------------------------------------------------------- the frozen reference


def test_frozen_reference_has_85_rows_in_23_tables() -> None:
    rows = frozen_rows()
    assert len(rows) == 85
    assert {r["section"] for r in rows} == set(TABLE_PROFILES.values())
    for row in rows:
        assert set(row) == {"section", "group", *CELLS}
        assert all(row[c] == row[c].strip() for c in CELLS)


def test_reference_document_still_matches_the_frozen_rows() -> None:
    source = reference_document()
    if not source.is_file():
        pytest.skip(f"reference document not found at {source} (set PORTREADY_REFERENCE to check it)")
    assert extract(source.read_text(encoding="utf-8")) == frozen_rows(), (
        f"{source} and {FROZEN} differ: the vendor's tables changed or the frozen copy was edited; "
        "regenerate with tests/data/extract_reference_tables.py and update profiles/ to match"
    )


def test_extractor_keeps_cells_verbatim_and_reads_subheaders_as_groups() -> None:
    text = "\n".join(
        [
            "# First Ports",
            "| Option | Setting |",
            "| ------ | ------- |",
            "| Rule   | Port    |",
            "",
            "| Port | Protocol | Source | Target | Purpose |",
            "| ---- | -------- | ------ | ------ | ------- |",
            "| Sub  |          |        |        |         |",
            "| 389  | TCP\\UDP  | A      | B      | Run `x /y `  |",
            "| 1 \\| 2 | TCP | A | B | piped |",
            "```",
            "# not a heading",
            "```",
            "### Second",
            "| Port | Protocol | Source | Target | Purpose |",
            "| --- | --- | --- | --- | --- |",
            "| –   | ICMP | A | B | SQL\\*Net |",
        ]
    )
    assert extract(text) == [
        {"section": "First Ports", "group": "Sub", "port": "389", "protocol": "TCP\\UDP",
         "source": "A", "target": "B", "purpose": "Run `x /y `"},
        {"section": "First Ports", "group": "Sub", "port": "1 \\| 2", "protocol": "TCP",
         "source": "A", "target": "B", "purpose": "piped"},
        {"section": "Second", "group": None, "port": "–", "protocol": "ICMP",
         "source": "A", "target": "B", "purpose": "SQL\\*Net"},
    ]  # fmt: skip


def test_extractor_rejects_a_port_table_row_with_missing_cells() -> None:
    text = "# S\n| Port | Protocol | Source | Target | Purpose |\n| --- | --- | --- | --- | --- |\n| 1 | TCP | A |\n"
    with pytest.raises(ValueError, match="line 4"):
        extract(text)


# ---------------------------------------------------------------- catalogue vs reference


def test_catalogue_has_one_profile_per_table_plus_derived_netapp() -> None:
    profiles = raw_profiles()
    assert set(profiles) == set(TABLE_PROFILES) | set(DERIVED_PROFILES)
    for pid, profile in profiles.items():
        assert profile.id == pid
        assert profile.section == {**TABLE_PROFILES, **DERIVED_PROFILES}[pid]
    assert profiles["netapp-ontap"].derived_from == DERIVED_PROFILES["netapp-ontap"]
    assert all(row.derived for row in profiles["netapp-ontap"].rows)


def test_every_documented_row_is_in_the_catalogue_and_nothing_else() -> None:
    reference = Counter(documented_key(r["section"], r["group"], {c: r[c] for c in CELLS}) for r in frozen_rows())
    catalogue = Counter(
        documented_key(profile.section, row.group, vars(row.doc))
        for profile, row in all_rows()
        if not row.derived
    )
    missing = reference - catalogue
    extra = catalogue - reference
    assert not missing, f"documented rows missing from profiles/: {sorted(missing, key=str)}"
    assert not extra, f"rows in profiles/ that the document lacks (mark derived ones): {sorted(extra, key=str)}"
    assert sum(catalogue.values()) == 85


def test_rows_keep_the_document_order_of_their_table() -> None:
    by_section: dict[str, list[str]] = {}
    for r in frozen_rows():
        by_section.setdefault(r["section"], []).append(r["purpose"] + "|" + r["port"])
    for profile in raw_profiles().values():
        if profile.derived_from:
            continue
        assert [row.doc.purpose + "|" + row.doc.port for row in profile.rows] == by_section[profile.section]


def test_derived_rows_live_only_in_profiles_that_say_what_they_derive_from() -> None:
    for profile, row in all_rows():
        if row.derived:
            assert profile.derived_from, f"{profile.id}/{row.id} is derived but the profile has no derived_from"
            assert profile.section not in TABLE_PROFILES.values()


# ---------------------------------------------------------------- structure of each row


def test_row_ids_are_unique_within_each_profile() -> None:
    for profile in raw_profiles().values():
        ids = [row.id for row in profile.rows]
        assert len(ids) == len(set(ids)), (
            f"{profile.id}: duplicate row ids {sorted(i for i in ids if ids.count(i) > 1)}"
        )


def test_checks_cover_exactly_the_documented_transports() -> None:
    for profile, row in all_rows():
        checked = {c.protocol for c in row.checks}
        assert checked == doc_transports(row), f"{profile.id}/{row.id}: checks {checked}, document {row.doc.protocol!r}"


def test_checks_cover_exactly_the_documented_ports_on_each_transport() -> None:
    for profile, row in all_rows():
        ports = doc_ports(row.doc.port)
        transports = doc_transports(row)
        if transports == {"icmp"}:
            expected: set[tuple[str, int | str | None]] = {("icmp", None)}
        elif not ports:  # "Custom port": only the inventory knows it
            expected = {(t, None) for t in transports}
            assert all(c.setting for c in row.checks), f"{profile.id}/{row.id}: a custom port needs a setting"
        else:
            expected = {(t, p) for t in transports for p in ports}
        checked = {(c.protocol, check_port(c.port)) for c in row.checks}
        assert checked == expected, f"{profile.id}/{row.id}: checks {sorted(checked, key=str)} for {row.doc.port!r}"


def test_inbound_rows_target_the_auditor_host_and_are_proven_by_listening() -> None:
    _roles, local = load_roles(PROFILES / "roles.yaml")
    for profile, row in all_rows():
        where = f"{profile.id}/{row.id}"
        if row.direction == "inbound":
            assert row.target in local, f"{where}: inbound rows end on the Auditor host"
            assert row.source not in local, where
            assert {c.probe for c in row.checks} == {"listen"}, f"{where}: inbound rows are checked by listening"
        else:
            assert row.source in local, f"{where}: outbound rows start on the Auditor host"
            assert row.target not in local, where
            assert "listen" not in {c.probe for c in row.checks}, where


def test_rows_whose_target_is_the_auditor_host_in_the_document_are_inbound() -> None:
    for profile, row in all_rows():
        if row.doc.target == "Netwrix Auditor Server":
            assert row.direction == "inbound", f"{profile.id}/{row.id}"
        if row.doc.source == "Netwrix Auditor Server":
            assert row.direction == "outbound", f"{profile.id}/{row.id}"


def test_every_role_a_row_names_is_in_the_role_list() -> None:
    roles, _local = load_roles(PROFILES / "roles.yaml")
    for profile, row in all_rows():
        assert row.source in roles and row.target in roles, f"{profile.id}/{row.id}"


def test_microsoft_365_rows_list_the_documented_host_names_as_endpoints() -> None:
    profiles = raw_profiles()
    for pid in M365_PROFILES:
        for row in profiles[pid].rows:
            assert row.endpoints == row.doc.purpose.split(), f"{pid}/{row.id}"
            assert row.doc.target.startswith("For a full list of Microsoft"), f"{pid}/{row.id}"
            assert row.target == f"{pid}-endpoints"
    for profile, row in all_rows():
        if profile.id not in M365_PROFILES:
            assert not row.endpoints, f"{profile.id}/{row.id}: only Microsoft 365 rows have documented endpoints"


def test_unverifiable_udp_checks_say_why() -> None:
    for profile, row in all_rows():
        for check in row.checks:
            if check.probe == "udp-unverifiable":
                assert len(str(check.options.get("why", ""))) > 10, f"{profile.id}/{row.id} UDP {check.port}"


def test_dynamic_rpc_checks_name_the_interfaces_they_look_for() -> None:
    known = {"wmi", "scm", "eventlog", "winreg", "tasksched", "pla"}
    for profile, row in all_rows():
        for check in row.checks:
            if check.probe == "rpc-dynamic":
                interfaces = check.options.get("interfaces")
                assert interfaces and set(interfaces) <= known, f"{profile.id}/{row.id}: {interfaces}"


# ---------------------------------------------------------------- against the probe registry


def _missing_probes() -> list[str]:
    from scanner.probes import registry

    used = {check.probe for _profile, row in all_rows() for check in row.checks}
    return sorted(used - set(registry()))


def test_every_probe_a_row_uses_is_registered() -> None:
    missing = _missing_probes()
    if missing:
        pytest.skip(f"probe modules not written yet for: {', '.join(missing)} (issues 4 and 5)")
    assert not missing


def test_the_catalogue_loads_with_the_real_probes() -> None:
    missing = _missing_probes()
    if missing:
        pytest.skip(f"probe modules not written yet for: {', '.join(missing)} (issues 4 and 5)")
    catalogue = load_catalogue()
    rows = catalogue.rows()
    assert len(rows) == 87
    assert sum(not row.derived for row in rows) == 85
    assert {p.id for p in catalogue.profiles.values()} == set(TABLE_PROFILES) | set(DERIVED_PROFILES)
