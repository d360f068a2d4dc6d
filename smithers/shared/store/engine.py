"""The backend factory: picks SQLite or PostgreSQL from the database URL."""

from __future__ import annotations

from sqlalchemy import Engine

from smithers.shared.errors import InvalidInput
from smithers.shared.store.postgres import make_postgres_engine
from smithers.shared.store.sqlite import make_sqlite_engine


def make_engine(url: str, max_connections: int = 16) -> Engine:
    """Create the engine for ``sqlite:///path`` or ``postgresql+psycopg://...``, its
    pool holding up to ``max_connections`` (8 kept open, the rest opened on demand)."""
    if url.startswith("sqlite"):
        return make_sqlite_engine(url, max_connections)
    if url.startswith(("postgresql", "postgres:")):
        return make_postgres_engine(url, max_connections)
    raise InvalidInput(f"unsupported database URL scheme: {url.split(':', 1)[0]!r}")
