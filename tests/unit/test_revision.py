"""A revision's graph as plain data: stored, rebuilt without functions, compared."""

from __future__ import annotations

from typing import Any

from smithers.shared.revision import conflicts, graph_of, skeleton
from smithers.shared.store.timetravel import reopened
from smithers.shared.workflow import NodeKind, Workflow


def build() -> Workflow:
    wf = Workflow("shapes", version="3")

    @wf.task()
    def fetch(ctx: Any) -> int:
        return 1

    @wf.task()
    def left(ctx: Any) -> int:
        return 2

    @wf.task()
    def right(ctx: Any) -> int:
        return 3

    def pick(ctx: Any) -> str:
        return "a"

    def enough(ctx: Any) -> bool:
        return True

    wf.branch("route", choose=pick, paths={"a": [left], "b": [right]}, after=[fetch])
    wf.loop("again", body=["step"], until=enough, max_iterations=3, after=[left])

    @wf.task("step")
    def step(ctx: Any) -> int:
        return 4

    wf.validate()
    return wf


def test_the_stored_graph_names_kinds_edges_and_conditions() -> None:
    graph = graph_of(build())
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert graph["workflow"] == "shapes" and graph["version"] == "3"
    assert nodes["route"]["kind"] == "branch" and nodes["route"]["paths"] == {"a": ["left"], "b": ["right"]}
    assert nodes["route"]["condition"].endswith("pick")
    assert nodes["again"]["body"] == ["step"] and nodes["again"]["condition"].endswith("enough")
    assert nodes["left"]["after"] == ["route"] and nodes["step"]["loop"] == "again"


def test_a_skeleton_walks_like_the_workflow_and_has_no_functions() -> None:
    wf = build()
    bones = skeleton(graph_of(wf))
    assert bones.order == wf.order
    assert {n: bones.nodes[n].kind for n in bones.order} == {n: wf.nodes[n].kind for n in wf.order}
    assert all(bones.nodes[n].fn is None and bones.nodes[n].choose is None for n in bones.order)
    assert reopened(bones, "left") == reopened(wf, "left")


def test_conflicts_list_nodes_that_ran_and_are_missing_or_changed_kind() -> None:
    graph = graph_of(build())
    assert conflicts([("fetch", "task"), ("route", "branch")], graph) == []
    found = conflicts([("fetch", "approval"), ("gone", "task"), ("fetch", "approval")], graph)
    assert found == [
        {"node_id": "fetch", "kind": "approval", "problem": "is a task in the target revision"},
        {"node_id": "gone", "kind": "task", "problem": "missing in the target revision"},
    ]
    assert NodeKind("task") is NodeKind.TASK
