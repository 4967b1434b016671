"""What every benchmark needs to time a command the same way."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

# Like an installed wheel (pip compiles it), let Python cache bytecode: with
# PYTHONDONTWRITEBYTECODE set, every run would recompile the whole package first.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


# Linux keeps a process's peak RSS across exec, so a child forked from a big benchmark process
# (holding a parsed 20,000-check report) would report the parent's size as its own. A small
# launcher, itself exec'd first, forks the measured command and reports its true peak.
_LAUNCHER = (
    "import os, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[2:])\n"
    "_, status, usage = os.wait4(p.pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def measured_argv(argv: list[str], rss_file: str) -> list[str]:
    """`argv` run through the launcher that writes its peak RSS (KiB) to `rss_file`."""
    return [sys.executable, "-c", _LAUNCHER, rss_file, *argv]


def timed_run(argv: list[str], stdout_path: str | None = None) -> tuple[float, int, str]:
    """Run a command: wall time (s), its peak RSS (KiB) and stdout; exit 0 or 1 expected.

    With `stdout_path`, stdout and stderr go to that file (a console run) and "" is returned.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        started = time.perf_counter()
        sink = open(stdout_path, "w") if stdout_path else None  # noqa: SIM115
        try:
            proc = subprocess.run(
                measured_argv(argv, rss.name), stdout=sink or subprocess.PIPE,
                stderr=subprocess.STDOUT if sink else subprocess.DEVNULL, text=True, env=CHILD_ENV, check=False,
            )  # fmt: skip
        finally:
            if sink is not None:
                sink.close()
        wall = time.perf_counter() - started
        peak = int(open(rss.name).read() or 0)  # noqa: SIM115
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{argv[0]} exited {proc.returncode}")
    return wall, peak, proc.stdout or ""
