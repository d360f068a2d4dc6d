"""Child workflows with a real Celery worker, on SQLite and PostgreSQL: a parent's child
node launches a run of another workflow and waits for it; its output is the child's; the
child's run id is derived from the parent's (run, node, iteration), so deciding the
node again finds the same child; a rewind discards the child and launches a new one; a
child that fails fails the parent's node; cancelling the parent cancels the child.

No scheduler runs in the first test: every move (the child's launch, its first step,
its end, the parent's next step) is made by the writer of the change before it.
"""

from __future__ import annotations

from typing import Any

import pytest

from smithers.shared import operations
from smithers.shared.actions import DecisionConfig, LaunchChild
from smithers.shared.child import child_run_id
from smithers.shared.status import NodeStatus, RunStatus
from smithers.shared.store import children
from smithers.shared.store.advance import Decider
from smithers.shared.store.queries import nodes_of, outputs_of
from tests.integration.conftest import Engine
from tests.integration.gateway.support import make_gateway

pytestmark = pytest.mark.timeout(180)


def _decider(engine: Engine) -> Decider:
    return Decider(engine.registry, DecisionConfig(), 500)


def test_a_parent_waits_for_its_child_and_a_relaunch_or_rewind_is_exact(
    engine_factory: Any, database_url: str
) -> None:
    # given a step worker and no scheduler: the writers decide every move
    engine: Engine = engine_factory(database_url)
    engine.worker()
    parent = engine.launch("t-child-parent", {"n": 21, "sleep": 1.5}, decide=True)
    kid = child_run_id(parent, "sub", 0)

    # when the child node starts: its child runs under the derived id, linked to the node
    engine.wait_event(parent, lambda e: e.type == "child.launched", timeout=60)
    child = engine.run(kid)
    assert (child.workflow, child.parent_run_id, child.parent_node_id, child.parent_iteration) == (
        "t-child-double",
        parent,
        "sub",
        0,
    )
    assert child.input == {"n": 21, "sleep": 1.5} and child.launched_by == f"run:{parent}"

    # and the node is decided again while the child runs: the same child, no second one
    decider = _decider(engine)
    with engine.store.write() as tx:
        decider.after(tx, parent)
        again = children.launch(tx, parent, LaunchChild("sub", 0, "t-child-double", {"n": 21}))
    assert again == kid
    with engine.store.read() as conn:
        assert [c.run_id for c in children.links(conn, parent)] == [kid]

    # then the parent gets the child's output and goes on
    done = engine.wait(parent, timeout=60)
    assert done.status is RunStatus.SUCCEEDED, done.error
    assert engine.run(kid).status is RunStatus.SUCCEEDED
    with engine.store.read() as conn:
        outs = outputs_of(conn, parent)
    assert outs[("sub", 0)] == {"double": {"doubled": 42}}
    assert outs[("report", 0)] == {"got": 42}
    types = [e.type for e in engine.events(parent)]
    assert types.count("child.launched") == 1
    assert types.index("child.launched") < types.index("node.succeeded", types.index("child.launched"))

    # and the gateway shows the links both ways
    with make_gateway(engine.database_url, engine.redis_url) as gw:
        read = gw.auth("run:read")
        shown = gw.client.get(f"/v1/runs/{parent}", headers=read).get_json()
        assert shown["children"] == [
            {
                "run_id": kid,
                "workflow": "t-child-double",
                "status": "succeeded",
                "node_id": "sub",
                "iteration": 0,
                "epoch": 0,
            }
        ]
        up = gw.client.get(f"/v1/runs/{kid}", headers=read).get_json()["run"]
        assert (up["parent_run_id"], up["parent_node_id"], up["parent_iteration"]) == (parent, "sub", 0)

    # when the parent is rewound to its child node: a new child (the next epoch) runs
    operations.time_travel(
        engine.store,
        engine.broker,
        engine.registry,
        action="rewind",
        run_id=parent,
        node_id="sub",
        caller="op",
        confirm=True,
    )
    with engine.store.write() as tx:  # the scheduler's move, made here (none runs)
        moved = decider.after(tx, parent)
    assert moved is not None and moved.decided
    engine.broker.try_send_steps(moved.messages)  # the new child's first step
    second = child_run_id(parent, "sub", 0, epoch=1)
    redone = _wait_status(engine, parent, RunStatus.SUCCEEDED)
    assert redone.status is RunStatus.SUCCEEDED, redone.error
    with engine.store.read() as conn:
        assert [(c.run_id, c.epoch) for c in children.links(conn, parent)] == [(kid, 0), (second, 1)]
    assert engine.run(second).status is RunStatus.SUCCEEDED


def _wait_status(engine: Engine, run_id: str, status: RunStatus) -> Any:
    return engine.wait(run_id, timeout=60, until={status, RunStatus.FAILED, RunStatus.CANCELLED})


def test_a_failing_child_fails_the_node_and_a_cancel_reaches_the_child(
    engine_factory: Any, database_url: str
) -> None:
    engine: Engine = engine_factory(database_url)
    engine.scheduler()
    engine.worker(concurrency=2)

    # given a child whose step fails: the parent's node fails with the child's error
    failing = engine.launch("t-child-parent", {"fail": True}, decide=True)
    done = engine.wait(failing, timeout=60)
    assert done.status is RunStatus.FAILED and done.error is not None
    kid = child_run_id(failing, "sub", 0)
    assert (done.error["node_id"], done.error["code"], done.error["child_run_id"]) == (
        "sub",
        "child_failed",
        kid,
    )
    assert done.error["child_error"]["node_id"] == "double"
    assert engine.run(kid).status is RunStatus.FAILED
    with engine.store.read() as conn:
        statuses = {n.node_id: n.status for n in nodes_of(conn, failing)}
    assert statuses == {"prepare": NodeStatus.SUCCEEDED, "sub": NodeStatus.FAILED}

    # when the failed parent resumes: its child node launches a new child (the next epoch)
    operations.resume(engine.store, engine.broker, failing, "op", decider=_decider(engine))
    again = engine.wait(failing, timeout=60)
    second = child_run_id(failing, "sub", 0, epoch=1)
    assert again.status is RunStatus.FAILED and again.error is not None
    assert again.error["child_run_id"] == second
    with engine.store.read() as conn:
        assert [(c.run_id, c.epoch, c.status) for c in children.links(conn, failing)] == [
            (kid, 0, "failed"),
            (second, 1, "failed"),
        ]

    # given a child node naming a workflow no process registered: the launch fails the node
    orphan = engine.launch("t-child-orphan", decide=True)
    lost = engine.wait(orphan, timeout=30)
    assert lost.status is RunStatus.FAILED and lost.error is not None
    assert (lost.error["node_id"], lost.error["code"]) == ("lost", "unknown_workflow")
    with engine.store.read() as conn:
        assert children.links(conn, orphan) == []

    # given a child whose step is running
    slow = engine.launch("t-child-parent", {"sleep": 4}, decide=True)
    slow_kid = child_run_id(slow, "sub", 0)
    engine.wait_event(slow_kid, lambda e: e.type == "attempt.started", timeout=60)
    # when the parent is cancelled: the child is cancelled too, in the same transaction
    operations.cancel(engine.store, engine.broker, slow, "op", decider=_decider(engine))
    assert engine.run(slow).status is RunStatus.CANCELLED
    assert engine.run(slow_kid).status is RunStatus.CANCELLED
    kid_events = engine.events(slow_kid)
    [asked] = [e for e in kid_events if e.type == "run.cancel_requested"]
    assert asked.payload == {"by": f"run:{slow}"}
    # and the child's step, still running, cannot complete it: its late result is refused
    engine.wait_event(slow_kid, lambda e: e.type == "attempt.refused", timeout=30)
    assert engine.run(slow_kid).status is RunStatus.CANCELLED
    with engine.store.read() as conn:
        assert outputs_of(conn, slow_kid) == {}
