"""The listener plans a check because its probe declares `inbound`, not because of the probe's name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scanner.listener.matching import match, plan_inbound
from scanner.listener.server import ArrivalStore
from scanner.models import CheckSpec, Direction, Reason, Row, Status, Transport
from scanner.probes import base
from scanner.probes.base import Outcome, Probe, ProbeContext, register, skipped


@pytest.fixture
def registry_snapshot() -> Iterator[None]:
    base.registry()  # load every real probe first, so restoring keeps them
    saved = dict(base._REGISTRY)
    yield
    base._REGISTRY.clear()
    base._REGISTRY.update(saved)


def _row(*checks: CheckSpec) -> Row:
    return Row(
        profile="t", id="r", section="t", doc_port="x", doc_protocol="TCP", doc_source="src",
        doc_target="Netwrix Auditor Server", purpose="p", direction=Direction.INBOUND, source="anyone",
        target="auditor-server", checks=checks,
    )  # fmt: skip


def test_a_probe_declared_inbound_is_planned_and_named_in_its_results(registry_snapshot: None) -> None:
    @register
    class PushProbe(Probe):
        name = "throwaway-push"
        inbound = True

        async def run(self, ctx: ProbeContext) -> Outcome:
            return skipped(Reason.INBOUND, "proven by `portready listen`")

    (irow,) = plan_inbound([_row(CheckSpec(Transport.TCP, "throwaway-push", 19911))])
    assert [c.port for c in irow.checks] == [19911]
    store = ArrivalStore()
    store.record(Transport.TCP, 19911, "198.18.1.2", "connection")
    (result,) = match([irow], {}, store).rows
    assert result.status is Status.PASS and [c.probe for c in result.checks] == ["throwaway-push"]


def test_an_outbound_probe_on_an_inbound_row_is_not_listened_for() -> None:
    assert plan_inbound([_row(CheckSpec(Transport.TCP, "tcp", 19912))]) == []


def test_an_unknown_probe_is_not_listened_for() -> None:
    assert plan_inbound([_row(CheckSpec(Transport.TCP, "no-such-probe", 19913))]) == []
