"""The backend factory: picks SQLite or PostgreSQL from the database URL.

Every difference between the two is held by one dialect object
(:class:`smithers.shared.store.sqlite.SqliteDialect`,
:class:`smithers.shared.store.postgres.PostgresDialect`); the rest of the store calls it
instead of asking which backend it is on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, Insert, Select, Table

from smithers.shared.errors import InvalidInput
from smithers.shared.store.postgres import PostgresDialect
from smithers.shared.store.sqlite import SqliteDialect


class Dialect(Protocol):
    """What the store asks of a backend (see the two implementations)."""

    name: str
    numbers_feed_on_write: bool
    wake_before_commit: bool
    autocommit_reads: bool
    one_writer: bool
    ping_after_idle: bool

    def __hash__(self) -> int: ...  # a key of the statement caches

    def make_engine(self, url: str, max_connections: int) -> Engine: ...

    def insert_or_ignore(self, table: Table, index: tuple[str, ...]) -> Insert:
        """``INSERT ... ON CONFLICT (index) DO NOTHING``."""
        ...

    def upsert(
        self, table: Table, index: tuple[str, ...], set_: Callable[[Any], dict[str, Any]]
    ) -> Insert: ...

    def lock_run(self, stmt: Select[Any]) -> Select[Any]: ...

    def hold(self, conn: Connection, stmt: Select[Any], params: dict[str, Any]) -> None: ...

    def publish_lock(self, conn: Connection) -> int | None: ...

    def wait_for(self, conn: Connection, key: int) -> None: ...

    def migration_lock(self, conn: Connection) -> None: ...

    def number_feed(self, conn: Connection, limit: int) -> None: ...

    def set_autocommit(self, conn: Connection, on: bool) -> None: ...


_BY_NAME: dict[str, Dialect] = {"sqlite": SqliteDialect(), "postgresql": PostgresDialect()}


def dialect_of(conn: Connection) -> Dialect:
    """The dialect of an open connection (by SQLAlchemy's dialect name)."""
    return _BY_NAME[conn.dialect.name]


def dialect_for(url: str) -> Dialect:
    """The dialect of ``sqlite:///path`` or ``postgresql+psycopg://...`` (and the other
    PostgreSQL spellings, :func:`smithers.shared.store.postgres.normalise_url`)."""
    if url.startswith("sqlite"):
        return _BY_NAME["sqlite"]
    if url.startswith(("postgresql", "postgres:")):
        return _BY_NAME["postgresql"]
    raise InvalidInput(f"unsupported database URL scheme: {url.split(':', 1)[0]!r}")


def make_engine(url: str, max_connections: int = 16) -> Engine:
    """Create the engine for ``url``, its pool holding up to ``max_connections`` (8 kept
    open, the rest opened on demand)."""
    return dialect_for(url).make_engine(url, max_connections)
