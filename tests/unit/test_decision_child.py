"""The child node's decision, on plain data: a ready child node launches its child with
the input its function computes (or the parent's), runs while the child runs, takes the
child's output when it succeeds, fails when it fails or is cancelled, and a parent's
cancel asks a live child to cancel. Child run ids are derived, stable and valid."""

from __future__ import annotations

from typing import Any

import pytest

from smithers.shared.actions import (
    CancelChild,
    ChildView,
    Decision,
    LaunchChild,
    NodeView,
    RunView,
    SetNode,
    SetRun,
)
from smithers.shared.child import child_run_id
from smithers.shared.context import DecisionContext
from smithers.shared.decision import decide
from smithers.shared.errors import InvalidWorkflow
from smithers.shared.registry import Registry
from smithers.shared.revision import graph_of, skeleton
from smithers.shared.status import NodeStatus, RunStatus
from smithers.shared.store.runs import RUN_ID
from smithers.shared.workflow import NodeKind, Workflow

NOW = 1000.0


def noop(ctx: object) -> None:
    return None


def parent(input_fn: Any = None) -> Workflow:
    wf = Workflow("parent")
    wf.task("a")(noop)
    wf.child("sub", workflow="kid", input=input_fn, after=["a"])
    wf.task("b", after=["sub"])(noop)
    Registry().register(wf)
    return wf


def view(*nodes: NodeView, child: ChildView | None = None, cancel: bool = False) -> RunView:
    return RunView(
        "r1",
        RunStatus.RUNNING,
        {"topic": "x"},
        {(n.node_id, n.iteration): n for n in nodes},
        cancel_requested=cancel,
        children={("sub", 0): child} if child is not None else {},
    )


def of(d: Decision, kind: type[Any]) -> list[Any]:
    return [a for a in d.actions if isinstance(a, kind)]


A_DONE = NodeView("a", 0, NodeStatus.SUCCEEDED)
SUB_RUNNING = NodeView("sub", 0, NodeStatus.RUNNING)


def test_a_ready_child_node_launches_its_child_with_the_computed_input() -> None:
    seen: list[DecisionContext] = []

    def make_input(ctx: DecisionContext) -> dict[str, Any]:
        seen.append(ctx)
        return {"n": ctx.outputs["a"]["n"] * 10, "topic": ctx.input["topic"]}

    d = decide(parent(make_input), view(A_DONE), {("a", 0): {"n": 4}}, NOW)
    [node] = of(d, SetNode)
    assert (node.node_id, node.status, node.kind) == ("sub", NodeStatus.RUNNING, NodeKind.CHILD)
    [launch] = of(d, LaunchChild)
    assert launch == LaunchChild("sub", 0, "kid", {"n": 40, "topic": "x"})
    # the node's row is written before the launch (a launch that fails, fails that row)
    assert d.actions.index(node) < d.actions.index(launch)
    assert seen[0].node_id == "sub" and seen[0].outputs == {"a": {"n": 4}}
    # the parent runs (it is not waiting for a person) and needs no wake-up: the child's end decides it
    assert [a.status for a in of(d, SetRun)] == []
    assert d.wake_at is None


def test_without_an_input_function_the_child_gets_the_parents_input() -> None:
    d = decide(parent(), view(A_DONE), {}, NOW)
    [launch] = of(d, LaunchChild)
    assert launch.input == {"topic": "x"}


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda ctx: 1 / 0, "ZeroDivisionError"),
        (lambda ctx: ["not", "an", "object"], "not a JSON object"),
        (lambda ctx: {"x": float("nan")}, "input.x is not a finite number"),
    ],
)
def test_an_input_function_that_fails_fails_the_node_and_launches_nothing(fn: Any, message: str) -> None:
    d = decide(parent(fn), view(A_DONE), {("a", 0): None}, NOW)
    assert of(d, LaunchChild) == []
    [node] = of(d, SetNode)
    assert node.status is NodeStatus.FAILED and node.error is not None
    assert node.error["code"] == "child_input_error"
    assert message in node.error["message"]
    [run] = of(d, SetRun)
    assert run.status is RunStatus.FAILED


def test_a_running_child_node_waits_while_its_child_runs() -> None:
    child = ChildView("child-1", RunStatus.RUNNING)
    d = decide(parent(), view(A_DONE, SUB_RUNNING, child=child), {}, NOW)
    assert d.actions == ()
    assert d.wake_at is None


def test_a_running_child_node_without_a_child_on_record_asks_for_it_again() -> None:
    d = decide(parent(), view(A_DONE, SUB_RUNNING), {}, NOW)
    [launch] = of(d, LaunchChild)  # the store finds the live child, if it has one
    assert launch.node_id == "sub"


def test_the_childs_output_completes_the_node_and_the_next_step_starts() -> None:
    child = ChildView("child-1", RunStatus.SUCCEEDED, output={"leaf": {"v": 2}})
    d = decide(parent(), view(A_DONE, SUB_RUNNING, child=child), {}, NOW)
    [node] = of(d, SetNode)
    assert (node.node_id, node.status, node.output) == ("sub", NodeStatus.SUCCEEDED, {"leaf": {"v": 2}})
    assert node.payload == {"child_run_id": "child-1"}
    assert [a.node_id for a in d.actions if type(a).__name__ == "Dispatch"] == ["b"]


@pytest.mark.parametrize("status", [RunStatus.FAILED, RunStatus.CANCELLED])
def test_a_child_that_fails_or_is_cancelled_fails_the_node(status: RunStatus) -> None:
    child = ChildView("child-1", status, error={"code": "boom", "node_id": "x"})
    d = decide(parent(), view(A_DONE, SUB_RUNNING, child=child), {}, NOW)
    [node] = of(d, SetNode)
    assert node.status is NodeStatus.FAILED and node.error is not None
    assert node.error["code"] == "child_failed" and node.error["child_run_id"] == "child-1"
    assert node.error["child_error"] == {"code": "boom", "node_id": "x"}
    [run] = of(d, SetRun)
    assert run.status is RunStatus.FAILED and run.error is not None
    assert (run.error["node_id"], run.error["code"]) == ("sub", "child_failed")


def test_continue_on_fail_lets_the_parent_go_on() -> None:
    wf = Workflow("parent")
    wf.child("sub", workflow="kid", continue_on_fail=True)
    wf.task("b", after=["sub"])(noop)
    Registry().register(wf)
    child = ChildView("child-1", RunStatus.FAILED)
    d = decide(wf, view(SUB_RUNNING, child=child), {}, NOW)
    assert [a.node_id for a in d.actions if type(a).__name__ == "Dispatch"] == ["b"]


def test_cancelling_the_parent_asks_its_live_child_to_cancel() -> None:
    child = ChildView("child-1", RunStatus.RUNNING)
    d = decide(parent(), view(A_DONE, SUB_RUNNING, child=child, cancel=True), {}, NOW)
    assert of(d, CancelChild) == [CancelChild("sub", 0, "child-1")]
    assert [(a.node_id, a.status) for a in of(d, SetNode)] == [("sub", NodeStatus.CANCELLED)]
    assert [a.status for a in of(d, SetRun)] == [RunStatus.CANCELLED]
    # a child asked already, or ended, is not asked again
    for other in (
        ChildView("child-1", RunStatus.RUNNING, cancel_requested=True),
        ChildView("c", RunStatus.SUCCEEDED),
    ):
        again = decide(parent(), view(A_DONE, SUB_RUNNING, child=other, cancel=True), {}, NOW)
        assert of(again, CancelChild) == []


def test_child_run_ids_are_derived_stable_and_valid() -> None:
    first = child_run_id("run-abc", "sub", 0)
    assert first == child_run_id("run-abc", "sub", 0)  # the same in every process
    assert RUN_ID.fullmatch(first) and first.startswith("child-")
    others = {
        child_run_id("run-abc", "sub", 1),
        child_run_id("run-abc", "sub", 0, epoch=1),
        child_run_id("run-abd", "sub", 0),
        child_run_id("run-abc", "other", 0),
    }
    assert first not in others and len(others) == 4
    assert child_run_id("r" * 64, "n" * 64, 10**6, 10**6).__len__() <= 64


def test_declaring_a_child_node_checks_the_workflow_name_and_input() -> None:
    wf = Workflow("p")
    with pytest.raises(InvalidWorkflow, match="workflow must match"):
        wf.child("sub", workflow="Not A Name")
    with pytest.raises(InvalidWorkflow, match="input must be a function"):
        wf.child("sub", workflow="kid", input={"n": 1})  # type: ignore[arg-type]


def test_the_stored_graph_keeps_the_child_workflow() -> None:
    graph = graph_of(parent())
    [sub] = [n for n in graph["nodes"] if n["id"] == "sub"]
    assert (sub["kind"], sub["workflow"]) == ("child", "kid")
    assert skeleton(graph).nodes["sub"].child_workflow == "kid"
