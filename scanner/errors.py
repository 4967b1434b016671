"""The project's exceptions.

    PortreadyError
     ├── ConfigError        a profile or inventory file is wrong (exit 2), with file and line
     └── UsageError         the command line is wrong (exit 2)

Probe failures are not exceptions of this tree: they are results
(`scanner.probes.base.ProbeError` carries an Outcome inside a probe). OS, stream and TLS
errors become a ProbeError in one place, `scanner.probes.netio` (`wire_errors`,
`outcome_for_oserror`), which keeps the original as the cause and as `os_error` evidence.
"""

from __future__ import annotations


class PortreadyError(Exception):
    exit_code = 3


class ConfigError(PortreadyError):
    """A user-supplied file is invalid. str() reads 'FILE:LINE: what is wrong'."""

    exit_code = 2

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}")


class UsageError(PortreadyError):
    exit_code = 2
