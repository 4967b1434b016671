"""Hostile and mistaken profile files: each is a ConfigError naming the file and the line, fast.

Users may add profiles (`--profiles DIR`), so a profile is untrusted input. The
loader must refuse it before a packet is sent, point at the line to fix, and
neither hang, crash nor expand its way out of memory.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from scanner.errors import ConfigError
from scanner.models import PortRange, Role, Transport
from scanner.profiles import builtin_profiles_dir, load_profile, load_roles

# A valid profile; the tests below change one thing each. Line numbers matter.
BASE = """\
id: sample
title: Sample
section: Sample Ports
rows:
  - id: smb-445
    doc:
      port: "445"
      protocol: TCP
      source: Netwrix Auditor Server
      target: Domain controllers
      purpose: SMB
    direction: outbound
    source: auditor-server
    target: domain-controllers
    checks:
      - {protocol: tcp, port: 445, probe: tcp}
"""
LINE = {"id": 1, "row": 5, "purpose": 11, "direction": 12, "source": 13, "target": 14, "checks": 15, "check": 16}
CHECK = "      - {protocol: tcp, port: 445, probe: tcp}"
FAST = 2.0  # seconds; every refusal here takes milliseconds on a quiet machine


@pytest.fixture(scope="module")
def roles() -> dict[str, Role]:
    return load_roles(builtin_profiles_dir() / "roles.yaml")[0]


def write(tmp_path: Path, text: str | bytes, name: str = "sample.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def refused(path: Path, roles: dict[str, Role]) -> ConfigError:
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_profile(path, roles)
    assert time.monotonic() - start < FAST, "the loader took too long to refuse the file"
    err = info.value
    assert err.path == str(path)
    assert str(err).startswith(str(path))
    return err


def with_check(check: str) -> str:
    return BASE.replace(CHECK, "      - " + check)


def test_the_base_profile_loads(tmp_path: Path, roles: dict[str, Role]) -> None:
    profile = load_profile(write(tmp_path, BASE), roles)
    (row,) = profile.rows
    assert (row.key, row.doc_port, row.line) == ("sample/smb-445", "445", LINE["row"])
    assert row.checks[0].protocol is Transport.TCP and row.checks[0].port == 445


def test_a_port_range_becomes_a_port_range_for_a_probe_that_takes_ranges(
    tmp_path: Path, roles: dict[str, Role]
) -> None:
    from scanner.probes import registry

    takes_range = sorted(n for n, p in registry().items() if p.accepts_range and Transport.TCP in p.transports)
    if not takes_range:
        pytest.skip("no registered probe takes a port range yet (rpc-dynamic, sql-named-instances, listen)")
    probe = registry()[takes_range[0]]
    options = "{interfaces: [wmi]}" if probe.name == "rpc-dynamic" else "{}"
    path = write(
        tmp_path, with_check(f"{{protocol: tcp, port: 1024 - 65535, probe: {probe.name}, options: {options}}}")
    )
    assert load_profile(path, roles).rows[0].checks[0].port == PortRange(1024, 65535)


def test_a_range_on_a_single_port_probe_is_refused(tmp_path: Path, roles: dict[str, Role]) -> None:
    err = refused(write(tmp_path, with_check("{protocol: tcp, port: 1024-65535, probe: tcp}")), roles)
    assert "single port" in err.message and err.line == LINE["check"]


# ---------------------------------------------------------------- not YAML, or YAML we refuse


def test_unclosed_flow_mapping_is_refused_at_its_line(tmp_path: Path, roles: dict[str, Role]) -> None:
    path = write(tmp_path, BASE.replace("    direction: outbound", "    direction: [outbound"))
    err = refused(path, roles)
    assert "not valid YAML" in err.message
    assert err.line == LINE["source"]  # the scanner notices at the next key


def test_tab_indentation_is_refused_at_its_line(tmp_path: Path, roles: dict[str, Role]) -> None:
    path = write(tmp_path, BASE.replace("    direction: outbound", "\tdirection: outbound"))
    err = refused(path, roles)
    assert "not valid YAML" in err.message and err.line == LINE["direction"]


def test_duplicate_key_is_refused_at_the_second_key(tmp_path: Path, roles: dict[str, Role]) -> None:
    text = BASE.replace("    target: domain-controllers\n", "    target: domain-controllers\n    target: dns-servers\n")
    err = refused(write(tmp_path, text), roles)
    assert "duplicate key 'target'" in err.message and err.line == LINE["target"] + 1


def test_anchor_and_alias_are_refused(tmp_path: Path, roles: dict[str, Role]) -> None:
    text = BASE.replace("    doc:\n", "    doc: &cells\n") + "  - id: again\n    doc: *cells\n"
    err = refused(write(tmp_path, text), roles)
    assert "anchors and aliases" in err.message
    assert err.line == LINE["row"] + 1  # the line of the anchor of the shared node


def test_billion_laughs_is_refused_without_expanding(tmp_path: Path, roles: dict[str, Role]) -> None:
    lines = ['lol0: &l0 "lol"']
    for i in range(1, 30):  # fully expanded this would be 9**29 strings
        lines.append(f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    err = refused(write(tmp_path, "\n".join(lines) + "\n" + BASE), roles)
    assert "anchors and aliases" in err.message and err.line == 1


def test_merge_key_is_refused(tmp_path: Path, roles: dict[str, Role]) -> None:
    text = BASE.replace(CHECK, "      - {<<: {protocol: tcp}, port: 445, probe: tcp}")
    err = refused(write(tmp_path, text), roles)
    assert "merge keys" in err.message and err.line == LINE["check"]


@pytest.mark.parametrize(
    "tagged",
    [
        "!!python/object/apply:os.system ['touch /tmp/portready-pwned']",
        "!!python/name:os.system",
        "!!binary aGVsbG8=",
        "!custom value",
    ],
)
def test_custom_and_python_tags_are_refused(tmp_path: Path, roles: dict[str, Role], tagged: str) -> None:
    err = refused(write(tmp_path, BASE.replace("purpose: SMB", f"purpose: {tagged}")), roles)
    assert "tag" in err.message and err.line == LINE["purpose"]


def test_several_documents_in_one_file_are_refused(tmp_path: Path, roles: dict[str, Role]) -> None:
    err = refused(write(tmp_path, BASE + "---\nid: other\n"), roles)
    assert "not valid YAML" in err.message and err.line == LINE["check"] + 1


def test_five_megabyte_file_is_refused_before_parsing(tmp_path: Path, roles: dict[str, Role]) -> None:
    padding = ("# " + "x" * 1021 + "\n") * (5 * 1024)
    err = refused(write(tmp_path, BASE + padding), roles)
    assert "limit" in err.message and err.line is None


def test_moderately_deep_nesting_is_refused_at_its_line(tmp_path: Path, roles: dict[str, Role]) -> None:
    nested = "[" * 40 + "]" * 40
    err = refused(write(tmp_path, BASE.replace("purpose: SMB", f"purpose: {nested}")), roles)
    assert "nested deeper" in err.message and err.line == LINE["purpose"]


def test_thousands_of_nesting_levels_are_refused_not_a_crash(tmp_path: Path, roles: dict[str, Role]) -> None:
    nested = "[" * 5000 + "]" * 5000
    err = refused(write(tmp_path, BASE.replace("purpose: SMB", f"purpose: {nested}")), roles)
    assert "nested deeper" in err.message and err.line == LINE["purpose"]


def test_control_characters_are_refused_not_a_crash(tmp_path: Path, roles: dict[str, Role]) -> None:
    err = refused(write(tmp_path, BASE.replace("purpose: SMB", "purpose: SMB\x00\x07")), roles)
    assert err.line == LINE["purpose"]


def test_a_five_thousand_digit_number_is_refused_not_a_crash(tmp_path: Path, roles: dict[str, Role]) -> None:
    err = refused(write(tmp_path, with_check("{protocol: tcp, port: " + "9" * 5000 + ", probe: tcp}")), roles)
    assert err.line == LINE["check"]


def test_bytes_that_are_not_utf8_are_refused(tmp_path: Path, roles: dict[str, Role]) -> None:
    err = refused(write(tmp_path, BASE.encode() + b"\xff\xfe\x80garbage\n"), roles)
    assert "not UTF-8" in err.message


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a list\n- not a profile\n", "just a string\n"])
def test_a_file_that_is_not_a_profile_mapping_is_refused(tmp_path: Path, roles: dict[str, Role], text: str) -> None:
    err = refused(write(tmp_path, text), roles)
    assert err.message


# ---------------------------------------------------------------- valid YAML, wrong profile


def test_profile_id_must_match_the_file_name(tmp_path: Path, roles: dict[str, Role]) -> None:
    err = refused(write(tmp_path, BASE, name="other.yaml"), roles)
    assert "must match the file name" in err.message and err.line == LINE["id"]


def test_misspelt_key_is_refused_at_its_line(tmp_path: Path, roles: dict[str, Role]) -> None:
    err = refused(write(tmp_path, BASE.replace("    source: auditor-server", "    sorce: auditor-server")), roles)
    assert "sorce" in err.message and err.line == LINE["source"]


def test_duplicate_row_id_is_refused_at_the_second_row(tmp_path: Path, roles: dict[str, Role]) -> None:
    second = BASE[BASE.index("  - id: smb-445") :]
    err = refused(write(tmp_path, BASE + second), roles)
    assert "duplicate row id" in err.message and err.line == LINE["check"] + 1


def test_unknown_probe_is_refused_with_the_known_names(tmp_path: Path, roles: dict[str, Role]) -> None:
    err = refused(write(tmp_path, with_check("{protocol: tcp, port: 445, probe: telepathy}")), roles)
    assert "unknown probe 'telepathy'" in err.message and "tcp" in err.message
    assert err.line == LINE["check"]


def test_unknown_role_is_refused_at_its_line(tmp_path: Path, roles: dict[str, Role]) -> None:
    err = refused(write(tmp_path, BASE.replace("target: domain-controllers", "target: domain-controlers")), roles)
    assert "unknown role 'domain-controlers'" in err.message and err.line == LINE["target"]


@pytest.mark.parametrize(
    "port",
    [
        "0",
        "65536",
        "70000",
        "'65535-1024'",
        "'0-10'",
        "'1024-70000'",
        "'1024--2000'",
        "'abc'",
        "'389'",
        "[445]",
        "{p: 1}",
    ],
)
def test_bad_port_is_refused_at_its_line(tmp_path: Path, roles: dict[str, Role], port: str) -> None:
    err = refused(write(tmp_path, with_check(f"{{protocol: tcp, port: {port}, probe: tcp}}")), roles)
    assert "port" in err.message and err.line == LINE["check"]


def test_boolean_port_is_refused(tmp_path: Path, roles: dict[str, Role]) -> None:
    err = refused(write(tmp_path, with_check("{protocol: tcp, port: true, probe: tcp}")), roles)
    assert "port" in err.message and err.line == LINE["check"]


def test_probe_on_a_transport_it_does_not_speak_is_refused(tmp_path: Path, roles: dict[str, Role]) -> None:
    err = refused(write(tmp_path, with_check("{protocol: udp, port: 445, probe: tcp}")), roles)
    assert "does not run over udp" in err.message and err.line == LINE["check"]


def test_unknown_transport_is_refused(tmp_path: Path, roles: dict[str, Role]) -> None:
    err = refused(write(tmp_path, with_check("{protocol: sctp, port: 445, probe: tcp}")), roles)
    assert "protocol" in err.message and err.line == LINE["check"]


def test_tcp_check_without_port_or_setting_is_refused(tmp_path: Path, roles: dict[str, Role]) -> None:
    err = refused(write(tmp_path, with_check("{protocol: tcp, probe: tcp}")), roles)
    assert "needs a port or a setting" in err.message and err.line == LINE["check"]


def test_options_a_probe_does_not_take_are_refused(tmp_path: Path, roles: dict[str, Role]) -> None:
    err = refused(write(tmp_path, with_check("{protocol: tcp, port: 445, probe: tcp, options: {gc: true}}")), roles)
    assert "does not take option(s) 'gc'" in err.message and err.line == LINE["check"]


def test_option_of_the_wrong_type_is_refused(tmp_path: Path, roles: dict[str, Role]) -> None:
    err = refused(write(tmp_path, with_check("{protocol: udp, port: 53, probe: dns, options: {domain: [a]}}")), roles)
    assert "option 'domain' has the wrong type" in err.message and err.line == LINE["check"]


def test_a_row_without_checks_is_refused(tmp_path: Path, roles: dict[str, Role]) -> None:
    err = refused(write(tmp_path, BASE.replace(CHECK + "\n", "").replace("    checks:", "    checks: []")), roles)
    assert "checks" in err.message and err.line == LINE["checks"]


def test_a_number_where_a_document_cell_belongs_is_refused(tmp_path: Path, roles: dict[str, Role]) -> None:
    # Cells are text copied from the document: an unquoted 445 would lose "445" vs "0445".
    err = refused(write(tmp_path, BASE.replace('port: "445"', "port: 445")), roles)
    assert "doc.port" in err.message and err.line == LINE["row"] + 2
