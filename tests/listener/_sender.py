"""Raw senders run inside a lab namespace: floods, malformed syslog, endless TCP streams.

    python -m tests.listener._sender flood HOST PORT --count 100000 --tagged 500 [--rate 0]
    python -m tests.listener._sender garbage HOST PORT
    python -m tests.listener._sender endless HOST PORT --seconds 5
    python -m tests.listener._sender tcpflood HOST PORT --connections 1000 --count 40000 [--reconnect 0.05] [--cut]
    python -m tests.listener._sender drip HOST PORT --connections 300 --seconds 10
    python -m tests.listener._sender strangers HOST PORT --sources A1,A2,... [--last EXPECTED]
    python -m tests.listener._sender miscount HOST PORT --count 31

`flood` prints the nonces of its tagged datagrams (one per line) so the caller can check
that each one was reported; the tags use profile "flood", row "udp".

`tcpflood` is a small stand-in for rsyslog's testbench sender `tcpflood`: it opens
--connections TCP connections at once and sends --count numbered syslog messages round
robin over them (LF-framed, or octet-counted with --octet). With --reconnect P, after each
message a connection is closed and reopened with probability P (rsyslog's conndrop load);
with --cut, such a close happens in the middle of the next message instead, which is then
not fully sent. It prints one JSON line: {"sent": fully sent messages, "cut": messages cut
by a close, "opened": connections opened, "errors": sends that failed}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import socket
import sys
import time


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def flood(host: str, port: int, count: int, tagged: int, rate: float, size: int) -> None:
    sock = socket.socket(_family(host), socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    sock.connect((host, port))
    every = max(1, count // tagged) if tagged else 0
    filler = b"<13>1 - flood app - - - " + b"f" * max(0, size - 24)
    nonces: list[str] = []
    start = time.perf_counter()
    for i in range(count):
        if every and i % every == every // 2 and len(nonces) < tagged:
            nonce = os.urandom(8).hex()
            nonces.append(nonce)
            data = f"<13>1 - flood portready - - - portready-test {nonce} flood/udp seq={i}".encode()
        else:
            data = filler
        while True:
            try:
                sock.send(data)
                break
            except (BlockingIOError, ConnectionRefusedError):
                time.sleep(0.0005)
        if rate > 0:
            due = start + (i + 1) / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    elapsed = time.perf_counter() - start
    sys.stdout.write("\n".join(nonces) + "\n")
    sys.stderr.write(f"sent {count} datagrams in {elapsed:.3f} s\n")


def garbage(host: str, port: int) -> None:
    udp = socket.socket(_family(host), socket.SOCK_DGRAM)
    for data in (os.urandom(600), b"\xff\xfe\x00" * 100, b"<13>1 " + b"A" * 65000, b"<", b"", b"<99999>x"):
        udp.sendto(data, (host, port))
    tcp = socket.create_connection((host, port), timeout=5)
    tcp.sendall(b"99999999999 " + os.urandom(200000))
    tcp.close()
    tcp = socket.create_connection((host, port), timeout=5)
    tcp.sendall(b"<13>1 - h app - - - ok \xff bad utf8\n" + os.urandom(3000) + b"\n")
    tcp.close()


def endless(host: str, port: int, seconds: float, connections: int = 1) -> None:
    """Lines that never end, on `connections` connections at once; prints the bytes sent."""
    socks = [socket.create_connection((host, port), timeout=5) for _ in range(connections)]
    for sock in socks:
        sock.setblocking(False)
    chunk = b"<13>" + b"z" * 65532  # one line that never ends
    deadline = time.monotonic() + seconds
    sent = 0
    live = list(socks)
    while time.monotonic() < deadline and live:
        progressed = False
        for sock in list(live):
            try:
                sent += sock.send(chunk)
                progressed = True
            except BlockingIOError:
                continue
            except OSError:
                live.remove(sock)
        if not progressed:
            time.sleep(0.001)
    for sock in socks:
        sock.close()
    sys.stdout.write(f"{sent}\n")


def tcpflood(host: str, port: int, connections: int, count: int, reconnect: float, cut: bool, octet: bool,
             seed: int) -> None:
    rnd = random.Random(seed)
    family = _family(host)

    def connect() -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect((host, port))
        return sock

    socks = [connect() for _ in range(connections)]
    opened, sent, cuts, errors = connections, 0, 0, 0
    for i in range(count):
        k = i % connections
        msg = f"<13>1 - flood tcpflood - - - msgnum:{i:08d} {'x' * 40}".encode()
        data = (str(len(msg)).encode() + b" " + msg) if octet else msg + b"\n"
        drop = reconnect > 0 and rnd.random() < reconnect
        try:
            if drop and cut:
                socks[k].sendall(data[: rnd.randrange(1, len(data))])
                cuts += 1
            else:
                socks[k].sendall(data)
                sent += 1
        except OSError:
            errors += 1
        if drop:
            socks[k].close()
            socks[k] = connect()
            opened += 1
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
    for sock in socks:  # wait for the listener to close its side: everything was read
        with contextlib.suppress(OSError):
            sock.recv(1)
        sock.close()
    print(json.dumps({"sent": sent, "cut": cuts, "opened": opened, "errors": errors}))


def drip(host: str, port: int, connections: int, seconds: float, partial: int = 0) -> None:
    """Slowloris: many connections, each sending one byte a second of a frame that never ends."""
    socks = []
    reset = set()
    for n in range(connections):
        sock = socket.socket(_family(host), socket.SOCK_STREAM)
        sock.settimeout(5)
        socks.append(sock)
        try:
            sock.connect((host, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(b"<13>1 - drip slowloris - - - " + b"p" * partial)
        except OSError:  # a listener at its cap resets us: counted
            reset.add(n)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(reset) < len(socks):
        for n, sock in enumerate(socks):
            if n in reset:
                continue
            try:
                sock.send(b"z")
            except OSError:
                reset.add(n)
        time.sleep(1.0)
    for sock in socks:
        sock.close()
    print(json.dumps({"connections": connections, "reset": len(reset)}))


def strangers(host: str, port: int, sources: list[str], last: str | None) -> None:
    """One syslog datagram from each of many local addresses, then one from `last`."""
    for addr in sources + ([last] if last else []):
        sock = socket.socket(_family(addr), socket.SOCK_DGRAM)
        sock.bind((addr, 0))
        sock.sendto(f"<13>1 - {addr} natbox - - - hello from {addr}".encode(), (host, port))
        sock.close()
        time.sleep(0.001)


def miscount(host: str, port: int, count: int) -> None:
    """`count` octet-counted frames on one connection, frame 10 with a count 5 too large, one 6 too small."""
    frames = []
    for i in range(count):
        msg = f"<13>1 - miscount app - - - event {i} seq={i * 7}".encode()
        wrong = {10: 5, 20: -6}.get(i, 0)
        frames.append(str(len(msg) + wrong).encode() + b" " + msg)
    with socket.create_connection((host, port), timeout=5) as sock:
        for frame in frames:  # in several segments, so counts straddle reads
            sock.sendall(frame)
            time.sleep(0.002)
    print(json.dumps({"sent": count}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["flood", "garbage", "endless", "tcpflood", "drip", "strangers", "miscount"])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--count", type=int, default=100000)
    p.add_argument("--tagged", type=int, default=100)
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--reconnect", type=float, default=0.0)
    p.add_argument("--cut", action="store_true")
    p.add_argument("--octet", action="store_true")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--sources", default="")
    p.add_argument("--last")
    p.add_argument("--partial", type=int, default=0, help="drip: bytes of the unfinished message sent at once")
    a = p.parse_args()
    if a.mode == "flood":
        flood(a.host, a.port, a.count, a.tagged, a.rate, a.size)
    elif a.mode == "garbage":
        garbage(a.host, a.port)
    elif a.mode == "endless":
        endless(a.host, a.port, a.seconds, a.connections)
    elif a.mode == "tcpflood":
        tcpflood(a.host, a.port, a.connections, a.count, a.reconnect, a.cut, a.octet, a.seed)
    elif a.mode == "miscount":
        miscount(a.host, a.port, a.count)
    elif a.mode == "drip":
        drip(a.host, a.port, a.connections, a.seconds, a.partial)
    else:
        strangers(a.host, a.port, [x for x in a.sources.split(",") if x], a.last)


if __name__ == "__main__":
    main()
