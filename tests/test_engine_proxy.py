"""Rows that go out through a proxy must not fail as 'unresolved' on the Auditor host.

Where only the proxy resolves internet names, the engine lets a proxy-aware probe connect
by name through the proxy. Real pieces: the engine, the https probe, an in-process CONNECT
proxy (tests/probes/test_proxy.py) and an openssl TLS peer on loopback. Only the local
name lookup is replaced, by one that fails the way a closed network does: no real name is
ever resolved or contacted.
"""

from __future__ import annotations

import asyncio

import pytest

import scanner.engine as engine
from scanner.engine import Resolved, build_plan, run_plan
from scanner.models import CheckSpec, Depth, Direction, Reason, Row, Status, Target, Transport
from scanner.probes.base import Settings
from tests.lab.tls import TLS_HOSTNAME, TlsCerts, TlsPeer
from tests.probes.test_proxy import ConnectProxy

ROLE = "exchange-online-endpoints"


def _row(port: int) -> Row:
    return Row(
        profile="exchange-online", id="https-443", section="Exchange Online Ports", doc_port="443",
        doc_protocol="TCP", doc_source="Netwrix Auditor Server", doc_target="Microsoft 365",
        purpose="test", direction=Direction.OUTBOUND, source="auditor-server", target=ROLE,
        checks=(CheckSpec(Transport.TCP, "https", port),), internet=True,
    )


@pytest.fixture
def no_local_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    async def unresolved(host: str, timeout: float) -> Resolved:
        return Resolved(None, error=f"{host} does not resolve (no DNS on this network)")

    monkeypatch.setattr(engine, "resolve", unresolved)


def _scan(settings: Settings, port: int):  # type: ignore[no-untyped-def]
    plan = build_plan([_row(port)], {ROLE: [Target(ROLE, TLS_HOSTNAME)]}, depth=Depth.PROTOCOL, settings=settings)

    async def go():  # type: ignore[no-untyped-def]
        proxy = ConnectProxy()
        await proxy.start()
        try:
            run_settings = settings if settings.proxy != "PROXY" else Settings(
                timeout=settings.timeout, retries=settings.retries, ca_bundle=settings.ca_bundle,
                trust_private_ca=True, proxy=proxy.url,
            )
            return await run_plan(plan, run_settings), proxy.seen
        finally:
            await proxy.stop()

    return asyncio.run(go())


@pytest.mark.usefixtures("no_local_dns")
def test_proxied_row_runs_through_the_proxy_when_the_name_does_not_resolve_here(
    loopback_tls_certs: TlsCerts,
) -> None:
    with TlsPeer(None, 0, "valid", certs=loopback_tls_certs) as peer:
        settings = Settings(timeout=2.0, ca_bundle=str(loopback_tls_certs.ca_bundle), proxy="PROXY")
        (row,), seen = _scan(settings, peer.port)
    assert row.status is Status.PASS, row.detail
    assert row.checks[0].evidence.get("via_proxy")
    assert seen and seen[0].startswith(f"CONNECT {TLS_HOSTNAME}:{peer.port}")


@pytest.mark.usefixtures("no_local_dns")
def test_without_a_proxy_the_unresolvable_name_fails_as_unresolved(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    (row,), seen = _scan(Settings(timeout=1.0), 443)
    assert row.status is Status.FAIL and row.reason is Reason.UNRESOLVED
    assert seen == []
