"""Workflow registration refuses bad graphs with an error naming the node."""

from __future__ import annotations

from typing import Any

import pytest

from smithers.shared.context import UpstreamOutputs
from smithers.shared.errors import InvalidWorkflow
from smithers.shared.graph import output_iteration
from smithers.shared.registry import Registry
from smithers.shared.workflow import Workflow


def noop(ctx: object) -> None:
    return None


def test_duplicate_node_id_is_refused_naming_it() -> None:
    wf = Workflow("dup")
    wf.task("a")(noop)
    with pytest.raises(InvalidWorkflow, match="duplicate node id 'a'"):
        wf.task("a")(noop)


def test_unknown_dependency_is_refused_naming_both_nodes() -> None:
    wf = Workflow("unknown")
    wf.task("a", after=["ghost"])(noop)
    with pytest.raises(InvalidWorkflow, match="node 'a' depends on unknown node 'ghost'"):
        Registry().register(wf)


def test_cycle_is_refused_naming_a_node_on_it() -> None:
    wf = Workflow("cycle")
    wf.task("a", after=["c"])(noop)
    wf.task("b", after=["a"])(noop)
    wf.task("c", after=["b"])(noop)
    wf.task("d")(noop)
    with pytest.raises(InvalidWorkflow, match=r"cycle through node 'a' \(a, b, c\)"):
        Registry().register(wf)


def test_self_dependency_is_refused() -> None:
    wf = Workflow("selfdep")
    wf.task("a", after=["a"])(noop)
    with pytest.raises(InvalidWorkflow, match="'a' depends on itself"):
        Registry().register(wf)


def test_bad_ids_and_names_are_refused() -> None:
    with pytest.raises(InvalidWorkflow):
        Workflow("Bad Name")
    wf = Workflow("ok")
    with pytest.raises(InvalidWorkflow, match="node id"):
        wf.task("Has Space")(noop)


def test_body_nodes_may_not_depend_outside_their_loop() -> None:
    wf = Workflow("loopdep")
    wf.task("outside")(noop)
    wf.task("inner", after=["outside"])(noop)
    wf.loop("l", body=["inner"], until=lambda ctx: True, max_iterations=2, after=["outside"])
    with pytest.raises(InvalidWorkflow, match="node 'inner' in loop 'l' depends on 'outside'"):
        Registry().register(wf)


def test_nodes_outside_may_not_depend_on_loop_body() -> None:
    wf = Workflow("loopdep2")
    wf.task("inner")(noop)
    wf.loop("l", body=["inner"], until=lambda ctx: True, max_iterations=2)
    wf.task("after_it", after=["inner"])(noop)
    with pytest.raises(InvalidWorkflow, match="depend on the loop 'l' instead"):
        Registry().register(wf)


def test_loops_do_not_nest() -> None:
    wf = Workflow("nest")
    wf.task("x")(noop)
    wf.loop("inner", body=["x"], until=lambda ctx: True, max_iterations=2)
    wf.loop("outer", body=["inner"], until=lambda ctx: True, max_iterations=2)
    with pytest.raises(InvalidWorkflow, match="loops do not nest"):
        Registry().register(wf)


def test_branch_paths_must_name_known_nodes_and_become_dependents() -> None:
    wf = Workflow("br")
    wf.task("a")(noop)
    wf.branch("b", after=["a"], choose=lambda ctx: "x", paths={"x": ["ghost"]})
    with pytest.raises(InvalidWorkflow, match="path 'x' names unknown node 'ghost'"):
        Registry().register(wf)

    ok = Workflow("br2")
    ok.task("a")(noop)
    ok.task("left")(noop)
    ok.branch("b", after=["a"], choose=lambda ctx: "l", paths={"l": ["left"]})
    Registry().register(ok)
    assert ok.nodes["left"].after == ("b",)
    assert ok.order.index("b") < ok.order.index("left")


def test_same_workflow_name_twice_is_refused() -> None:
    reg = Registry()
    one, two = Workflow("same"), Workflow("same")
    one.task("a")(noop)
    two.task("a")(noop)
    reg.register(one, "m1")
    with pytest.raises(InvalidWorkflow, match="registered twice"):
        reg.register(two, "m2")


def test_ancestors_follow_every_path_and_a_loop_body_sees_its_loops_upstream() -> None:
    wf = Workflow("anc")
    wf.task("a")(noop)
    wf.task("b", after=["a"])(noop)
    wf.task("c", after=["a"])(noop)
    wf.task("d", after=["b", "c"])(noop)
    wf.task("x")(noop)
    wf.task("y", after=["x"])(noop)
    wf.loop("l", after=["d"], body=["x", "y"], until=lambda ctx: True, max_iterations=2)
    wf.task("z", after=["l"])(noop)
    wf.validate()

    assert wf.upstream("a") == ()
    assert wf.upstream("d") == ("a", "b", "c")
    assert wf.upstream("y") == ("a", "b", "c", "d", "x")  # body peer + the loop's upstream
    assert wf.upstream("z") == ("a", "b", "c", "d", "l")  # the loop, not its body
    assert output_iteration(wf.nodes, "y", "x", 3) == 3
    assert output_iteration(wf.nodes, "y", "a", 3) == 0


def test_upstream_outputs_read_the_rest_once_and_only_known_names() -> None:
    reads: list[str] = []

    def read(name: str) -> dict[str, Any]:
        reads.append(name)
        return {"a": 1, "b": 2, "zz": "not an ancestor"}

    outs = UpstreamOutputs(("a", "b", "c"), {"c": 3}, read)

    assert outs["c"] == 3 and reads == []
    assert outs["a"] == 1 and outs["b"] == 2 and reads == ["a"]  # one read for the rest
    assert sorted(outs) == ["a", "b", "c"] and len(outs) == 3
    with pytest.raises(KeyError):
        outs["zz"]


def test_dependents_are_the_nodes_that_wait_for_a_node_in_topological_order() -> None:
    wf = Workflow("fan")
    wf.task("first")(noop)
    for leaf in ("b", "a"):
        wf.task(leaf, after=["first"])(noop)
    wf.task("gather", after=["a", "b"])(noop)
    wf.task("last", after=["gather", "first"])(noop)
    Registry().register(wf)

    assert set(wf.dependents("first")) == {"a", "b", "last"}
    assert wf.dependents("first") == tuple(n for n in wf.order if n in {"a", "b", "last"})
    assert wf.dependents("a") == ("gather",) and wf.dependents("b") == ("gather",)
    assert wf.dependents("last") == ()
