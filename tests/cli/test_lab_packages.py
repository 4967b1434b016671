"""The lab's Debian packages are split: the demo's, and chromium for the browser tests only."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

INSTALL = Path(__file__).resolve().parents[1] / "lab" / "install.sh"


def _requested(tmp_path: Path, *args: str) -> list[str]:
    """What install.sh would apt-get install on a machine that has nothing (tools faked on PATH)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt.log"
    (bin_dir / "dpkg-query").write_text("#!/bin/sh\nexit 1\n")  # nothing is installed
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    (bin_dir / "id").write_text("#!/bin/sh\necho 0\n")
    (bin_dir / "mkdir").write_text("#!/bin/sh\nexit 0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run(["sh", str(INSTALL), *args], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    install = [line for line in log.read_text().splitlines() if line.startswith("install")]
    return install[0].split()


def test_the_default_install_has_the_lab_but_not_chromium(tmp_path: Path) -> None:
    packages = _requested(tmp_path)
    assert {"samba-ad-dc", "nftables", "openssl", "nginx-light"} <= set(packages)
    assert "chromium" not in packages


def test_browser_adds_chromium(tmp_path: Path) -> None:
    assert "chromium" in _requested(tmp_path, "--browser")


def test_ci_installs_the_browser_and_the_readme_demo_does_not() -> None:
    root = INSTALL.parents[2]
    assert "tests/lab/install.sh --browser" in (root / ".ci" / "run").read_text()
    readme = (root / "README.md").read_text()
    demo = next(line for line in readme.splitlines() if "tests.lab demo --html" in line)
    assert "bash tests/lab/install.sh &&" in demo and "--browser" not in demo
