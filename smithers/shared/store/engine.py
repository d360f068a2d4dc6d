"""The backend factory: picks SQLite or PostgreSQL from the database URL."""

from __future__ import annotations

from sqlalchemy import Engine

from smithers.shared.errors import InvalidInput
from smithers.shared.store.postgres import make_postgres_engine
from smithers.shared.store.sqlite import make_sqlite_engine


def make_engine(url: str) -> Engine:
    """Create the engine for ``sqlite:///path`` or ``postgresql+psycopg2://...``."""
    if url.startswith("sqlite"):
        return make_sqlite_engine(url)
    if url.startswith(("postgresql", "postgres:")):
        return make_postgres_engine(url)
    raise InvalidInput(f"unsupported database URL scheme: {url.split(':', 1)[0]!r}")
