"""Child workflows: a node that launches a run of another registered workflow and
waits for it to end (pure: the decision's half; the store's is
:mod:`smithers.shared.store.children`).

A child node that becomes ready computes the child's input and asks the store to
launch it (:class:`~smithers.shared.actions.LaunchChild`); the node is then
``running`` until the child run ends. The child's run id is derived from the parent's
(run, node, iteration) and an epoch (:func:`child_run_id`), so deciding the node again
finds the same child instead of launching a second one. The epoch is the number of
child runs that node execution had before: 0 for the first, one more each time a
rewind or a resume reopened the node after its child was cancelled or had ended.

When the child ends, its writer decides the parent in the same transaction: a child
that succeeded completes the node with the child's output; one that failed or was
cancelled fails it (``child_failed``). A parent's cancel asks its live children to
cancel (:class:`~smithers.shared.actions.CancelChild`).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from smithers.shared.actions import CancelChild, LaunchChild
from smithers.shared.context import DecisionContext
from smithers.shared.errors import InvalidInput
from smithers.shared.jsonsafe import check_json
from smithers.shared.status import NodeStatus, RunStatus

if TYPE_CHECKING:
    from smithers.shared.actions import NodeView
    from smithers.shared.decision import _Decider
    from smithers.shared.workflow import Node

# Child run ids are uuid5 names in this namespace: the same (run, node, iteration,
# epoch) gives the same id in every process and release.
NAMESPACE = uuid.UUID("6d1f8e0a-4c55-5b8e-9a57-2f6c1d0c7a11")
PREFIX = "child-"


def child_run_id(parent_run_id: str, node_id: str, iteration: int, epoch: int = 0) -> str:
    """The run id of the child launched by (``parent_run_id``, ``node_id``,
    ``iteration``) for the ``epoch``-th time (0: the first child): ``child-`` and 32 hex
    digits, a valid run id (``[a-z0-9_-]{1,64}``)."""
    name = f"{parent_run_id}/{node_id}/{iteration}"
    if epoch:
        name += f"/{epoch}"
    return PREFIX + uuid.uuid5(NAMESPACE, name).hex


def _fail(d: _Decider, node: Node, iteration: int, code: str, message: str, **more: Any) -> None:
    error = {"code": code, "message": message, **more}
    d.set_node(node, iteration, NodeStatus.FAILED, "node.failed", error=error)


def child_input(d: _Decider, node: Node, iteration: int) -> dict[str, Any] | None:
    """The child's input: ``node.child_input(ctx)`` or the parent's input. A function
    that raises, or returns anything but a JSON object, fails the node (None)."""
    if node.child_input is None:
        return dict(d.run.input)
    readable = d.upstream(node, iteration)
    parents = {dep: readable[dep] for dep in node.after}
    ctx = DecisionContext(d.run.run_id, d.run.input, parents, iteration, readable, node.id)
    try:
        value = node.child_input(ctx)
    except Exception as exc:
        _fail(d, node, iteration, "child_input_error", f"{type(exc).__name__}: {exc}")
        return None
    if not isinstance(value, dict):
        message = f"input returned {type(value).__name__}, not a JSON object"
        _fail(d, node, iteration, "child_input_error", message)
        return None
    try:
        check_json(value, "the child's input")
    except InvalidInput as exc:
        _fail(d, node, iteration, "child_input_error", exc.message)
        return None
    return value


def start(d: _Decider, node: Node, iteration: int) -> None:
    """A ready child node: launch its child (the store finds it if it exists) and run."""
    assert node.child_workflow is not None
    value = child_input(d, node, iteration)
    if value is None:
        return
    d.set_node(
        node,
        iteration,
        NodeStatus.RUNNING,
        "child.started",
        payload={"workflow": node.child_workflow},
    )
    # after the node's row: a child the store cannot launch fails the node it wrote
    d.actions.append(LaunchChild(node.id, iteration, node.child_workflow, value))


def waits(d: _Decider, node: Node, st: NodeView) -> None:
    """A running child node: done when its child run ended, else it waits (the child's
    end decides the parent). A node with no child on record launches it again: the
    store finds the one it has, if any."""
    child = d.run.children.get((node.id, st.iteration))
    if child is None:
        start(d, node, st.iteration)
        return
    if not child.status.terminal:
        return
    if child.status is RunStatus.SUCCEEDED:
        d.set_node(
            node,
            st.iteration,
            NodeStatus.SUCCEEDED,
            "node.succeeded",
            payload={"child_run_id": child.run_id},
            output=child.output,
        )
        return
    cause = dict(child.error or {})
    _fail(
        d,
        node,
        st.iteration,
        "child_failed",
        f"child run {child.run_id} {child.status.value}",
        child_run_id=child.run_id,
        child_error=cause or None,
    )


def cancel(d: _Decider, node: Node, st: NodeView) -> None:
    """The parent is cancelled: ask the node's live child to cancel too."""
    child = d.run.children.get((node.id, st.iteration))
    if child is not None and not child.status.terminal and not child.cancel_requested:
        d.actions.append(CancelChild(node.id, st.iteration, child.run_id))
