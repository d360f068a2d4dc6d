"""Run-level writes: launch (idempotent by run id), cancel, resume, delete."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from smithers.shared.actions import RunView
from smithers.shared.budget import Budget
from smithers.shared.errors import Conflict, InvalidInput, NotFound
from smithers.shared.status import NodeStatus, RunStatus
from smithers.shared.store import schema as s
from smithers.shared.store.flow import release
from smithers.shared.store.records import RunRecord, run_record, run_record_from
from smithers.shared.store.tx import Tx

if TYPE_CHECKING:
    from smithers.shared.store.store import Store

RUN_ID = re.compile(r"^[a-z0-9_-]{1,64}$")


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it matches ``[a-z0-9_-]{1,64}``, else raise InvalidInput."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise InvalidInput(f"run id {run_id!r} must match [a-z0-9_-]{{1,64}}")
    return run_id


def input_hash(value: Any) -> str:
    """A stable hash of a JSON value (sorted keys, compact separators)."""
    data = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


def launch(
    tx: Tx,
    *,
    run_id: str,
    workflow: str,
    workflow_version: str,
    module_revision: str,
    deployment_version: str,
    run_input: dict[str, Any],
    launched_by: str | None,
    parent_run_id: str | None = None,
    lineage: dict[str, Any] | None = None,
    fresh: bool = False,
    traceparent: str | None = None,
    priority: int = 0,
    budget: dict[str, Any] | None = None,
    child_of: tuple[str, int, int] | None = None,
) -> tuple[RunRecord, bool]:
    """Create a queued run, or return the existing one launched with the same input.

    Returns ``(run, created)``. A reused id with another workflow or input is a
    Conflict and writes nothing. The run row and its ``run.launched`` event are one
    transaction. ``fresh``: the id was just generated (:func:`smithers.shared.operations.new_run_id`,
    80 random bits), so no run can have it and it is not looked up first (one round
    trip fewer on PostgreSQL). ``traceparent``: the launch's trace context, which the
    run's decisions continue (smithers.shared.tracing). ``priority``: 0..9, higher
    first (smithers.shared.flow). ``budget``: the run's spending ceilings
    (smithers.shared.budget), None for none. ``child_of``: the parent's (node, iteration,
    epoch) that launched this child run (smithers.shared.store.children).
    """
    digest = input_hash(run_input)
    existing = None if fresh else tx.lock_run(run_id)
    if existing is not None:
        if existing.workflow != workflow or existing.input_hash != digest:
            raise Conflict(f"run {run_id!r} already exists with a different workflow or input")
        return run_record(existing), False
    values = dict(
        run_id=run_id,
        workflow=workflow,
        workflow_version=workflow_version,
        module_revision=module_revision,
        deployment_version=deployment_version,
        input=run_input,
        input_hash=digest,
        status=RunStatus.QUEUED.value,
        cancel_requested=False,
        next_seq=1,  # counts its run.launched event below
        wake_at=tx.now,
        created_at=tx.now,
        updated_at=tx.now,
        launched_by=launched_by,
        parent_run_id=parent_run_id,
        lineage=lineage,
        traceparent=traceparent,
        priority=priority,
        budget=budget,
        parent_node_id=None if child_of is None else child_of[0],
        parent_iteration=None if child_of is None else child_of[1],
        parent_epoch=None if child_of is None else child_of[2],
        finished_at=None,
        output=None,
        error=None,
    )
    tx.insert(s.runs, values)
    tx.emit(
        run_id,
        "run.launched",
        payload={
            "workflow": workflow,
            "workflow_version": workflow_version,
            "module_revision": module_revision,
            "deployment_version": deployment_version,
            "launched_by": launched_by,
        },
        seq=1,
    )
    tx.woken.add(run_id)
    return run_record_from(values), True


@dataclass(frozen=True)
class RunColumns:
    """The run columns :func:`~smithers.shared.store.advance.advance` reads besides the
    run's view, for a run held in memory (a launch's new run), as a read would give them."""

    workflow: str
    module_revision: str
    traceparent: str | None
    parent_run_id: str | None
    parent_node_id: str | None
    priority: int


def new_run_view(
    run: RunRecord, traceparent: str | None, budget: dict[str, Any] | None
) -> tuple[RunView, RunColumns]:
    """What a read of a run :func:`launch` has just created in this transaction gives
    the decision (:func:`smithers.shared.store.state.load_run_view`): queued, no node
    yet. Its first decision needs no read of it."""
    view = RunView(
        run_id=run.run_id, status=run.status, input=run.input, nodes={}, budget=Budget.from_json(budget)
    )
    columns = RunColumns(
        run.workflow, run.module_revision, traceparent, run.parent_run_id, run.parent_node_id, run.priority
    )
    return view, columns


def launch_once(
    store: Store,
    first: Callable[[Tx], object] | None = None,
    then: Callable[[Tx, RunRecord, bool], object] | None = None,
    **launch_args: Any,
) -> tuple[RunRecord, bool]:
    """:func:`launch` in its own transaction, safe when clients launch one new run id at
    once: on PostgreSQL the losers of the race hit the primary key when they commit; they
    then launch again, find the winner's run and return it (``created`` False), or a
    Conflict when its input differs. SQLite's BEGIN IMMEDIATE serialises them anyway.
    ``first``: written in the same transaction before the launch (retried with it);
    ``then``: called in it after the launch, with the run and whether it is new."""
    for attempt in (1, 2):
        try:
            with store.write() as tx:
                if first is not None:
                    first(tx)
                run, created = launch(tx, **launch_args)
                if then is not None:
                    then(tx, run, created)
                return run, created
        except IntegrityError:
            if attempt == 2 or launch_args.get("fresh"):
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _locked(tx: Tx, run_id: str) -> RunRecord:
    row = tx.lock_run(run_id)
    if row is None:
        raise NotFound(f"run {run_id!r} not found")
    return run_record(row)


def request_cancel(tx: Tx, run_id: str, actor: str | None) -> RunRecord:
    """Ask the scheduler to cancel a run; a no-op on a run that already ended."""
    run = _locked(tx, run_id)
    if run.status.terminal or run.cancel_requested:
        return run
    tx.conn.execute(update(s.runs).where(s.runs.c.run_id == run_id).values(cancel_requested=True))
    tx.emit(run_id, "run.cancel_requested", payload={"by": actor})
    tx.wake(run_id)
    return run


def resume(tx: Tx, run_id: str, actor: str | None) -> RunRecord:
    """Reopen a failed or cancelled run under the same id.

    Node executions that did not succeed (or were skipped) are forgotten so they run
    again; finished steps keep their outputs and never run again.
    """
    run = _locked(tx, run_id)
    if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
        raise Conflict(f"run {run_id!r} is {run.status.value}; only failed or cancelled runs resume")
    n = s.nodes
    tx.conn.execute(
        delete(n).where(
            n.c.run_id == run_id,
            n.c.status.notin_([NodeStatus.SUCCEEDED.value, NodeStatus.SKIPPED.value]),
        )
    )
    tx.conn.execute(
        update(s.runs)
        .where(s.runs.c.run_id == run_id)
        .values(
            status=RunStatus.QUEUED.value,
            cancel_requested=False,
            finished_at=None,
            error=None,
            output=None,
            updated_at=tx.now,
            reopened=True,  # node rows went; their attempts stay (numbering)
        )
    )
    tx.emit(run_id, "run.resumed", payload={"by": actor})
    tx.wake(run_id)
    return run


@dataclass(frozen=True)
class Deleted:
    """What deleting a run removed: the rows, and the sandbox bundle directories the
    caller removes from disk once the transaction has committed."""

    rows: int
    bundle_paths: tuple[str, ...]


# A run's rows, children first: each is deleted explicitly (the foreign keys would
# cascade) so the rows are counted. Audit rows (audit_log, time_travel_audit) stay.
_OWNED = (
    s.sandbox_reviews,
    s.sandboxes,
    s.approvals,
    s.signals,
    s.spend,
    s.outputs,
    s.events,
    s.attempts,
    s.nodes,
)


def delete_run(
    tx: Tx, run_id: str, actor: str | None, *, finished_before: float | None = None
) -> Deleted | None:
    """Delete a run and every dependent row; the audit entry for the deletion stays.

    With ``finished_before`` (retention) the run is deleted only if it is terminal and
    finished before that time, checked under the run's lock: None when it is not (a
    rerun or rewind may have reopened it since it was picked)."""
    run = _locked(tx, run_id)
    if finished_before is not None and not (
        run.status.terminal and (run.finished_at or run.updated_at) < finished_before
    ):
        return None
    tx.audit(
        "run.deleted",
        actor=actor,
        target_type="run",
        target_id=run_id,
        run_id=run_id,
        detail={"workflow": run.workflow, "status": run.status.value, "module_revision": run.module_revision},
    )
    release(tx, run_id)  # a slot it holds goes to the next in line (smithers.shared.store.flow)
    found = tx.conn.execute(select(s.sandboxes.c.bundle_path).where(s.sandboxes.c.run_id == run_id))
    bundles = tuple(str(path) for path in list[Any](found.scalars()))
    rows = 0
    for table in _OWNED:
        rows += tx.conn.execute(delete(table).where(table.c.run_id == run_id)).rowcount
    rows += tx.conn.execute(
        delete(s.cache_entries).where(s.cache_entries.c.run_id == run_id, s.cache_entries.c.scope == "run")
    ).rowcount
    rows += tx.conn.execute(delete(s.runs).where(s.runs.c.run_id == run_id)).rowcount
    return Deleted(rows, bundles)
