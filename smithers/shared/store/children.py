"""Child runs in the store: launching the child of a child node execution (idempotent,
in the parent's decision's transaction), the children a parent's decision reads, their
cancellation, and the links the gateway shows.

A child run is an ordinary run whose row names the node execution that launched it
(``parent_run_id``, ``parent_node_id``, ``parent_iteration``) and its epoch
(``parent_epoch``, see :mod:`smithers.shared.child`). Its revision is the newest one of
its workflow the store has seen a process register (``revisions``, first seen last).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, select

from smithers.shared.actions import CancelChild, ChildView, Key, LaunchChild
from smithers.shared.child import child_run_id
from smithers.shared.errors import InvalidInput
from smithers.shared.limits import check_size
from smithers.shared.status import NodeStatus, RunStatus
from smithers.shared.store import runs as runs_store
from smithers.shared.store import schema as s
from smithers.shared.store.tx import Tx

_r = s.runs
_CHILD_COLUMNS = (
    _r.c.run_id,
    _r.c.workflow,
    _r.c.status,
    _r.c.cancel_requested,
    _r.c.parent_node_id,
    _r.c.parent_iteration,
    _r.c.parent_epoch,
)


def current(conn: Connection, parent_run_id: str) -> dict[Key, ChildView]:
    """Each child node execution's current child (its latest epoch), with the output
    and error of those that ended: what the parent's decision reads."""
    query = (
        select(*_CHILD_COLUMNS, _r.c.output, _r.c.error)
        .where(_r.c.parent_run_id == parent_run_id, _r.c.parent_node_id.is_not(None))
        .order_by(_r.c.parent_epoch)
    )
    found: dict[Key, ChildView] = {}
    for r in conn.execute(query):
        status = RunStatus(r.status)
        found[(r.parent_node_id, int(r.parent_iteration))] = ChildView(
            run_id=r.run_id,
            status=status,
            cancel_requested=bool(r.cancel_requested),
            output=r.output if status.terminal else None,
            error=r.error,
        )
    return found


def _latest(tx: Tx, parent_run_id: str, node_id: str, iteration: int) -> Any:
    return tx.conn.execute(
        select(*_CHILD_COLUMNS)
        .where(
            _r.c.parent_run_id == parent_run_id,
            _r.c.parent_node_id == node_id,
            _r.c.parent_iteration == iteration,
        )
        .order_by(_r.c.parent_epoch.desc())
        .limit(1)
    ).first()


def _newest_revision(tx: Tx, workflow: str) -> Any:
    rv = s.revisions
    return tx.conn.execute(
        select(rv.c.revision, rv.c.version)
        .where(rv.c.workflow == workflow)
        .order_by(rv.c.first_seen.desc(), rv.c.revision)
        .limit(1)
    ).first()


def _fail_node(tx: Tx, parent_run_id: str, action: LaunchChild, code: str, message: str) -> None:
    """The child cannot be launched: the node fails (the parent's next decision sees it)."""
    error = {"code": code, "message": message}
    tx.set(
        s.nodes,
        {"run_id": parent_run_id, "node_id": action.node_id, "iteration": action.iteration},
        {"status": NodeStatus.FAILED.value, "error": error, "finished_at": tx.now, "updated_at": tx.now},
    )
    tx.emit(
        parent_run_id,
        "node.failed",
        node_id=action.node_id,
        iteration=action.iteration,
        payload={"error": error},
    )


def launch(tx: Tx, parent_run_id: str, action: LaunchChild) -> str | None:
    """Launch the child of a child node execution, or find its live one; returns the
    child's run id, or None when it cannot be launched (the node is failed instead:
    ``unknown_workflow`` when no process registered the workflow, ``child_input_invalid``
    when its input is over the run input limit).

    Idempotent: a live child (not ended, no cancel asked) of the node execution is
    the one it keeps. Otherwise a new child is launched with the next epoch and the id
    derived from it; its row, its ``run.launched`` event and the parent's
    ``child.launched`` event are written in the caller's transaction (the parent's
    decision's, under the parent's lock)."""
    latest = _latest(tx, parent_run_id, action.node_id, action.iteration)
    if latest is not None and not RunStatus(latest.status).terminal and not latest.cancel_requested:
        return str(latest.run_id)
    epoch = 0 if latest is None else int(latest.parent_epoch) + 1
    revision = _newest_revision(tx, action.workflow)
    if revision is None:
        message = f"workflow {action.workflow!r} is not known"
        _fail_node(tx, parent_run_id, action, "unknown_workflow", message)
        return None
    try:
        check_size(action.input, tx.limits.input_bytes, "the child's input")
    except InvalidInput as exc:
        _fail_node(tx, parent_run_id, action, "child_input_invalid", exc.message)
        return None
    parent = tx.conn.execute(
        select(_r.c.deployment_version, _r.c.traceparent).where(_r.c.run_id == parent_run_id)
    ).one()
    cid = child_run_id(parent_run_id, action.node_id, action.iteration, epoch)
    link = {"run_id": parent_run_id, "node_id": action.node_id, "iteration": action.iteration, "epoch": epoch}
    runs_store.launch(
        tx,
        run_id=cid,
        workflow=action.workflow,
        workflow_version=revision.version,
        module_revision=revision.revision,
        deployment_version=parent.deployment_version,
        run_input=dict(action.input),
        launched_by=f"run:{parent_run_id}",
        parent_run_id=parent_run_id,
        lineage={"child_of": link},
        traceparent=parent.traceparent,
        child_of=(action.node_id, action.iteration, epoch),
    )
    tx.flush()  # the child's run.launched (its seq 1, given) before its decision's events
    tx.emit(
        parent_run_id,
        "child.launched",
        node_id=action.node_id,
        iteration=action.iteration,
        payload={"child_run_id": cid, "workflow": action.workflow, "epoch": epoch},
    )
    return cid


def cancel(tx: Tx, parent_run_id: str, action: CancelChild) -> None:
    """Ask a child run to cancel because its parent was (its own decision cancels it)."""
    runs_store.request_cancel(tx, action.child_run_id, f"run:{parent_run_id}")


def cancel_live(tx: Tx, parent_run_id: str, node_ids: Iterable[str]) -> list[str]:
    """Ask the live children of ``node_ids`` to cancel (a rewind reopened those nodes:
    their children are discarded, and running a node again launches a new child).
    Returns the children asked."""
    query = select(_r.c.run_id, _r.c.status, _r.c.cancel_requested).where(
        _r.c.parent_run_id == parent_run_id, _r.c.parent_node_id.in_(list(node_ids))
    )
    asked = []
    for r in tx.conn.execute(query).all():
        if not RunStatus(r.status).terminal and not r.cancel_requested:
            runs_store.request_cancel(tx, r.run_id, f"run:{parent_run_id}")
            asked.append(str(r.run_id))
    return asked


@dataclass(frozen=True)
class ChildLink:
    """A child run as its parent's JSON shows it."""

    run_id: str
    workflow: str
    status: str
    node_id: str
    iteration: int
    epoch: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def links(conn: Connection, parent_run_id: str) -> list[ChildLink]:
    """Every child run of ``parent_run_id`` (every epoch), by node, iteration, epoch."""
    query = (
        select(*_CHILD_COLUMNS)
        .where(_r.c.parent_run_id == parent_run_id, _r.c.parent_node_id.is_not(None))
        .order_by(_r.c.parent_node_id, _r.c.parent_iteration, _r.c.parent_epoch)
    )
    return [
        ChildLink(
            r.run_id, r.workflow, r.status, r.parent_node_id, int(r.parent_iteration), int(r.parent_epoch)
        )
        for r in conn.execute(query)
    ]
