"""Dynamic fan-out in the pure decision: a map node's items, its concurrency, its width
bound, per-item retries and cache keys, and the fan-in's order (no services)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from smithers.shared.actions import (
    UNSET,
    AttemptView,
    Decision,
    Dispatch,
    Key,
    NodeView,
    RunView,
    SetNode,
    SetRun,
)
from smithers.shared.context import StepContext
from smithers.shared.decision import decide
from smithers.shared.errors import InvalidWorkflow
from smithers.shared.policy import CachePolicy
from smithers.shared.registry import Registry
from smithers.shared.status import AttemptState, NodeStatus, RunStatus
from smithers.shared.workflow import Workflow

NOW = 1000.0


def noop(ctx: StepContext) -> None:
    return None


def mapped(
    width_key: str = "urls", *, concurrency: int | None = None, max_width: int = 50, **kw: Any
) -> Workflow:
    wf = Workflow("fan")
    wf.task("fetch")(noop)
    wf.map("each", over="fetch", key=width_key, concurrency=concurrency, max_width=max_width, **kw)(noop)
    wf.task("join", after=["each"])(noop)
    Registry().register(wf)
    return wf


class Sim:
    """A run's state, with each decision's actions applied the way the store would."""

    def __init__(self, wf: Workflow, fetched: Any) -> None:
        self.wf = wf
        self.nodes: dict[Key, NodeView] = {("fetch", 0): NodeView("fetch", 0, NodeStatus.SUCCEEDED)}
        self.outputs: dict[Key, Any] = {("fetch", 0): fetched}
        self.status = RunStatus.RUNNING
        self.error: Any = None
        self.output: Any = None
        self.numbers: dict[Key, int] = {}

    def decide(self) -> Decision:
        view = RunView("r1", self.status, {"who": "me"}, dict(self.nodes))
        d = decide(self.wf, view, self.outputs, NOW)
        for a in d.actions:
            key = (a.node_id, a.iteration) if isinstance(a, SetNode | Dispatch) else None
            if isinstance(a, SetNode):
                assert key is not None
                old = self.nodes.get(key) or NodeView(a.node_id, a.iteration, a.status)
                self.nodes[key] = replace(
                    old,
                    status=a.status,
                    error=a.error,
                    next_at=a.next_at,
                    current_iteration=a.current_iteration
                    if a.current_iteration is not None
                    else old.current_iteration,
                    failures=a.failures if a.failures is not None else old.failures,
                )
                if a.output is not UNSET:
                    self.outputs[key] = a.output
            elif isinstance(a, Dispatch):
                assert key is not None
                number = self.numbers[key] = self.numbers.get(key, 0) + 1
                old = self.nodes.get(key) or NodeView(a.node_id, a.iteration, NodeStatus.QUEUED)
                attempt = AttemptView(f"{a.node_id}.{a.iteration}.{number}", AttemptState.QUEUED, number, NOW)
                self.nodes[key] = replace(
                    old,
                    status=NodeStatus.QUEUED,
                    attempt=attempt,
                    failures=a.failures if a.failures is not None else old.failures,
                )
            elif isinstance(a, SetRun):
                self.status, self.error, self.output = a.status, a.error, a.output
        return d

    def finish(self, node: str, it: int, output: Any = None, *, ok: bool = True) -> None:
        """The worker's commit of the current attempt (what ``complete`` writes)."""
        st = self.nodes[(node, it)]
        assert st.attempt is not None
        if ok:
            attempt = replace(st.attempt, state=AttemptState.SUCCEEDED)
            self.nodes[(node, it)] = replace(st, status=NodeStatus.SUCCEEDED, attempt=attempt)
            self.outputs[(node, it)] = output
        else:
            error = {"code": "step_error", "message": "boom"}
            attempt = replace(st.attempt, state=AttemptState.FAILED, error=error)
            self.nodes[(node, it)] = replace(st, status=NodeStatus.RUNNING, attempt=attempt)

    def in_flight(self) -> list[int]:
        return sorted(
            it - 1
            for (n, it), st in self.nodes.items()
            if n == "each" and it > 0 and st.status in (NodeStatus.QUEUED, NodeStatus.RUNNING)
        )


def dispatched(d: Decision) -> list[Key]:
    return [(a.node_id, a.iteration) for a in d.actions if isinstance(a, Dispatch)]


def test_items_are_dispatched_within_the_concurrency_and_the_fan_in_gets_them_in_order() -> None:
    # given a map over five urls, two at a time
    sim = Sim(mapped(concurrency=2), {"urls": list("abcde")})

    # when it starts: the width is recorded and items 0 and 1 are dispatched
    d = sim.decide()
    started = [a for a in d.actions if isinstance(a, SetNode) and a.event == "map.started"]
    assert started[0].payload == {"width": 5, "concurrency": 2}
    assert dispatched(d) == [("each", 1), ("each", 2)]

    # then items finish out of order; never more than two are in flight
    sim.finish("each", 2, "B")
    assert dispatched(sim.decide()) == [("each", 3)]
    sim.finish("each", 3, "C")
    sim.finish("each", 1, "A")
    assert dispatched(sim.decide()) == [("each", 4), ("each", 5)]
    assert sim.in_flight() == [3, 4]
    sim.finish("each", 5, "E")
    assert dispatched(sim.decide()) == []
    sim.finish("each", 4, "D")
    d = sim.decide()

    # the map's output is the items' outputs in index order, and the join is dispatched
    assert sim.outputs[("each", 0)] == ["A", "B", "C", "D", "E"]
    assert sim.nodes[("each", 0)].status is NodeStatus.SUCCEEDED
    assert dispatched(d) == [("join", 0)]


def test_a_failing_item_retries_alone() -> None:
    sim = Sim(mapped(retries=1, backoff="fixed", retry_delay_s=0), {"urls": [1, 2, 3]})
    sim.decide()
    sim.finish("each", 1, "one")
    sim.finish("each", 2, ok=False)

    d = sim.decide()

    assert dispatched(d) == [("each", 2)]
    assert sim.numbers[("each", 2)] == 2 and sim.numbers[("each", 1)] == 1
    sim.finish("each", 2, "two")
    sim.finish("each", 3, "three")
    sim.decide()
    assert sim.outputs[("each", 0)] == ["one", "two", "three"]


def test_an_item_failed_for_good_fails_the_map_once_none_is_in_flight() -> None:
    sim = Sim(mapped(), {"urls": [1, 2]})
    sim.decide()
    sim.finish("each", 1, ok=False)

    sim.decide()
    assert sim.nodes[("each", 0)].status is NodeStatus.RUNNING  # item 1 still runs
    assert sim.status is RunStatus.RUNNING
    sim.finish("each", 2, "two")
    sim.decide()

    assert sim.nodes[("each", 0)].status is NodeStatus.FAILED
    assert sim.status is RunStatus.FAILED
    assert sim.error["node_id"] == "each" and sim.error["iteration"] == 0
    assert sim.error["code"] == "map_item_failed" and sim.error["index"] == 0


def test_a_list_wider_than_max_width_fails_the_map_clearly() -> None:
    sim = Sim(mapped(max_width=3), {"urls": [1, 2, 3, 4]})
    d = sim.decide()
    assert dispatched(d) == []
    assert sim.status is RunStatus.FAILED
    assert sim.error["code"] == "map_too_wide" and sim.error["width"] == 4
    assert "more than max_width 3" in sim.error["message"]


@pytest.mark.parametrize(
    ("fetched", "message"),
    [({"urls": "abc"}, "is str, not a list"), ({"other": []}, "has no key 'urls'"), (None, "no key")],
)
def test_an_output_without_a_list_fails_the_map(fetched: Any, message: str) -> None:
    sim = Sim(mapped(), fetched)
    sim.decide()
    assert sim.error["code"] == "map_error" and message in sim.error["message"]


def test_pick_and_an_empty_list() -> None:
    wf = Workflow("fan")
    wf.task("fetch")(noop)
    wf.map("each", over="fetch", pick=lambda out: out["a"]["b"])(noop)
    Registry().register(wf)
    sim = Sim(wf, {"a": {"b": []}})
    sim.decide()
    assert sim.outputs[("each", 0)] == []
    assert sim.status is RunStatus.SUCCEEDED and sim.output == {"each": []}


def test_each_item_has_its_own_cache_key_from_its_item() -> None:
    wf = mapped(cache=CachePolicy(scope="workflow"))
    first = Sim(wf, {"urls": ["x", "y"]})
    keys = [a.cache_key for a in first.decide().actions if isinstance(a, Dispatch)]
    grown = Sim(wf, {"urls": ["w", "x", "y"]})
    grown_keys = [a.cache_key for a in grown.decide().actions if isinstance(a, Dispatch)]

    assert None not in keys and len(set(keys)) == 2
    assert grown_keys[1:] == keys  # the same items, moved: the same keys


def test_declarations_are_checked() -> None:
    wf = Workflow("bad")
    wf.task("fetch")(noop)
    with pytest.raises(InvalidWorkflow, match="key or pick"):
        wf.map("each", over="fetch", key="a", pick=lambda o: o)(noop)
    with pytest.raises(InvalidWorkflow, match="max_width"):
        wf.map("each", over="fetch", max_width=0)(noop)
    with pytest.raises(InvalidWorkflow, match="concurrency"):
        wf.map("each", over="fetch", concurrency=0)(noop)
    wf.map("each", over="fetch", max_width=40)(noop)
    wf.loop("again", body=["fetch", "each"], until=lambda ctx: True, max_iterations=2)
    with pytest.raises(InvalidWorkflow, match="does not run inside a loop"):
        Registry().register(wf)


def test_a_map_counts_as_its_max_width_toward_the_decision_bound() -> None:
    assert mapped(max_width=40).executions() == 3 + 40


def _decide_time(width: int) -> float:
    wf = mapped(concurrency=10, max_width=width)
    sim = Sim(wf, {"urls": list(range(width))})
    sim.decide()
    for index in range(width - 10):  # most items done, ten in flight
        it = index + 1
        sim.nodes[("each", it)] = NodeView("each", it, NodeStatus.SUCCEEDED)
    view = RunView("r1", RunStatus.RUNNING, {}, dict(sim.nodes))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        decide(wf, view, sim.outputs, NOW)
        best = min(best, time.perf_counter() - t0)
    return best


def test_a_decision_is_linear_in_the_width() -> None:
    small, large = _decide_time(1_000), _decide_time(4_000)
    # four times the items: about four times the time (quadratic would be sixteen)
    assert large < small * 9, (small, large)
    assert large < 0.5


def test_a_failure_elsewhere_stops_the_map_and_the_run_fails() -> None:
    # given a map one item at a time beside a task that fails
    wf = Workflow("fan")
    wf.task("fetch")(noop)
    wf.map("each", over="fetch", concurrency=1)(noop)
    wf.task("other", after=["fetch"])(noop)
    Registry().register(wf)
    sim = Sim(wf, [1, 2, 3])
    assert dispatched(sim.decide()) == [("each", 1), ("other", 0)]

    # when the task fails and the map's first item succeeds
    sim.finish("other", 0, ok=False)
    sim.finish("each", 1, "one")
    d = sim.decide()

    # then no further item starts and the run fails (the map holds nothing in flight)
    assert dispatched(d) == []
    assert sim.status is RunStatus.FAILED and sim.error["node_id"] == "other"
