"""--discover against hostile DNS servers: another class's SRV, 32 glue-less names."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanner.discovery import DiscoveryError, discover_with_addresses
from tests.cli._run import portready


def _srv_response(query_wire: bytes, targets: list[str], *, rdclass: str = "IN") -> bytes:
    import dns.message
    import dns.name
    import dns.rrset

    q = dns.message.from_wire(query_wire)
    r = dns.message.make_response(q)
    qname = q.question[0].name
    r.answer.append(dns.rrset.from_text(qname, 600, "IN", "SRV", *(f"0 100 389 {t}." for t in targets)))
    wire = bytearray(r.to_wire())
    if rdclass == "CH":  # the answer's class field, after the header, the question and the owner pointer
        offset = 12 + len(qname.to_wire()) + 4 + 2 + 2
        assert wire[offset : offset + 2] == b"\x00\x01"
        wire[offset : offset + 2] = b"\x00\x03"
    return bytes(wire)


class _HostileDns:
    """UDP DNS on loopback: SRV answers without glue; A/AAAA answers held until `barrier`
    queries are waiting, so a client asking one name after another never gets them all."""

    def __init__(self, targets: list[str], *, rdclass: str = "IN", barrier: int = 0, address: str = "127.0.0.1",
                 port: int = 0) -> None:  # fmt: skip
        self.targets, self.rdclass, self.barrier = targets, rdclass, barrier
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, port))
        self.port = self.sock.getsockname()[1]
        self.held: list[tuple[bytes, object]] = []
        self.released = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _answer_address(self, data: bytes) -> bytes:
        import dns.message
        import dns.rdatatype
        import dns.rrset

        q = dns.message.from_wire(data)
        r = dns.message.make_response(q)
        question = q.question[0]
        if question.rdtype == dns.rdatatype.A:
            r.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", f"192.0.2.{random.randint(1, 254)}"))
        return bytes(r.to_wire())

    def _serve(self) -> None:
        import dns.message
        import dns.rdatatype

        while True:
            try:
                data, addr = self.sock.recvfrom(4096)
            except OSError:
                return
            q = dns.message.from_wire(data)
            if q.question[0].rdtype == dns.rdatatype.SRV:
                self.sock.sendto(_srv_response(data, self.targets, rdclass=self.rdclass), addr)
                continue
            if self.released:
                self.sock.sendto(self._answer_address(data), addr)
                continue
            self.held.append((data, addr))
            if len({d[2:] for d, _ in self.held}) >= self.barrier:
                self.released = True
                for held, who in self.held:
                    self.sock.sendto(self._answer_address(held), who)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def glueless() -> Iterator[_HostileDns]:
    server = _HostileDns([f"dc{i}.lab.test" for i in range(32)], barrier=12)
    yield server
    server.close()


async def test_32_glueless_names_are_looked_up_concurrently(glueless: _HostileDns) -> None:
    found = await discover_with_addresses("lab.test", "127.0.0.1", 1.0, port=glueless.port)
    assert len(found) == 32
    assert all(addresses for _, addresses in found), [n for n, a in found if not a]


async def test_an_srv_record_of_another_class_is_no_domain_controller() -> None:
    server = _HostileDns(["dc1.lab.test"], rdclass="CH")
    try:
        with pytest.raises(DiscoveryError, match="no domain controller records"):
            await discover_with_addresses("lab.test", "127.0.0.1", 1.0, port=server.port)
    finally:
        server.close()


def test_scan_discover_with_another_class_exits_2_not_3() -> None:
    if os.geteuid() != 0:
        pytest.skip("binding UDP 53 needs root")
    address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    try:
        server = _HostileDns(["dc1.lab.test"], rdclass="CH", address=address, port=53)
    except OSError as exc:
        pytest.skip(f"cannot bind {address}:53 ({exc})")
    try:
        proc = portready("scan", "--discover", f"lab.test@{address}", "--timeout", "1", "--quiet")
    finally:
        server.close()
    assert proc.returncode == 2, proc.stderr
    assert "no domain controller records" in proc.stderr
    assert "internal error" not in proc.stderr




def test_sigterm_while_discovery_waits_still_writes_the_reports(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("binding UDP 53 needs root")
    address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        silent.bind((address, 53))  # receives the SRV query, never answers
    except OSError as exc:
        pytest.skip(f"cannot bind {address}:53 ({exc})")
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "scanner", "scan", "--discover", f"lab.test@{address}", "--timeout", "60", "--quiet",
         "--json", str(out / "r.json"), "--junit", str(out / "r.xml")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        silent.settimeout(60)
        silent.recvfrom(4096)  # discovery is asking: the signal lands while it waits
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        silent.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    doc = json.loads((out / "r.json").read_text())
    assert doc["interrupted"] == {"signal": "SIGTERM", "checks_done": 0, "checks_planned": 0}
    assert doc["rows"] == [] and (out / "r.xml").exists()
