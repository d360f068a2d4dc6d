"""SQLite quirks: WAL, foreign keys, busy timeout, immediate write transactions.

One file per deployment. Readers never block the writer (WAL); writers take the write
lock up front (``BEGIN IMMEDIATE``) so two writers queue on the busy timeout instead
of failing with "database is locked" when a deferred transaction tries to upgrade.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

BUSY_TIMEOUT_MS = 30_000


def make_sqlite_engine(url: str) -> Engine:
    """An engine on a SQLite file with our pragmas; creates the parent directory."""
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "isolation_level": None, "check_same_thread": False},
        pool_size=8,
        max_overflow=8,
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
        mode = conn.get_execution_options().get("smithers_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if mode else "BEGIN")

    return engine


def lock_run_sql() -> str:
    """SQLite has no row locks; BEGIN IMMEDIATE already serializes every writer."""
    return ""
