"""Shared pytest fixtures: the lab (namespaces, Samba DC, TLS peers) and hostile peers.

Tests that need the lab are marked ``@pytest.mark.lab``; they are skipped with the reason
when the machine lacks root, ``ip netns``, nftables or Samba (tests/lab/install.sh installs
what is missing). One lab, one provisioned template and one DC serve the whole session;
after every test the firewalls of all lab hosts are cleared again.

Fixtures::

    lab            session  tests.lab.netns.Lab (bridge 198.18.X.1, the test process is the
                            Auditor in the root namespace)
    dc             session  tests.lab.samba_dc.SambaDC on host "dc1" (started)
    dc_firewall    function Firewall of the DC's host, cleared after the test
    second_host    session  Host "h2";  third_host: Host "h3"
    tls_certs      session  TlsCerts for h2 (tls.lab.test + h2's addresses) + CA bundle
    tls_peer       function factory: tls_peer("expired", port=443, http=True) -> TlsPeer on h2
    loopback_tls_certs / loopback_tls_peer   the same on 127.0.0.1, no root needed
    hostile        function factory: hostile("drip", udp=False, **kw) -> (address, port) on
                            loopback, stopped after the test
    lab_hostile    function factory: lab_hostile("garbage", port, host=None) -> Popen in a
                            lab host (h2 by default)
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.firewall import Firewall
from tests.lab.hostile import HostileServer, start_in_host
from tests.lab.netns import Host, Lab, lab_available
from tests.lab.samba_dc import SambaDC, provision_template, samba_available
from tests.lab.tls import TlsCerts, TlsPeer, certs_for_host, loopback_certs

_ACTIVE_LABS: list[Lab] = []


def lab_skip_reason() -> str | None:
    """Why lab tests cannot run on this machine, or None."""
    if os.environ.get("PORTREADY_NO_LAB"):
        return "PORTREADY_NO_LAB is set"
    return lab_available() or samba_available()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "lab: needs root, network namespaces, nftables and Samba (the lab in tests/lab); "
        "skipped with the reason when the machine lacks them",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = lab_skip_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"lab unavailable: {reason}")
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(skip)


# -- no real name resolution ----------------------------------------------------------------
def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


@pytest.fixture(autouse=True)
def _no_real_name_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests resolve no real names: the system resolver would send a DNS query off this machine.

    Addresses and `localhost` pass through; any other name fails the way an unknown name
    does, so a test that forgot to point a check at the lab reads `unresolved` instead of
    leaking a query. (Samba's and the probes' DNS traffic goes to lab addresses directly.)
    """
    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is None or name == "localhost" or _is_literal(str(name)):
            return real(host, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, f"tests may not resolve {name!r} (no real DNS in tests)")

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


# -- the lab ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    reason = lab_skip_reason()
    if reason:
        pytest.skip(f"lab unavailable: {reason}")
    Lab.reap_stale()  # leftovers of a crashed earlier session (owner process gone)
    the_lab = Lab("pytest")
    try:
        the_lab.up()
        _ACTIVE_LABS.append(the_lab)
        yield the_lab
    finally:
        if the_lab in _ACTIVE_LABS:
            _ACTIVE_LABS.remove(the_lab)
        the_lab.down()


@pytest.fixture(autouse=True)
def _reset_lab_firewalls() -> Iterator[None]:
    """Every test starts and ends with open firewalls on every lab host."""
    yield
    for the_lab in _ACTIVE_LABS:
        for host in the_lab.hosts.values():
            if host.firewall.rules:
                host.firewall.clear()


@pytest.fixture(scope="session")
def samba_template() -> Path:
    return provision_template()


@pytest.fixture(scope="session")
def dc(lab: Lab, samba_template: Path) -> Iterator[SambaDC]:
    controller = SambaDC(lab.add_host("dc1"), samba_template)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def dc_firewall(dc: SambaDC) -> Iterator[Firewall]:
    yield dc.host.firewall
    dc.host.firewall.clear()


def _host(lab: Lab, name: str) -> Host:
    return lab.hosts[name] if name in lab.hosts else lab.add_host(name)


@pytest.fixture(scope="session")
def second_host(lab: Lab) -> Host:
    return _host(lab, "h2")


@pytest.fixture(scope="session")
def third_host(lab: Lab) -> Host:
    return _host(lab, "h3")


# -- TLS -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tls_certs(second_host: Host) -> TlsCerts:
    return certs_for_host(second_host)


@pytest.fixture
def tls_peer(second_host: Host, tls_certs: TlsCerts) -> Iterator[Callable[..., TlsPeer]]:
    peers: list[TlsPeer] = []

    def start(cert_kind: str = "valid", port: int = 443, http: bool = True,
              host: Host | None = None) -> TlsPeer:  # fmt: skip
        target = host or second_host
        certs = tls_certs if target is second_host else certs_for_host(target)
        peer = TlsPeer(target, port, cert_kind, http=http, certs=certs).start()
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.stop()


@pytest.fixture(scope="session")
def loopback_tls_certs(tmp_path_factory: pytest.TempPathFactory) -> TlsCerts:
    return loopback_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def loopback_tls_peer(loopback_tls_certs: TlsCerts) -> Iterator[Callable[..., TlsPeer]]:
    peers: list[TlsPeer] = []

    def start(cert_kind: str = "valid", http: bool = True) -> TlsPeer:
        peer = TlsPeer(None, 0, cert_kind, http=http, certs=loopback_tls_certs).start()
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.stop()


# -- hostile peers ---------------------------------------------------------------------------
@pytest.fixture
def hostile() -> Iterator[Callable[..., tuple[str, int]]]:
    servers: list[HostileServer] = []

    def start(mode: str, **kw: Any) -> tuple[str, int]:
        kw.setdefault("lifetime", 60.0)
        server = HostileServer(mode, **kw)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def lab_hostile(second_host: Host) -> Iterator[Callable[..., Any]]:
    procs: list[Any] = []

    def start(mode: str, port: int, host: Host | None = None, **kw: Any) -> Any:
        kw.setdefault("lifetime", 60.0)
        proc = start_in_host(host or second_host, mode, port, **kw)
        procs.append(proc)
        return proc

    yield start
    from tests.lab.netns import _kill_group

    for proc in procs:
        _kill_group(proc, grace=1.0)
        if proc.stdout is not None:
            proc.stdout.close()
