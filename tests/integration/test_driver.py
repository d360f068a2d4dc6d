"""The store on its drivers: PostgreSQL through psycopg 3 and SQLAlchemy Core's public
``Connection.execute`` (no layer of our own under it).

What the removed pipelining layer (tests/integration/test_pipeline.py) promised and
still holds: a failed write fails its transaction and leaves the connection usable, a
raised error rolls back what was sent, the server keeps no transaction open between
ours; hot statements are prepared on the server (psycopg's ``prepare_threshold``), or
not with ``SMITHERS_PG_PREPARE=0``; and a step's commit costs a bounded number of
statements (each one round trip).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, exc, select

from smithers.shared.actions import DecisionConfig
from smithers.shared.status import AttemptState
from smithers.shared.store import Store
from smithers.shared.store import schema as s
from smithers.shared.store.advance import Decider
from smithers.shared.store.attempts import claim, complete, peek
from smithers.shared.store.inplace import InPlace
from smithers.shared.store.postgres import normalise_url
from smithers.shared.store.queries import attempts_of
from smithers.shared.store.runs import launch as create_run
from smithers.shared.store.state import load_run
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
    """The server's view of the other connections of this database between transactions."""
    with store.read() as conn:
        rows = conn.exec_driver_sql(
            "SELECT state FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).all()
    return ",".join(sorted(str(r[0]) for r in rows))


def test_every_postgres_url_a_user_may_write_runs_on_psycopg_3(pg_url: str) -> None:
    rest = pg_url.split("://", 1)[1]
    for scheme in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        assert normalise_url(f"{scheme}://{rest}") == f"postgresql+psycopg://{rest}"
        st = Store(f"{scheme}://{rest}")
        assert st.engine.dialect.driver == "psycopg"
        with st.read() as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
        st.close()
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"
    assert normalise_url("postgresql+asyncpg://h/db") == "postgresql+asyncpg://h/db"  # not ours to change


def test_a_failing_write_fails_its_transaction_and_nothing_of_it_is_kept(store: Store) -> None:
    with store.write() as tx:
        launch(tx, "r1")
    # given a transaction whose second write breaks a key
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
        assert tx.lock_run("r1") is not None
        raise RuntimeError("caller failed")
    assert run_ids(store) == set()
    assert "idle in transaction" not in backend_in_transaction(store)
    with store.write() as tx:
        launch(tx, "r2")
    assert run_ids(store) == {"r2"}


def prepared_on(conn: Any) -> set[str]:
    return {str(r[0]) for r in conn.exec_driver_sql("SELECT statement FROM pg_prepared_statements").all()}


def test_hot_statements_are_prepared_on_the_server_after_a_few_uses(store: Store) -> None:
    # given the same prebuilt statements run a few times on this thread's connections
    for i in range(6):
        with store.write() as tx:
            launch(tx, f"r{i}")
        with store.read() as conn:
            conn.execute(select(s.runs.c.status).where(s.runs.c.run_id == "r0")).first()
    # then the server holds them prepared on both connections
    with store.write() as tx:
        assert any(q.startswith("INSERT INTO runs") for q in prepared_on(tx.conn))
    with store.read() as conn:
        assert any(q.startswith("SELECT runs.status") for q in prepared_on(conn))
    assert run_ids(store) == {f"r{i}" for i in range(6)}


def test_prepare_can_be_switched_off(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMITHERS_PG_PREPARE", "0")
    st = Store(pg_url)
    st.migrate()
    for i in range(8):
        with st.write() as tx:
            launch(tx, f"r{i}")
    with st.write() as tx:
        assert prepared_on(tx.conn) == set()
    st.close()


def test_a_step_commit_is_a_bounded_number_of_statements(database_url: str) -> None:
    # given a dispatched step (tests/integration/test_lazy_claim.py's workflow)
    from tests.integration.test_lazy_claim import queued

    store, attempt_id = queued(database_url, "count-1")
    with store.read() as conn:
        c = peek(conn, attempt_id, time.time())
    assert c is not None
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        statements.append(sql.split(None, 2)[0].upper())

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        # when its result commits (a lazy claim and the commit in one transaction)
        with store.write() as tx:
            assert complete(
                tx, attempt_id, None, ok=True, output=7, worker="w1", started_at=c.started_at, run_id=c.run_id
            )
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    # then it took one transaction of a handful of statements, each one round trip
    # (BEGIN and COMMIT are the driver's: not counted here)
    # (the attempt read, on PostgreSQL after the run's lock; the attempt, node and
    # output; the run row with its seq; the events, and on SQLite the feed counter)
    assert 3 <= len(statements) <= 7, statements
    store.close()


def test_a_chain_step_commit_that_continues_in_place_is_a_bounded_number_of_statements(
    database_url: str,
) -> None:
    # given the first step of a two-step chain, claimed by a worker
    from tests.integration.test_lazy_claim import queued, registry

    store, attempt_id = queued(database_url, "count-2")
    reg = registry()
    with store.write() as tx:
        c = claim(tx, attempt_id, "w1", 30)
    assert c is not None and c.claim_token is not None
    in_place = InPlace("w1", c.input, lambda _m, _revision: 30.0)  # the worker takes the next step
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        statements.append(" ".join(sql.split()[:3]).upper())

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        # when its result commits, decides the run and takes the next step in place, as
        # a worker's commit does (smithers.workers.step): the run read once, the result
        # checked on it, the decision made from it as the result left it
        with store.write() as tx:
            loaded = load_run(tx, c.run_id)
            assert loaded is not None
            assert complete(tx, attempt_id, c.claim_token, ok=True, output=7, run_id=c.run_id, loaded=loaded)
            assert not loaded.stale
            wf = reg.get("lazy").workflow
            known = {("quick", 0): 7}
            Decider(reg, DecisionConfig(), 500).after(
                tx, c.run_id, wf, in_place, known, (loaded.view, loaded.run)
            )
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    # then the next step was written claimed by the worker, in that commit
    taken = in_place.claim
    assert taken is not None and taken.node_id == "slow" and taken.claim_token is not None
    with store.read() as conn:
        slow = next(a for a in attempts_of(conn, c.run_id) if a.node_id == "slow")
    assert (slow.state, slow.worker, slow.started_at) == (AttemptState.RUNNING, "w1", slow.dispatched_at)
    # and the whole commit took: one read of the run, its nodes and their attempts (on
    # PostgreSQL after the run's lock), the result (attempt, node, output), the decision
    # (the next attempt inserted claimed, its node), the run row with its seq and wake
    # time, and one insert of the events (on SQLite after the feed counter)
    assert len(statements) <= 9, statements
    store.close()
