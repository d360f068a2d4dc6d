"""The gateway's store: on SQLite, a worker's requests queue for the write lock in turn.

SQLite admits one writer at a time, and a writer that finds it taken polls for it
(:func:`smithers.shared.store.sqlite.begin_immediate`). Dozens of greenlets or threads of one
gateway worker polling at once waste the CPU they share and are served in no order;
queuing them on a lock first leaves one poller per worker, and the lock hands over in
turn. Under gevent the lock and the poll's sleeps are cooperative, so waiting writers
never stall the worker's other requests; for the same reason the gateway does not
wait in the other processes' queue for the write lock (the lock file of
:class:`smithers.shared.store.sqlite.WriteLock`, a blocking ``flock``): it takes its place
there only when the file is free, and polls otherwise. Behind that lock one write
connection serves the whole process (not one per thread or greenlet). PostgreSQL
needs none of this.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection

from smithers.shared.store import Store, Tx


class GatewayStore(Store):
    """A :class:`Store` whose write transactions are queued per process on SQLite."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._writer = threading.Lock()
        self._connection: Connection | None = None
        # a greenlet each: the pool (with its pre-ping), unless writers queue anyway
        self.pooled_writes = not self.dialect.one_writer
        self.pooled_reads = True  # not a connection per request greenlet

    def write_connection(self) -> Connection:
        """The process's one SQLite write connection (used under the writer lock)."""
        if self._connection is None or self._connection.closed or self._connection.invalidated:
            self._connection = self.engine.connect().execution_options(
                smithers_write=True, smithers_writer=True, smithers_cooperative=True
            )
        return self._connection

    def reset(self) -> None:
        """After a fork: the parent's connection stays the parent's."""
        super().reset()
        self._writer = threading.Lock()
        self._connection = None

    def close(self) -> None:
        """Close the write connection and the pool."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        super().close()

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A write transaction, behind this process's other writers on SQLite."""
        if not self.dialect.one_writer:
            with super().write() as tx:
                yield tx
            return
        with self._writer, super().write() as tx:
            yield tx
