"""Which process holds a local port: psutil when importable, else `ss` / `netstat`.

    owners = port_owners(Transport.TCP, 9004)     # [PortOwner(pid=812, name="NwCoreSvc.exe", ...)]

On Windows without psutil: `netstat -ano` gives the PID, `tasklist` its image name.
Every command runs with a short timeout and no shell; unknown output yields [].
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

from scanner.models import Transport

_TIMEOUT = 5.0


@dataclass(frozen=True)
class PortOwner:
    pid: int | None
    name: str | None
    address: str

    def __str__(self) -> str:
        who = self.name or "an unknown process"
        return f"{who} (pid {self.pid})" if self.pid is not None else who


def _run(argv: list[str]) -> str | None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _split_addr(local: str) -> tuple[str, int] | None:
    host, sep, port = local.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


_SS_USER = re.compile(r'\("([^"]*)",pid=(\d+)')


def parse_ss(output: str, protocol: Transport, port: int) -> list[PortOwner]:
    """Owners from `ss -H -lnup` / `ss -H -ltnp` output."""
    out: list[PortOwner] = []
    for line in output.splitlines():
        cols = line.split()
        if len(cols) < 5:
            continue
        # With -u and -t together the first column is the netid; accept both layouts.
        if cols[0] in ("udp", "tcp"):
            if cols[0] != protocol.value:
                continue
            cols = cols[1:]
        local = _split_addr(cols[3])
        if local is None or local[1] != port:
            continue
        users = _SS_USER.findall(line)
        if users:
            out.extend(PortOwner(int(pid), name, local[0]) for name, pid in users)
        else:
            out.append(PortOwner(None, None, local[0]))
    return out


def parse_netstat_windows(output: str, protocol: Transport, port: int) -> list[tuple[int, str]]:
    """(pid, local address) from `netstat -ano` on Windows."""
    out: list[tuple[int, str]] = []
    for line in output.splitlines():
        cols = line.split()
        if not cols or cols[0].lower() != protocol.value:
            continue
        local = _split_addr(cols[1]) if len(cols) > 1 else None
        if local is None or local[1] != port:
            continue
        if protocol is Transport.TCP and (len(cols) < 5 or cols[3].upper() != "LISTENING"):
            continue
        pid = cols[-1]
        if pid.isdigit():
            out.append((int(pid), local[0]))
    return out


def parse_tasklist(output: str) -> dict[int, str]:
    """PID -> image name from `tasklist /FO CSV /NH`."""
    names: dict[int, str] = {}
    for row in csv.reader(io.StringIO(output)):
        if len(row) >= 2 and row[1].isdigit():
            names[int(row[1])] = row[0]
    return names


def _psutil_owners(protocol: Transport, port: int) -> list[PortOwner] | None:
    try:
        import psutil
    except ImportError:
        return None
    try:
        conns = psutil.net_connections(kind=protocol.value)
    except (psutil.Error, OSError):
        return None
    out: list[PortOwner] = []
    for conn in conns:
        laddr = conn.laddr
        if not laddr or laddr.port != port:
            continue
        if protocol is Transport.TCP and conn.status != psutil.CONN_LISTEN:
            continue
        if protocol is Transport.UDP and conn.raddr:
            continue
        name: str | None = None
        if conn.pid is not None:
            try:
                name = psutil.Process(conn.pid).name()
            except (psutil.Error, OSError):
                name = None
        out.append(PortOwner(conn.pid, name, str(laddr.ip)))
    return out


def port_owners(protocol: Transport, port: int) -> list[PortOwner]:
    """The processes listening on `port` (empty when none, or when nothing can tell)."""
    owners = _psutil_owners(protocol, port)
    if owners is not None:
        return _dedupe(owners)
    if sys.platform == "win32":
        text = _run(["netstat", "-ano", "-p", protocol.value.upper()])
        if text is None:
            return []
        found = parse_netstat_windows(text, protocol, port)
        names = parse_tasklist(_run(["tasklist", "/FO", "CSV", "/NH"]) or "")
        return _dedupe([PortOwner(pid, names.get(pid), addr) for pid, addr in found])
    if shutil.which("ss"):
        flag = "-lnup" if protocol is Transport.UDP else "-ltnp"
        text = _run(["ss", "-H", flag, f"sport = :{port}"])
        if text is not None:
            return _dedupe(parse_ss(text, protocol, port))
    return []


def _dedupe(owners: list[PortOwner]) -> list[PortOwner]:
    return list(dict.fromkeys(owners))


def describe_owners(owners: list[PortOwner]) -> str:
    if not owners:
        return "an unidentified process (run as root / Administrator to see which)"
    names = list(dict.fromkeys(str(o) for o in owners))
    return ", ".join(names[:4]) + (" and more" if len(names) > 4 else "")
