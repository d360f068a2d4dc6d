"""The writer decides and a chain runs in place: real Celery workers, both stores.

An attempt claimed in place is claimed in the transaction that dispatched it (its
step's predecessor's commit), so its start time is its dispatch time; an attempt
delivered through the broker starts later, when a worker picks its message up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event

from smithers.shared import StepContext, Workflow, operations
from smithers.shared.actions import DecisionConfig
from smithers.shared.broker import Broker
from smithers.shared.config import WorkerConfig
from smithers.shared.registry import Registry
from smithers.shared.status import AttemptState, RunStatus
from smithers.shared.store import AttemptRecord, Store
from smithers.shared.store.advance import decide_loaded
from smithers.shared.store.queries import attempts_of, get_run
from smithers.shared.store.state import apply_decision, load_run_view
from smithers.workers.step import WorkerEnv, run_attempt
from tests.integration.conftest import Engine

STEPS = [f"s{k}" for k in range(10)]


def attempts(engine: Engine, run_id: str) -> list[AttemptRecord]:
    with engine.store.read() as conn:
        return sorted(attempts_of(conn, run_id), key=lambda a: (a.dispatched_at, a.number))


def in_place(found: list[AttemptRecord]) -> list[str]:
    """Nodes whose attempt was claimed in the transaction that dispatched it."""
    return [a.node_id for a in found if a.started_at == a.dispatched_at]


def effects(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_chain_runs_in_place_on_one_worker_with_no_scheduler(
    engine_factory: Any, database_url: str, tmp_path: Path
) -> None:
    # given a worker and no scheduler at all: the launch decides and sends s0
    eng: Engine = engine_factory(database_url)
    eng.worker()
    run_id = eng.launch("t-long-chain", {"effects": str(tmp_path / "fx")}, decide=True)

    run = eng.wait(run_id, timeout=90)

    # then each step's commit decided the next and the worker ran it in place
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert run.output == {"s9": 9}
    found = attempts(eng, run_id)
    assert [a.node_id for a in found] == STEPS
    assert all(a.state is AttemptState.SUCCEEDED for a in found)
    assert in_place(found) == STEPS[1:]  # s0 came through the broker, from the launch
    seqs = [e.seq for e in eng.events(run_id)]
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_chain_in_place_is_bounded_per_delivered_message(engine_factory: Any, database_url: str) -> None:
    # given at most 3 steps in place per delivered message
    eng: Engine = engine_factory(database_url, SMITHERS_CHAIN_STEPS="3")
    eng.worker()
    run_id = eng.launch("t-long-chain", decide=True)

    run = eng.wait(run_id, timeout=90)

    # then every fourth step went back through the broker
    assert run.status is RunStatus.SUCCEEDED, run.error
    found = attempts(eng, run_id)
    assert sorted(set(STEPS) - set(in_place(found))) == ["s0", "s4", "s8"]


def test_writers_leave_decisions_to_the_scheduler_when_told_to(
    engine_factory: Any, database_url: str
) -> None:
    # given writers that never decide (SMITHERS_DECIDE_MAX_NODES=0): the old division of labour
    eng: Engine = engine_factory(database_url, SMITHERS_DECIDE_MAX_NODES="0")
    eng.scheduler()
    eng.worker()
    run_id = eng.launch("t-long-chain")

    run = eng.wait(run_id, timeout=90)

    # then the scheduler dispatched every step through the broker
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert in_place(attempts(eng, run_id)) == []


def test_kill_9_in_the_middle_of_an_in_place_chain_commits_every_step_once(
    engine_factory: Any, database_url: str, tmp_path: Path
) -> None:
    # given a chain whose fifth step, run in place, sleeps on its first attempt
    eng: Engine = engine_factory(database_url)
    eng.scheduler()
    eng.worker()
    fx = tmp_path / "fx"
    run_id = eng.launch("t-long-chain", {"effects": str(fx), "slow": "s4", "slow_s": 60}, decide=True)
    eng.wait_event(run_id, lambda e: e.type == "attempt.started" and e.node_id == "s4", timeout=60)

    # when its worker is killed -9 while s4 runs, and another worker starts
    eng.kill9("worker")
    eng.worker("worker-2")
    run = eng.wait(run_id, timeout=120)

    # then the run finished as without the crash, every node committed exactly once
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert run.output == {"s9": 9}
    found = attempts(eng, run_id)
    succeeded = [a.node_id for a in found if a.state is AttemptState.SUCCEEDED]
    assert sorted(succeeded) == sorted(STEPS)
    killed = [a for a in found if a.node_id == "s4" and a.state is not AttemptState.SUCCEEDED]
    assert len(killed) == 1 and killed[0].started_at == killed[0].dispatched_at  # it ran in place
    node_done = [e.node_id for e in eng.events(run_id) if e.type == "node.succeeded"]
    assert sorted(node_done) == sorted(STEPS)
    lines = effects(fx)
    for n in STEPS[:4] + STEPS[5:]:  # every other step's body ran once, s5 on in place again
        assert (lines.count(f"start:{n}:0"), lines.count(f"end:{n}:0")) == (1, 1), lines
    # the killed body, then its re-run: at least once more (a re-sent message may run
    # it twice while the new worker starts; only one of them commits)
    assert lines.count("start:s4:0") >= 2 and lines.count("end:s4:0") >= 1, lines
    seqs = [e.seq for e in eng.events(run_id)]
    assert seqs == list(range(1, len(seqs) + 1))


def pair() -> Registry:
    wf = Workflow("in-place-pair")

    @wf.task()
    def first(ctx: StepContext) -> tuple[int, dict[str, tuple[int, ...]]]:
        return (1, {"b": (2, 3)})

    @wf.task(after=[first])
    def second(ctx: StepContext) -> dict[str, Any]:
        got = ctx.outputs["first"]
        return {"got": got, "kinds": [type(got).__name__, type(got[1]["b"]).__name__]}

    reg = Registry()
    reg.register(wf, "tests", "rev1")
    return reg


def test_a_step_run_in_place_gets_its_parents_output_as_the_store_holds_it_unread(
    database_url: str, redis_url: str
) -> None:
    # given a two-step run whose first step was sent to a worker that decides (one process:
    # the store and Redis are real, the step function is called here)
    reg = pair()
    store = Store(database_url)
    store.migrate()
    env = WorkerEnv(store, Broker(redis_url), reg, WorkerConfig(lease_s=30), "w-test")
    run, _ = operations.launch(
        store, None, reg, workflow="in-place-pair", run_input={}, run_id=None, launched_by="t",
        deployment_version="v", decider=None,
    )  # fmt: skip
    with store.write() as tx:
        loaded = load_run_view(tx, run.run_id)
        assert loaded is not None
        decision = decide_loaded(tx, reg.get("in-place-pair").workflow, loaded[0], DecisionConfig())
        [message] = apply_decision(tx, run.run_id, decision, "in-place-pair", "rev1")
    outputs_read: list[str] = []

    def watch(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        if "FROM outputs" in sql:
            outputs_read.append(sql)

    event.listen(store.engine, "before_cursor_execute", watch)
    try:
        # when the worker runs it: its commit decides the run and takes the second step
        assert run_attempt(env, message.attempt_id) == "succeeded"
    finally:
        event.remove(store.engine, "before_cursor_execute", watch)

    # then the second step ran in place and saw its parent's output as a read would give
    # it (lists, not tuples), handed over from the commit: no output was read back
    with store.read() as conn:
        found = sorted(attempts_of(conn, run.run_id), key=lambda a: a.dispatched_at)
        done = get_run(conn, run.run_id)
    assert [a.node_id for a in in_place_of(found)] == ["second"]
    assert done is not None and done.status is RunStatus.SUCCEEDED, done
    assert done.output == {"second": {"got": [1, {"b": [2, 3]}], "kinds": ["list", "list"]}}
    assert outputs_read == []  # the run's result too was decided from the output in hand
    env.broker.close()
    store.close()


def in_place_of(found: list[AttemptRecord]) -> list[AttemptRecord]:
    return [a for a in found if a.started_at == a.dispatched_at]
