"""Raw senders run inside a lab namespace: floods, malformed syslog, endless TCP streams.

    python -m tests.listener._sender flood HOST PORT --count 100000 --tagged 500 [--rate 0]
    python -m tests.listener._sender garbage HOST PORT
    python -m tests.listener._sender endless HOST PORT --seconds 5

`flood` prints the nonces of its tagged datagrams (one per line) so the caller can check
that each one was reported; the tags use profile "flood", row "udp".
"""

from __future__ import annotations

import argparse
import os
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


def endless(host: str, port: int, seconds: float) -> None:
    tcp = socket.create_connection((host, port), timeout=5)
    chunk = b"<13>" + b"z" * 65532  # one line that never ends
    deadline = time.monotonic() + seconds
    sent = 0
    try:
        while time.monotonic() < deadline:
            tcp.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    sys.stdout.write(f"{sent}\n")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["flood", "garbage", "endless"])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--count", type=int, default=100000)
    p.add_argument("--tagged", type=int, default=100)
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--seconds", type=float, default=5.0)
    a = p.parse_args()
    if a.mode == "flood":
        flood(a.host, a.port, a.count, a.tagged, a.rate, a.size)
    elif a.mode == "garbage":
        garbage(a.host, a.port)
    else:
        endless(a.host, a.port, a.seconds)


if __name__ == "__main__":
    main()
