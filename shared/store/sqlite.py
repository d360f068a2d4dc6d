"""SQLite quirks: WAL, foreign keys, busy timeout, immediate write transactions.

One file per deployment. Readers never block the writer (WAL); writers take the write
lock up front (``BEGIN IMMEDIATE``) so two writers queue on the busy timeout instead
of failing with "database is locked" when a deferred transaction tries to upgrade.
"""

from __future__ import annotations

import random
import sqlite3
import time
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
        options = conn.get_execution_options()
        if options.get("smithers_writer", False):  # a thread's own write connection
            dbapi_conn: Any = conn.connection.dbapi_connection
            if not conn.info.get("smithers_busy0"):
                dbapi_conn.execute("PRAGMA busy_timeout=0")  # we poll for the lock ourselves
                conn.info["smithers_busy0"] = True
            begin_immediate(dbapi_conn, toggle=False)
        elif options.get("smithers_write", False):
            begin_immediate(conn.connection.dbapi_connection)
        elif options.get("smithers_reader", False):
            pass  # a thread's own read connection: each statement on its own (autocommit)
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


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
