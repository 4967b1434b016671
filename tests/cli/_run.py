"""Run the real `portready` command in a subprocess, as users and CI jobs do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ENGINE_PROFILES = str(Path(__file__).parent.parent / "data" / "engine-profiles")


def portready(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m scanner ARGS`; the timeout only stops a hung test, it is no assertion."""
    full_env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "scanner", *args], capture_output=True, text=True,
        env=full_env, cwd=cwd, timeout=timeout, check=False,
    )
