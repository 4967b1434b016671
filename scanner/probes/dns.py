"""DNS (UDP and TCP 53): a query the server must answer, and the DC locator record.

What a pass proves: a DNS server answered our query on the check's transport
with a well-formed response (matching id, QR set). With a domain in the
inventory (`settings.values["domain"]`) the query is the SRV record
``_ldap._tcp.dc._msdcs.<domain>`` that Windows uses to find domain
controllers, and the DCs it lists become evidence; an answer that refuses or
does not know that domain is `warn` (DNS works, but the Auditor will not find
its DCs through this server). Without a domain, any well-formed answer (even
REFUSED or NXDOMAIN) proves a DNS server is there.

Messages are dnspython's; the I/O is netio's (no dnspython resolver I/O).
"""

from __future__ import annotations

import asyncio
import functools
import os
from dataclasses import dataclass
from typing import Any, NamedTuple

from scanner.models import Reason, Transport
from scanner.probes._options import option
from scanner.probes.base import Outcome, Probe, ProbeContext, failed, options_of, passed, register, stalled, warned
from scanner.probes.netio import framed_exchange, udp_exchange, within
from scanner.probes.udp import udp_payload

MAX_SRV_EVIDENCE = 32


def dc_locator_name(domain: str) -> str:
    return f"_ldap._tcp.dc._msdcs.{domain.strip('.')}."


def build_query(domain: str | None) -> Any:
    """A dnspython query: the DC locator SRV for a domain, else the root SOA."""
    import dns.message
    import dns.rdatatype

    if domain:
        return dns.message.make_query(dc_locator_name(domain), dns.rdatatype.SRV)
    return dns.message.make_query(".", dns.rdatatype.SOA)


class _Sent(NamedTuple):
    """What parse_response needs of a query we sent."""

    id: int


@functools.lru_cache(maxsize=16)
def _query_wire(domain: str | None) -> tuple[bytes, str]:
    """The query after its id, and its question as text: built once per domain, not per
    target (dnspython builds a message in about a millisecond)."""
    query = build_query(domain)
    return bytes(query.to_wire())[2:], query.question[0].to_text()


class DnsAnswerError(ValueError):
    """Not a DNS response to our query."""


def parse_response(query: Any, wire_data: bytes) -> Any:
    """The response as a dnspython Message; raises DnsAnswerError on anything else."""
    import dns.exception
    import dns.message

    try:
        response = dns.message.from_wire(wire_data, ignore_trailing=True)
    except (dns.exception.DNSException, ValueError, IndexError, UnicodeError) as exc:
        raise DnsAnswerError(f"malformed DNS message ({type(exc).__name__}: {str(exc)[:120]})") from None
    if response.id != query.id:
        raise DnsAnswerError(f"answer id {response.id} does not match our query id {query.id}")
    if not response.flags & 0x8000:
        raise DnsAnswerError("the message is a query, not a response")
    return response


def srv_targets(response: Any) -> list[dict[str, Any]]:
    """SRV records of the answer, sorted by priority then weight (highest first)."""
    import dns.rdataclass
    import dns.rdatatype

    out: list[dict[str, Any]] = []
    for rrset in response.answer:
        # Only IN-class SRV: a peer's SRV of another class parses as generic data (no target).
        if rrset.rdtype != dns.rdatatype.SRV or rrset.rdclass != dns.rdataclass.IN:
            continue
        for rr in rrset:
            if not hasattr(rr, "target"):
                continue
            out.append(
                {"target": rr.target.to_text(omit_final_dot=True), "port": int(rr.port),
                 "priority": int(rr.priority), "weight": int(rr.weight)}
            )  # fmt: skip
    out.sort(key=lambda r: (r["priority"], -r["weight"], r["target"]))
    return out[:MAX_SRV_EVIDENCE]


@dataclass(frozen=True)
class DnsOptions:
    domain: str | None = option(None, "the AD domain whose DC locator SRV record is asked; unset: the inventory's domain")


def _domain(ctx: ProbeContext) -> str | None:
    value = options_of(ctx, DnsOptions, foreign_ok=True).domain or ctx.settings.values.get("domain")
    return str(value).strip(".") if value else None


@udp_payload(53)
def dns_payload(ctx: ProbeContext) -> bytes:
    """The port-level UDP 53 check sends a real query."""
    return os.urandom(2) + _query_wire(_domain(ctx))[0]


async def _over_tcp(ctx: ProbeContext, request: bytes) -> bytes:
    return await framed_exchange(ctx, request, prefix=2, min_size=12, max_size=65535, what="DNS answer")


@register
class DnsProbe(Probe):
    name = "dns"
    transports = (Transport.UDP, Transport.TCP)
    summary = "DNS: a query answered; with a domain, the _ldap._tcp.dc._msdcs SRV (DC locator)"
    exchanges = 2

    Options = DnsOptions

    async def run(self, ctx: ProbeContext) -> Outcome:
        import dns.rcode

        domain = _domain(ctx)
        tail, question = _query_wire(domain)
        query = _Sent(int.from_bytes(os.urandom(2), "big"))
        request = query.id.to_bytes(2, "big") + tail
        if ctx.protocol is Transport.UDP:

            def ours(data: bytes) -> bool:
                # Stray datagrams with another id are ignored; garbage is judged below.
                return len(data) < 2 or int.from_bytes(data[:2], "big") == query.id

            reply = await udp_exchange(ctx, request, accept=ours, what="DNS answer")
        else:
            try:
                reply = await within(_over_tcp(ctx, request), max(0.05, ctx.remaining()))
            except asyncio.TimeoutError:
                return stalled(ctx, what="its DNS")
        try:
            response = parse_response(query, reply)
        except DnsAnswerError as exc:
            return failed(
                Reason.PROTOCOL,
                f"{ctx.host} answered on {ctx.where()}, but not with DNS ({exc}) — another service "
                "listens there, or a middlebox mangles it",
                reply_bytes=len(reply),
            )
        rcode = dns.rcode.to_text(response.rcode())
        evidence: dict[str, Any] = {
            "query": question,
            "rcode": rcode,
            "truncated": bool(response.flags & 0x0200),
            "authoritative": bool(response.flags & 0x0400),
        }
        if not domain:
            return passed(
                f"a DNS server answers on {ctx.where()} (root SOA query: {rcode}); set the "
                "domain in the inventory to check the domain controllers' SRV records",
                **evidence,
            )
        dcs = srv_targets(response)
        evidence["domain_controllers"] = dcs
        if rcode == "NOERROR" and dcs:
            names = ", ".join(d["target"] for d in dcs[:5])
            return passed(f"DNS on {ctx.where()} lists the domain controllers of {domain}: {names}", **evidence)
        if rcode == "NOERROR" and evidence["truncated"]:
            return passed(
                f"DNS on {ctx.where()} answers for {domain} (truncated over UDP: the full list needs TCP 53)",
                **evidence,
            )
        why = {
            "REFUSED": "refuses to answer for it (recursion or zone access denied to this host)",
            "NXDOMAIN": "says the name does not exist (not this domain's DNS, or the DC records are missing)",
            "SERVFAIL": "failed to answer (its zone or forwarder is broken)",
        }.get(rcode, f"answered {rcode} without SRV records")
        return warned(
            Reason.PROTOCOL,
            f"DNS answers on {ctx.where()}, but for {dc_locator_name(domain)} it {why} — the "
            "Auditor will not find the domain controllers through this server",
            **evidence,
        )
