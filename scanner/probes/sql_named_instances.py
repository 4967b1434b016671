"""SQL Server named instances on their dynamic ports (the "Dynamic: 1024-65535" row).

A named instance listens on a port it picks at start-up; clients learn it from the
SQL Server Browser (UDP 1434). So this check asks the Browser of the same host for
its instances, then sends a TDS PRELOGIN to every named instance's announced TCP
port, in parallel. It passes only when every announced instance answers; an
instance whose port is dropped or refused fails the check, by name and port.

Inventory setting ``sql_instances`` ({instance name: TCP port}) names instances with
static ports, or instances to check when the Browser is stopped (then only those are
checked, and the report says so). Option ``browser_port`` (default 1434) moves the
Browser question, for labs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scanner.models import STATUS_SEVERITY, Reason, Transport
from scanner.probes._options import option
from scanner.probes.base import (
    Outcome,
    Probe,
    ProbeContext,
    ProbeError,
    evidence_text,
    failed,
    inconclusive,
    options_of,
    passed,
    register,
    skipped,
)
from scanner.probes.sql_browser import query_browser
from scanner.wire.mcsqlr import BrowserInstance
from scanner.wire.tds import PreloginReply, prelogin

BROWSER_PORT = 1434
SETTING = "sql_instances"


@dataclass(frozen=True)
class _Target:
    name: str
    port: int
    source: str  # "browser" or "inventory"


def _configured(ctx: ProbeContext) -> dict[str, int]:
    raw = ctx.settings.values.get(SETTING) or {}
    if not isinstance(raw, Mapping):
        raise ProbeError(
            inconclusive(
                Reason.NOT_CONFIGURED,
                f"the inventory setting {SETTING} must map instance names to TCP ports, "
                f"e.g. {{SQLEXPRESS: 50123}}; got {type(raw).__name__}",
            )
        )
    out: dict[str, int] = {}
    for name, port in raw.items():
        if isinstance(port, bool) or not isinstance(port, (int, str)) or not (str(port).isascii() and str(port).isdigit()):
            raise ProbeError(inconclusive(Reason.NOT_CONFIGURED, f"{SETTING}.{name}: {port!r} is not a TCP port"))
        if not 0 < int(port) <= 65535:
            raise ProbeError(inconclusive(Reason.NOT_CONFIGURED, f"{SETTING}.{name}: {port} is not a TCP port"))
        out[str(name)] = int(port)
    return out


def _why_failed(target: _Target, outcome: Outcome) -> str:
    where = f"instance {target.name} " + (
        f"announces TCP {target.port}" if target.source == "browser" else f"is set to TCP {target.port}"
    )
    if outcome.reason is Reason.FILTERED:
        return f"{where} but a firewall drops it"
    if outcome.reason is Reason.REFUSED:
        return f"{where} but it is refused (TCP reset: nothing listens there, or a firewall rejects it)"
    if outcome.reason is Reason.UNREACHABLE:
        return f"{where} but the host is unreachable"
    return f"{where} but {outcome.detail}"


async def _check(ctx: ProbeContext, target: _Target) -> tuple[_Target, Outcome, PreloginReply | None]:
    try:
        reply = await prelogin(ctx, port=target.port, instance=target.name)
    except ProbeError as exc:
        return target, exc.outcome, None
    if reply.instance_ok is False:
        return (
            target,
            failed(
                Reason.PROTOCOL,
                f"the SQL Server on TCP {target.port} says it is not instance {target.name} "
                "(PRELOGIN INSTOPT mismatch): the Browser's port list may be stale",
            ),
            reply,
        )
    return target, passed(reply.describe()), reply


@dataclass(frozen=True)
class SqlNamedInstancesOptions:
    browser_port: int = option(BROWSER_PORT, "the SQL Server Browser's UDP port")

    def __post_init__(self) -> None:
        if not 0 < self.browser_port <= 65535:
            raise ValueError(f"sql-named-instances: browser_port must be a port number, not {self.browser_port!r}")


@register
class SqlNamedInstancesProbe(Probe):
    name = "sql-named-instances"
    accepts_range = True
    transports = (Transport.TCP,)
    summary = "SQL Server named instances: Browser list, then TDS PRELOGIN to each instance's port"
    exchanges = 3  # the Browser question (with retries), then connect + answer per instance

    Options = SqlNamedInstancesOptions

    async def run(self, ctx: ProbeContext) -> Outcome:
        browser_port = options_of(ctx, SqlNamedInstancesOptions).browser_port
        configured = _configured(ctx)
        announced: list[BrowserInstance] = []
        browser_problem: Outcome | None = None
        try:
            announced = await query_browser(ctx, browser_port)
        except ProbeError as exc:
            browser_problem = exc.outcome

        targets: list[_Target] = []
        without_tcp: list[str] = []
        for inst in announced:
            if inst.is_default:
                continue  # the default instance is the 1433 row's business
            if inst.tcp_port is None:
                without_tcp.append(
                    f"{inst.name} (invalid TCP port {inst.invalid_tcp!r})"
                    if inst.invalid_tcp is not None
                    else inst.name
                )
            else:
                targets.append(_Target(inst.name, inst.tcp_port, "browser"))
        for name, port in configured.items():
            if not any(t.name.upper() == name.upper() and t.port == port for t in targets):
                targets.append(_Target(name, port, "inventory"))

        evidence: dict[str, Any] = {
            "browser": "answered" if browser_problem is None else browser_problem.reason.value,
            "announced": [i.evidence() for i in announced],
        }
        if configured:
            evidence["configured"] = dict(configured)

        if browser_problem is not None and not configured:
            return inconclusive(
                browser_problem.reason,
                "cannot know the named instances' ports: the SQL Server Browser gave no usable answer "
                f"({browser_problem.detail}). Set {SETTING} in the inventory "
                "(instance name: TCP port) to check instances with known ports",
                **evidence,
            )
        if not targets:
            extra = (
                f"; {', '.join(without_tcp)}: no usable TCP port announced (TCP/IP disabled?)" if without_tcp else ""
            )
            return skipped(
                Reason.NOT_REGISTERED,
                f"the SQL Server Browser on {ctx.host} announces no named instance with a TCP port "
                f"(only the default instance, checked on 1433){extra}: nothing to check on a dynamic port",
                **evidence,
            )

        results = await asyncio.gather(*(_check(ctx, t) for t in targets))
        per_instance: list[dict[str, Any]] = []
        failures: list[tuple[_Target, Outcome]] = []
        for target, outcome, reply in results:
            item: dict[str, Any] = {
                "name": target.name,
                "tcp_port": target.port,
                "source": target.source,
                "status": outcome.status.value,
                "reason": outcome.reason.value,
            }
            if reply is not None:
                item.update(reply.evidence())
            per_instance.append(item)
            if outcome.status.value != "pass":
                failures.append((target, outcome))
        evidence["instances"] = per_instance
        note = ""
        if browser_problem is not None:
            note = (
                f" (the SQL Server Browser gave no usable answer: {browser_problem.reason.value}; "
                f"checked the ports set in {SETTING} only)"
            )
        if without_tcp:
            note += f" ({', '.join(without_tcp)}: no usable TCP port announced, not checked)"
        if failures:
            # The worst instance decides: a fail fails, but instances that only went silent
            # (no-reply: busy or hung) leave the check inconclusive, not failed.
            failures.sort(key=lambda f: STATUS_SEVERITY[f[1].status], reverse=True)
            words = "; ".join(_why_failed(t, o) for t, o in failures)
            worst = failures[0][1]
            return Outcome(worst.status, worst.reason, f"{words}{note}", evidence)
        listing = ", ".join(f"{t.name} on TCP {t.port}" for t in targets)
        return passed(
            f"every named instance answers TDS PRELOGIN: {listing}{note}",
            **evidence,
        )

    def summarize(self, evidence: Mapping[str, Any]) -> str:
        items = evidence.get("instances")
        names = [f"{evidence_text(i, 'name', 40) or '?'} (TCP {evidence_text(i, 'tcp_port', 8) or '-'})"
                 for i in (items[:6] if isinstance(items, list) else []) if isinstance(i, Mapping)]
        return "instances " + ", ".join(names) if names else ""
