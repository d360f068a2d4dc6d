"""The store facade: one object per process that owns the engine and transactions."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from shared.errors import SmithersError, StoreUnavailable
from shared.store.engine import make_engine
from shared.store.migrate import migrate
from shared.store.tx import Tx


class Store:
    """Owns an engine; hands out write transactions (:class:`Tx`) and read connections.

    A ``write()`` block is one transaction: everything in it, events included, commits
    together or not at all. After a fork, call :meth:`reset` (or build a new Store).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        self.postgres = self.engine.dialect.name == "postgresql"
        self._pid = os.getpid()

    def migrate(self) -> int:
        """Create or upgrade the schema (idempotent, safe under concurrent starts)."""
        try:
            return migrate(self.engine)
        except OperationalError as exc:
            raise StoreUnavailable(f"cannot migrate the store: {_reason(exc)}") from exc

    def reset(self) -> None:
        """Drop pooled connections inherited across a fork."""
        self.engine.dispose(close=False)
        self._pid = os.getpid()

    def _check_pid(self) -> None:
        if os.getpid() != self._pid:
            self.reset()

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A write transaction (BEGIN IMMEDIATE on SQLite); events flush before commit."""
        self._check_pid()
        try:
            with self.engine.connect().execution_options(smithers_write=True) as conn, conn.begin():
                tx = Tx(conn, self.postgres)
                yield tx
                tx.flush()
        except SmithersError:
            raise
        except OperationalError as exc:
            raise StoreUnavailable(f"store unavailable: {_reason(exc)}") from exc

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only connection (no write lock taken)."""
        self._check_pid()
        try:
            with self.engine.connect() as conn:
                yield conn
        except SmithersError:
            raise
        except OperationalError as exc:
            raise StoreUnavailable(f"store unavailable: {_reason(exc)}") from exc

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _reason(exc: DBAPIError) -> str:
    text = str(exc.orig) if exc.orig is not None else type(exc).__name__
    return text.strip().splitlines()[0][:200]
