"""A per-process map of values read a short while ago, bounded in size: what a reader
on a hot path reuses instead of reading the store again (a grant row, a launch's holder
check). Time is ``time.monotonic()``; past ``limit`` entries the map starts again empty.
"""

from __future__ import annotations

import time
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Values by key, each fresh for ``ttl_s`` seconds after it was put."""

    def __init__(self, ttl_s: float, limit: int) -> None:
        self.ttl_s = ttl_s
        self.limit = limit
        self._entries: dict[K, tuple[float, V]] = {}

    def fresh(self, key: K) -> V | None:
        """The value put under ``key`` less than ``ttl_s`` ago, else None."""
        hit = self._entries.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        return None

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` under ``key`` from now."""
        if len(self._entries) >= self.limit:
            self._entries.clear()
        self._entries[key] = (time.monotonic(), value)

    def drop(self, key: K) -> None:
        """Forget ``key``'s value."""
        self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget every value."""
        self._entries.clear()
