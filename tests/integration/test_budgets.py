"""Budgets with a real Celery worker, on SQLite and PostgreSQL: spending reported by
steps is stored per attempt and summed per run, failed attempts and retries included;
once a ceiling is reached the next step is parked before it is dispatched, waiting for an
approval; denying fails the run, a resume keeps the totals, approving with a new ceiling
runs the step; a cache hit costs nothing and is counted apart; a rewind keeps what the
discarded attempts spent; the gateway shows the spending and the metrics export it."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from smithers.shared import operations
from smithers.shared.actions import DecisionConfig
from smithers.shared.budget import SpendMeter
from smithers.shared.errors import InvalidInput
from smithers.shared.metrics import collect
from smithers.shared.registry import load_registry
from smithers.shared.status import NodeStatus, RunStatus
from smithers.shared.store import spend as spend_store
from smithers.shared.store.advance import Decider
from smithers.shared.store.queries import approvals, attempts_of, nodes_of
from tests.integration.conftest import ROOT, TEST_WORKFLOWS, Engine
from tests.integration.gateway.support import make_gateway

pytestmark = pytest.mark.timeout(180)

MODULES = f"{TEST_WORKFLOWS},tests.integration.budget_workflows"


def budget_engine(engine_factory: Any, database_url: str) -> tuple[Engine, Decider]:
    engine: Engine = engine_factory(database_url, SMITHERS_WORKFLOWS=MODULES)
    engine.registry = load_registry(MODULES, str(ROOT))
    engine.worker()
    return engine, Decider(engine.registry, DecisionConfig(), 500)


def launch(engine: Engine, decider: Decider, workflow: str, budget: Any = None) -> str:
    run, _ = operations.launch(
        engine.store,
        engine.broker,
        engine.registry,
        workflow=workflow,
        run_input={},
        run_id=None,
        launched_by="test",
        deployment_version="test",
        decider=decider,
        budget=budget,
    )
    return run.run_id


def decide_budget(engine: Engine, decider: Decider, run_id: str, approved: bool, payload: Any = None) -> None:
    operations.approve(
        engine.store,
        engine.broker,
        run_id,
        "polish",
        approved=approved,
        note="ok" if approved else "over the limit",
        actor="alice",
        payload=payload,
        decider=decider,
    )


def spending(engine: Engine, run_id: str) -> dict[str, Any]:
    with engine.store.read() as conn:
        return spend_store.spending(conn, run_id)


def test_a_ceiling_parks_the_next_step_until_an_approval_raises_it(
    engine_factory: Any, database_url: str
) -> None:
    # given a chain whose steps report spending, with a 250-token ceiling
    engine, decider = budget_engine(engine_factory, database_url)
    run_id = launch(engine, decider, "t-budget")

    # when plan fails once (100 tokens), its retry succeeds (100) and draft runs (150):
    # 350 tokens reach the ceiling, so polish is parked before it is dispatched
    engine.wait_event(run_id, lambda e: e.type == "budget.exceeded" and e.node_id == "polish", timeout=60)
    assert engine.wait(run_id, timeout=10, until={RunStatus.WAITING}).status is RunStatus.WAITING
    spent = spending(engine, run_id)["spent"]
    assert (spent["tokens_in"], spent["tokens_out"], spent["tokens"]) == (220, 130, 350)
    assert spent["cost"] == pytest.approx(0.04) and spent["attempts"] == 3
    with engine.store.read() as conn:
        parked = {n.node_id: n for n in nodes_of(conn, run_id)}["polish"]
        [pending] = approvals(conn, status="pending", run_id=run_id)
        assert parked.status is NodeStatus.OVER_BUDGET and parked.current_attempt_id is None
        assert pending.node_id == "polish" and pending.spec is not None
        assert pending.spec["budget"]["exceeded"] == ["tokens"]
        assert "350 tokens of 250 tokens" in pending.spec["description"]
    by_node = {(r["node_id"], r["attempts"]) for r in spending(engine, run_id)["by_node"]}
    assert by_node == {("plan", 2), ("draft", 1)}

    # a raise that is not a ceiling is refused with a clear error
    with pytest.raises(InvalidInput, match=r"payload\.tokens"):
        decide_budget(engine, decider, run_id, True, {"tokens": "more"})

    # when the raise is denied the run fails with budget_exceeded
    decide_budget(engine, decider, run_id, False)
    failed = engine.wait(run_id, timeout=30)
    assert failed.status is RunStatus.FAILED and failed.error is not None
    assert (failed.error["node_id"], failed.error["code"]) == ("polish", "budget_exceeded")

    # then a resume keeps the totals: polish is parked again, asking anew
    operations.resume(engine.store, engine.broker, run_id, "test", decider=decider)
    assert engine.wait(run_id, timeout=30, until={RunStatus.WAITING}).status is RunStatus.WAITING
    assert spending(engine, run_id)["spent"]["tokens"] == 350
    with engine.store.read() as conn:
        assert [a.node_id for a in approvals(conn, status="pending", run_id=run_id)] == ["polish"]

    # when it is approved with a new ceiling, polish runs and the run succeeds
    decide_budget(engine, decider, run_id, True, {"tokens": 1000})
    done = engine.wait(run_id, timeout=60)
    assert done.status is RunStatus.SUCCEEDED, done.error
    final = spending(engine, run_id)
    assert final["ceilings"] == {"tokens": 1000, "cost": None}
    assert (final["spent"]["tokens"], final["spent"]["attempts"]) == (370, 4)
    assert final["spent"]["cost"] == pytest.approx(0.045)
    types = [e.type for e in engine.events(run_id)]
    assert types.count("budget.exceeded") == 2 and types.count("budget.raised") == 1
    assert types.index("budget.raised") < len(types) - types[::-1].index("node.succeeded")

    # the gateway shows it, and the metrics export it per workflow
    with make_gateway(engine.database_url, engine.redis_url) as gw:
        body = gw.client.get(f"/v1/runs/{run_id}", headers=gw.auth("run:read")).get_json()
        assert body["spending"]["spent"]["tokens"] == 370
        assert body["spending"]["ceilings"]["tokens"] == 1000
        bad = gw.client.post(
            "/v1/runs", json={"workflow": "t-chain", "budget": {"tokens": -1}}, headers=gw.auth("run:write")
        )
        assert bad.status_code == 400 and "budget.tokens" in bad.get_json()["error"]["message"]
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collect(engine.store, None)
        for s in family.samples
    }
    assert samples[("smithers_spend_tokens_total", (("direction", "in"), ("workflow", "t-budget")))] == 230
    assert samples[("smithers_spend_cost_total", (("workflow", "t-budget"),))] == pytest.approx(0.045)


def test_cache_hits_cost_nothing_and_a_rewind_keeps_what_was_spent(
    engine_factory: Any, database_url: str
) -> None:
    engine, decider = budget_engine(engine_factory, database_url)
    # given a first run that fills the workflow's cache (think spends 0.6, report 0.1)
    first = launch(engine, decider, "t-budget-cache")
    assert engine.wait(first, timeout=60).status is RunStatus.SUCCEEDED
    assert spending(engine, first)["spent"]["cost"] == pytest.approx(0.7)

    # when a second run has a lower cost ceiling from its launch (its token ceiling removed)
    second = launch(engine, decider, "t-budget-cache", budget={"cost": 0.5, "tokens": None})
    assert engine.wait(second, timeout=60).status is RunStatus.SUCCEEDED
    # then think is a cache hit: it costs nothing and is counted apart
    got = spending(engine, second)
    assert got["ceilings"] == {"tokens": None, "cost": 0.5}
    assert got["spent"]["cost"] == pytest.approx(0.1)
    assert (got["spent"]["attempts"], got["spent"]["cached_attempts"]) == (1, 1)

    # when the second run is rewound to report, report runs again: the discarded
    # attempt's spending stays in the run's total (that money is gone)
    engine.scheduler()
    operations.time_travel(
        engine.store, engine.broker, engine.registry, action="rewind", run_id=second,
        node_id="report", caller="test", confirm=True,
    )  # fmt: skip
    deadline = time.time() + 60
    while _count(engine, second, "attempt.succeeded", "report") < 2 and time.time() < deadline:
        time.sleep(0.1)
    assert engine.wait(second, timeout=60).status is RunStatus.SUCCEEDED
    again = spending(engine, second)["spent"]
    assert again["cost"] == pytest.approx(0.2) and again["attempts"] == 2

    # given two steps parked at once, when one approval raises the ceilings, then both run
    fan = launch(engine, decider, "t-budget-fan")
    assert engine.wait(fan, timeout=60, until={RunStatus.WAITING}).status is RunStatus.WAITING
    with engine.store.read() as conn:
        assert sorted(a.node_id for a in approvals(conn, status="pending", run_id=fan)) == ["left", "right"]
    operations.approve(
        engine.store, engine.broker, fan, "left", approved=True, note=None, actor="alice",
        payload={"tokens": 500}, decider=decider,
    )  # fmt: skip
    assert engine.wait(fan, timeout=60).status is RunStatus.SUCCEEDED
    with engine.store.read() as conn:
        decided = {a.node_id: a.decided_by for a in approvals(conn, status="approved", run_id=fan)}
    assert decided == {"left": "alice", "right": "smithers:budget"}


def _count(engine: Engine, run_id: str, event: str, node_id: str) -> int:
    return sum(1 for e in engine.events(run_id) if e.type == event and e.node_id == node_id)


def test_reports_of_one_attempt_committed_at_once_add_up_in_one_row(
    engine_factory: Any, database_url: str
) -> None:
    # given a run's first attempt (no worker: the launch decides and queues it)
    engine: Engine = engine_factory(database_url, SMITHERS_WORKFLOWS=MODULES)
    engine.registry = load_registry(MODULES, str(ROOT))
    run_id = launch(engine, Decider(engine.registry, DecisionConfig(), 500), "t-budget")
    with engine.store.read() as conn:
        attempt_id = attempts_of(conn, run_id)[0].attempt_id

    # when eight commits of that attempt's result (redeliveries) report spending at once
    def report(i: int) -> None:
        meter = SpendMeter()
        meter.add(tokens_in=i, tokens_out=1, cost=0.5)
        with engine.store.write() as tx:
            spend_store.record(tx, attempt_id, meter)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(report, range(1, 9)))
    # then none failed and their reports add up in the attempt's one row
    spent = spending(engine, run_id)["spent"]
    assert (spent["tokens_in"], spent["tokens_out"], spent["attempts"]) == (36, 8, 1)
    assert spent["cost"] == pytest.approx(4.0)
