"""Time travel: rewind a run to before a node, replay it into a new run, or fork it.

Every call is audited in ``time_travel_audit``: the row is written ``in_progress`` in
its own transaction *before* any change (which also enforces one rewind per run at a
time and the per-caller rate limit), the change is one transaction, and the row is
finished ``success`` or ``failed`` afterwards. A row left ``in_progress`` by a crash is
turned ``partial`` by :func:`settle_leftovers` when a scheduler starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, and_, delete, func, or_, select, update

from smithers.shared.errors import Conflict, InvalidInput, NotFound, RateLimited
from smithers.shared.fanout import item_iteration
from smithers.shared.status import AttemptState, NodeStatus, RunStatus
from smithers.shared.store import children
from smithers.shared.store import schema as s
from smithers.shared.store.records import RunRecord, run_record
from smithers.shared.store.runs import input_hash
from smithers.shared.store.tx import Tx
from smithers.shared.workflow import Workflow

ACTIONS = ("rewind", "replay", "fork")
LEFTOVER_AFTER_S = 60.0


def reopened(wf: Workflow, node_id: str) -> list[str]:
    """The node and everything downstream of it (a loop body node reopens its loop)."""
    if node_id not in wf.nodes:
        raise InvalidInput(f"workflow {wf.name!r} has no node {node_id!r}")
    start = wf.nodes[node_id].loop or node_id
    found = {start}
    changed = True
    while changed:
        changed = False
        for other in wf.order:
            node = wf.nodes[other]
            inside = node.loop in found
            if other not in found and (inside or any(dep in found for dep in node.after)):
                found.add(other)
                changed = True
    return [n for n in wf.order if n in found]


def begin(tx: Tx, *, run_id: str, action: str, caller: str, params: dict[str, Any], per_minute: int) -> int:
    """Write the ``in_progress`` audit row; refuse a second rewind or a caller over the limit."""
    if action not in ACTIONS:
        raise InvalidInput(f"time travel action must be one of {', '.join(ACTIONS)}")
    if tx.lock_run(run_id) is None:
        raise NotFound(f"run {run_id!r} not found")
    t = s.time_travel_audit
    busy = tx.conn.execute(
        select(func.count()).where(t.c.run_id == run_id, t.c.status == "in_progress")
    ).scalar_one()
    if busy:
        raise Conflict(f"a time-travel call on run {run_id!r} is already in progress")
    recent = tx.conn.execute(
        select(func.count()).where(t.c.caller == caller, t.c.started_at > tx.now - 60)
    ).scalar_one()
    if recent >= per_minute:
        raise RateLimited(f"{caller} made {recent} time-travel calls in the last minute (limit {per_minute})")
    row: int = tx.conn.execute(
        t.insert()
        .values(
            run_id=run_id,
            action=action,
            caller=caller,
            status="in_progress",
            params=params,
            started_at=tx.now,
        )
        .returning(t.c.id)
    ).scalar_one()
    return int(row)


def finish(tx: Tx, audit_id: int, status: str, result: dict[str, Any]) -> None:
    """Close the audit row as ``success``, ``failed`` or ``partial``."""
    tx.conn.execute(
        update(s.time_travel_audit)
        .where(s.time_travel_audit.c.id == audit_id)
        .values(status=status, result=result, finished_at=tx.now)
    )


def settle_leftovers(tx: Tx) -> int:
    """Rows still ``in_progress`` long after they started were cut short: ``partial``."""
    t = s.time_travel_audit
    result = tx.conn.execute(
        update(t)
        .where(t.c.status == "in_progress", t.c.started_at < tx.now - LEFTOVER_AFTER_S)
        .values(status="partial", finished_at=tx.now, result={"reason": "interrupted"})
    )
    return int(result.rowcount)


def _attempt_ids(conn: Connection, run_id: str, nodes: Iterable[str], item: int | None = None) -> list[str]:
    a = s.attempts
    rows = conn.execute(select(a.c.attempt_id).where(a.c.run_id == run_id, _rows(a, list(nodes), item)))
    return [r[0] for r in rows]


def _rows(table: Table, nodes: list[str], item: int | None) -> ColumnElement[bool]:
    """The rows of ``nodes``; with ``item``, of the map ``nodes[0]`` (what it reopens
    comes first: the rest is downstream of it) only the map itself and that item's
    execution (:mod:`smithers.shared.fanout`), its other items kept."""
    if item is None:
        return table.c.node_id.in_(nodes)
    mapped = and_(table.c.node_id == nodes[0], table.c.iteration.in_([0, item_iteration(item)]))
    return or_(table.c.node_id.in_(nodes[1:]), mapped)


def _check_item(tx: Tx, wf: Workflow, run_id: str, node_id: str, item: int) -> None:
    node = wf.nodes.get(node_id)
    if node is None or node.map is None:
        raise InvalidInput(f"node {node_id!r} is not a map: only a map's item can be rewound alone")
    if isinstance(item, bool) or not isinstance(item, int) or item < 0:
        raise InvalidInput("item must be an integer >= 0")
    n = s.nodes
    width = tx.conn.execute(
        select(n.c.current_iteration).where(n.c.run_id == run_id, n.c.node_id == node_id, n.c.iteration == 0)
    ).scalar()
    if width is None or item >= width:
        raise InvalidInput(f"map {node_id!r} of run {run_id!r} has no item {item} (width {width or 0})")


def rewind(
    tx: Tx, wf: Workflow, run_id: str, node_id: str, audit_id: int, item: int | None = None
) -> dict[str, Any]:
    """Reopen ``node_id`` and everything downstream; the run becomes queued again.

    Their node rows, outputs and approvals are removed, live attempts are cancelled
    (a late result is refused), their cache rows are deleted and the patches of their
    sandbox steps are withdrawn (``reverted``). The signals their signal nodes took are
    kept again: a signal node run again takes the same signal. With ``item`` (a map
    node's item index) only that item of the map runs again; the map's other items keep
    their outputs and the map collects them again with the new one. The live child runs
    of their child nodes are asked to cancel; a child node run again launches a new child.
    """
    run = tx.lock_run(run_id)
    if run is None:
        raise NotFound(f"run {run_id!r} not found")
    if item is not None:
        _check_item(tx, wf, run_id, node_id, item)
    nodes = reopened(wf, node_id)
    assert item is None or nodes[0] == node_id  # a map is in no loop: it comes first
    attempt_ids = _attempt_ids(tx.conn, run_id, nodes, item)
    a = s.attempts
    tx.conn.execute(
        update(a)
        .where(
            a.c.attempt_id.in_(attempt_ids),
            a.c.state.in_([AttemptState.QUEUED.value, AttemptState.RUNNING.value]),
        )
        .values(state=AttemptState.CANCELLED.value, finished_at=tx.now, error={"code": "rewound"})
    )
    removed_cache = tx.conn.execute(
        delete(s.cache_entries).where(s.cache_entries.c.attempt_id.in_(attempt_ids))
    ).rowcount
    sb = s.sandboxes
    reverted = tx.conn.execute(
        update(sb)
        .where(sb.c.run_id == run_id, sb.c.node_id.in_(nodes), sb.c.review_status == "accepted")
        .values(review_status="reverted")
    ).rowcount
    sg = s.signals
    tx.conn.execute(
        update(sg)
        .where(sg.c.run_id == run_id, sg.c.consumed_node.in_(nodes))
        .values(consumed_node=None, consumed_iteration=None, consumed_at=None)
    )
    # child runs of reopened child nodes are discarded: a live one is asked to cancel,
    # and the node run again launches a new child (smithers.shared.child)
    cancelled = children.cancel_live(tx, run_id, nodes)
    removed = tx.conn.execute(
        delete(s.nodes).where(s.nodes.c.run_id == run_id, _rows(s.nodes, nodes, item))
    ).rowcount
    tx.update(
        s.runs,
        {"run_id": run_id},
        {
            "status": RunStatus.QUEUED.value,
            "cancel_requested": False,
            "finished_at": None,
            "error": None,
            "output": None,
            "updated_at": tx.now,
            "reopened": True,  # node rows went; their attempts stay (numbering)
        },
    )
    result = {
        "node_id": node_id,
        **({"item": item} if item is not None else {}),
        "reopened": nodes,
        "node_rows_removed": int(removed),
        "cache_rows_removed": int(removed_cache),
        "patches_reverted": int(reverted),
    }
    detail = {**result, "audit_id": audit_id, **({"children_cancelled": cancelled} if cancelled else {})}
    tx.emit(run_id, "run.rewound", payload=detail)
    tx.wake(run_id)
    return result


def branch_off(
    tx: Tx,
    wf: Workflow,
    source_id: str,
    node_id: str,
    *,
    new_run_id: str,
    new_input: dict[str, Any] | None,
    caller: str,
    action: str,
    audit_id: int,
) -> RunRecord:
    """Replay (same input) or fork (new input): a new run that keeps the source's
    finished work upstream of ``node_id`` and runs ``node_id`` onwards again."""
    source = tx.lock_run(source_id)
    if source is None:
        raise NotFound(f"run {source_id!r} not found")
    if tx.lock_run(new_run_id) is not None:
        raise Conflict(f"run {new_run_id!r} already exists")
    again = set(reopened(wf, node_id))
    run_input = source.input if new_input is None else new_input
    lineage = {"action": action, "from_run": source_id, "from_node": node_id, "audit_id": audit_id}
    tx.insert(
        s.runs,
        {
            "run_id": new_run_id,
            "workflow": source.workflow,
            "workflow_version": source.workflow_version,
            "module_revision": source.module_revision,
            "deployment_version": source.deployment_version,
            "input": run_input,
            "input_hash": input_hash(run_input),
            "status": RunStatus.QUEUED.value,
            "cancel_requested": False,
            "next_seq": 0,
            "wake_at": tx.now,
            "created_at": tx.now,
            "updated_at": tx.now,
            "launched_by": caller,
            "parent_run_id": source_id,
            "lineage": lineage,
            "budget": source.budget,  # its ceilings; its spending starts again from nothing
            "finished_at": None,
            "output": None,
            "error": None,
        },
    )
    n, o = s.nodes, s.outputs
    kept = tx.conn.execute(
        select(n).where(
            n.c.run_id == source_id,
            n.c.node_id.notin_(again),
            n.c.status.in_([NodeStatus.SUCCEEDED.value, NodeStatus.SKIPPED.value]),
        )
    ).all()
    for row in kept:
        values = dict(row._mapping)
        values.update(run_id=new_run_id, current_attempt_id=None, updated_at=tx.now)
        tx.insert(n, values)
    outputs = tx.conn.execute(
        select(o).where(o.c.run_id == source_id, o.c.node_id.in_([r.node_id for r in kept]))
    ).all()
    kept_keys = {(r.node_id, r.iteration) for r in kept}
    for row in outputs:
        if (row.node_id, row.iteration) in kept_keys:
            tx.insert(o, {**dict(row._mapping), "run_id": new_run_id, "attempt_id": None})
    tx.emit(
        new_run_id,
        "run.launched",
        payload={
            "workflow": source.workflow,
            "workflow_version": source.workflow_version,
            "module_revision": source.module_revision,
            "deployment_version": source.deployment_version,
            "launched_by": caller,
            "lineage": lineage,
            "copied_nodes": sorted({r.node_id for r in kept}),
        },
    )
    tx.emit(
        source_id,
        f"run.{action}ed",
        payload={"new_run_id": new_run_id, "from_node": node_id, "audit_id": audit_id},
    )
    tx.woken.add(new_run_id)
    created = tx.lock_run(new_run_id)
    assert created is not None
    return run_record(created)


def audit_rows(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    """Time-travel audit rows naming ``run_id``, oldest first."""
    t = s.time_travel_audit
    rows = conn.execute(select(t).where(t.c.run_id == run_id).order_by(t.c.started_at, t.c.id))
    return [dict(r._mapping) for r in rows]
