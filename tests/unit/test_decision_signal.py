"""The signal node's decision, on plain data: it waits, takes a signal kept before it
started, takes the first of its name in arrival order, and fails at its timeout."""

from __future__ import annotations

from typing import Any

import pytest

from smithers.shared.actions import ConsumeSignal, NodeView, RunView, SetNode, SetRun, SignalView
from smithers.shared.decision import decide
from smithers.shared.errors import InvalidWorkflow
from smithers.shared.registry import Registry
from smithers.shared.revision import graph_of, skeleton
from smithers.shared.status import NodeStatus, RunStatus
from smithers.shared.workflow import NodeKind, Workflow

NOW = 1000.0


def noop(ctx: object) -> None:
    return None


def signalled(timeout_s: float | None = None) -> Workflow:
    wf = Workflow("signalled")
    wf.task("a")(noop)
    wf.signal("wait", name="ci.done", after=["a"], timeout_s=timeout_s, schema={"type": "object"})
    wf.task("b", after=["wait"])(noop)
    Registry().register(wf)
    return wf


def sig(signal_id: str, name: str = "ci.done", payload: Any = None, at: float = NOW - 1) -> SignalView:
    return SignalView(signal_id, name, payload if payload is not None else {"ok": True}, "alice", at)


def view(*nodes: NodeView, signals: tuple[SignalView, ...] = ()) -> RunView:
    by_name: dict[str, tuple[SignalView, ...]] = {}
    for s in signals:
        by_name[s.name] = (*by_name.get(s.name, ()), s)
    return RunView("r1", RunStatus.RUNNING, {}, {(n.node_id, n.iteration): n for n in nodes}, signals=by_name)


def set_nodes(d: Any) -> list[SetNode]:
    return [a for a in d.actions if isinstance(a, SetNode)]


def test_waits_without_a_signal_and_the_run_waits() -> None:
    d = decide(signalled(), view(NodeView("a", 0, NodeStatus.SUCCEEDED)), {}, NOW)
    [wait] = set_nodes(d)
    assert (wait.node_id, wait.status, wait.event, wait.next_at) == (
        "wait",
        NodeStatus.WAITING,
        "signal.waiting",
        None,
    )
    assert [a.status for a in d.actions if isinstance(a, SetRun)] == [RunStatus.WAITING]
    assert d.wake_at is None  # no timeout: only a delivery wakes it


def test_a_signal_kept_before_the_node_started_is_taken_at_start() -> None:
    d = decide(
        signalled(), view(NodeView("a", 0, NodeStatus.SUCCEEDED), signals=(sig("s1"), sig("s2"))), {}, NOW
    )
    [taken] = [a for a in d.actions if isinstance(a, ConsumeSignal)]
    assert (taken.signal_id, taken.node_id, taken.iteration) == ("s1", "wait", 0)  # the first to arrive
    wait = set_nodes(d)[0]
    assert wait.status is NodeStatus.SUCCEEDED
    assert wait.output == {
        "signal_id": "s1",
        "payload": {"ok": True},
        "sender": "alice",
        "received_at": NOW - 1,
    }
    assert any(
        getattr(a, "node_id", None) == "b" and a.reason == "start" for a in d.actions if hasattr(a, "reason")
    )


def test_a_waiting_node_takes_a_signal_of_its_name_only() -> None:
    waiting = NodeView("wait", 0, NodeStatus.WAITING)
    other = decide(
        signalled(),
        view(NodeView("a", 0, NodeStatus.SUCCEEDED), waiting, signals=(sig("x", "other"),)),
        {},
        NOW,
    )
    assert other.actions == () or not any(isinstance(a, ConsumeSignal) for a in other.actions)
    d = decide(
        signalled(), view(NodeView("a", 0, NodeStatus.SUCCEEDED), waiting, signals=(sig("s9"),)), {}, NOW
    )
    assert [a.signal_id for a in d.actions if isinstance(a, ConsumeSignal)] == ["s9"]


def test_two_nodes_of_one_name_take_two_signals() -> None:
    wf = Workflow("twice")
    wf.signal("one", name="go")
    wf.signal("two", name="go")
    Registry().register(wf)
    d = decide(wf, view(signals=(sig("s1", "go"), sig("s2", "go"))), {}, NOW)
    assert sorted(a.signal_id for a in d.actions if isinstance(a, ConsumeSignal)) == ["s1", "s2"]
    assert [a.status for a in d.actions if isinstance(a, SetRun)] == [RunStatus.SUCCEEDED]


def test_timeout_fails_the_node_without_retry() -> None:
    started = decide(signalled(timeout_s=30), view(NodeView("a", 0, NodeStatus.SUCCEEDED)), {}, NOW)
    assert set_nodes(started)[0].next_at == NOW + 30
    assert started.wake_at == NOW + 30
    waiting = NodeView("wait", 0, NodeStatus.WAITING, next_at=NOW + 30)
    before = decide(
        signalled(timeout_s=30), view(NodeView("a", 0, NodeStatus.SUCCEEDED), waiting), {}, NOW + 29
    )
    assert set_nodes(before) == [] and before.wake_at == NOW + 30
    late = decide(
        signalled(timeout_s=30), view(NodeView("a", 0, NodeStatus.SUCCEEDED), waiting), {}, NOW + 30
    )
    [failed] = set_nodes(late)
    assert failed.status is NodeStatus.FAILED and failed.error is not None
    assert failed.error["code"] == "signal_timeout"
    [run] = [a for a in late.actions if isinstance(a, SetRun)]
    assert run.status is RunStatus.FAILED and run.error is not None and run.error["code"] == "signal_timeout"


def test_a_signal_at_the_timeout_still_wins() -> None:
    waiting = NodeView("wait", 0, NodeStatus.WAITING, next_at=NOW)
    d = decide(
        signalled(timeout_s=30),
        view(NodeView("a", 0, NodeStatus.SUCCEEDED), waiting, signals=(sig("s1"),)),
        {},
        NOW + 5,
    )
    assert set_nodes(d)[0].status is NodeStatus.SUCCEEDED


def test_declaration_is_checked_and_survives_the_stored_graph() -> None:
    with pytest.raises(InvalidWorkflow, match="name must match"):
        Workflow("w").signal("s", name="Bad Name")
    with pytest.raises(InvalidWorkflow, match="not supported"):
        Workflow("w").signal("s", name="ok", schema={"oneOf": []})
    with pytest.raises(InvalidWorkflow, match="timeout_s"):
        Workflow("w").signal("s", name="ok", timeout_s=0)
    wf = Workflow("w")
    wf.signal("s1", name="go", schema={"type": "object"})
    wf.signal("s2", name="go", schema={"type": "string"})
    with pytest.raises(InvalidWorkflow, match="different schemas"):
        Registry().register(wf)
    back = skeleton(graph_of(signalled(timeout_s=5)))
    node = back.signal_node("ci.done")
    assert node is not None and node.kind is NodeKind.SIGNAL
    assert (node.signal_schema, node.signal_timeout_s) == ({"type": "object"}, 5)
    assert back.signal_node("nope") is None
