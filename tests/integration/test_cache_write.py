"""The cache write is one upsert: concurrent writers of one key all commit, one row stays."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import select, text
from sqlalchemy.pool import NullPool

from smithers.shared.store import Store
from smithers.shared.store import schema as s
from smithers.shared.store.attempts import CacheWrite, _write_cache

GLOBAL = CacheWrite(scope="global", version="1", ttl_ms=None, workflow="wf")


def rows(store: Store) -> list[Any]:
    with store.read() as conn:
        return list(conn.execute(select(s.cache_entries.c.key, s.cache_entries.c.value)).all())


def test_two_writers_of_one_key_inside_open_transactions_both_commit(pg_url: str) -> None:
    # given a transaction that wrote a global-scope key and has not committed, and a
    # second writer of the same key blocked on that row (seen in pg_stat_activity)
    store = Store(pg_url)
    store.migrate()
    first_written = threading.Event()
    errors: list[BaseException] = []
    watcher = sqlalchemy.create_engine(pg_url, poolclass=NullPool)

    def second_is_waiting() -> bool:
        with watcher.connect() as conn:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        return int(waiting) > 0

    def first() -> None:
        with store.write() as tx:
            _write_cache(tx, "k", GLOBAL, "run-0", "node", {"n": 0}, "att-0")
            tx.conn.execute(select(1))  # a read sends the queued write to the server now
            first_written.set()
            deadline = time.monotonic() + 30
            while not second_is_waiting() and time.monotonic() < deadline:
                time.sleep(0.02)

    def second() -> None:
        first_written.wait(30)
        try:
            with store.write() as tx:
                _write_cache(tx, "k", GLOBAL, "run-1", "node", {"n": 1}, "att-1")
        except BaseException as exc:
            errors.append(exc)

    # when the first commits
    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    # then the second did not lose its commit to a unique violation: one row, its value
    assert errors == []
    assert rows(store) == [("k", {"n": 1})]
    store.close()
    watcher.dispose()


def test_many_writers_of_one_key_all_commit(database_url: str) -> None:
    store = Store(database_url)
    store.migrate()
    start = threading.Barrier(8, timeout=30)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        start.wait()
        try:
            with store.write() as tx:
                _write_cache(tx, "k", GLOBAL, f"run-{n}", "node", {"n": n}, f"att-{n}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert errors == []
    (row,) = rows(store)
    assert row[0] == "k" and row[1]["n"] in range(8)
    store.close()


@pytest.mark.parametrize("ttl_ms", [None, 1])
def test_a_rewrite_refreshes_the_row(database_url: str, ttl_ms: int | None) -> None:
    store = Store(database_url)
    store.migrate()
    policy = CacheWrite(scope="global", version="1", ttl_ms=ttl_ms, workflow="wf")
    with store.write() as tx:
        _write_cache(tx, "k", policy, "run-a", "node", "first", "att-a")
    with store.write() as tx:
        _write_cache(tx, "k", policy, "run-b", "node", "second", "att-b")
    with store.read() as conn:
        row = conn.execute(select(s.cache_entries).where(s.cache_entries.c.key == "k")).one()
    assert (row.value, row.run_id, row.attempt_id) == ("second", "run-b", "att-b")
    store.close()
