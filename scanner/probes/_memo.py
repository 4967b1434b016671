"""Facts one check learns that hold for the whole scan, shared by the checks of that scan.

A DC's LDAP policy is a setting of the DC, not of the address or port that reached it,
and a certificate chain's verdict depends on the chain and the trust store, not on who
sent it. Asking again per address and port costs the peer a logon attempt or a TLS
handshake each time, and on a DC reached under many names that is most of its load.

    memo = ScanMemo()                           # one per scan (the engine's scheduler)
    value, reused = await memo.once(key, read, keep=lambda v: v is not None)

A value is computed by the first check that needs it; checks asking for the same key
meanwhile wait for it (at most `wait` seconds) instead of asking the peer too. A value
`keep` rejects (an "unknown" reading) is not stored, so the next check tries itself.
Keys are tuples whose first item names the fact (e.g. ``("ldap-policy", ...)``). Nothing
here is a verdict: each check still proves its own port.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Hashable, TypeVar

T = TypeVar("T")

_MAX_KEYS = 65536  # a bound on memory whatever the peers send (identities are peer text)


class ScanMemo:
    """Scan-wide facts with single-flight computation (see the module doc)."""

    def __init__(self) -> None:
        self._values: dict[Hashable, Any] = {}
        self._pending: dict[Hashable, asyncio.Future[Any]] = {}
        self.counters: dict[Hashable, int] = {}

    def get(self, key: Hashable) -> Any | None:
        return self._values.get(key)

    def put(self, key: Hashable, value: Any) -> None:
        if key in self._values or len(self._values) < _MAX_KEYS:
            self._values[key] = value

    def tally(self, key: Hashable) -> int:
        return self.counters.get(key, 0)

    def count(self, key: Hashable, by: int = 1) -> int:
        """A scan-wide tally (e.g. chain verdicts per port); returns the new value."""
        if key not in self.counters and len(self.counters) >= _MAX_KEYS:
            return 0
        self.counters[key] = self.counters.get(key, 0) + by
        return self.counters[key]

    async def once(
        self,
        key: Hashable,
        compute: Callable[[], Awaitable[T]],
        *,
        keep: Callable[[T], bool] = lambda _value: True,
        wait: float = 3.0,
    ) -> tuple[T, bool]:
        """(value, reused): the stored value, another check's value in flight, or ours."""
        if key in self._values:
            return self._values[key], True
        pending = self._pending.get(key)
        if pending is not None:
            try:
                value = await asyncio.wait_for(asyncio.shield(pending), max(0.0, wait))
            except Exception:  # noqa: BLE001 - theirs failed or took too long: ask ourselves
                pass
            else:
                if keep(value):
                    return value, True
        elif len(self._pending) < _MAX_KEYS:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._pending[key] = future
            try:
                value = await compute()
            except BaseException as exc:
                self._pending.pop(key, None)
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
                    future.exception()  # retrieved: a failure nobody waited for is not logged
                raise
            self._pending.pop(key, None)
            future.set_result(value)
            if keep(value):
                self.put(key, value)
            return value, False
        return await compute(), False
