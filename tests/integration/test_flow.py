"""Routing and flow control with real Celery workers and schedulers, on SQLite and
PostgreSQL: a node on its own queue runs only on a worker consuming it; one run per
customer at a time while customers run in parallel, freed slots going to the highest
priority in line; the limit holds across a kill -9 of the worker mid-run (no slot
leaked); a rate limit spaces starts; a run's priority orders a broker backlog.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from smithers.shared import operations
from smithers.shared.status import NodeStatus, RunStatus
from smithers.shared.store import schema as s
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


def launch(engine: Engine, workflow: str, run_input: dict[str, Any], priority: int = 0) -> str:
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
    # given a scheduler and a worker of the steps queue only
    engine: Engine = engine_factory(database_url)
    engine.scheduler()
    engine.worker("cpu", env={"T_WORKER": "cpu"})
    log = tmp_path / "gpu.log"
    run_id = engine.launch("t-gpu", {"log": str(log)})
    # when the run reaches its gpu node, it waits there: no worker consumes "gpu"
    engine.wait_event(run_id, lambda e: e.type == "attempt.queued" and e.node_id == "render", timeout=30)
    time.sleep(1.0)  # time for a wrong worker to take it, if one could
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


def test_one_run_per_customer_at_a_time_customers_in_parallel(
    engine_factory: Any, database_url: str, tmp_path: Path
) -> None:
    # given a scheduler and a worker with room for three steps at once
    engine: Engine = engine_factory(database_url)
    engine.scheduler()
    engine.worker(concurrency=3, env={"T_WORKER": "w"})
    log = tmp_path / "serve.log"
    common = {"log": str(log), "sleep": 1.0}
    # when customer a launches three runs (the third at a higher priority) and b one
    a1 = launch(engine, "t-per-customer", {**common, "customer": "a"})
    b1 = launch(engine, "t-per-customer", {**common, "customer": "b"})
    engine.wait(a1, until={RunStatus.RUNNING})
    a2 = launch(engine, "t-per-customer", {**common, "customer": "a"})
    a3 = launch(engine, "t-per-customer", {**common, "customer": "a"}, priority=9)
    for run_id in (a1, a2, a3, b1):
        assert engine.wait(run_id, timeout=60).status is RunStatus.SUCCEEDED
    # then a's runs never overlapped, the priority 9 one went before the older one,
    # and b ran alongside a's first
    served = {row[0]: row for row in spans(log)["serve"]}
    order = sorted((a1, a2, a3), key=lambda r: served[r][2])
    assert order == [a1, a3, a2]
    for before, after in itertools.pairwise(order):
        assert served[after][2] >= served[before][3]
    assert served[b1][2] < served[a1][3] and served[a1][2] < served[b1][3]
    types = [e.type for e in engine.events(a2)]
    assert types.index("run.throttled") < types.index("run.admitted") < types.index("run.running")
    assert "run.throttled" not in [e.type for e in engine.events(b1)]
    assert gates(engine) == ({"a": 0, "b": 0}, 0)


def test_the_limit_holds_after_a_worker_is_killed_mid_run(
    engine_factory: Any, database_url: str, tmp_path: Path
) -> None:
    # given a run of customer a in its step, and a second one in line behind it
    engine: Engine = engine_factory(database_url)
    engine.scheduler()
    engine.worker(env={"T_WORKER": "w1"})
    log = tmp_path / "kill.log"
    a1 = launch(engine, "t-per-customer", {"log": str(log), "customer": "a", "first": 60})
    wait_for(lambda: "began" in spans(log))
    a2 = launch(engine, "t-per-customer", {"log": str(log), "customer": "a"})
    engine.wait_event(a2, lambda e: e.type == "run.throttled")
    # when the worker is killed -9 mid-step and another starts
    engine.kill9("worker")
    engine.worker("w2", env={"T_WORKER": "w2"})
    # then the first run's step is retried (lost lease) and ends before the second starts
    assert engine.wait(a1, timeout=60).status is RunStatus.SUCCEEDED
    assert engine.wait(a2, timeout=60).status is RunStatus.SUCCEEDED
    served = {row[0]: row for row in spans(log)["serve"]}
    assert served[a1][1] == "w2" and served[a2][2] >= served[a1][3]
    assert gates(engine) == ({"a": 0}, 0)  # no slot leaked


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
    # 0, then one of priority 9
    engine: Engine = engine_factory(database_url)
    engine.scheduler()
    log = tmp_path / "rank.log"
    low = [launch(engine, "t-ranked", {"log": str(log)}) for _ in range(3)]
    high = launch(engine, "t-ranked", {"log": str(log)}, priority=9)
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
