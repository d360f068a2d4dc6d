"""The store facade: one object per process that owns the engine and transactions."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError

from smithers.shared import tracing
from smithers.shared.errors import SmithersError, StoreUnavailable
from smithers.shared.limits import SizeLimits
from smithers.shared.store.engine import Dialect, dialect_for
from smithers.shared.store.migrate import migrate
from smithers.shared.store.tx import Tx


class Store:
    """Owns an engine; hands out write transactions (:class:`Tx`) and read connections.

    A ``write()`` block is one transaction: everything in it, events included, commits
    together or not at all. After a fork, call :meth:`reset` (or build a new Store).

    Each thread keeps one connection for its write transactions instead of taking one
    from the pool each time: checkout, reset-on-return, the pre-ping round trip
    (PostgreSQL) and toggling the busy timeout around ``BEGIN IMMEDIATE`` (SQLite) cost
    more than a small transaction itself (docs/benchmarks.md). On PostgreSQL a write
    connection idle for ``PING_AFTER_S`` is pinged first and replaced if the server
    dropped it; one that fails mid-use is invalidated and replaced on the next write.
    With ``pooled_writes`` (many short-lived greenlets) writes use the pool instead, and
    with ``pooled_writes`` or ``pooled_reads`` reads do; otherwise each thread also keeps
    a read connection.
    """

    pooled_writes = False
    pooled_reads = False
    # the largest run input, step output and event payload (smithers.shared.limits)
    limits = SizeLimits.from_env(os.environ)
    PING_AFTER_S = 5.0

    def __init__(self, url: str, max_connections: int = 16) -> None:
        self.url = url
        # max_connections: at most this many open at once (a thread keeps two: size it
        # for the threads that write and read, e.g. a worker's pool of threads)
        self.dialect: Dialect = dialect_for(url)
        self.engine: Engine = self.dialect.make_engine(url, max_connections)
        self._pid = os.getpid()
        self._local = threading.local()
        self._owned: list[tuple[threading.Thread, Connection]] = []  # threads' own connections
        self._owned_lock = threading.Lock()

    def migrate(self) -> int:
        """Create or upgrade the schema (idempotent, safe under concurrent starts)."""
        try:
            return migrate(self.engine)
        except OperationalError as exc:
            raise StoreUnavailable(f"cannot migrate the store: {_reason(exc)}") from exc

    def reset(self) -> None:
        """Drop pooled connections inherited across a fork."""
        self.engine.dispose(close=False)
        self._local = threading.local()  # the parent's writers stay the parent's
        self._owned = []
        self._owned_lock = threading.Lock()
        self._pid = os.getpid()

    def write_connection(self) -> Connection:
        """This thread's write connection (see :meth:`_own`)."""
        return self._own("writer")

    def _own(self, kind: str) -> Connection:
        """This thread's own ``writer`` or ``reader`` connection, opened on first use;
        those of threads that have ended are closed then. On
        PostgreSQL a reader is in DBAPI autocommit mode; either is pinged first after
        ``PING_AFTER_S`` idle, replaced if the server dropped it."""
        conn: Connection | None = getattr(self._local, kind, None)
        now = time.monotonic()
        if (
            conn is not None
            and self.dialect.ping_after_idle
            and not conn.closed
            and not conn.invalidated
            and now - getattr(self._local, f"{kind}_used", now) > self.PING_AFTER_S
        ):
            try:
                conn.exec_driver_sql("SELECT 1")
                conn.rollback()
            except DBAPIError:
                conn.invalidate()
        setattr(self._local, f"{kind}_used", now)
        if conn is None or conn.closed or conn.invalidated:
            conn = self.engine.connect()
            if kind == "writer":
                conn = conn.execution_options(smithers_write=True, smithers_writer=True)
            else:
                conn = conn.execution_options(smithers_reader=True)  # SQLite: no BEGIN
            if kind == "reader" and self.dialect.autocommit_reads:
                # Reads: one round trip a statement, no BEGIN and ROLLBACK around it
                # (in READ COMMITTED every statement takes its own snapshot anyway).
                # Set on the driver (psycopg's public ``autocommit``), not as
                # SQLAlchemy's isolation level, which would be reset with a round
                # trip (failing on a dropped connection) at check-in; _close turns
                # it off before the connection goes back to the pool.
                self.dialect.set_autocommit(conn, True)
            setattr(self._local, kind, conn)
            with self._owned_lock:
                ended = [c for t, c in self._owned if not t.is_alive()]
                self._owned = [(t, c) for t, c in self._owned if t.is_alive()]
                self._owned.append((threading.current_thread(), conn))
            for old in ended:
                _close(self.dialect, old)
        return conn

    def _drop(self, kind: str, conn: Connection) -> None:
        """Forget this thread's ``kind`` connection (a new one is opened on next use)."""
        setattr(self._local, kind, None)
        with contextlib.suppress(SQLAlchemyError):
            conn.invalidate()

    def _check_pid(self) -> None:
        if os.getpid() != self._pid:
            self.reset()

    def write(self) -> AbstractContextManager[Tx]:
        """A write transaction (BEGIN IMMEDIATE on SQLite); events flush before commit.
        Everything in the block commits together or not at all. With tracing on, a
        transaction inside a trace is a span of it (its commit included)."""
        return self._traced_write() if tracing.enabled() else self._write()

    @contextmanager
    def _traced_write(self) -> Iterator[Tx]:
        span = tracing.child_span("smithers.transaction", **{"db.system": self.engine.dialect.name})
        with span, self._write() as tx:
            yield tx

    @contextmanager
    def _write(self) -> Iterator[Tx]:
        self._check_pid()
        try:
            if self.pooled_writes:
                with self.engine.connect().execution_options(smithers_write=True) as conn, conn.begin():
                    tx = Tx(conn, self.dialect, limits=self.limits)
                    yield tx
                    tx.finish()
            else:
                writer = self.write_connection()
                try:
                    with writer.begin():
                        tx = Tx(writer, self.dialect, limits=self.limits)
                        yield tx
                        tx.finish()
                except DBAPIError as exc:
                    if exc.connection_invalidated or isinstance(exc, InterfaceError):
                        self._drop("writer", writer)  # the server dropped it: a new one next time
                    raise
        except SmithersError:
            raise
        except (OperationalError, InterfaceError) as exc:
            raise StoreUnavailable(f"store unavailable: {_reason(exc)}") from exc

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only connection (no write lock taken): unless reads are pooled (many
        greenlets), the thread's own, in autocommit mode: every statement reads the
        latest commit, as in a READ COMMITTED transaction."""
        self._check_pid()
        try:
            if self.pooled_reads or self.pooled_writes:
                with self.engine.connect() as conn:
                    yield conn
            else:  # this thread's own autocommit connection: no checkout, BEGIN or ROLLBACK
                reader = self._own("reader")
                try:
                    yield reader
                except DBAPIError as exc:
                    if exc.connection_invalidated or isinstance(exc, InterfaceError):
                        self._drop("reader", reader)
                    raise
                finally:
                    if not reader.invalidated:
                        reader.rollback()  # ends SQLAlchemy's transaction; sends nothing
        except SmithersError:
            raise
        except OperationalError as exc:
            raise StoreUnavailable(f"store unavailable: {_reason(exc)}") from exc

    def close(self) -> None:
        """Close every connection: the pooled ones and the threads' own (write and read)."""
        with self._owned_lock:
            writers, self._owned = self._owned, []
        for _, conn in writers:
            _close(self.dialect, conn)
        self._local = threading.local()
        self.engine.dispose()


def _close(dialect: Dialect, conn: Connection) -> None:
    """Close a write connection (back to the pool, out of autocommit), even one the
    server already dropped."""
    try:
        dialect.set_autocommit(conn, False)
        conn.close()
    except Exception:  # raw driver errors too: the connection is gone either way
        with contextlib.suppress(Exception):
            conn.invalidate()


def _reason(exc: DBAPIError) -> str:
    text = str(exc.orig) if exc.orig is not None else type(exc).__name__
    return text.strip().splitlines()[0][:200]
