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

from sqlalchemy import Engine, create_engine

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
