"""Routing and flow control with real Celery workers and schedulers, on SQLite and
PostgreSQL: a node on its own queue runs only on a worker consuming it; one run per
customer at a time while customers run in parallel, freed slots going to the highest
priority in line, across a kill -9 of the worker mid-run (no slot leaked); a rate limit
spaces starts per key; a run's priority orders a broker backlog.
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from smithers.shared import operations
from smithers.shared.actions import DecisionConfig
from smithers.shared.status import NodeStatus, RunStatus
from smithers.shared.store import schema as s
from smithers.shared.store.advance import Decider
from smithers.shared.store.queries import nodes_of
from tests.integration.conftest import Engine

pytestmark = pytest.mark.timeout(120)


def spans(log: Path) -> dict[str, list[tuple[str, str, float, float]]]:
    """The log's lines by label: (run id, worker, start, end)."""
    found: dict[str, list[tuple[str, str, float, float]]] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        label, run_id, worker, start, end = line.split()
        found.setdefault(label, []).append((run_id, worker, float(start), float(end)))
    return found


def launch(
    engine: Engine, workflow: str, run_input: dict[str, Any], priority: int = 0, decide: bool = False
) -> str:
    """Launch a run; with ``decide``, as the gateway does: the launch sends its first steps."""
    run, _ = operations.launch(
        engine.store,
        engine.broker,
        engine.registry,
        workflow=workflow,
        run_input=run_input,
        run_id=None,
        launched_by="test",
        deployment_version="test",
        priority=priority,
        decider=Decider(engine.registry, DecisionConfig(), 500) if decide else None,
    )
    return run.run_id


def wait_for(predicate: Any, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "condition not met in time"
        time.sleep(0.05)


def gates(engine: Engine) -> tuple[dict[str, int], int]:
    """Slots held per concurrency key, and the rows left in flow_slots."""
    with engine.store.read() as conn:
        held = {
            r.key: int(r.held)
            for r in conn.execute(select(s.flow_gates).where(s.flow_gates.c.kind == "concurrency"))
        }
        slots = len(conn.execute(select(s.flow_slots.c.run_id)).all())
    return held, slots


def test_a_node_on_its_own_queue_runs_only_on_a_worker_consuming_it(
    engine_factory: Any, database_url: str, tmp_path: Path
) -> None:
    # given a worker of the steps queue only (the launch and the workers decide: no scheduler)
    engine: Engine = engine_factory(database_url)
    engine.worker("cpu", env={"T_WORKER": "cpu"})
    log = tmp_path / "gpu.log"
    run_id = launch(engine, "t-gpu", {"log": str(log)}, decide=True)
    # when the run reaches its gpu node, it waits there: no worker consumes "gpu"
    engine.wait_event(run_id, lambda e: e.type == "attempt.queued" and e.node_id == "render", timeout=30)
    time.sleep(0.5)  # time for a wrong worker to take it, if one could
    with engine.store.read() as conn:
        render = next(n for n in nodes_of(conn, run_id) if n.node_id == "render")
    assert render.status is NodeStatus.QUEUED and "render" not in spans(log)
    # then a gpu worker takes it, and the next steps-queue node goes back to the cpu worker
    engine.worker("gpu", queues="gpu", env={"T_WORKER": "gpu"})
    run = engine.wait(run_id, timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    workers = {label: rows[0][1] for label, rows in spans(log).items()}
    assert workers == {"prep": "cpu", "render": "gpu", "publish": "cpu"}
    queued = [e for e in engine.events(run_id) if e.type == "attempt.queued" and e.node_id == "render"]
    assert queued[0].payload["queue"] == "gpu"


def test_one_run_per_customer_at_a_time_across_a_kill_9(
    engine_factory: Any, database_url: str, tmp_path: Path
) -> None:
    # given customer a's first run in a long first try of its step, two more of a's runs
    # in line (the later one at a higher priority), and customer b's run
    # (a lease of 8 s and no re-send backstop: on a loaded machine a late beat of the 3 s
    # test lease lets a1's first try be taken as lost, and tried again on w1, before the kill)
    engine: Engine = engine_factory(database_url, SMITHERS_LEASE_SECONDS="8", SMITHERS_REDISPATCH_AFTER="60")
    engine.scheduler()
    engine.scheduler("scheduler2")  # the limit holds across schedulers
    engine.worker(concurrency=3, env={"T_WORKER": "w1"})
    log = tmp_path / "serve.log"
    common = {"log": str(log), "sleep": 0.5}
    a1 = launch(engine, "t-per-customer", {**common, "customer": "a", "first": 60})
    wait_for(lambda: "began" in spans(log))
    a2 = launch(engine, "t-per-customer", {**common, "customer": "a"})
    a3 = launch(engine, "t-per-customer", {**common, "customer": "a"}, priority=9)
    b1 = launch(engine, "t-per-customer", {**common, "customer": "b"})
    engine.wait(b1, timeout=60)  # b is not held back by a
    engine.wait_event(a2, lambda e: e.type == "run.throttled")
    # when the worker is killed -9 mid-step (another one started meanwhile)
    engine.worker("w2", concurrency=3, env={"T_WORKER": "w2"})
    engine.kill9("worker")
    for run_id in (a1, a2, a3, b1):
        assert engine.wait(run_id, timeout=60).status is RunStatus.SUCCEEDED
    # then a1's step was tried again on w2 (its lease lapsed) and a's runs never
    # overlapped, the priority 9 one going before the older one; no slot leaked
    served = {row[0]: row for row in spans(log)["serve"]}
    began = spans(log)["began"][0]
    assert served[a1][1] == "w2"
    order = sorted((a1, a2, a3), key=lambda r: served[r][2])
    assert order == [a1, a3, a2]
    for before, after in itertools.pairwise(order):
        assert served[after][2] >= served[before][3]
    assert began[2] < served[b1][2] < served[a1][2]  # b ran while a1's first try did
    types = [e.type for e in engine.events(a2)]
    assert types.index("run.throttled") < types.index("run.admitted") < types.index("run.running")
    assert "run.throttled" not in [e.type for e in engine.events(b1)]
    assert gates(engine) == ({"a": 0, "b": 0}, 0)


def test_launches_racing_for_one_slot_admit_one(engine_factory: Any, database_url: str) -> None:
    # given eight launches of one customer's runs at once, each deciding its run in its
    # own transaction (as eight gateway requests do), and no worker
    engine: Engine = engine_factory(database_url)
    with ThreadPoolExecutor(8) as pool:
        runs = list(
            pool.map(
                lambda i: launch(engine, "t-per-customer", {"customer": "a", "n": i}, decide=True), range(8)
            )
        )
    # then exactly one holds the slot and started; the others wait in line
    started = [r for r in runs if engine.run(r).status is not RunStatus.QUEUED]
    assert len(started) == 1
    with engine.store.read() as conn:
        states = sorted(str(r.state) for r in conn.execute(select(s.flow_slots.c.state)))
    assert states == ["held"] + ["waiting"] * 7
    assert gates(engine)[0] == {"a": 1}


def test_a_rate_limit_spaces_starts_per_key(engine_factory: Any, database_url: str, tmp_path: Path) -> None:
    # given "2/s" per customer
    engine: Engine = engine_factory(database_url)
    engine.scheduler()
    engine.worker(concurrency=3, env={"T_WORKER": "w"})
    log = tmp_path / "rate.log"
    # when customer a launches five runs at once and b one
    runs = [launch(engine, "t-rated", {"log": str(log), "customer": "a"}) for _ in range(5)]
    b1 = launch(engine, "t-rated", {"log": str(log), "customer": "b"})
    for run_id in [*runs, b1]:
        assert engine.wait(run_id, timeout=60).status is RunStatus.SUCCEEDED
    # then no two of a's starts beyond the first two fall within one second, none is
    # dropped, and b was not held back by a's rate
    started = sorted(next(e.created_at for e in engine.events(r) if e.type == "run.running") for r in runs)
    for i in range(2, len(started)):
        assert started[i] - started[i - 2] >= 0.999, started
    assert started[-1] - started[0] < 4.0  # spaced, not stalled
    assert "run.throttled" not in [e.type for e in engine.events(b1)]
    assert sum(1 for r in runs if "run.throttled" in [e.type for e in engine.events(r)]) == 3


def test_run_priority_orders_a_backlog(engine_factory: Any, database_url: str, tmp_path: Path) -> None:
    # given a backlog of steps on the broker, no worker running: three runs of priority
    # 0, then one of priority 9 (each launch sends its step)
    engine: Engine = engine_factory(database_url)
    log = tmp_path / "rank.log"
    low = [launch(engine, "t-ranked", {"log": str(log)}, decide=True) for _ in range(3)]
    high = launch(engine, "t-ranked", {"log": str(log)}, priority=9, decide=True)
    for run_id in [*low, high]:
        engine.wait_event(run_id, lambda e: e.type == "attempt.queued")
    assert engine.run(high).priority == 9
    # when a worker taking one step at a time starts
    engine.worker(concurrency=1, env={"T_WORKER": "w"})
    for run_id in [*low, high]:
        assert engine.wait(run_id, timeout=60).status is RunStatus.SUCCEEDED
    # then the high priority run's step ran first (the others in the order sent)
    order = [row[0] for row in sorted(spans(log)["rank"], key=lambda row: row[2])]
    assert order[0] == high and sorted(order[1:]) == sorted(low)


def test_bad_priority_and_missing_key_are_refused(engine_factory: Any, database_url: str) -> None:
    engine: Engine = engine_factory(database_url)
    with pytest.raises(Exception, match="priority must be an integer"):
        launch(engine, "t-ranked", {}, priority=12)
    with pytest.raises(Exception, match="input lacks 'customer'"):
        launch(engine, "t-per-customer", {})
