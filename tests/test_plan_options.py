"""`plan` keeps accepting the run options it offered before (options are contracts).

They only change how a scan is done, so plan hides them from its help and says on stderr
that it ignores them; a script that passes them still gets its plan and exit 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROFILES = str(Path(__file__).parent / "data" / "engine-profiles")
PLAN = [sys.executable, "-m", "scanner", "plan", "--profiles", PROFILES, "--profile", "lab-ports",
        "--target", "monitored-computers=192.0.2.1"]
HIDDEN = ["--timeout", "--retries", "--concurrency", "--per-host", "--ca-bundle", "--trust-private-ca", "--proxy"]


def _run(*extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PLAN, *extra], capture_output=True, text=True, timeout=120, check=False)


def test_a_script_passing_timeout_to_plan_still_exits_0_and_is_told_it_is_ignored() -> None:
    proc = _run("--timeout", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["summary"]["pairs"] >= 1  # stdout is still the plan alone
    assert "portready plan: --timeout does nothing here" in proc.stderr and "ignored" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_every_old_run_option_is_accepted_and_named_as_ignored(tmp_path: Path) -> None:
    # a CA bundle that does not exist: plan reads no file, so it is no error either
    proc = _run("--timeout", "5", "--retries", "2", "--concurrency", "64", "--per-host", "8",
                "--ca-bundle", str(tmp_path / "missing.pem"), "--trust-private-ca", "--proxy", "http://127.0.0.1:3128")
    assert proc.returncode == 0, proc.stderr
    for flag in HIDDEN:
        assert f"portready plan: {flag} does nothing here" in proc.stderr, flag
    assert "nothing is sent" in proc.stdout


def test_without_them_plan_says_nothing_on_stderr() -> None:
    proc = _run()
    assert proc.returncode == 0 and proc.stderr == ""


@pytest.mark.parametrize("bad", [["--timeout", "fast"], ["--retries", "-5"], ["--concurrency", "0"]])
def test_a_bad_value_is_still_a_usage_error(bad: list[str]) -> None:
    proc = _run(*bad)
    assert proc.returncode == 2 and bad[0] in proc.stderr and "Traceback" not in proc.stderr


def test_plan_help_does_not_offer_them() -> None:
    helptext = subprocess.run([sys.executable, "-m", "scanner", "plan", "--help"], capture_output=True, text=True,
                              timeout=60, check=False).stdout
    assert "--depth" in helptext and "--full" in helptext
    for flag in HIDDEN:
        assert flag not in helptext, flag
