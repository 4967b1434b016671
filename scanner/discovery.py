"""Domain controllers from DNS: the `_ldap._tcp.dc._msdcs.<domain>` SRV record.

    dcs = await discover_domain_controllers("corp.example", "10.0.0.10")
    # ['dc1.corp.example', 'dc2.corp.example']  (by priority, then weight)

One UDP query to the given DNS server, again over TCP when the answer is
truncated; no system resolver, no other server is asked. Every failure raises
`DiscoveryError` with words an admin acts on.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from scanner.probes.dns import DnsAnswerError, build_query, dc_locator_name, parse_response, srv_targets

_MAX_DATAGRAM = 65535


class DiscoveryError(Exception):
    """Domain controllers could not be discovered; the message says why."""


class _OneReply(asyncio.DatagramProtocol):
    def __init__(self, query_id: int) -> None:
        self.query_id = query_id
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) >= 2 and int.from_bytes(data[:2], "big") == self.query_id and not self.done.done():
            self.done.set_result(data[:_MAX_DATAGRAM])

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


async def _udp(server: str, port: int, request: bytes, query_id: int, timeout: float) -> bytes:
    from scanner.probes.netio import udp_strategy

    if udp_strategy() == "thread":  # Windows: the Proactor loop would hide port-unreachable
        return await _udp_threaded(server, port, request, query_id, timeout)
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    transport, proto = await loop.create_datagram_endpoint(
        lambda: _OneReply(query_id), remote_addr=(server, port), family=family
    )
    try:
        for wait in (timeout / 2, timeout / 2):  # one resend after half the budget
            transport.sendto(request)
            try:
                return await asyncio.wait_for(asyncio.shield(proto.done), wait)
            except asyncio.TimeoutError:
                continue
        raise asyncio.TimeoutError
    finally:
        transport.close()


async def _udp_threaded(server: str, port: int, request: bytes, query_id: int, timeout: float) -> bytes:
    """The same two tries on a connected socket in a worker thread, where recv() reports the
    server's ICMP port-unreachable (WSAECONNRESET on Windows) as an error (see netio.udp_strategy)."""
    from scanner.probes.netio import _udp_pool, _udp_try_blocking, is_port_unreachable

    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)

    def ours(data: bytes) -> bool:
        return len(data) >= 2 and int.from_bytes(data[:2], "big") == query_id

    inflight: asyncio.Future[tuple[bytes | None, float]] | None = None
    try:
        sock.connect((server, port))
        for wait in (timeout / 2, timeout / 2):  # one resend after half the budget
            inflight = loop.run_in_executor(_udp_pool(), _udp_try_blocking, sock, request, wait, ours)
            try:
                reply, _took = await inflight
            except OSError as exc:
                if is_port_unreachable(exc):
                    raise ConnectionRefusedError(f"UDP {port} is closed (ICMP port unreachable)") from exc
                raise
            if reply is not None:
                return reply[:_MAX_DATAGRAM]
        raise asyncio.TimeoutError
    finally:
        if inflight is not None and not inflight.done():  # close once the thread's recv returns
            inflight.add_done_callback(lambda _f: sock.close())
        else:
            sock.close()


async def _tcp(server: str, port: int, request: bytes, timeout: float) -> bytes:
    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection(server, port)
        try:
            writer.write(len(request).to_bytes(2, "big") + request)
            await writer.drain()
            size = int.from_bytes(await reader.readexactly(2), "big")
            return await reader.readexactly(size)
        finally:
            writer.close()

    return await asyncio.wait_for(exchange(), timeout)


async def discover_domain_controllers(
    domain: str, dns_server: str, timeout: float = 3.0, *, port: int = 53
) -> list[str]:
    """DC host names for `domain` from `dns_server`, sorted by SRV priority then weight."""
    names, _response = await _discover(domain, dns_server, timeout, port)
    return names


async def discover_with_addresses(
    domain: str, dns_server: str, timeout: float = 3.0, *, port: int = 53
) -> list[tuple[str, tuple[str, ...]]]:
    """Each DC's name and addresses, all asked of `dns_server` (never the system resolver).

    The SRV answer usually carries the A/AAAA records in its additional section; the
    others are asked for one by one, at the same server.
    """
    import dns.rdataclass
    import dns.rdatatype

    names, response = await _discover(domain, dns_server, timeout, port)
    glue: dict[str, list[str]] = {}
    for rrset in response.additional:
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) and rrset.rdclass == dns.rdataclass.IN:
            owner = rrset.name.to_text(omit_final_dot=True).lower()
            glue.setdefault(owner, []).extend(_address_texts(rrset))
    # Names without glue are asked concurrently (bounded), not one after the other: 32
    # glue-less names in sequence would cost 64 timeouts before the scan starts.
    limit = asyncio.Semaphore(_CONCURRENT_LOOKUPS)

    async def addresses(name: str) -> tuple[str, tuple[str, ...]]:
        known = glue.get(name.lower())
        if known:
            return name, tuple(known)
        async with limit:
            return name, tuple(await _addresses(name, dns_server, timeout, port))

    return list(await asyncio.gather(*(addresses(name) for name in names)))


_CONCURRENT_LOOKUPS = 8


def _address_texts(rrset: Any) -> list[str]:
    """The addresses of an A/AAAA rrset; anything that is not one is left out."""
    import ipaddress

    out: list[str] = []
    for rr in rrset:
        text = str(getattr(rr, "address", ""))
        try:
            out.append(str(ipaddress.ip_address(text)))
        except ValueError:
            continue
    return out


async def _addresses(name: str, dns_server: str, timeout: float, port: int) -> list[str]:
    import dns.message
    import dns.rdataclass
    import dns.rdatatype

    async def one(rdtype: Any) -> list[str]:
        query = dns.message.make_query(name, rdtype)
        try:
            response = await _ask(query, dns_server, port, timeout)
        except (asyncio.TimeoutError, OSError, asyncio.IncompleteReadError, DnsAnswerError):
            return []
        found: list[str] = []
        for rrset in response.answer:
            if rrset.rdtype == rdtype and rrset.rdclass == dns.rdataclass.IN:
                found.extend(_address_texts(rrset))
        return found

    a, aaaa = await asyncio.gather(one(dns.rdatatype.A), one(dns.rdatatype.AAAA))
    return a + aaaa


async def _ask(query: Any, dns_server: str, port: int, timeout: float) -> Any:
    """One query at one server: UDP, again over TCP when the answer is truncated."""
    request = bytes(query.to_wire())
    reply = await _udp(dns_server, port, request, query.id, timeout)
    response = parse_response(query, reply)
    if response.flags & 0x0200:  # truncated: ask again over TCP
        reply = await _tcp(dns_server, port, request, timeout)
        response = parse_response(query, reply)
    return response


async def _discover(domain: str, dns_server: str, timeout: float, port: int) -> tuple[list[str], Any]:
    import dns.rcode

    domain = domain.strip().strip(".")
    if not domain:
        raise DiscoveryError("no domain name given")
    name = dc_locator_name(domain)
    query = build_query(domain)
    where = f"the DNS server {dns_server}"
    try:
        response = await _ask(query, dns_server, port, timeout)
    except asyncio.TimeoutError:
        raise DiscoveryError(
            f"{where} did not answer the SRV query for {name} within {timeout:g} s — check the "
            "address and that UDP/TCP 53 to it is open"
        ) from None
    except (ConnectionError, OSError) as exc:
        raise DiscoveryError(f"{where} cannot be asked for {name}: {exc}") from None
    except asyncio.IncompleteReadError:
        raise DiscoveryError(f"{where} closed TCP 53 in the middle of its answer for {name}") from None
    except DnsAnswerError as exc:
        raise DiscoveryError(f"{where} answered with something that is not DNS: {exc}") from None
    rcode = dns.rcode.to_text(response.rcode())
    if rcode != "NOERROR":
        raise DiscoveryError(
            f"{where} answered {rcode} for {name} — it is not a DNS server of {domain}, or that "
            "domain has no domain controller records"
        )
    targets = [t["target"] for t in srv_targets(response) if t["target"]]
    if not targets:
        raise DiscoveryError(f"{where} has no domain controller records ({name} SRV is empty)")
    seen: list[str] = []
    for target in targets:
        if target not in seen:
            seen.append(target)
    return seen, response
