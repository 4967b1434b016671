"""What every benchmark needs to time a command the same way."""

from __future__ import annotations

import os
import subprocess
import time

# Like an installed wheel (pip compiles it), let Python cache bytecode: with
# PYTHONDONTWRITEBYTECODE set, every run would recompile the whole package first.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed_run(argv: list[str]) -> tuple[float, int, str]:
    """Run a command: wall time (s), its peak RSS (KiB) and stdout; exit 0 or 1 expected."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=CHILD_ENV)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"{argv[0]} exited {code}")
    return wall, usage.ru_maxrss, out
