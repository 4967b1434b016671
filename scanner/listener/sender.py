"""`portready send`: tagged test traffic from a source host to the Auditor host.

    result = await send_tagged("auditor.lab.test", 514, Transport.UDP, tag, count=3)
    result.ok, result.detail

For syslog ports (514, or `syslog=True`) the tag travels in an RFC 5424 message: one
datagram per message over UDP, octet-counted frames (RFC 6587) over TCP. Other TCP
ports get a short connection carrying the tag as one line. TCP reports whether the
connection was accepted; UDP cannot know what arrived (only an ICMP "port unreachable"
coming back proves a refusal), which is why `listen` is the judge.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import socket
from dataclasses import dataclass

from scanner.listener.tag import Tag, format_tag
from scanner.models import Transport

SYSLOG_PORTS = frozenset({514, 601, 6514})


@dataclass(frozen=True)
class SendResult:
    ok: bool
    sent: int
    address: str | None
    detail: str


def syslog_line(tag: Tag, hostname: str | None = None, seq: int = 0) -> bytes:
    """An RFC 5424 message (facility user, severity notice) carrying the tag."""
    ts = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    host = (hostname or socket.gethostname() or "-").split(".")[0][:255] or "-"
    msg = f"<13>1 {ts} {host} portready - portready - {format_tag(tag)} seq={seq}"
    return msg.encode("utf-8")


async def _resolve(host: str, port: int, kind: socket.SocketKind, timeout: float) -> list[tuple[int, str]]:
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=kind), timeout)
    out: list[tuple[int, str]] = []
    for family, _, _, _, sockaddr in infos:
        entry = (int(family), str(sockaddr[0]))
        if entry not in out:
            out.append(entry)
    return out


async def send_tagged(
    host: str,
    port: int,
    protocol: Transport,
    tag: Tag,
    *,
    count: int = 1,
    timeout: float = 3.0,
    syslog: bool | None = None,
) -> SendResult:
    """Send `count` tagged messages (or connections); never raises for network errors."""
    is_syslog = port in SYSLOG_PORTS if syslog is None else syslog
    kind = socket.SOCK_DGRAM if protocol is Transport.UDP else socket.SOCK_STREAM
    try:
        addrs = await _resolve(host, port, kind, timeout)
    except (OSError, UnicodeError, asyncio.TimeoutError) as exc:
        return SendResult(False, 0, None, f"unresolved: {host} does not resolve ({exc}) — nothing sent")
    family, address = addrs[0]
    where = f"{protocol.value.upper()} {port} on {host}" + (f" ({address})" if address != host else "")
    if protocol is Transport.UDP:
        return await _send_udp(family, address, port, tag, count, where, timeout)
    return await _send_tcp(address, port, tag, count, where, timeout, is_syslog)


async def _send_udp(family: int, address: str, port: int, tag: Tag, count: int, where: str, timeout: float) -> SendResult:
    loop = asyncio.get_running_loop()
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sent = 0
    try:
        # A connected UDP socket reports an ICMP port-unreachable as ECONNREFUSED.
        sock.connect((address, port))
        for i in range(count):
            await loop.sock_sendall(sock, syslog_line(tag, seq=i))
            sent += 1
            await asyncio.sleep(0.01)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(loop.sock_recv(sock, 1), min(timeout, 0.5))
    except ConnectionRefusedError:
        return SendResult(False, sent, address, f"refused: {where} answered ICMP port unreachable — "
                          "nothing listens there, or a firewall rejects UDP")  # fmt: skip
    except OSError as exc:
        return SendResult(False, sent, address, f"{where}: {exc.strerror or exc}")
    finally:
        sock.close()
    return SendResult(True, sent, address, f"sent {sent} datagram{'s' if sent != 1 else ''} to {where} "
                      f"(tag {tag.nonce}); UDP gives no receipt: `portready listen` on the Auditor host "
                      "reports whether it arrived")  # fmt: skip


async def _send_tcp(address: str, port: int, tag: Tag, count: int, where: str, timeout: float, is_syslog: bool) -> SendResult:
    sent = 0
    for i in range(count):
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
        except asyncio.TimeoutError:
            return SendResult(False, sent, address, f"filtered: no answer in {timeout:g} s from {where} — "
                              "a firewall drops the connection")  # fmt: skip
        except ConnectionRefusedError:
            return SendResult(False, sent, address, f"refused: {where} reset the connection — nothing "
                              "listens there, or a firewall rejects it")  # fmt: skip
        except OSError as exc:
            return SendResult(False, sent, address, f"{where}: {exc.strerror or exc}")
        try:
            if is_syslog:
                msg = syslog_line(tag, seq=i)
                writer.write(str(len(msg)).encode() + b" " + msg)
            else:
                writer.write(format_tag(tag).encode() + f" seq={i}\n".encode())
            await asyncio.wait_for(writer.drain(), timeout)
            sent += 1
        except (OSError, asyncio.TimeoutError) as exc:
            return SendResult(False, sent, address, f"connected to {where} but could not send: {exc}")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
    return SendResult(True, sent, address, f"connected to {where} and sent {sent} tagged "
                      f"message{'s' if sent != 1 else ''} (tag {tag.nonce})")  # fmt: skip
