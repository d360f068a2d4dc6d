"""Pipelined write transactions on PostgreSQL (smithers.shared.store.fast.Pipeline): queued writes
are seen by later reads, fail the transaction they belong to, and leave the connection
usable; events written by the one-statement flush match those of the plain path."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import exc, select

from smithers.shared.store import Store, fast
from smithers.shared.store import schema as s
from smithers.shared.store.feed import number_now
from smithers.shared.store.runs import launch as create_run
from smithers.shared.store.tx import Tx


@pytest.fixture
def store(pg_url: str) -> Iterator[Store]:
    st = Store(pg_url)
    st.migrate()
    yield st
    st.close()


def launch(tx: Tx, run_id: str) -> None:
    create_run(
        tx,
        run_id=run_id,
        workflow="wf",
        workflow_version="1",
        module_revision="rev",
        deployment_version="v",
        run_input={"n": 1},
        launched_by="t",
    )


def run_ids(store: Store) -> set[str]:
    with store.read() as conn:
        return {r[0] for r in conn.execute(select(s.runs.c.run_id))}


def backend_in_transaction(store: Store) -> str:
    """The server's view of this thread's write connection between transactions."""
    with store.read() as conn:
        rows = conn.exec_driver_sql(
            "SELECT state FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).all()
    return ",".join(sorted(r[0] for r in rows))


def test_write_transactions_on_postgres_are_pipelined(store: Store) -> None:
    with store.write() as tx:
        assert fast.pipelined(tx.conn)
        pipeline = tx.conn.info[fast.PIPELINE]
        assert pipeline.sql == [b"BEGIN"] and not pipeline.begun  # nothing sent yet
        launch(tx, "r1")
        # BEGIN went with the lookup of the run id; the insert waits for COMMIT
        assert pipeline.begun
        assert [q.split(b" (")[0] for q in pipeline.sql] == [b"INSERT INTO runs"]
    assert run_ids(store) == {"r1"}
    assert "idle in transaction" not in backend_in_transaction(store)


def test_reads_see_the_writes_queued_before_them(store: Store) -> None:
    with store.write() as tx:
        launch(tx, "r1")
        # a prebuilt statement (fast path) carries the queue in front of it
        assert tx.lock_run("r1") is not None
        tx.set(s.runs, {"run_id": "r1"}, {"status": "running"})
        # a statement SQLAlchemy runs sends the queue first (the before_cursor_execute hook)
        status = tx.conn.execute(select(s.runs.c.status).where(s.runs.c.run_id == "r1")).scalar_one()
        assert status == "running"
    with store.read() as conn:
        assert conn.execute(select(s.runs.c.status)).scalar_one() == "running"


def test_a_failing_queued_write_fails_its_transaction_and_nothing_of_it_is_kept(store: Store) -> None:
    with store.write() as tx:
        launch(tx, "r1")
    # given a transaction whose queued insert breaks a key only when it reaches the server
    with pytest.raises(exc.IntegrityError), store.write() as tx:
        launch(tx, "r2")
        tx.insert(s.counters, {"name": "events", "value": 0})  # duplicate primary key
    # then neither write is kept, the server holds no open transaction, and the
    # connection works for the next one
    assert run_ids(store) == {"r1"}
    assert "idle in transaction" not in backend_in_transaction(store)
    with store.write() as tx:
        launch(tx, "r3")
    assert run_ids(store) == {"r1", "r3"}


def test_an_error_raised_mid_transaction_rolls_back_what_was_sent(store: Store) -> None:
    with pytest.raises(RuntimeError), store.write() as tx:
        launch(tx, "r1")
        assert tx.lock_run("r1") is not None  # BEGIN and the insert are on the server now
        assert tx.conn.info[fast.PIPELINE].begun
        raise RuntimeError("caller failed")
    assert run_ids(store) == set()
    assert "idle in transaction" not in backend_in_transaction(store)
    with store.write() as tx:
        launch(tx, "r2")
    assert run_ids(store) == {"r2"}


def events_of(store: Store) -> list[dict[str, Any]]:
    number_now(store)
    with store.read() as conn:
        rows = conn.execute(select(s.events).order_by(s.events.c.feed_id)).all()
    return [dict(r._mapping) for r in rows]


def test_the_one_statement_flush_writes_the_same_events_as_the_plain_path(pg_url: str) -> None:
    # given the same transactions on a pipelined writer and on pooled (plain) writes
    def scenario(store: Store) -> list[dict[str, Any]]:
        with store.write() as tx:
            launch(tx, "a")
            launch(tx, "b")
        with store.write() as tx:
            for run_id in ("a", "b"):
                tx.lock_run(run_id)
            tx.emit("a", "node.x", node_id="n1", iteration=2, attempt_id="att", payload={"k": [1, "two"]})
            tx.emit("b", "node.y", payload={"token": "sk-secretsecretsecret", "ok": True})
            tx.emit("a", "node.z", node_id="n2")
            tx.wake("a")
        return events_of(store)

    piped = Store(pg_url)
    piped.migrate()
    got = scenario(piped)
    with piped.write() as tx:
        tx.conn.exec_driver_sql("TRUNCATE runs, events CASCADE")
        tx.conn.exec_driver_sql("UPDATE counters SET value = 0 WHERE name = 'events'")
    piped.close()
    plain = Store(pg_url)
    plain.pooled_writes = True
    want = scenario(plain)
    with plain.read() as conn:
        woken = conn.execute(select(s.runs.c.wake_at).where(s.runs.c.run_id == "a")).scalar_one()
    plain.close()

    # then rows, ids, payloads (redacted) and types are the same, created_at aside
    def strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "created_at"} for r in rows]

    assert strip(got) == strip(want)
    assert [(e["run_id"], e["seq"], e["feed_id"]) for e in got] == [
        ("a", 1, 1),
        ("b", 1, 2),
        ("a", 2, 3),
        ("a", 3, 4),
        ("b", 2, 5),
    ]
    assert got[2]["iteration"] == 2 and got[2]["payload"] == {"k": [1, "two"]}
    assert "sk-secret" not in str(got)
    assert all(isinstance(e["created_at"], float) for e in got)
    assert woken is not None


def prepared_on(conn: Any) -> set[str]:
    return {r[0] for r in conn.exec_driver_sql("SELECT name FROM pg_prepared_statements").all()}


def test_hot_statements_are_prepared_after_their_first_use_and_executed_after(store: Store) -> None:
    # given a statement's first use in a transaction (run as text)
    with store.write() as tx:
        launch(tx, "r1")
        assert prepared_on(tx.conn) == set()
    # then it is prepared once the transaction is over, outside it
    with store.write() as tx:
        names = prepared_on(tx.conn)
        assert names and all(n.startswith("smithers_") for n in names)
        launch(tx, "r2")  # and its next use runs EXECUTE of the prepared form
        queued = tx.conn.info[fast.PIPELINE].sql
        assert queued and queued[0].startswith(b"EXECUTE smithers_")
    assert run_ids(store) == {"r1", "r2"}
    # reads on the thread's read connection too
    with store.read() as conn:
        fast.execute(conn, select(s.runs.c.status).where(s.runs.c.run_id == "r1")).first()
    with store.read() as conn:
        assert prepared_on(conn)
        row = fast.execute(conn, select(s.runs.c.status).where(s.runs.c.run_id == "r1")).first()
        assert row is not None and row[0] == "queued"


def test_a_statement_the_server_refuses_to_prepare_keeps_running_as_text(store: Store) -> None:
    from sqlalchemy import Integer, bindparam

    # "$1 + $2" has no type to resolve to: PREPARE fails, the text form works
    ambiguous = select(bindparam("b_a", type_=Integer) + bindparam("b_b", type_=Integer))
    plain = select(s.runs.c.run_id).where(s.runs.c.run_id == bindparam("b_run_id"))
    for _ in range(3):
        with store.read() as conn:
            assert fast.execute(conn, ambiguous, {"b_a": 2, "b_b": 3}).scalar_one() == 5
            assert fast.execute(conn, plain, {"b_run_id": "nope"}).first() is None
    with store.read() as conn:
        prepared = conn.info[fast.PREPARED]
        refused = [sql for sql, name in prepared.names.items() if name is None]
        accepted = [sql for sql, name in prepared.names.items() if name]
    assert len(refused) == 1 and "+" in refused[0]
    assert len(accepted) == 1  # the other one of the same batch is prepared, not lost


def test_prepare_can_be_switched_off(pg_url: str) -> None:
    st = Store(pg_url)
    st.prepare = False
    st.migrate()
    for run_id in ("a", "b"):
        with st.write() as tx:
            launch(tx, run_id)
    with st.write() as tx:
        assert prepared_on(tx.conn) == set()
    st.close()
