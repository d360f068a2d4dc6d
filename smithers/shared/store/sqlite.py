"""SQLite quirks: WAL, foreign keys, busy timeout, immediate write transactions.

One file per deployment. Readers never block the writer (WAL); writers take the write
lock up front (``BEGIN IMMEDIATE``) so two writers queue on the busy timeout instead
of failing with "database is locked" when a deferred transaction tries to upgrade.
Before that, our writers queue on a lock file beside the database (:class:`WriteLock`).
"""

from __future__ import annotations

import fcntl
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Insert, Select, Table, create_engine, event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import make_url

from smithers.shared.errors import StoreUnavailable

BUSY_TIMEOUT_MS = 30_000


class WriteLock:
    """Where this deployment's writer processes wait their turn before ``BEGIN
    IMMEDIATE``: a file lock (``flock``) on ``<database>-lock``, taken through this
    object by one thread of a process at a time. There is one per engine, and a
    process normally has one engine per database; a second engine on the same file
    in one process opens a descriptor of its own, and its threads queue on the file
    behind the first engine's as another process's would.

    SQLite's write lock cannot be waited on, only polled (:func:`begin_immediate`).
    Under load that leaves it free while the writers that want it sleep out their
    back-off, and a writer that just let it go takes it again before them: a worker
    waiting to commit a step result can wait a long time behind a busy launcher. A
    process blocked on the file lock is woken by the kernel when the holder lets go.

    Threads of one process do not queue on it behind each other: a thread that finds
    a sibling holding (or waiting for) the process's file lock polls SQLite's lock
    as before. Blocked threads hand the GIL back and forth at every wake-up, and with
    busy sibling threads a queue of them ran several times slower than polling
    (measured: docs/benchmarks.md).

    It only orders our own writers: ``BEGIN IMMEDIATE`` is still taken (and polled)
    after it, so a writer that does not know the file (the ``sqlite3`` shell, a
    backup) is kept out as before, and correctness never rests on it. The holder
    lets go when its transaction ends (:class:`_Connection`), and the kernel lets go
    for a process that dies holding it. A child process after a fork opens the file
    anew: on the parent's descriptor it would share the parent's lock.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._mutex = threading.Lock()  # the thread that holds or waits for the file lock
        self._fd: int | None = None  # opened on first use in this process
        self._closer: weakref.finalize[[int], WriteLock] | None = None  # closes it with the lock
        _LOCKS.add(self)

    def try_take(self, wait: bool = True) -> bool:
        """Wait for the file lock unless another thread of this process has it or
        waits for it (then False: poll SQLite's lock instead). Without ``wait``, take
        it only if it is free at once (a process that must not block, see
        ``smithers_cooperative`` in :func:`make_sqlite_engine`)."""
        if not self._mutex.acquire(blocking=False):
            return False
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                self._closer = weakref.finalize(self, os.close, self._fd)
            fcntl.flock(self._fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._mutex.release()
            return False
        except BaseException:
            self._mutex.release()
            raise
        return True

    def release(self) -> None:
        """Let the next writer process in."""
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._mutex.release()

    def _after_fork(self) -> None:
        # Closing the inherited descriptor leaves the parent's lock alone (it ends
        # only with an explicit unlock or the last descriptor of the parent's open).
        if self._closer is not None:
            self._closer()  # closes the inherited descriptor, once
        self._fd = self._closer = None
        self._mutex = threading.Lock()


_LOCKS: weakref.WeakSet[WriteLock] = weakref.WeakSet()


def _after_fork() -> None:
    for lock in list(_LOCKS):
        lock._after_fork()


os.register_at_fork(after_in_child=_after_fork)


class _Connection(sqlite3.Connection):
    """A sqlite3 connection that lets go of the :class:`WriteLock` it holds when its
    transaction ends (commit, rollback, close), in the process that took it."""

    held: tuple[WriteLock, int] | None = None  # (lock, pid) while a write transaction is open

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.let_go()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.let_go()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.let_go()

    def take(self, lock: WriteLock, wait: bool) -> None:
        if lock.try_take(wait):
            self.held = (lock, os.getpid())

    def let_go(self) -> None:
        held, self.held = self.held, None
        if held is not None and held[1] == os.getpid():
            held[0].release()


def make_sqlite_engine(url: str, max_connections: int = 16) -> Engine:
    """An engine on a SQLite file with our pragmas; creates the parent directory."""
    parsed = make_url(url)
    lock = None
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        _create_private(parsed.database)
        lock = WriteLock(os.path.abspath(parsed.database) + "-lock")
    engine = create_engine(
        url,
        connect_args={
            "timeout": BUSY_TIMEOUT_MS / 1000,
            "isolation_level": None,
            "check_same_thread": False,
            "factory": _Connection,
        },
        pool_size=8,
        max_overflow=max(max_connections - 8, 0),
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get("smithers_write", False):  # a write transaction
            dbapi_conn: Any = conn.connection.dbapi_connection
            writer = options.get("smithers_writer", False)  # a thread's own write connection
            if writer and not conn.info.get("smithers_busy0"):
                dbapi_conn.execute("PRAGMA busy_timeout=0")  # we poll for the lock ourselves
                conn.info["smithers_busy0"] = True
            if lock is not None:
                # A cooperative writer (the gateway's greenlets) must not block its
                # process in flock(): it takes the file lock only if it is free.
                dbapi_conn.take(lock, wait=not options.get("smithers_cooperative", False))
            try:
                begin_immediate(dbapi_conn, toggle=not writer)
            except BaseException as exc:
                dbapi_conn.let_go()
                if isinstance(exc, sqlite3.OperationalError):  # SQLAlchemy does not wrap an event's errors
                    raise StoreUnavailable(f"store unavailable: {exc}") from exc
                raise
        elif options.get("smithers_reader", False):
            pass  # a thread's own read connection: each statement on its own (autocommit)
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


def _create_private(database: str) -> None:
    """Create the database file empty with mode 0600 unless it exists. SQLite would make it
    0644 (less the umask); it gives the WAL and shared-memory files the mode of the
    database file, so they are private too."""
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def begin_immediate(dbapi_conn: Any, timeout_s: float = BUSY_TIMEOUT_MS / 1000, toggle: bool = True) -> None:
    """Take the write lock, retrying with short jittered sleeps while another writer has it.

    SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25, ... ms between tries;
    with several processes each holding the lock for a millisecond or two that adds
    tens of milliseconds to a hop. We poll at 0.2 ms, backing off to 5 ms, instead.
    With ``toggle`` the connection's busy timeout is set to 0 for the attempt and back
    after; without, the caller keeps it at 0 (a connection used only for writes: once
    ``BEGIN IMMEDIATE`` holds the lock, nothing in a WAL write transaction waits).
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.0002
    if toggle:
        dbapi_conn.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                dbapi_conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise
            time.sleep(delay * (0.5 + random.random()))  # noqa: S311 (jitter, not crypto)
            delay = min(delay * 2, 0.005)
    finally:
        if toggle:
            dbapi_conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


class SqliteDialect:
    """Every SQLite difference the store makes (its PostgreSQL twin:
    :class:`smithers.shared.store.postgres.PostgresDialect`)."""

    name = "sqlite"
    # feed ids come from the counters row as events are written: BEGIN IMMEDIATE
    # serializes writers, so they are handed out in commit order (smithers.shared.store.tx)
    numbers_feed_on_write = True
    # a commit is short and a scheduler woken early would only poll for the write lock
    wake_before_commit = False
    # the thread's read connection never sends BEGIN (see _on_begin): nothing to set
    autocommit_reads = False
    # one write transaction at a time in the whole database (queue writers in-process)
    one_writer = True
    # a file: no server to drop an idle connection
    ping_after_idle = False

    def make_engine(self, url: str, max_connections: int) -> Engine:
        return make_sqlite_engine(url, max_connections)

    def insert_or_ignore(self, table: Table, index: tuple[str, ...]) -> Insert:
        """``INSERT ... ON CONFLICT (index) DO NOTHING`` (add RETURNING to learn whether it inserted)."""
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=[table.c[k] for k in index])

    def upsert(self, table: Table, index: tuple[str, ...], set_: Callable[[Any], dict[str, Any]]) -> Insert:
        """``INSERT ... ON CONFLICT (index) DO UPDATE SET set_(excluded)``: ``set_`` is
        given the row that was not inserted (``excluded``)."""
        insert = sqlite.insert(table)
        return insert.on_conflict_do_update(
            index_elements=[table.c[k] for k in index], set_=set_(insert.excluded)
        )

    def lock_run(self, stmt: Select[Any]) -> Select[Any]:
        """``stmt`` unchanged: BEGIN IMMEDIATE already holds the whole database."""
        return stmt

    def hold(self, conn: Connection, stmt: Select[Any], params: dict[str, Any]) -> None:
        """Nothing: BEGIN IMMEDIATE already holds the whole database."""

    def publish_lock(self, conn: Connection) -> int | None:
        """None: messages go out after the commit."""
        return None

    def wait_for(self, conn: Connection, key: int) -> None:
        """Nothing to wait for (no :meth:`publish_lock` here)."""

    def set_autocommit(self, conn: Connection, on: bool) -> None:
        """Nothing: see :attr:`autocommit_reads`."""

    def migration_lock(self, conn: Connection) -> None:
        """Nothing: the migration's BEGIN IMMEDIATE already keeps other processes out."""

    def number_feed(self, conn: Connection, limit: int) -> None:
        """Nothing: events are numbered as they are written."""
