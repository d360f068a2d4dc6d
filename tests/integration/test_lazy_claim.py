"""Lazy claims: a short step's claim and result are one transaction; a long step is
claimed by the worker's heartbeat thread while it runs. Either way one commit wins."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Connection, select

from smithers.shared import StepContext, Workflow, operations
from smithers.shared.actions import DecisionConfig
from smithers.shared.broker import Broker
from smithers.shared.config import WorkerConfig
from smithers.shared.registry import Registry
from smithers.shared.status import AttemptState
from smithers.shared.store import Store
from smithers.shared.store import schema as s
from smithers.shared.store.advance import decide_loaded
from smithers.shared.store.attempts import CLAIM_AFTER_S, claim, complete, peek
from smithers.shared.store.inplace import Claim
from smithers.shared.store.queries import attempts_of, events_after
from smithers.shared.store.state import apply_decision, load_run_view
from smithers.workers.step import WorkerEnv, run_attempt

SLOW_S = CLAIM_AFTER_S + 0.5


def registry() -> Registry:
    wf = Workflow("lazy")

    @wf.task(timeout_s=30)
    def quick(ctx: StepContext) -> int:
        return 7

    @wf.task(after=[quick])
    def slow(ctx: StepContext) -> dict[str, object]:
        time.sleep(SLOW_S)
        with Store(ctx.input["db"]).read() as conn:  # what a watcher sees while it runs
            seen = [e.type for e in events_after(conn, ctx.run_id) if e.node_id == "slow"]
        return {"seen": seen}

    reg = Registry()
    reg.register(wf, "tests", "rev1")
    return reg


def launch(store: Store, reg: Registry, run_id: str, database_url: str) -> None:
    operations.launch(
        store,
        None,
        reg,
        workflow="lazy",
        run_input={"db": database_url},
        run_id=run_id,
        launched_by="t",
        deployment_version="v",
    )


def dispatch(store: Store, reg: Registry, run_id: str) -> list[str]:
    with store.write() as tx:
        loaded = load_run_view(tx, run_id)
        assert loaded is not None
        wf = reg.get("lazy").workflow
        messages = apply_decision(tx, run_id, decide_loaded(tx, wf, loaded[0], DecisionConfig()))
    return [m.attempt_id for m in messages]


def queued(database_url: str, run_id: str) -> tuple[Store, str]:
    """A store holding run ``run_id`` with its first step dispatched; that attempt's id."""
    store = Store(database_url)
    store.migrate()
    reg = registry()
    launch(store, reg, run_id, database_url)
    [attempt_id] = dispatch(store, reg, run_id)
    return store, attempt_id


def worker_env(store: Store, redis_url: str) -> WorkerEnv:
    """A worker's environment on ``store`` (migrated here), with a broker of its own.
    Its commits decide nothing (the tests here dispatch each step themselves, as a
    scheduler would, to deliver it as a message)."""
    store.migrate()
    config = WorkerConfig(lease_s=30, decide_max_nodes=0)
    return WorkerEnv(store, Broker(redis_url), registry(), config, "w-test")


def types(store: Store, run_id: str) -> list[str]:
    with store.read() as conn:
        return [e.type for e in events_after(conn, run_id)]


def test_a_lazy_claim_and_its_result_commit_together_and_only_once(database_url: str) -> None:
    store, attempt_id = queued(database_url, "lazy-1")

    # two deliveries of the same message both pass the read-only check
    with store.read() as conn:
        first = peek(conn, attempt_id, time.time())
        second = peek(conn, attempt_id, time.time())
    assert first is not None and second is not None and first.claim_token is None
    with store.write() as tx:
        assert complete(tx, attempt_id, None, ok=True, output=7, worker="w1", started_at=first.started_at)
    with store.write() as tx:
        assert not complete(tx, attempt_id, None, ok=True, output=8, worker="w2", started_at=time.time())

    with store.read() as conn:
        [attempt] = attempts_of(conn, "lazy-1")
        value = conn.execute(select(s.outputs.c.value)).scalar_one()
        third = peek(conn, attempt_id, time.time())
    assert value == 7
    assert attempt.state is AttemptState.SUCCEEDED and attempt.worker == "w1"
    assert attempt.started_at == first.started_at and attempt.finished_at is not None
    assert attempt.finished_at >= attempt.started_at
    assert third is None  # a finished step is never started again
    assert types(store, "lazy-1")[-4:] == [
        "attempt.started",
        "attempt.succeeded",
        "node.succeeded",
        "attempt.refused",
    ]
    store.close()


def test_a_lazy_result_is_refused_once_the_run_is_cancelled_or_another_worker_claimed(
    database_url: str,
) -> None:
    store, attempt_id = queued(database_url, "lazy-2")
    with store.write() as tx:  # another delivery ran long enough to be claimed
        other = claim(tx, attempt_id, "w2", 30, started_at=time.time() - 1)
    assert other is not None and other.claim_token is not None
    with store.write() as tx:
        assert not complete(tx, attempt_id, None, ok=True, output=1, worker="w1", started_at=time.time())
    with store.write() as tx:
        assert complete(tx, attempt_id, other.claim_token, ok=True, output=2)

    store.close()
    store, attempt_id = queued(database_url, "lazy-3")
    operations.cancel(store, None, "lazy-3", "t")
    with store.read() as conn:
        assert peek(conn, attempt_id, time.time()) is None
    with store.write() as tx:
        assert not complete(tx, attempt_id, None, ok=True, output=1, worker="w1", started_at=time.time())
    assert types(store, "lazy-3")[-1] == "attempt.refused"
    store.close()


def test_a_claim_with_a_deadline_wakes_the_scheduler_when_the_step_is_due(database_url: str) -> None:
    store, attempt_id = queued(database_url, "lazy-4")
    started = time.time() - 5
    with store.write() as tx:
        c = claim(tx, attempt_id, "w1", 30, started_at=started)
    assert c is not None and c.deadline_at == started + 30
    with store.read() as conn:
        wake_at = conn.execute(select(s.runs.c.wake_at).where(s.runs.c.run_id == "lazy-4")).scalar_one()
    assert wake_at == started + 30  # not the later re-dispatch check the dispatch set
    store.close()


def test_the_worker_claims_a_long_step_while_it_runs_and_commits_a_short_one_in_one_go(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    env = worker_env(Store(database_url), redis_url)
    store, reg = env.store, env.registry
    launch(store, reg, "lazy-5", database_url)
    [quick] = dispatch(store, reg, "lazy-5")

    assert run_attempt(env, quick) == "succeeded"
    assert run_attempt(env, quick) == "refused"  # a redelivered message after the commit
    [slow] = dispatch(store, reg, "lazy-5")
    assert run_attempt(env, slow) == "succeeded"

    with store.read() as conn:
        output = conn.execute(select(s.outputs.c.value).where(s.outputs.c.node_id == "slow")).scalar_one()
        attempts = {a.node_id: a for a in attempts_of(conn, "lazy-5")}
        events = [e for e in events_after(conn, "lazy-5") if e.node_id == "slow"]
    # the slow step saw its own start recorded while it was still running
    assert output == {"seen": ["attempt.queued", "attempt.started"]}
    assert [e.type for e in events] == [
        "attempt.queued",
        "attempt.started",
        "attempt.succeeded",
        "node.succeeded",
    ]
    assert attempts["slow"].worker == "w-test" and attempts["quick"].worker == "w-test"
    slow_attempt = attempts["slow"]
    assert slow_attempt.started_at is not None and slow_attempt.finished_at is not None
    assert slow_attempt.finished_at - slow_attempt.started_at >= SLOW_S
    env.broker.close()
    store.close()


def test_a_scheduler_woken_before_a_result_commits_waits_for_it_and_decides_on_it(pg_url: str) -> None:
    # The worker wakes the scheduler before it sends COMMIT (PostgreSQL): the decision
    # must wait for the run row lock and then read the committed result.
    store, attempt_id = queued(pg_url, "lazy-early")
    other = Store(pg_url)
    reg = registry()
    decided: list[list[str]] = []
    decision = threading.Thread(target=lambda: decided.append(dispatch(other, reg, "lazy-early")))

    def wake() -> None:
        decision.start()
        time.sleep(0.5)  # COMMIT is sent only now: the decision is waiting meanwhile

    with store.write() as tx:
        assert complete(
            tx, attempt_id, None, ok=True, output=7, worker="w1", started_at=time.time(), run_id="lazy-early"
        )
        tx.before_commit(wake)
    decision.join(10)
    with store.read() as conn:
        nodes = {a.node_id: a.attempt_id for a in attempts_of(conn, "lazy-early")}
    assert decided == [[nodes["slow"]]]  # it saw `quick` succeeded and dispatched `slow`
    other.close()
    store.close()


def test_a_step_message_sent_before_its_dispatch_commits_is_read_after_the_commit(pg_url: str) -> None:
    # The scheduler publishes step messages before COMMIT (PostgreSQL) with the key of
    # an advisory lock its transaction holds; the worker's read waits for that lock.
    store = Store(pg_url)
    store.migrate()
    reg = registry()
    wf = reg.get("lazy").workflow
    reader = Store(pg_url)
    for run_id, commits in (("lazy-pub-1", True), ("lazy-pub-2", False)):
        launch(store, reg, run_id, pg_url)
        seen: list[tuple[str, object]] = []

        def read(attempt_id: str, key: int) -> None:
            with reader.read() as conn:
                seen.append(("plain", peek(conn, attempt_id, time.time())))  # not committed yet
                seen.append(("after", peek(conn, attempt_id, time.time(), after=key)))

        with pytest.raises(RuntimeError) if not commits else contextlib.nullcontext(), store.write() as tx:
            tx.publish_lock()
            assert tx.publish_key() is not None  # the server holds the lock from here
            loaded = load_run_view(tx, run_id)
            assert loaded is not None
            [message] = apply_decision(tx, run_id, decide_loaded(tx, wf, loaded[0], DecisionConfig()))
            key = tx.publish_key()
            assert key is not None
            peeker = threading.Thread(target=read, args=(message.attempt_id, key))
            peeker.start()
            time.sleep(0.5)  # the early read finds nothing; the waiting one is blocked
            if not commits:
                raise RuntimeError("the dispatch rolls back")
        peeker.join(10)
        assert not peeker.is_alive()
        assert seen[0] == ("plain", None)
        claim_seen = seen[1][1]
        if commits:
            assert claim_seen is not None and claim_seen.attempt_id == message.attempt_id  # type: ignore[attr-defined]
        else:
            assert claim_seen is None  # released by the rollback: nothing to run
    reader.close()
    store.close()


class _SlowReads(Store):
    """A store whose every read connection is handed out 0.1 s late."""

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        time.sleep(0.1)
        with super().read() as conn:
            yield conn


def test_a_lazy_claims_start_is_when_its_step_function_is_called(database_url: str, redis_url: str) -> None:
    # The reads before the step (the attempt, its upstream outputs) are the worker's
    # hand-off, not the step: a lazy claim's started_at comes after them.
    env = worker_env(_SlowReads(database_url), redis_url)
    store, reg = env.store, env.registry
    launch(store, reg, "lazy-6", database_url)
    [quick] = dispatch(store, reg, "lazy-6")
    assert run_attempt(env, quick) == "succeeded"
    [slow] = dispatch(store, reg, "lazy-6")  # `slow` reads `quick`'s output before it runs
    began = time.time()
    assert run_attempt(env, slow) == "succeeded"
    with store.read() as conn:
        attempt = {a.node_id: a for a in attempts_of(conn, "lazy-6")}["slow"]
    assert attempt.started_at is not None and attempt.finished_at is not None
    assert attempt.started_at - began >= 0.2  # after both slowed reads
    assert attempt.finished_at - attempt.started_at >= SLOW_S
    env.broker.close()
    store.close()


def test_starting_a_claim_moves_its_deadline_and_leaves_a_claimed_one_alone() -> None:
    lazy = Claim("a", None, "r", "wf", "rev", "n", 0, 1, {}, deadline_at=130.0, started_at=100.0)
    assert lazy.starting(105.0) == replace(lazy, started_at=105.0, deadline_at=135.0)
    assert replace(lazy, deadline_at=None).starting(105.0).deadline_at is None
    claimed = replace(lazy, claim_token="t")
    assert claimed.starting(105.0) is claimed
