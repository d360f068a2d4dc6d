"""The gateway's store: on SQLite, a worker's requests queue for the write lock in turn.

SQLite admits one writer at a time, and a writer that finds it taken polls for it
(:func:`shared.store.sqlite.begin_immediate`). Dozens of greenlets or threads of one
gateway worker polling at once waste the CPU they share and are served in no order;
queuing them on a lock first leaves one poller per worker, and the lock hands over in
turn. Under gevent the lock and the poll's sleeps are cooperative, so waiting writers
never stall the worker's other requests. PostgreSQL needs none of this.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from shared.store import Store, Tx


class GatewayStore(Store):
    """A :class:`Store` whose write transactions are queued per process on SQLite."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._writer = threading.Lock()

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A write transaction, behind this process's other writers on SQLite."""
        if self.postgres:
            with super().write() as tx:
                yield tx
            return
        with self._writer, super().write() as tx:
            yield tx
