"""The writer decides and a chain runs in place: real Celery workers, both stores.

An attempt claimed in place is claimed in the transaction that dispatched it (its
step's predecessor's commit), so its start time is its dispatch time; an attempt
delivered through the broker starts later, when a worker picks its message up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smithers.shared.status import AttemptState, RunStatus
from smithers.shared.store import AttemptRecord
from smithers.shared.store.queries import attempts_of
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
