"""Web probes behind a real firewall drop: filtered (TCP) or inconclusive (QUIC), never pass.

The lab host h2 drops the port with nftables; nothing is listening behind the rule, which
is exactly what the probe must not be able to tell apart from a service: silence.
"""

from __future__ import annotations

import asyncio

import pytest

from scanner.models import Reason, Status
from scanner.probes.base import Settings
from tests.lab.netns import Host
from tests.probes.test_tls import probe

pytestmark = pytest.mark.lab


@pytest.mark.parametrize(
    ("name", "port", "role"),
    [
        ("http", 80, "exchange-servers"),
        ("papi", 8080, "isilon-clusters"),
        ("vsphere", 443, "vmware-servers"),
        ("ontap", 443, "netapp-clusters"),
    ],
)
def test_dropped_port_is_filtered(second_host: Host, name: str, port: int, role: str) -> None:
    second_host.firewall.drop(port, "tcp")
    settings = Settings(timeout=0.5, retries=1)
    result = asyncio.run(probe(name, port, address=second_host.ipv4, settings=settings, role=role))
    assert (result.status, result.reason) == (Status.FAIL, Reason.FILTERED), result.detail
    assert f"drops TCP {port}" in result.detail


def test_dropped_quic_is_inconclusive_not_pass(second_host: Host) -> None:
    second_host.firewall.drop(443, "udp")
    settings = Settings(timeout=0.5, retries=1)
    result = asyncio.run(
        probe("quic", 443, address=second_host.ipv4, settings=settings, role="entra-id-endpoints", protocol="udp")
    )
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, Reason.NO_ANSWER), result.detail
