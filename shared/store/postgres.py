"""PostgreSQL quirks: psycopg2, pre-ping, row locks and a migration advisory lock."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine

MIGRATION_LOCK_ID = 0x536D697468  # "Smith"


def make_postgres_engine(url: str) -> Engine:
    """An engine on PostgreSQL (``postgresql+psycopg2://``) in READ COMMITTED."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg2://" + url.split("://", 1)[1]
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=8,
        max_overflow=8,
        isolation_level="READ COMMITTED",
    )
