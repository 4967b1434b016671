"""nftables rules inside one lab host's namespace, switchable per test.

The host gets its own table ``inet portready`` with one ``input`` chain; every change rewrites
the whole table in one ``nft -f`` transaction, so a test never sees half a rule set::

    dc.firewall.drop(445)                       # SYN dropped      -> the probe reads filtered
    dc.firewall.reject(389, "udp")              # ICMP unreachable -> refused
    dc.firewall.drop_range(49152, 65535)        # dynamic RPC range filtered, 135 still answers
    dc.firewall.drop(445, address=alias)        # only one alias address
    dc.firewall.clear()

Loopback inside the namespace is always accepted (Samba talks to itself over it).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.lab.netns import Host

TABLE = "portready"
_PROTOS = ("tcp", "udp")


class FirewallError(RuntimeError):
    """nft refused the rule set (the message carries nft's error)."""


def _match(proto: str, lo: int | None, hi: int | None, address: str | None, source: str | None) -> str:
    if proto not in _PROTOS:
        raise ValueError(f"proto must be one of {_PROTOS}, not {proto!r}")
    parts: list[str] = []
    for field, value in (("daddr", address), ("saddr", source)):
        if value is not None:
            family = "ip6" if ipaddress.ip_address(value).version == 6 else "ip"
            parts.append(f"{family} {field} {value}")
    if lo is None:
        parts.append(f"meta l4proto {proto}")
    else:
        if not (0 < lo <= (hi if hi is not None else lo) <= 65535):
            raise ValueError(f"bad port range {lo}-{hi}")
        ports = str(lo) if hi is None or hi == lo else f"{lo}-{hi}"
        parts.append(f"{proto} dport {ports}")
    return " ".join(parts)


class Firewall:
    """The input firewall of one lab host (see the module docstring)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._rules: list[str] = []

    @property
    def rules(self) -> list[str]:
        """The rules now in force (nft syntax, in order)."""
        return list(self._rules)

    def drop(
        self, port: int, proto: str = "tcp", address: str | None = None,
        source: str | None = None,
    ) -> None:  # fmt: skip
        """Silently drop packets to ``port`` (optionally only to ``address``/from ``source``)."""
        self._add(f"{_match(proto, port, None, address, source)} drop")

    def reject(
        self, port: int, proto: str = "tcp", address: str | None = None,
        source: str | None = None,
    ) -> None:  # fmt: skip
        """Refuse: TCP with a reset, UDP with ICMP(v6) port unreachable."""
        how = "reject with tcp reset" if proto == "tcp" else "reject with icmpx type port-unreachable"
        self._add(f"{_match(proto, port, None, address, source)} {how}")

    def drop_range(
        self, lo: int, hi: int, proto: str = "tcp", address: str | None = None,
        source: str | None = None,
    ) -> None:  # fmt: skip
        """Drop a port range, e.g. the dynamic RPC range 49152-65535."""
        self._add(f"{_match(proto, lo, hi, address, source)} drop")

    def drop_address(self, address: str) -> None:
        """Drop everything sent to one address of the host (e.g. one alias)."""
        family = "ip6" if ipaddress.ip_address(address).version == 6 else "ip"
        self._add(f"{family} daddr {address} drop")

    def drop_all(self) -> None:
        """Drop every incoming packet except loopback: the host looks switched off."""
        self._add("drop")

    def clear(self) -> None:
        """No rules: everything accepted (the table is removed)."""
        self._rules.clear()
        self._apply()

    def _add(self, rule: str) -> None:
        self._rules.append(rule)
        try:
            self._apply()
        except FirewallError:
            self._rules.pop()
            self._apply()
            raise

    def ruleset(self) -> str:
        """What nft reports for the table (for debugging failed tests)."""
        proc = self.host.run(["nft", "list", "table", "inet", TABLE], capture_output=True, text=True)
        return proc.stdout or proc.stderr

    def _apply(self) -> None:
        # "add table" + "delete table" makes the delete succeed whether or not it existed;
        # the whole script is one atomic transaction.
        script = [f"add table inet {TABLE}", f"delete table inet {TABLE}"]
        if self._rules:
            body = "\n".join(f"    {r}" for r in self._rules)
            script.append(
                f"table inet {TABLE} {{\n  chain input {{\n"
                "    type filter hook input priority 0; policy accept;\n"
                '    iif "lo" accept\n'
                f"{body}\n  }}\n}}"
            )
        proc = self.host.run(["nft", "-f", "-"], input="\n".join(script) + "\n", capture_output=True, text=True)
        if proc.returncode != 0:
            raise FirewallError(f"nft in {self.host.netns}: {proc.stderr.strip()}")

    def apply_script(self, rules: list[str]) -> None:
        """Replace the rules with raw nft rule lines (for cases the helpers don't cover)."""
        old = self._rules
        self._rules = list(rules)
        try:
            self._apply()
        except FirewallError:
            self._rules = old
            self._apply()
            raise


__all__ = ["Firewall", "FirewallError"]
