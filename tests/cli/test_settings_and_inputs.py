"""`--set`, host files and target caps: every user mistake gets exit 2 and words that name it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli._run import portready

_PLAN = ("plan", "--target", "domain-controllers=192.0.2.1", "--profile", "active-directory", "--json")


@pytest.mark.parametrize(
    ("item", "words"),
    [
        ("domian=corp.example", "unknown setting 'domian'; expected one of"),
        ("timeout=fast", "setting 'timeout': a number of seconds"),
        ("timeout=0", "setting 'timeout': a number of seconds"),
        ("timeout=²", "setting 'timeout': a number of seconds"),
        ("depth=deep", "setting 'depth': port or protocol"),
        ("ports.nutanix-port=99999", "port 'nutanix-port': 99999 is not a port number"),
        ("ports.nutanix-port=¹²", "port 'nutanix-port': '¹²' is not a port number"),
        ("ports.nutanx-port=9898", "no profile has a port setting 'nutanx-port'; known: nutanix-port"),
        ("concurrency=0", "setting 'concurrency': a whole number from 1 to 10000"),
        ("per_host=0", "setting 'per_host': a whole number from 1 to 1000"),
        ("retries=-5", "setting 'retries': a whole number from 0 to 10"),
        ("trust_private_ca=maybe", "setting 'trust_private_ca': true or false"),
        ("sql_instances.SQLEXPRESS=70000", "setting 'sql_instances': maps instance names to TCP ports"),
        ("ports=9898", "give one entry at a time, as ports.NAME=PORT"),
        ("noequals", "expected KEY=VALUE"),
    ],
)
def test_a_bad_set_value_exits_2_naming_the_key_and_what_is_allowed(item: str, words: str) -> None:
    proc = portready(*_PLAN, "--set", item)
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr


def test_good_set_values_are_typed_like_the_inventory() -> None:
    proc = portready(*_PLAN, "--set", "retries=3", "--set", "timeout=1.5", "--set", "domain=123",
                     "--set", "ports.nutanix-port=9900", "--set", "trust_private_ca=true", "--set", "depth=port")
    assert proc.returncode == 0, proc.stderr


def test_the_same_mistake_in_the_inventory_gets_file_and_line(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text("targets:\n  domain-controllers: [192.0.2.1]\nsettings:\n  concurrency: 0\n")
    proc = portready("plan", "-i", str(inv), "--json")
    assert proc.returncode == 2
    assert f"{inv}:4: setting 'concurrency': a whole number from 1 to 10000" in proc.stderr


def test_a_host_file_that_is_not_a_host_list_is_named_but_never_echoed(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text("targets:\n  domain-controllers:\n    - {file: /proc/self/environ}\n")
    secret = "S3cr3t-Pa55w0rd-for-the-DC"
    proc = portready("plan", "-i", str(inv), "--json", env={"PORTREADY_DC_PASSWORD": secret})
    assert proc.returncode == 2
    assert "/proc/self/environ:1: not a" in proc.stderr
    assert secret not in proc.stderr + proc.stdout
    assert "PORTREADY_DC_PASSWORD" not in proc.stderr + proc.stdout


def test_a_key_file_given_as_host_file_is_not_echoed(tmp_path: Path) -> None:
    key = tmp_path / "id_rsa"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n")
    inv = tmp_path / "inv.yaml"
    inv.write_text("targets:\n  domain-controllers:\n    - {file: id_rsa}\n")
    proc = portready("plan", "-i", str(inv), "--json")
    assert proc.returncode == 2
    assert f"{key}:1:" in proc.stderr
    assert "PRIVATE KEY" not in proc.stderr and "b3BlbnNz" not in proc.stderr


def test_many_cidr_blocks_in_one_target_are_capped_while_expanding() -> None:
    blocks = ",".join(f"10.{i}.0.0/16" for i in range(200))  # 13 million addresses if expanded
    proc = portready("plan", "--target", f"monitored-computers={blocks}", "--json")
    assert proc.returncode == 2
    assert "more than 200000 hosts; split the inventory" in proc.stderr
    assert "10.199.0.0" not in proc.stderr  # the option is not echoed back whole


def test_rows_times_targets_has_a_cap() -> None:
    blocks = ",".join(f"10.{i}.0.0/16" for i in range(3))  # 196,605 hosts x every computer row
    proc = portready("plan", "--target", f"monitored-computers={blocks}", "--json")
    assert proc.returncode == 2, proc.stderr[-500:]
    assert "row x target pairs" in proc.stderr and "the limit is" in proc.stderr
