"""`portready send`: run on a source host; sends tagged test traffic that `listen` matches to a row."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from scanner.errors import UsageError
from scanner.models import Direction, PortRange, Status, Transport


def plan_sends(args: argparse.Namespace) -> list[tuple[str, str, Transport, int]]:
    """(profile, row id, transport, port) to send, from --profile/--row or --port/--protocol."""
    from scanner.listener.tag import port_row_id

    if not args.profile and not args.row:
        if args.port is None or args.protocol is None:
            raise UsageError("say what to send: --profile ID [--row ID], or --port P --protocol udp|tcp")
        return [("port", port_row_id(args.protocol, args.port), Transport(args.protocol), args.port)]
    from scanner.profiles import load_catalogue

    catalogue = load_catalogue(list(args.profile_dirs or []))
    profile_id, row_id = args.profile, args.row
    if row_id and "/" in row_id:
        profile_id, row_id = row_id.split("/", 1)
    if not profile_id and row_id:
        owners = sorted({r.profile for p in catalogue.profiles.values() for r in p.rows
                         if r.id == row_id and r.direction is Direction.INBOUND})  # fmt: skip
        if not owners:
            raise UsageError(
                f"unknown row {row_id!r}: no profile has an inbound row with that id; "
                "`portready profiles --json` lists every row (send takes those with direction inbound), "
                "give it as --row PROFILE/ID"
            )
        if len(owners) > 1:
            raise UsageError(f"row {row_id!r} is in several profiles ({', '.join(owners)}); give --row PROFILE/{row_id}")
        profile_id = owners[0]
    if not profile_id or profile_id not in catalogue.profiles:
        raise UsageError(f"unknown profile {profile_id!r}; see `portready profiles`")
    rows = [r for r in catalogue.profiles[profile_id].rows if r.direction is Direction.INBOUND]
    if row_id:
        known = ", ".join(r.id for r in rows) or "none"
        rows = [r for r in rows if r.id == row_id]
        if not rows:
            raise UsageError(f"{profile_id} has no inbound row {row_id!r}; its inbound rows: {known}")
    if not rows:
        raise UsageError(f"profile {profile_id} has no inbound rows: nothing flows to the Auditor host there")
    from scanner.probes.listen import InboundProbe

    out: list[tuple[str, str, Transport, int]] = []
    for row in rows:
        for spec in row.checks:
            if spec.probe != InboundProbe.name or spec.protocol is Transport.ICMP or isinstance(spec.port, PortRange):
                continue
            if args.protocol and spec.protocol.value != args.protocol:
                continue
            port = args.port if args.port is not None else spec.port
            if port is None:
                raise UsageError(f"{row.key}: the port is chosen per installation ({spec.setting}); give --port")
            item = (row.profile, row.id, spec.protocol, int(port))
            if item not in out:
                out.append(item)
    if not out:
        raise UsageError("no single port to send to on the chosen rows (ranges cannot be sent to)")
    return out


async def send_all(to: str, items: list[tuple[str, str, Transport, int]], count: int, timeout: float) -> list[Any]:
    from scanner.listener.sender import send_tagged
    from scanner.listener.tag import new_tag

    results = []
    for profile, row, proto, port in items:
        tag = new_tag(profile, row)
        result = await send_tagged(to, port, proto, tag, count=count, timeout=timeout)
        results.append((f"{profile}/{row}", proto, port, tag, result))
    return results


def run_send(args: argparse.Namespace) -> int:
    items = plan_sends(args)
    results = asyncio.run(send_all(args.to, items, args.count, args.timeout))
    failed = 0
    for key, proto, port, _tag, result in results:
        # "sent": out, but without a receipt (UDP, or a receiver that did not confirm in time).
        mark = {Status.PASS: "ok  ", Status.INCONCLUSIVE: "sent"}.get(result.status, "FAIL")
        print(f"{mark} {key} {proto.value.upper()} {port}: {result.detail}")
        failed += 0 if result.ok else 1
    return 1 if failed else 0


def _count(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 10000:
        raise argparse.ArgumentTypeError("must be from 1 to 10000")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError("ports are 1-65535")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "send", help="send tagged test traffic to the Auditor host (run on a source host)",
        description=(
            "Send a tagged test message to the Auditor host: a syslog line for 514, a short TCP connection "
            "carrying the tag for 9004/9898/9011/9699. `portready listen` there matches the tag to the row."
        ),
    )  # fmt: skip
    p.add_argument("--to", required=True, metavar="AUDITOR", help="the Auditor host (name or address)")
    p.add_argument("--profile", "-p", metavar="ID", help="send for the inbound rows of this profile")
    p.add_argument("--row", metavar="ID", help="only this row (ID or PROFILE/ID)")
    p.add_argument("--port", type=_port, metavar="P", help="port to send to (overrides the row's)")
    p.add_argument("--protocol", choices=["udp", "tcp"], help="transport (with --port, or to pick one of a row's)")
    p.add_argument("--count", type=_count, default=1, metavar="N", help="messages (or connections) to send (default 1)")
    p.add_argument("--timeout", type=float, default=3.0, metavar="S", help="TCP connect timeout (default 3)")
    p.add_argument("--profiles", type=str, action="append", default=[], metavar="DIR", dest="profile_dirs",
                   help="extra folder of profiles")
    p.set_defaults(func=run_send)
