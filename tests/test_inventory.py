"""Inventory files and --target values: expansion, validation and hostile input."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from scanner.errors import ConfigError, UsageError
from scanner.inventory import expand_host, load_inventory, parse_target_option, resolve_credentials

ROLES = {"domain-controllers": 1, "dns-servers": 1, "monitored-computers": 1}


def _inv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("dc1.corp.example", ["dc1.corp.example"]),
        ("10.0.5.10-12", ["10.0.5.10", "10.0.5.11", "10.0.5.12"]),
        ("10.0.5.254-10.0.6.1", ["10.0.5.254", "10.0.5.255", "10.0.6.0", "10.0.6.1"]),
        ("192.0.2.0/30", ["192.0.2.1", "192.0.2.2"]),
        ("192.0.2.7/32", ["192.0.2.7"]),
        ("2001:db8::1", ["2001:db8::1"]),
        ("[2001:db8::2]", ["2001:db8::2"]),
        ("host-with-dash", ["host-with-dash"]),
    ],
)
def test_hosts_expand_names_addresses_blocks_and_ranges(entry: str, expected: list[str]) -> None:
    assert expand_host(entry) == expected


@pytest.mark.parametrize(
    "entry",
    ["", "10.0.0.0/8", "10.0.5.40-10", "10.0.5.1-2001:db8::1", "bad host", "256.1.1.1", "a" * 300, "x;rm -rf /", "1.2.3"],
)
def test_bad_or_oversized_hosts_are_rejected(entry: str) -> None:
    with pytest.raises(ValueError):
        expand_host(entry)


def test_inventory_loads_targets_files_labels_and_settings(tmp_path: Path) -> None:
    (tmp_path / "dcs.txt").write_text("# our DCs\ndc2.corp.example\n\n10.0.0.1-2  # branch\n", encoding="utf-8")
    path = _inv(tmp_path, """
targets:
  domain-controllers:
    - dc1.corp.example
    - {file: dcs.txt}
    - {host: 10.9.9.9, label: branch DC}
  dns-servers: dc1.corp.example
settings:
  domain: corp.example
  timeout: 2
  ports: {nutanix-port: 9900}
credentials:
  domain-controllers: {username: svc, domain: CORP, password_env: PR_TEST_PW}
""")
    inv = load_inventory(path, ROLES)
    hosts = [t.host for t in inv.targets["domain-controllers"]]
    assert hosts == ["dc1.corp.example", "dc2.corp.example", "10.0.0.1", "10.0.0.2", "10.9.9.9"]
    assert inv.targets["domain-controllers"][-1].label == "branch DC"
    assert [t.host for t in inv.targets["dns-servers"]] == ["dc1.corp.example"]
    assert inv.settings["ports"] == {"nutanix-port": 9900}
    assert inv.sha256 and len(inv.sha256) == 64
    creds = resolve_credentials(inv.credential_refs, environ={"PR_TEST_PW": "s3cret!"})
    assert creds["domain-controllers"].password == "s3cret!"
    assert "s3cret" not in repr(creds["domain-controllers"]) and "s3cret" not in str(creds["domain-controllers"])
    assert "s3cret" not in str(inv.describe())


def test_integrated_logon_needs_no_password_and_reads_none(tmp_path: Path) -> None:
    path = _inv(tmp_path, "credentials:\n  domain-controllers: {integrated: true, domain: CORP}\n")
    inv = load_inventory(path, ROLES)
    creds = resolve_credentials(inv.credential_refs, environ={}, prompt=lambda _q: pytest.fail("prompted"))
    dc = creds["domain-controllers"]
    assert dc.integrated and dc.password == "" and dc.username == ""
    assert str(dc) == "the current Windows user (integrated logon)"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("targets:\n  domain-controllers: [dc1]\n  wizards: [x]\n", 3, "unknown role 'wizards'"),
        ("targets:\n  domain-controllers:\n    - dc1\n    - 10.0.0.0/8\n", 4, "limit"),
        ("targets:\n  domain-controllers: [dc1]\nsetings: {}\n", 3, "unknown section"),
        ("settings:\n  timeout: -1\n", 2, "timeout"),
        ("settings:\n  ports: {nutanix-port: 70000}\n", 2, "not a port number"),
        ("credentials:\n  domain-controllers:\n    username: a\n    password: hunter2\n", 4, "password_env"),
        ("credentials:\n  domain-controllers:\n    integrated: yes please\n", 3, "true or false"),
        ("credentials:\n  domain-controllers:\n    integrated: true\n    password_env: X\n", 4, "no password"),
        ("credentials:\n  domain-controllers:\n    integrated: false\n", 3, "need `username`"),
        ("credentials:\n  domain-controllers:\n    domain: CORP\n", 2, "integrated: true"),
        ("settings:\n  kerberos_client: 7\n", 2, "kerberos_client"),
        ("targets:\n  domain-controllers: [dc1\n", 3, "not valid YAML"),
        ("targets:\n  domain-controllers:\n    - {file: missing.txt}\n", 3, "does not exist"),
        ("a: 1\nb: &x [1]\nc: *x\n", 2, "aliases"),
        ("targets: !!python/object:os.system {}\n", 1, "tag"),
        ("targets:\n  domain-controllers: [a]\n  domain-controllers: [b]\n", 3, "duplicate key"),
        ("- just\n- a list\n", 1, "mapping"),
    ],
)
def test_bad_inventory_names_file_line_and_problem(tmp_path: Path, text: str, line: int, words: str) -> None:
    path = _inv(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_inventory(path, ROLES)
    assert err.value.path == str(path)
    assert err.value.line == line, str(err.value)
    assert words in str(err.value)
    assert "hunter2" not in str(err.value)


def test_billion_laughs_is_refused_fast(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    path = _inv(tmp_path, "\n".join(lines) + "\n")
    started = time.monotonic()
    with pytest.raises(ConfigError, match="aliases"):
        load_inventory(path, ROLES)
    assert time.monotonic() - started < 5


def test_huge_inventory_is_refused_before_parsing(tmp_path: Path) -> None:
    path = _inv(tmp_path, "targets:\n  domain-controllers:\n" + "    - dc1\n" * 700_000)
    with pytest.raises(ConfigError, match="limit"):
        load_inventory(path, ROLES)


def test_host_file_errors_name_the_host_file_and_its_line(tmp_path: Path) -> None:
    (tmp_path / "hosts.txt").write_text("good1\n\nbad host here\n", encoding="utf-8")
    path = _inv(tmp_path, "targets:\n  monitored-computers: [{file: hosts.txt}]\n")
    with pytest.raises(ConfigError) as err:
        load_inventory(path, ROLES)
    assert err.value.path.endswith("hosts.txt") and err.value.line == 3


def test_binary_inventory_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage\x00\x80")
    with pytest.raises(ConfigError, match="not UTF-8|not valid YAML"):
        load_inventory(path, ROLES)


def test_target_option_parses_role_and_hosts() -> None:
    role, targets = parse_target_option("domain-controllers=dc1,10.0.0.5-6", ROLES)
    assert role == "domain-controllers"
    assert [t.host for t in targets] == ["dc1", "10.0.0.5", "10.0.0.6"]


@pytest.mark.parametrize("value", ["dc1", "=dc1", "wizards=dc1", "domain-controllers=", "domain-controllers=bad host"])
def test_bad_target_option_is_a_usage_error(value: str) -> None:
    with pytest.raises(UsageError):
        parse_target_option(value, ROLES)


def test_missing_password_variable_is_named_without_any_secret() -> None:
    with pytest.raises(UsageError, match="PR_NOT_SET"):
        resolve_credentials({"domain-controllers": {"username": "a", "password_env": "PR_NOT_SET"}}, environ={})
