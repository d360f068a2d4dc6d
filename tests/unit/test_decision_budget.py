"""Budgets on plain data: the ceilings and their checks, a dispatch parked when the
run's spending reached a ceiling (first attempt and retry alike), and a parked step
moved on by its approval (raised: dispatched; denied: failed)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from smithers.shared.actions import (
    AttemptView,
    Dispatch,
    NodeView,
    ParkOnBudget,
    RunView,
    SetBudget,
    SetNode,
    SetRun,
    SettleBudgetApproval,
)
from smithers.shared.approval import check_payload
from smithers.shared.budget import Budget, SpendMeter, Spent, exceeded
from smithers.shared.context import StepContext
from smithers.shared.decision import decide
from smithers.shared.errors import InvalidInput, InvalidWorkflow
from smithers.shared.registry import Registry
from smithers.shared.status import AttemptState, NodeStatus, RunStatus
from smithers.shared.workflow import Workflow

NOW = 1000.0


def noop(ctx: object) -> None:
    return None


def chain(retries: int = 0) -> Workflow:
    wf = Workflow("spender", budget=Budget(tokens=100))
    wf.task("a", retries=retries, retry_delay_s=0)(noop)
    wf.task("b", after=["a"], retries=retries, retry_delay_s=0)(noop)
    Registry().register(wf)
    return wf


def view(*nodes: NodeView, budget: Budget | None = Budget(tokens=100), spent: Spent | None = None) -> RunView:
    return RunView(
        "r1",
        RunStatus.RUNNING,
        {},
        {(n.node_id, n.iteration): n for n in nodes},
        budget=budget,
        spent=spent or Spent(),
    )


def of(d: Any, kind: type) -> list[Any]:
    return [a for a in d.actions if isinstance(a, kind)]


def test_ceilings_are_checked_and_merged() -> None:
    assert exceeded(Budget(tokens=10, cost=1.0), Spent(4, 5, 0.5)) == ()
    assert exceeded(Budget(tokens=10, cost=1.0), Spent(5, 5, 1.5)) == ("tokens", "cost")
    assert exceeded(None, Spent(10**9, 0, 1e9)) == ()
    merged = Budget(tokens=10, cost=2.0).merged({"tokens": 50, "cost": None})
    assert merged == Budget(tokens=50)
    for bad in ({"tokens": -1}, {"tokens": 1.5}, {"cost": "x"}, {"dollars": 1}, [1]):
        with pytest.raises(InvalidInput):
            Budget().merged(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidWorkflow):
        Budget(tokens=-5)
    with pytest.raises(InvalidWorkflow, match=r"smithers\.Budget"):
        Workflow("w", budget={"tokens": 1})  # type: ignore[arg-type]


def test_a_step_reports_what_it_spends_and_reports_add_up() -> None:
    ctx = StepContext("r1", "a", 0, 1, {}, {})
    ctx.spend(tokens_in=10, tokens_out=5, cost=0.25)
    ctx.spend(tokens_in=1)
    m = ctx.meter
    assert (m.tokens_in, m.tokens_out, m.cost, m.reported) == (11, 5, 0.25, True)
    with pytest.raises(InvalidInput):
        ctx.spend(tokens_in=-1)
    assert SpendMeter().reported is False


def test_a_covered_step_is_dispatched() -> None:
    d = decide(chain(), view(NodeView("a", 0, NodeStatus.SUCCEEDED), spent=Spent(50, 49)), {}, NOW)
    assert [(a.node_id, a.reason) for a in of(d, Dispatch)] == [("b", "start")]
    assert of(d, ParkOnBudget) == []


def test_a_step_the_ceiling_no_longer_covers_is_parked_and_the_run_waits() -> None:
    d = decide(chain(), view(NodeView("a", 0, NodeStatus.SUCCEEDED), spent=Spent(60, 40, 0.5, 1)), {}, NOW)
    assert of(d, Dispatch) == []
    [node] = of(d, SetNode)
    assert (node.node_id, node.status, node.event) == ("b", NodeStatus.OVER_BUDGET, "budget.exceeded")
    assert node.payload["exceeded"] == ["tokens"]
    [park] = of(d, ParkOnBudget)
    assert (park.node_id, park.spec["reason"], park.spec["budget"]["spent"]["tokens"]) == ("b", "start", 100)
    check_payload(park.spec, True, {"tokens": 500})  # the approver sends new ceilings
    with pytest.raises(InvalidInput):
        check_payload(park.spec, True, {"tokens": "lots"})
    assert [a.status for a in of(d, SetRun)] == [RunStatus.WAITING]


def test_a_retry_is_parked_too_and_keeps_its_failure_count() -> None:
    failed = AttemptView("att1", AttemptState.FAILED, 1, NOW - 5, error={"message": "boom"})
    running = NodeView("a", 0, NodeStatus.RUNNING, attempt=failed)
    d = decide(chain(retries=2), view(running, spent=Spent(100)), {}, NOW)
    [node] = of(d, SetNode)
    assert (node.status, node.failures) == (NodeStatus.OVER_BUDGET, 1)
    assert of(d, ParkOnBudget)[0].spec["reason"] == "retry"


def test_without_ceilings_nothing_is_parked() -> None:
    done = NodeView("a", 0, NodeStatus.SUCCEEDED)
    d = decide(chain(), view(done, budget=None, spent=Spent(10**6)), {}, NOW)
    assert [a.node_id for a in of(d, Dispatch)] == ["b"]


def parked(decision: dict[str, Any] | None) -> NodeView:
    spec = {"reason": "retry", "budget": {"exceeded": ["tokens"]}}
    attempt = AttemptView("att1", AttemptState.FAILED, 1, NOW - 5)
    row = None if decision is None else {"spec": spec, **decision}
    return NodeView("a", 0, NodeStatus.OVER_BUDGET, failures=1, attempt=attempt, decision=row)


def test_a_parked_step_waits_for_its_approval() -> None:
    for row in (None, {"status": "pending"}):
        d = decide(chain(retries=2), view(parked(row), spent=Spent(100)), {}, NOW)
        assert of(d, Dispatch) == [] and of(d, SetNode) == [] and of(d, ParkOnBudget) == []


def test_approving_with_new_ceilings_raises_them_and_dispatches_the_step() -> None:
    row = {"status": "approved", "decided_by": "alice", "payload": {"tokens": 1000}}
    d = decide(chain(retries=2), view(parked(row), spent=Spent(100)), {}, NOW)
    [raised] = of(d, SetBudget)
    assert (raised.budget, raised.by) == (Budget(tokens=1000), "alice")
    [dispatch] = of(d, Dispatch)
    assert (dispatch.node_id, dispatch.reason, dispatch.number) == ("a", "retry", 2)
    assert [a.status for a in of(d, SetRun)] == []  # running already


def test_a_raise_that_still_does_not_cover_parks_the_step_again() -> None:
    row = {"status": "approved", "decided_by": "alice", "payload": {"tokens": 150}}
    d = decide(chain(retries=2), view(parked(row), spent=Spent(200)), {}, NOW)
    assert [a.budget for a in of(d, SetBudget)] == [Budget(tokens=150)]
    assert of(d, Dispatch) == []
    assert [a.node_id for a in of(d, ParkOnBudget)] == ["a"]


def test_denying_fails_the_step_and_the_run() -> None:
    row = {"status": "denied", "decided_by": "bob", "note": "too expensive"}
    d = decide(chain(retries=2), view(parked(row), spent=Spent(100)), {}, NOW)
    [node] = of(d, SetNode)
    assert node.status is NodeStatus.FAILED
    assert node.error is not None and node.error["code"] == "budget_exceeded"
    assert node.error["note"] == "too expensive"
    [run] = of(d, SetRun)
    assert run.status is RunStatus.FAILED and run.error is not None
    assert run.error["code"] == "budget_exceeded"


def test_cancel_ends_a_parked_step() -> None:
    v = view(parked({"status": "pending"}), spent=Spent(100))
    d = decide(chain(retries=2), replace(v, cancel_requested=True), {}, NOW)
    assert [(a.node_id, a.status) for a in of(d, SetNode)] == [("a", NodeStatus.CANCELLED)]
    assert [a.status for a in of(d, SetRun)] == [RunStatus.CANCELLED]


def test_a_launch_overrides_the_workflows_ceilings_by_name() -> None:
    from smithers.shared.operations import launch_budget, parse_budget

    wf = Workflow("w", budget=Budget(tokens=100, cost=2.0))
    assert launch_budget(wf, None) == Budget(tokens=100, cost=2.0)
    assert launch_budget(wf, {"cost": 0.5}) == Budget(tokens=100, cost=0.5)
    assert launch_budget(wf, {"tokens": None, "cost": None}) is None
    assert launch_budget(Workflow("v"), {"tokens": 7}) == Budget(tokens=7)
    assert parse_budget('{"tokens": 5}') == {"tokens": 5}
    for bad in ("[1]", "{", '{"tokens": -1}', '{"euros": 1}'):
        with pytest.raises(InvalidInput):
            parse_budget(bad)


def test_one_raise_releases_every_step_it_covers() -> None:
    wf = Workflow("fan", budget=Budget(tokens=100))
    wf.task("a")(noop)
    wf.task("b", after=["a"])(noop)
    wf.task("c", after=["a"])(noop)
    Registry().register(wf)
    spec = {"reason": "start"}
    b = NodeView("b", 0, NodeStatus.OVER_BUDGET, decision={"status": "approved", "spec": spec,
                 "decided_by": "alice", "payload": {"tokens": 500}})  # fmt: skip
    c = NodeView("c", 0, NodeStatus.OVER_BUDGET, decision={"status": "pending", "spec": spec})
    d = decide(wf, view(NodeView("a", 0, NodeStatus.SUCCEEDED), b, c, spent=Spent(100)), {}, NOW)
    assert [a.node_id for a in of(d, Dispatch)] == ["b", "c"]
    assert [(a.node_id, a.note) for a in of(d, SettleBudgetApproval)] == [("c", "the ceilings were raised")]
