"""`portready send`: tagged test traffic from a source host to the Auditor host.

    result = await send_tagged("auditor.lab.test", 514, Transport.UDP, tag, count=3)
    result.status, result.reason, result.detail

For syslog ports (514, or `syslog=True`) the tag travels in an RFC 5424 message: one
datagram per message over UDP, octet-counted frames (RFC 6587) on one connection over
TCP. Other TCP ports get a short connection per message carrying the tag as one line.

TCP says whether the message was taken: after sending, we half-close and wait for the
receiver to close in turn, which it does once it has read up to our end (`portready
listen` counts the message then). A reset instead means it was not read (a listener at a
cap, a service that rejects us); no close within the wait means it is still queued. UDP
gives no receipt (only an ICMP "port unreachable" proves a refusal), which is why `listen`
is the judge.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import errno
import socket
from dataclasses import dataclass

from scanner.listener.tag import Tag, format_tag
from scanner.models import Reason, Status, Transport

SYSLOG_PORTS = frozenset({514, 601, 6514})
RECEIPT_WAIT = 3.0  # how long the receiver may take to read and close after our half-close
_RESET_SETTLE = 0.02  # a reset for unread data follows the receiver's FIN by a moment
_RESET_ERRNOS = frozenset({errno.ENOTCONN, errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})
_MAX_ANSWER = 64 * 1024  # what we read of an answer before giving up on a receipt
# Reasons from the contract that other branches add; until merged, the nearest existing one.
CLOSED = getattr(Reason, "CLOSED", Reason.PROTOCOL)
NO_REPLY = getattr(Reason, "NO_REPLY", Reason.NO_ANSWER)


@dataclass(frozen=True)
class SendResult:
    """What became of what `send` sent: a status and reason like any check, and the words."""

    status: Status
    reason: Reason
    sent: int  # messages written (datagrams, or frames on the wire)
    address: str | None
    detail: str
    accepted: int | None = None  # TCP: messages the receiver read; None: no receipt (UDP)

    @property
    def ok(self) -> bool:
        """Nothing proved a loss (UDP without receipt counts as ok: `listen` judges it)."""
        return self.status in (Status.PASS, Status.INCONCLUSIVE)


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
    receipt_wait: float = RECEIPT_WAIT,
) -> SendResult:
    """Send `count` tagged messages (or connections); never raises for network errors."""
    is_syslog = port in SYSLOG_PORTS if syslog is None else syslog
    kind = socket.SOCK_DGRAM if protocol is Transport.UDP else socket.SOCK_STREAM
    try:
        addrs = await _resolve(host, port, kind, timeout)
    except (OSError, UnicodeError, asyncio.TimeoutError) as exc:
        return SendResult(Status.FAIL, Reason.UNRESOLVED, 0, None,
                          f"unresolved: {host} does not resolve ({exc}) — nothing sent")  # fmt: skip
    family, address = addrs[0]
    where = f"{protocol.value.upper()} {port} on {host}" + (f" ({address})" if address != host else "")
    if protocol is Transport.UDP:
        return await _send_udp(family, address, port, tag, count, where, timeout)
    if is_syslog:
        payload = b"".join(_octet(syslog_line(tag, seq=i)) for i in range(count))
        return await _send_tcp(family, address, port, [payload], count, tag, where, timeout, receipt_wait)
    lines = [format_tag(tag).encode() + f" seq={i}\n".encode() for i in range(count)]
    return await _send_tcp(family, address, port, lines, count, tag, where, timeout, receipt_wait)


def _octet(msg: bytes) -> bytes:
    return str(len(msg)).encode() + b" " + msg


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
        return SendResult(Status.FAIL, Reason.REFUSED, sent, address,
                          f"refused: {where} answered ICMP port unreachable — nothing listens there, "
                          "or a firewall rejects UDP")  # fmt: skip
    except OSError as exc:
        return SendResult(Status.FAIL, Reason.UNREACHABLE, sent, address, f"{where}: {exc.strerror or exc}")
    finally:
        sock.close()
    return SendResult(Status.INCONCLUSIVE, Reason.NO_ANSWER, sent, address,
                      f"sent {sent} datagram{'s' if sent != 1 else ''} to {where} (tag {tag.nonce}); UDP gives "
                      "no receipt: `portready listen` on the Auditor host reports whether it arrived")  # fmt: skip


async def _send_tcp(
    family: int, address: str, port: int, payloads: list[bytes], count: int, tag: Tag, where: str,
    timeout: float, receipt_wait: float,
) -> SendResult:  # fmt: skip
    """One connection per payload; each must be read and closed by the receiver."""
    accepted = 0
    per = count // len(payloads)
    for payload in payloads:
        outcome = await _one_connection(family, address, port, payload, where, timeout, receipt_wait)
        if outcome is not None and outcome[0] is Status.PASS:
            accepted += per
            if accepted == count:
                return SendResult(Status.PASS, outcome[1], count, address, outcome[2], accepted)
            continue
        if outcome is not None:
            status, reason, words = outcome
            return SendResult(status, reason, accepted, address, f"{words} ({accepted} of {count} taken before)"
                              if accepted else words, accepted)  # fmt: skip
        accepted += per
    plural = "s" if count != 1 else ""
    return SendResult(Status.PASS, Reason.OK, count, address,
                      f"{where} took {count} tagged message{plural} (tag {tag.nonce}): it read them and closed",
                      accepted)  # fmt: skip


async def _one_connection(
    family: int, address: str, port: int, payload: bytes, where: str, timeout: float, receipt_wait: float
) -> tuple[Status, Reason, str] | None:
    """None when the receiver took `payload`; else (status, reason, words)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (address, port)), timeout)
        except asyncio.TimeoutError:
            return Status.FAIL, Reason.FILTERED, (f"filtered: no answer in {timeout:g} s from {where} — "
                                                  "a firewall drops the connection")  # fmt: skip
        except ConnectionRefusedError:
            return Status.FAIL, Reason.REFUSED, (f"refused: {where} reset the connection — nothing listens "
                                                 "there, or a firewall rejects it")  # fmt: skip
        except OSError as exc:
            if exc.errno in _RESET_ERRNOS:  # taken, and reset before the handshake was done on our side
                return Status.FAIL, CLOSED, _not_taken(where)
            return Status.FAIL, Reason.UNREACHABLE, f"{where}: {exc.strerror or exc}"
        not_taken = _not_taken(where)
        try:
            await asyncio.wait_for(loop.sock_sendall(sock, payload), timeout)
            sock.shutdown(socket.SHUT_WR)
        except (ConnectionResetError, BrokenPipeError):
            return Status.FAIL, CLOSED, not_taken
        except asyncio.TimeoutError:
            return Status.INCONCLUSIVE, NO_REPLY, (f"connected to {where}, but it did not take the message "
                                                   f"within {timeout:g} s (not reading: busy or hung)")  # fmt: skip
        except OSError as exc:
            if exc.errno in _RESET_ERRNOS:  # the reset came before our half-close
                return Status.FAIL, CLOSED, not_taken
            return Status.FAIL, CLOSED, f"connected to {where} but could not send: {exc.strerror or exc}"
        return await _receipt(loop, sock, where, receipt_wait, not_taken)
    finally:
        sock.close()


def _not_taken(where: str) -> str:
    return (f"not accepted: {where} took the connection, then reset it without reading the message — "
            "the listener is at a connection cap (see its losses), or the service rejects us "
            "(TLS required, an IP allow-list)")  # fmt: skip


def _no_receipt(where: str, wait: float) -> tuple[Status, Reason, str]:
    return Status.INCONCLUSIVE, NO_REPLY, (
        f"sent to {where}, but it did not close within {wait:g} s after our last byte, so there is no proof "
        "it read the message (a listener at its cap holds new connections until a slot frees; "
        "`portready listen` reports what arrived)"
    )


async def _receipt(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, where: str, wait: float, not_taken: str
) -> tuple[Status, Reason, str] | None:
    """Wait for the receiver's close after our half-close: the proof it read to our end."""
    deadline = loop.time() + wait
    received = 0
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0 or received > _MAX_ANSWER:
                return _no_receipt(where, wait)
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), remaining)
            if not chunk:
                break
            received += len(chunk)
        await asyncio.sleep(_RESET_SETTLE)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    except asyncio.TimeoutError:
        return _no_receipt(where, wait)
    except (ConnectionResetError, BrokenPipeError):
        return Status.FAIL, CLOSED, not_taken
    except OSError as exc:
        if exc.errno in _RESET_ERRNOS:
            return Status.FAIL, CLOSED, not_taken
        return Status.FAIL, CLOSED, f"{where} ended the connection with an error: {exc.strerror or exc}"
    if err:
        return Status.FAIL, CLOSED, not_taken  # it closed, then reset our unread data
    if received:
        # Taken, but a syslog listener never answers: say so, without echoing what it sent.
        return Status.PASS, Reason.OK, (f"{where} read the message and closed, after answering {received} "
                                        "byte(s) of its own: not a plain syslog receiver")  # fmt: skip
    return None
