"""PostgreSQL quirks: psycopg2, pre-ping, row locks and a migration advisory lock."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event

from smithers.shared.store.fast import send_pipeline

MIGRATION_LOCK_ID = 0x536D697468  # "Smith"


def make_postgres_engine(url: str, max_connections: int = 16) -> Engine:
    """An engine on PostgreSQL (``postgresql+psycopg2://``) in READ COMMITTED."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg2://" + url.split("://", 1)[1]
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_size=8,
        max_overflow=max(max_connections - 8, 0),
        isolation_level="READ COMMITTED",
    )

    @event.listens_for(engine, "before_cursor_execute")
    def _send_queued(conn: Connection, cursor: Any, *_: Any) -> None:
        # A statement SQLAlchemy runs inside a pipelined transaction: what is queued
        # (BEGIN first) goes before it (smithers.shared.store.fast).
        send_pipeline(conn, cursor)

    return engine
