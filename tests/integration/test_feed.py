"""The all-runs feed on PostgreSQL: events are numbered after they commit
(smithers.shared.store.feed); and the schema change that allows it, on both backends."""

from __future__ import annotations

import time

from sqlalchemy import inspect, select

from smithers.shared.store import Store
from smithers.shared.store import schema as s
from smithers.shared.store.feed import number_now
from smithers.shared.store.migrate import MIGRATIONS
from tests.integration.test_driver import launch


def feed(store: Store) -> list[tuple[str, int, int | None]]:
    """(run, seq, feed id) of every event, by feed id then run and seq."""
    with store.read() as conn:
        e = s.events
        rows = conn.execute(
            select(e.c.run_id, e.c.seq, e.c.feed_id).order_by(e.c.feed_id, e.c.run_id, e.c.seq)
        )
        return [(r[0], int(r[1]), r[2]) for r in rows]


def counter(store: Store) -> int:
    with store.read() as conn:
        return int(conn.execute(select(s.counters.c.value).where(s.counters.c.name == "events")).scalar_one())


def test_postgres_numbers_committed_events_after_the_fact_in_each_runs_seq_order(pg_url: str) -> None:
    store = Store(pg_url)
    store.migrate()
    with store.write() as tx:
        launch(tx, "a")
        launch(tx, "b")
    assert [f for _, _, f in feed(store)] == [None, None]  # written without feed ids
    with store.write() as tx:
        tx.lock_run("b")
        tx.emit("b", "x.b2")
    with store.write() as tx:
        # a transaction's time is taken when it starts, before it has the run's lock:
        # it can be earlier than the time of an event already committed in that run
        tx.now = time.time() - 60
        tx.lock_run("a")
        tx.emit("a", "x.a2")
        tx.emit("a", "x.a3")

    # an event not committed yet is not numbered, and does not hold the numbering up
    pending = store.engine.connect()
    pending_tx = pending.begin()
    pending.exec_driver_sql(
        "INSERT INTO events (run_id, seq, type, payload, created_at) VALUES ('b', 3, 'x.b3', '{}', 0)"
    )
    pending.exec_driver_sql("UPDATE runs SET next_seq = 3 WHERE run_id = 'b'")
    number_now(store)
    numbered = feed(store)
    assert [r for r in numbered if r[2] is not None] == [
        ("a", 1, 1),
        ("a", 2, 2),  # a's events keep their seq order though a2 carries an earlier time
        ("a", 3, 3),  # (ordered by the latest time so far in the run, then run and seq)
        ("b", 1, 4),
        ("b", 2, 5),
    ]
    assert counter(store) == 5
    pending_tx.commit()
    pending.close()

    # an older process takes an id from the counter as it writes: the numbering
    # continues after it and never hands out the same id
    with store.write() as tx:
        tx.conn.exec_driver_sql("UPDATE counters SET value = value + 1 WHERE name = 'events'")
        tx.conn.exec_driver_sql(
            "INSERT INTO events (run_id, seq, feed_id, type, payload, created_at) "
            "VALUES ('a', 4, 6, 'x.old', '{}', 0)"
        )
        tx.conn.exec_driver_sql("UPDATE runs SET next_seq = 4 WHERE run_id = 'a'")
    with store.write() as tx:
        tx.lock_run("b")
        tx.emit("b", "x.b4")  # b's seq 3 was the pending insert
    number_now(store)
    assert feed(store)[5:] == [("a", 4, 6), ("b", 3, 7), ("b", 4, 8)]
    assert counter(store) == 8
    number_now(store)  # nothing left: no change, no gap
    assert counter(store) == 8
    store.close()


def test_the_v3_migration_makes_room_for_unnumbered_events(database_url: str) -> None:
    store = Store(database_url)
    store.migrate()
    with store.write() as tx:
        launch(tx, "a")
    number_now(store)
    postgres = store.dialect.name == "postgresql"
    store.close()
    engine = Store(database_url).engine
    with engine.begin() as conn:  # the database as schema version 2 left it
        conn.exec_driver_sql("DROP INDEX ix_events_unnumbered")
        if postgres:
            conn.exec_driver_sql("ALTER TABLE events ALTER COLUMN feed_id SET NOT NULL")
        conn.execute(s.schema_version.delete().where(s.schema_version.c.version >= 3))
    engine.dispose()

    store = Store(database_url)
    assert store.migrate() == max(MIGRATIONS)
    with store.read() as conn:
        insp = inspect(conn)
        assert "ix_events_unnumbered" in {i["name"] for i in insp.get_indexes("events")}
        nullable = {c["name"]: c["nullable"] for c in insp.get_columns("events")}["feed_id"]
    assert nullable or not postgres  # (SQLite numbers as it writes: an older file keeps NOT NULL)
    assert store.migrate() == max(MIGRATIONS)  # idempotent
    with store.write() as tx:
        tx.lock_run("a")
        tx.emit("a", "x.after")
    number_now(store)
    assert feed(store) == [("a", 1, 1), ("a", 2, 2)]
    store.close()
