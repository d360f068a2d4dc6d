"""PostgreSQL through psycopg 3: URL, pre-ping, server-side prepared statements and a
migration advisory lock.

psycopg prepares a statement on the server once a connection has run it
``prepare_threshold`` times (5); SQLAlchemy's compiled cache hands it the same SQL text
for a prebuilt statement every time, so the hot statements are prepared on each
connection after a few uses. ``SMITHERS_PG_PREPARE=0`` turns it off (PgBouncer in
transaction pooling mode). psycopg 3 cooperates with gevent once the standard library
is patched: nothing to install or call.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    Insert,
    Select,
    Table,
    bindparam,
    create_engine,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql

from smithers.shared import settings

MIGRATION_LOCK_ID = 0x536D697468  # "Smith"
DRIVER = "postgresql+psycopg"
# what users may write for the same thing: libpq's scheme, and SQLAlchemy's psycopg2 one
# (this project ran on psycopg2 before; psycopg 3 takes the same URLs)
_ALIASES = ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg")


def normalise_url(url: str) -> str:
    """``url`` with the psycopg 3 driver: ``postgresql://``, ``postgres://`` and
    ``postgresql+psycopg2://`` become ``postgresql+psycopg://``; anything else is unchanged."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in _ALIASES:
        return f"{DRIVER}://{rest}"
    return url


def make_postgres_engine(url: str, max_connections: int = 16) -> Engine:
    """An engine on PostgreSQL (psycopg 3) in READ COMMITTED."""
    prepare = settings.PG_PREPARE.read(os.environ)
    return create_engine(
        normalise_url(url),
        pool_pre_ping=True,
        pool_size=8,
        max_overflow=max(max_connections - 8, 0),
        isolation_level="READ COMMITTED",
        # psycopg's own default (5) when on; None: never prepare
        connect_args={"prepare_threshold": 5 if prepare else None},
    )


class PostgresDialect:
    """Every PostgreSQL difference the store makes (its SQLite twin:
    :class:`smithers.shared.store.sqlite.SqliteDialect`)."""

    name = "postgresql"
    # events are written with feed_id NULL and numbered after commit (smithers.shared.store.feed)
    numbers_feed_on_write = False
    # a worker's wake-up may go out before COMMIT: the scheduler then waits on the run's row lock
    wake_before_commit = True
    # the thread's read connection runs in DBAPI autocommit (one round trip a statement)
    autocommit_reads = True
    # writers only queue on the rows they lock
    one_writer = False
    # the server (or a proxy) may drop an idle connection: ping one idle for a while
    ping_after_idle = True

    def make_engine(self, url: str, max_connections: int) -> Engine:
        return make_postgres_engine(url, max_connections)

    def insert_or_ignore(self, table: Table, index: tuple[str, ...]) -> Insert:
        """``INSERT ... ON CONFLICT (index) DO NOTHING`` (add RETURNING to learn whether it inserted)."""
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=[table.c[k] for k in index])

    def upsert(self, table: Table, index: tuple[str, ...], set_: Callable[[Any], dict[str, Any]]) -> Insert:
        """``INSERT ... ON CONFLICT (index) DO UPDATE SET set_(excluded)``: ``set_`` is
        given the row that was not inserted (``excluded``)."""
        insert = postgresql.insert(table)
        return insert.on_conflict_do_update(
            index_elements=[table.c[k] for k in index], set_=set_(insert.excluded)
        )

    def lock_run(self, stmt: Select[Any]) -> Select[Any]:
        """``stmt`` (a prebuilt read of run rows) locking them until commit."""
        return _for_update(stmt)

    def hold(self, conn: Connection, stmt: Select[Any], params: dict[str, Any]) -> None:
        """Lock the rows ``stmt`` reads until commit (``FOR UPDATE``), not reading them."""
        conn.execute(_for_update(stmt), params)

    def publish_lock(self, conn: Connection) -> int | None:
        """Take a transaction-scoped advisory lock on a random key; the key."""
        key = secrets.randbits(63)
        conn.execute(_LOCK, {"b_key": key})
        return key

    def wait_for(self, conn: Connection, key: int) -> None:
        """Wait until the transaction holding ``key`` (:meth:`publish_lock`) ends."""
        conn.execute(_AFTER, {"b_key": key})

    def migration_lock(self, conn: Connection) -> None:
        """Hold the migration's advisory lock until the transaction ends (one migrating
        process at a time)."""
        conn.execute(_LOCK, {"b_key": MIGRATION_LOCK_ID})

    def number_feed(self, conn: Connection, limit: int) -> None:
        """Number up to ``limit`` committed events (:func:`smithers.shared.store.feed.number_feed`),
        one numbering transaction at a time (an advisory lock)."""
        conn.execute(_LOCK, {"b_key": FEED_LOCK_ID})
        conn.execute(_NUMBER, {"b_limit": limit})

    def set_autocommit(self, conn: Connection, on: bool) -> None:
        """Turn the driver's autocommit on or off (psycopg's public attribute)."""
        dbapi_conn: Any = conn.connection.dbapi_connection
        if dbapi_conn is not None and not dbapi_conn.closed:
            dbapi_conn.autocommit = on


@lru_cache(maxsize=64)
def _for_update(stmt: Select[Any]) -> Select[Any]:
    return stmt.with_for_update()


_LOCK = select(func.pg_advisory_xact_lock(bindparam("b_key", type_=BigInteger)))
_AFTER = select(func.pg_advisory_xact_lock_shared(bindparam("b_key", type_=BigInteger)))

# pg_advisory_xact_lock key of the numbering transaction (an arbitrary constant).
FEED_LOCK_ID = 0x5F33D_F33D

_NUMBER = text("""WITH q AS (
    SELECT run_id, seq, row_number() OVER (ORDER BY at, run_id, seq) AS rn
    FROM (
        SELECT run_id, seq, max(created_at) OVER (PARTITION BY run_id ORDER BY seq) AS at
        FROM events WHERE feed_id IS NULL
    ) AS u
    ORDER BY at, run_id, seq
    LIMIT :b_limit
), n AS (
    SELECT count(*) AS c FROM q
), f AS (
    UPDATE counters SET value = value + n.c FROM n
    WHERE counters.name = 'events' AND n.c > 0
    RETURNING counters.value - n.c AS base
)
UPDATE events SET feed_id = f.base + q.rn FROM q, f
WHERE events.run_id = q.run_id AND events.seq = q.seq""")
