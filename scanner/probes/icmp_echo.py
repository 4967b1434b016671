"""ICMP echo (ping), without administrator rights where the OS allows it.

Methods, tried in this order (option ``method``: ``auto``, ``socket`` or ``command``):

1. An unprivileged ICMP datagram socket (Linux: ``socket(AF_INET, SOCK_DGRAM,
   IPPROTO_ICMP)``, allowed when ``net.ipv4.ping_group_range`` covers the user; ICMPv6
   likewise). The kernel picks the echo identifier and hands us only our replies.
2. A raw ICMP socket, when this process has the right (root / CAP_NET_RAW, or an
   elevated Windows prompt).
3. The system ``ping`` command (Linux ``ping -n -c N -W s``, Windows ``ping -n N -w ms``),
   judged by its exit code, which does not depend on the system language.

An echo reply passes; silence fails `filtered` (a firewall drops ICMP echo); when no
method is available the check is `inconclusive`/permission with what to change,
never a silent pass.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import math
import os
import re
import shutil
import socket
import struct
import sys
from dataclasses import dataclass
from typing import Any

from scanner.models import Reason, Transport
from scanner.probes._options import option
from scanner.probes.base import (
    Outcome,
    Probe,
    ProbeContext,
    ProbeError,
    failed,
    inconclusive,
    options_of,
    passed,
    register,
)
from scanner.probes.netio import outcome_for_oserror

METHODS = ("auto", "socket", "command")
ECHO_REQUEST: dict[int, int] = {socket.AF_INET: 8, socket.AF_INET6: 128}
ECHO_REPLY: dict[int, int] = {socket.AF_INET: 0, socket.AF_INET6: 129}
UNREACHABLE: dict[int, int] = {socket.AF_INET: 3, socket.AF_INET6: 1}
# Destination-unreachable codes a firewall sends when it rejects (RFC 1812, RFC 4443).
PROHIBITED: dict[int, frozenset[int]] = {socket.AF_INET: frozenset({9, 10, 13}), socket.AF_INET6: frozenset({1})}
PAYLOAD = b"portready-icmp-echo"
WINDOWS_RULE = "File and Printer Sharing (Echo Request - ICMPv4-In)"
_NO_SOCKET_ERRNOS = {
    errno.EACCES,
    errno.EPERM,
    getattr(errno, "EPROTONOSUPPORT", 93),
    getattr(errno, "ESOCKTNOSUPPORT", 94),
    getattr(errno, "EAFNOSUPPORT", 97),
    10013,  # WSAEACCES
    10043,  # WSAEPROTONOSUPPORT
    10044,  # WSAESOCKTNOSUPPORT
}


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of an ICMP message."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(family: int, ident: int, seq: int) -> bytes:
    head = struct.pack("!BBHHH", ECHO_REQUEST[family], 0, 0, ident, seq)
    if family == socket.AF_INET6:
        return head + PAYLOAD  # the kernel fills in the ICMPv6 checksum (pseudo-header)
    return struct.pack("!BBHHH", ECHO_REQUEST[family], 0, checksum(head + PAYLOAD), ident, seq) + PAYLOAD


def _same(family: int, packed: bytes, address: str) -> bool:
    try:
        return packed == socket.inet_pton(family, address.split("%", 1)[0])
    except OSError:
        return False


def match_reply(
    family: int, data: bytes, ident: int | None, seq: int, raw: bool, target: str | None = None, source: str = ""
) -> str | None:
    """Classify a packet: "reply", "prohibited" / "unreachable" (an ICMP error quoting our
    request: a firewall's reject, or no route) or None (not ours).

    A raw socket sees every ICMP packet of the host: replies must come from `target`
    and carry our id; errors must quote our request to `target`. IPv4 raw packets
    start with the IP header; `source` is the sender (needed for IPv6).
    """
    if raw and family == socket.AF_INET:
        if len(data) < 20:
            return None
        source_packed = data[12:16]
        data = data[(data[0] & 0x0F) * 4 :]
    else:
        source_packed = b""
    if len(data) < 8:
        return None
    kind, code, _ck, rid, rseq = struct.unpack_from("!BBHHH", data)
    if kind == ECHO_REPLY[family]:
        if rseq != seq or (ident is not None and rid != ident):
            return None
        if raw and target is not None:
            sender_ok = (
                _same(family, source_packed, target)
                if family == socket.AF_INET
                else _same(family, socket.inet_pton(family, source.split("%", 1)[0]) if source else b"", target)
            )
            if not sender_ok:
                return None
        return "reply"
    if kind == UNREACHABLE[family] and raw:
        quoted = data[8:]
        if family == socket.AF_INET and len(quoted) >= 20:
            destination = quoted[16:20]
            quoted = quoted[(quoted[0] & 0x0F) * 4 :]
        elif family == socket.AF_INET6 and len(quoted) >= 40:
            destination = quoted[24:40]
            quoted = quoted[40:]
        else:
            return None
        if target is not None and not _same(family, destination, target):
            return None
        if len(quoted) >= 8:
            qkind, _qc, _qck, qid, qseq = struct.unpack_from("!BBHHH", quoted)
            if qkind == ECHO_REQUEST[family] and qseq == seq and qid == ident:
                return "prohibited" if code in PROHIBITED[family] else "unreachable"
    return None


async def _recvfrom(sock: socket.socket, size: int) -> tuple[bytes, str]:
    """recvfrom on a non-blocking socket through the event loop (Python 3.10 has no
    loop.sock_recvfrom); returns (data, sender address)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[tuple[bytes, str]] = loop.create_future()

    def ready() -> None:
        if fut.done():
            return
        try:
            data, addr = sock.recvfrom(size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            fut.set_exception(exc)
        else:
            fut.set_result((data, str(addr[0]) if addr else ""))

    loop.add_reader(sock.fileno(), ready)
    try:
        return await fut
    finally:
        loop.remove_reader(sock.fileno())


def open_icmp_socket(family: int, notes: list[str]) -> tuple[socket.socket, str] | None:
    """An ICMP socket and its kind ("datagram socket" / "raw socket"), or None with notes."""
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    for kind, name in ((socket.SOCK_DGRAM, "datagram socket"), (socket.SOCK_RAW, "raw socket")):
        try:
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            if exc.errno not in _NO_SOCKET_ERRNOS and getattr(exc, "winerror", None) not in _NO_SOCKET_ERRNOS:
                notes.append(f"ICMP {name}: {exc}")
            elif kind == socket.SOCK_DGRAM:
                notes.append(
                    "unprivileged ICMP sockets are not allowed for this user"
                    + (" (net.ipv4.ping_group_range)" if sys.platform.startswith("linux") else "")
                )
            else:
                notes.append("raw ICMP sockets need administrator rights (root / CAP_NET_RAW)")
            continue
        sock.setblocking(False)
        return sock, name
    return None


async def ping_socket(ctx: ProbeContext, sock: socket.socket, method: str) -> Outcome:
    family = sock.family
    raw = method == "raw socket"
    loop = asyncio.get_running_loop()
    ident = (os.getpid() ^ id(sock)) & 0xFFFF
    tries = ctx.settings.retries + 1
    waited = 0.0
    destination = (ctx.address, 0)
    try:
        if not raw:
            # A connected ping socket gets the kernel's ICMP errors as recv() errors.
            # A raw socket stays unconnected so the errors themselves (with their code:
            # "administratively prohibited" = a firewall rejects) reach us as packets.
            try:
                sock.connect(destination)
            except OSError as exc:
                raise ProbeError(_oserror(ctx, exc, method)) from exc
        for attempt in range(tries):
            seq = (attempt + 1) & 0xFFFF
            sent = loop.time()
            try:
                packet = echo_request(family, ident, seq)
                if raw:
                    sock.sendto(packet, destination)
                else:
                    sock.send(packet)
            except OSError as exc:
                raise ProbeError(_oserror(ctx, exc, method)) from exc
            end = sent + ctx.step_timeout()
            while (left := end - loop.time()) > 0:
                try:
                    data, source = await asyncio.wait_for(_recvfrom(sock, 2048), left)
                except asyncio.TimeoutError:
                    break
                except OSError as exc:
                    raise ProbeError(_oserror(ctx, exc, method)) from exc
                verdict = match_reply(family, data, ident if raw else None, seq, raw, ctx.address, source)
                if verdict == "reply":
                    rtt = loop.time() - sent
                    ctx.timing.observe(rtt)
                    return passed(
                        f"{ctx.host} answered ICMP echo in {rtt * 1000:.1f} ms ({method})",
                        rtt_ms=round(rtt * 1000, 2),
                        method=method,
                    )
                if verdict == "prohibited":
                    return failed(
                        Reason.REFUSED,
                        f"refused: a firewall rejects ICMP echo to {ctx.host} (ICMP 'administratively prohibited')",
                        method=method,
                    )
                if verdict == "unreachable":
                    return failed(
                        Reason.UNREACHABLE,
                        f"unreachable: a router or firewall answered 'destination unreachable' to ICMP "
                        f"echo for {ctx.host} — check routing and firewall rules",
                        method=method,
                    )
            waited = loop.time() - sent + waited
            if ctx.remaining() <= 0:
                break
    finally:
        sock.close()
    return _no_reply(ctx, waited, method)


def _oserror(ctx: ProbeContext, exc: OSError, method: str) -> Outcome:
    outcome = outcome_for_oserror(ctx, exc)
    if outcome.reason is Reason.REFUSED:  # its words speak of TCP resets; say it for ICMP
        outcome = failed(Reason.UNREACHABLE, f"ICMP echo to {ctx.host} was rejected: {exc}")
    return dataclasses.replace(outcome, evidence={**outcome.evidence, "method": method})


def _no_reply(ctx: ProbeContext, waited: float, method: str) -> Outcome:
    tries = ctx.settings.retries + 1
    return failed(
        Reason.FILTERED,
        f"filtered: no echo reply in {waited:.3g} s ({tries} tr{'ies' if tries > 1 else 'y'}, {method}) — "
        f"a firewall drops ICMP echo between this host and {ctx.host} (on Windows targets: the inbound "
        f"rule '{WINDOWS_RULE}')",
        method=method,
    )


def ping_command(address: str, timeout: float) -> list[str] | None:
    """The system ping command line (one echo) for one address, or None when there is no ping."""
    exe = shutil.which("ping")
    if exe is None:
        return None
    v6 = ":" in address
    if sys.platform == "win32":
        argv = [exe, "-n", "1", "-w", str(max(1, int(timeout * 1000)))]
    elif sys.platform == "darwin":
        argv = [exe, "-n", "-c", "1", "-t", str(max(1, math.ceil(timeout)))]
    else:  # Linux iputils / busybox: -W is the wait for a reply, in seconds; -n: no reverse DNS
        argv = [exe, "-n", "-c", "1", "-W", str(max(1, math.ceil(timeout)))]
    if v6 and sys.platform != "darwin":
        argv.append("-6")
    return [*argv, address]


_RTT = re.compile(rb"time[=<]\s*([0-9]+(?:[.,][0-9]+)?)\s*ms")
# Any language's reply line ends "...=12ms" / "<1ms" (time / Zeit / temps / tempo ...).
_ANY_RTT = re.compile(rb"[=<]\s*([0-9]+(?:[.,][0-9]+)?)\s*ms\b", re.IGNORECASE)


def judge_ping(platform: str, code: int | None, out: bytes, v6: bool) -> tuple[str, float | None]:
    """What one `ping` run says: ("reply", rtt ms or None), ("unreachable", None),
    ("silence", None) or ("error", None); never judged by the system language's words.

    Windows' ping.exe exits 0 not only on a reply but also when a router answers
    "Destination host unreachable" / "TTL expired in transit" for it; only a real IPv4
    reply carries TTL=, and an IPv6 reply (no TTL shown) carries its round trip "<1ms" /
    "=12ms", which no error line does. Elsewhere exit 0 means a reply, 1 silence (or, on
    Linux, an ICMP error: also no reply).
    """
    if code == 0:
        if platform != "win32":
            m = _RTT.search(out)
            return "reply", float(m.group(1).replace(b",", b".")) if m else None
        if b"TTL=" in out.upper() or (v6 and _ANY_RTT.search(out)):
            m = _RTT.search(out) or _ANY_RTT.search(out)
            return "reply", float(m.group(1).replace(b",", b".")) if m else None
        return "unreachable", None
    if code in (1, None):
        return "silence", None
    return "error", None


def _first_line(out: bytes) -> str:
    """The ping output's first meaningful reply line, printable and short (evidence only)."""
    text = out.decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[1] if len(lines) > 1 else (lines[0] if lines else "")
    return re.sub(r"[\x00-\x1f\x7f]+", " ", line)[:160]


async def _run_ping(ctx: ProbeContext, argv: list[str]) -> tuple[int | None, bytes]:
    """One ping process, bounded by the probe's deadline: (exit code or None, output)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), max(0.1, ctx.remaining()))
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return None, b""
    return proc.returncode, out[:65536]


async def ping_with_command(ctx: ProbeContext) -> Outcome | None:
    """Ping with the system command, one echo per try; None when there is no ping."""
    method = "ping command"
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _attempt in range(ctx.settings.retries + 1):
        argv = ping_command(ctx.address, ctx.step_timeout())
        if argv is None:
            return None
        sent = loop.time()
        try:
            code, out = await _run_ping(ctx, argv)
        except OSError as exc:
            return inconclusive(Reason.PERMISSION, f"could not run {argv[0]}: {exc}", method=method)
        verdict, rtt_ms = judge_ping(sys.platform, code, out, ":" in ctx.address)
        if verdict == "reply":
            evidence: dict[str, Any] = {"method": method, "elapsed_ms": round((loop.time() - sent) * 1000, 1)}
            if rtt_ms is not None:
                evidence["rtt_ms"] = rtt_ms
            rtt = f" in {rtt_ms:g} ms" if rtt_ms is not None else ""
            return passed(f"{ctx.host} answered ICMP echo{rtt} (system ping command)", **evidence)
        if verdict == "unreachable":
            return failed(
                Reason.UNREACHABLE,
                f"unreachable: a router or firewall answered the system ping for {ctx.host} with an ICMP "
                "error (destination unreachable or TTL expired) — check routing and firewall rules",
                method=method,
                output=_first_line(out),
            )
        if verdict == "error":
            text = out.decode("utf-8", "replace")
            first = re.sub(r"[\x00-\x1f]+", " ", text).strip()[:200]
            if re.search(r"permi|denied|privilege", text, re.IGNORECASE):
                return inconclusive(
                    Reason.PERMISSION,
                    f"the system ping command is not allowed to send ICMP here (exit {code}: {first})",
                    method=method,
                )
            return inconclusive(
                Reason.INTERNAL,
                f"the system ping command failed (exit {code}: {first}); ICMP echo could not be tested",
                method=method,
            )
        if ctx.remaining() <= 0:
            break
    return _no_reply(ctx, loop.time() - started, method)


@dataclass(frozen=True)
class IcmpOptions:
    method: str = option("auto", "how to ping: " + ", ".join(METHODS))

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"icmp-echo: method must be one of {METHODS}")


@register
class IcmpEchoProbe(Probe):
    name = "icmp-echo"
    transports = (Transport.ICMP,)
    summary = "ICMP echo: reply, silence (filtered) or no means to ping (inconclusive)"
    exchanges = 1
    depth = "port"
    port_level_for = (Transport.ICMP,)

    Options = IcmpOptions

    async def run(self, ctx: ProbeContext) -> Outcome:
        choice = options_of(ctx, IcmpOptions).method
        family = socket.AF_INET6 if ":" in ctx.address else socket.AF_INET
        notes: list[str] = []
        if choice in ("auto", "socket") and sys.platform == "win32":
            # No unprivileged ICMP sockets on Windows, and the Proactor loop cannot watch
            # raw sockets; ping.exe needs no rights.
            notes.append("ICMP sockets are not used on Windows")
        elif choice in ("auto", "socket"):
            opened = open_icmp_socket(family, notes)
            if opened is not None:
                return await ping_socket(ctx, *opened)
        if choice in ("auto", "command"):
            outcome = await ping_with_command(ctx)
            if outcome is not None:
                return outcome
            notes.append("no `ping` command on PATH")
        return inconclusive(
            Reason.PERMISSION,
            f"cannot send ICMP echo to {ctx.host} from this host: {'; '.join(notes)} — run portready "
            "as administrator/root, allow this user ICMP sockets (Linux: sysctl "
            "net.ipv4.ping_group_range), or install ping",
            tried=notes,
        )
