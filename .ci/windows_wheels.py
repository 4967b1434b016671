"""CI: every runtime dependency of portready installs on Windows from wheels alone.

    python .ci/windows_wheels.py            # exit 1 with the missing names, else the list

Reads [project].dependencies from pyproject.toml, follows each installed distribution's
own requirements with the markers evaluated for Windows (sys_platform == "win32": pip's
--platform does not change marker evaluation, so e.g. pyspnego's sspilib would be missed),
then runs `pip download --only-binary=:all: --platform win_amd64 --python-version 3.11`
into a temporary folder and checks a wheel arrived for every name. Needs PyPI (or a mirror).
"""

from __future__ import annotations

import importlib.metadata as md
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
WINDOWS = {
    "sys_platform": "win32", "platform_system": "Windows", "os_name": "nt", "platform_machine": "AMD64",
    "python_version": "3.11", "python_full_version": "3.11.9", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "extra": "",
}  # fmt: skip


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def windows_closure(top: list[str]) -> dict[str, str]:
    """{name: requirement text} for the runtime dependencies on Windows (transitively)."""
    todo = [Requirement(t) for t in top]
    seen: dict[str, str] = {}
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate(WINDOWS):
            continue
        name = canonical(req.name)
        if name in seen:
            continue
        seen[name] = str(Requirement(f"{req.name}{req.specifier}"))
        try:
            requires = md.requires(req.name) or []
        except md.PackageNotFoundError:
            continue  # not installed here (a Windows-only package): pip resolves its own needs
        todo.extend(Requirement(r) for r in requires)
    return seen


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = windows_closure(list(project["dependencies"]))
    with tempfile.TemporaryDirectory(prefix="portready-win-wheels-") as dest:
        cmd = [
            sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--platform", "win_amd64",
            "--python-version", "3.11", "--implementation", "cp", "--dest", dest, *sorted(needed.values()),
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print("pip download for win_amd64 failed:\n" + done.stderr[-3000:], file=sys.stderr)
            return 1
        wheels = {canonical(p.name.split("-", 1)[0]): p.name for p in Path(dest).glob("*.whl")}
    missing = sorted(set(needed) - set(wheels))
    if missing:
        print(f"no Windows wheel for: {', '.join(missing)}", file=sys.stderr)
        return 1
    for name in sorted(needed):
        print(f"  {wheels[name]}")
    print(f"Windows (win_amd64, CPython 3.11): {len(needed)} runtime packages, all as wheels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
