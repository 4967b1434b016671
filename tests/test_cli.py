"""The command line as users and CI jobs call it: commands, reports and exit codes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanner.cli import main

PROFILES = str(Path(__file__).parent / "data" / "engine-profiles")


@pytest.fixture
def ports() -> Iterator[tuple[int, int]]:
    open_sock = socket.socket()
    open_sock.bind(("127.0.0.1", 0))
    open_sock.listen(8)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    yield open_sock.getsockname()[1], closed_port
    open_sock.close()


def _scan_args(open_port: int, closed_port: int, *extra: str) -> list[str]:
    return [
        "scan", "--profiles", PROFILES, "--profile", "lab-ports", "--target", "monitored-computers=127.0.0.1",
        "--set", f"ports.lab-open-port={open_port}", "--set", f"ports.lab-closed-port={closed_port}",
        "--timeout", "1", "--quiet", *extra,
    ]


def test_scan_writes_json_and_junit_and_exits_1_on_a_failed_row(tmp_path: Path, ports: tuple[int, int]) -> None:
    out, junit = tmp_path / "r.json", tmp_path / "r.xml"
    code = main(_scan_args(*ports, "--json", str(out), "--junit", str(junit)))
    assert code == 1
    doc = json.loads(out.read_text())
    assert {"tool", "version", "started", "finished", "rows", "summary"} <= set(doc)
    rows = {r["row"]: r for r in doc["rows"]}
    assert rows["open-tcp"]["status"] == "pass"
    assert rows["two-ports"]["status"] == "fail" and rows["two-ports"]["reason"] == "refused"
    assert rows["custom"]["status"] == "skip"
    assert "inbound" not in rows
    check = rows["two-ports"]["checks"][1]
    assert set(check) >= {"protocol", "port", "probe", "status", "reason", "detail", "evidence", "duration_ms"}
    assert set(rows["open-tcp"]) >= {"profile", "row", "section", "doc_port", "target", "address", "status", "reason", "detail", "checks"}
    assert doc["summary"]["exit_code"] == 1
    suites = ET.parse(junit).getroot()
    assert suites.tag == "testsuites" and suites.get("failures") == "1"
    (suite,) = suites.findall("testsuite")
    assert suite.get("name") == "lab-ports" and suite.get("tests") == "3"
    assert len(suite.findall("testcase/failure")) == 1


def test_scan_exits_0_when_no_row_failed(ports: tuple[int, int]) -> None:
    open_port, _ = ports
    assert main(_scan_args(open_port, open_port)) == 0


def test_strict_counts_skip_free_warn_and_inconclusive_as_failure(tmp_path: Path, ports: tuple[int, int]) -> None:
    open_port, _ = ports
    out = tmp_path / "r.json"
    assert main(_scan_args(open_port, open_port, "--strict", "--json", str(out))) == 0
    assert json.loads(out.read_text())["summary"]["strict"] is True


def test_usage_errors_exit_2_before_anything_is_sent() -> None:
    assert main(["scan", "--profiles", PROFILES, "--target", "nobody=1.2.3.4"]) == 2
    assert main(["scan", "--profiles", PROFILES]) == 2
    assert main(["scan", "--profiles", PROFILES, "--profile", "no-such-profile", "--target", "monitored-computers=127.0.0.1"]) == 2
    with pytest.raises(SystemExit) as err:
        main(["scan", "--timeout", "abc"])
    assert err.value.code == 2


def test_broken_profile_folder_exits_2_with_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: bad\ntitle: x\nsection: y\nrows:\n  - id: r\n    doc: {port: '1', protocol: TCP, source: a, target: b, purpose: c}\n"
                   "    direction: outbound\n    source: auditor-server\n    target: domain-controllers\n"
                   "    checks:\n      - {protocol: tcp, port: 1, probe: warp-drive}\n")
    assert main(["profiles", "--profiles", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:11" in err and "warp-drive" in err


def test_plan_sends_nothing_and_lists_checks(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["plan", "--profiles", PROFILES, "--profile", "lab-ports", "--target", "monitored-computers=192.0.2.1", "--json"])
    assert code == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["probes"] == 3 and plan["hosts"] == 1
    assert plan["inbound"] == ["lab-ports/inbound"]


def test_profiles_json_lists_every_row_with_the_contract_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len([r for r in rows if not r["derived"]]) == 85
    keys = {"profile", "row", "section", "doc_port", "ports", "protocols", "direction", "source", "target",
            "doc_source", "doc_target", "purpose", "probes"}
    assert all(keys <= set(r) for r in rows)
    assert {r["direction"] for r in rows} == {"inbound", "outbound"}


def test_init_writes_an_inventory_that_loads(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    assert main(["init", str(path)]) == 0
    assert main(["init", str(path)]) == 2  # no silent overwrite
    assert main(["plan", "-i", str(path), "--json"]) == 0


def test_python_dash_m_is_the_same_command() -> None:
    proc = subprocess.run([sys.executable, "-m", "scanner", "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("portready ")


def test_a_command_builds_only_its_own_options_and_every_command_stays_listed() -> None:
    # A scan starts faster without importing the listener, fix or report commands; the
    # other names are still there for argparse's "invalid choice" words and the top help.
    code = (
        "import sys; from scanner.cli import build_parser; "
        "p = build_parser('scan'); "
        "choices = p._subparsers._group_actions[0].choices; "
        "print(sorted(choices), 'scanner.commands.listen' in sys.modules, 'scanner.listener' in sys.modules); "
        "print('--per-host' in choices['scan'].format_help())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].endswith("False False") and "'listen'" in out[0] and "'fix'" in out[0], out
    assert out[1] == "True"
    full = subprocess.run([sys.executable, "-m", "scanner", "--help"], capture_output=True, text=True, check=True).stdout
    assert "listen" in full and "listen on this host" in full  # with no command named: every command's help
