"""Helpers to run one probe the way the engine does, for tests and ad-hoc checks."""

from __future__ import annotations

import asyncio
import dataclasses
from functools import lru_cache
from typing import Any, Mapping

from scanner.models import CheckResult, CheckSpec, Direction, PortRange, Row, Target, Transport
from scanner.probes._memo import ScanMemo
from scanner.probes._options import ParsedOptions
from scanner.probes.base import Credentials, ProbeContext, Settings
from scanner.timing import HostTiming


@lru_cache(maxsize=1)
def _internet_roles() -> frozenset[str]:
    """The built-in roles marked `internet: true`, so a test row to one is proxied as a profile's would be."""
    from scanner.profiles import builtin_profiles_dir, load_roles

    roles, _ = load_roles(builtin_profiles_dir() / "roles.yaml")
    return frozenset(rid for rid, role in roles.items() if role.internet)


def make_row(probe: str, protocol: str, port: int | PortRange | None, role: str, options: Mapping[str, Any]) -> Row:
    # Typed options (ParsedOptions) are kept as they are; a plain mapping is copied.
    spec = CheckSpec(Transport(protocol), probe, port, None, options if isinstance(options, ParsedOptions) else dict(options))
    return Row(
        profile="test",
        id=f"{probe}-{port}",
        section="test",
        doc_port=str(port),
        doc_protocol=protocol.upper(),
        doc_source="Netwrix Auditor Server",
        doc_target=role,
        purpose="test",
        direction=Direction.OUTBOUND,
        source="auditor-server",
        target=role,
        checks=(spec,),
        internet=role in _internet_roles(),
    )


def make_context(
    host: str,
    address: str,
    port: int | str | None,
    protocol: str = "tcp",
    *,
    probe: str = "tcp",
    options: Mapping[str, Any] | None = None,
    timeout: float = 2.0,
    retries: int = 1,
    credentials: Credentials | None = None,
    role: str = "domain-controllers",
    settings: Settings | None = None,
    memo: ScanMemo | None = None,
) -> ProbeContext:
    """A ProbeContext for one check; call inside a running event loop. Contexts given the
    same `memo` share scan-wide facts as the checks of one scan do."""
    ports: PortRange | None = None
    single: int | None = None
    if isinstance(port, str):
        low, high = (int(p) for p in port.split("-"))
        ports = PortRange(low, high)
    else:
        single = port
    if settings is None:
        settings = Settings(
            timeout=timeout,
            retries=retries,
            credentials={role: credentials} if credentials else {},
        )
    from scanner.engine import context_for

    row = make_row(probe, protocol, ports or single, role, options or {})
    return context_for(
        row, Target(role, host), row.checks[0], address=address, settings=settings,
        timing=HostTiming(settings.timeout, settings.min_timeout), probe=probe, memo=memo,
    )  # fmt: skip


async def run_probe(probe: str, ctx: ProbeContext) -> CheckResult:
    """Run the named probe against ctx exactly as the engine does (same error mapping).

    The deadline is the named probe's own budget from now, as the engine gives it.
    """
    from scanner.engine import execute_check, probe_budget
    from scanner.probes.base import Probe, find_probe

    budget = probe_budget(ctx.settings, (find_probe(probe) or Probe).exchanges)
    ctx = dataclasses.replace(ctx, deadline=asyncio.get_running_loop().time() + budget)
    return await execute_check(probe, ctx)
