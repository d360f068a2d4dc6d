"""Load a run's state for the decision and apply the decision, in one transaction."""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import bindparam, func, null, select, type_coerce, union_all, update

from smithers.shared.actions import (
    UNSET,
    AttemptView,
    CancelChild,
    ConsumeSignal,
    Decision,
    Dispatch,
    EndAttempt,
    EscalateApproval,
    ExpireApproval,
    Key,
    LaunchChild,
    NodeView,
    OpenApproval,
    ParkOnBudget,
    Redispatch,
    RunView,
    SetBudget,
    SetNode,
    SetRun,
    SettleBudgetApproval,
)
from smithers.shared.budget import Budget
from smithers.shared.keys import queue_for, revision_queue
from smithers.shared.limits import OutputTooLarge, check_size
from smithers.shared.status import AttemptState, NodeStatus, RunStatus
from smithers.shared.store import children
from smithers.shared.store import schema as s
from smithers.shared.store.approvals import escalate_approval, expire_approval
from smithers.shared.store.inplace import InPlace
from smithers.shared.store.sandboxes import review_decisions
from smithers.shared.store.signals import consume
from smithers.shared.store.spend import budget_action
from smithers.shared.store.tx import Tx


@dataclass(frozen=True)
class Message:
    """A Celery message to send after commit: the attempt id, where it goes, and what
    it is (for :attr:`label`)."""

    attempt_id: str
    queue: str
    time_limit: float | None
    run_id: str = ""
    node_id: str = ""
    iteration: int = 0
    number: int = 0
    workflow: str = ""
    priority: int = 0  # the run's, 0..9 higher first (smithers.shared.flow)

    @property
    def label(self) -> str:
        """``workflow/run/node#attempt`` (``node[iteration]`` past a loop's first pass):
        what Flower and the worker's log show for the message. Names only, no input."""
        node = f"{self.node_id}[{self.iteration}]" if self.iteration else self.node_id
        return f"{self.workflow}/{self.run_id}/{node}#{self.number}"


_a = s.attempts
_n = s.nodes
_r = s.runs
_RUN_COLUMNS = (
    _r.c.workflow,
    _r.c.module_revision,  # read under the run's lock: a migration cannot slip in between
    _r.c.status,
    _r.c.input,
    _r.c.cancel_requested,
    _r.c.reopened,
    _r.c.traceparent,  # the launch's trace, continued by the decision (smithers.shared.tracing)
    _r.c.parent_run_id,  # with parent_node_id: a child run, whose end decides its parent
    _r.c.parent_node_id,
    _r.c.priority,  # its flow gates' line and its step messages' priority (smithers.shared.flow)
    _r.c.budget,  # the run's ceilings (smithers.shared.budget)
    _r.c.next_seq,  # its version: every change of the run appends an event (smithers.shared.store.kept)
)
_NODE_COLUMNS = (
    _n.c.node_id,
    _n.c.iteration,
    _n.c.kind,
    _n.c.status.label("node_status"),
    _n.c.failures,
    _n.c.lost,
    _n.c.current_attempt_id,
    _n.c.current_iteration,
    _n.c.next_at,
    _n.c.error,
    _a.c.attempt_id,
    _a.c.state,
    _a.c.number,
    _a.c.dispatched_at,
    _a.c.started_at,
    _a.c.lease_expires_at,
    _a.c.deadline_at,
    _a.c.error.label("attempt_error"),
    # what a step's result commit checks and writes of its attempt (load_run)
    _a.c.claim_token,
    _a.c.queue,
    _a.c.timeout_s,
    _a.c.cache_key,
)


def _nulls(columns: tuple[Any, ...]) -> list[Any]:
    """Typed NULLs in place of ``columns`` (the other half of the union below)."""
    return [type_coerce(null(), c.type).label(c.name) for c in columns]


# The run row and its node rows (each with its current attempt) in one statement: the
# run's row has node_id NULL (a node row never has). On PostgreSQL the run is locked by
# the statement sent in front of it (Tx.hold_run), so this one reads after the lock.
_RUN_AND_NODES = union_all(
    select(*_RUN_COLUMNS, *_nulls(_NODE_COLUMNS)).where(_r.c.run_id == bindparam("b_run_id")),
    select(*_nulls(_RUN_COLUMNS), *_NODE_COLUMNS)
    .select_from(_n.outerjoin(_a, _a.c.attempt_id == _n.c.current_attempt_id))
    .where(_n.c.run_id == bindparam("b_run_id")),
)
# The same, with only the node rows of the nodes named (smithers.shared.store.kept).
_RUN_AND_SOME_NODES = union_all(
    select(*_RUN_COLUMNS, *_nulls(_NODE_COLUMNS)).where(_r.c.run_id == bindparam("b_run_id")),
    select(*_nulls(_RUN_COLUMNS), *_NODE_COLUMNS)
    .select_from(_n.outerjoin(_a, _a.c.attempt_id == _n.c.current_attempt_id))
    .where(_n.c.run_id == bindparam("b_run_id"), _n.c.node_id.in_(bindparam("b_nodes", expanding=True))),
)
_APPROVALS = select(s.approvals).where(s.approvals.c.run_id == bindparam("b_run_id"))
_CACHE_LOOKUP = select(s.cache_entries).where(s.cache_entries.c.key == bindparam("b_key"))
_COUNT_RUN_ATTEMPTS = (
    select(_a.c.node_id, _a.c.iteration, func.count())
    .where(_a.c.run_id == bindparam("b_run_id"))
    .group_by(_a.c.node_id, _a.c.iteration)
)


_ATTEMPT_STATES = {s.value: s for s in AttemptState}  # a dict lookup: Enum(value) is slow
_NODE_STATUSES = {s.value: s for s in NodeStatus}


@dataclass
class Loaded:
    """A run as :func:`load_run` read it under its lock: the decision's view, the run
    row, and each node's current attempt row by attempt id (joined with its node's
    columns). A writer that changes the run in the same transaction keeps ``view`` as
    it now stands, or sets ``stale`` (then it is read again)."""

    view: RunView
    run: Any
    current: dict[str, Any]
    stale: bool = False


def load_run_view(tx: Tx, run_id: str) -> tuple[RunView, Any] | None:
    """Lock the run and read everything the decision needs (:func:`load_run`): its view
    and its row; None if it does not exist."""
    loaded = load_run(tx, run_id)
    return None if loaded is None else (loaded.view, loaded.run)


def load_run(tx: Tx, run_id: str) -> Loaded | None:
    """Lock the run and read everything the decision needs; None if it does not exist.

    The lock and the read are one round trip on PostgreSQL; the read is a statement of
    its own, so its snapshot is taken once the lock is granted: a commit that held the
    run (a worker's result) is seen whole."""
    tx.hold_run(run_id)
    return read_run(tx, run_id)


def read_run(tx: Tx, run_id: str, node_ids: Collection[str] | None = None) -> Loaded | None:
    """:func:`load_run` for a caller that holds the run's lock already; with
    ``node_ids``, the view holds only those nodes' executions (every iteration)."""
    if node_ids is None:
        found = tx.execute(_RUN_AND_NODES, {"b_run_id": run_id})
    else:
        found = tx.execute(_RUN_AND_SOME_NODES, {"b_run_id": run_id, "b_nodes": sorted(node_ids)})
    run = None
    rows = []
    for r in found:
        if r.node_id is None:
            run = r
        else:
            rows.append(r)
    if run is None:
        return None
    approvals = {}
    parked = NodeStatus.OVER_BUDGET.value  # its decision is its budget approval's
    if any(r.kind == "approval" or r.node_status == parked for r in rows):
        approvals = {
            (r.node_id, r.iteration): r._mapping for r in tx.conn.execute(_APPROVALS, {"b_run_id": run_id})
        }
    reviews = review_decisions(
        tx.conn,
        run_id,
        [r.current_attempt_id for r in rows if r.kind == "sandbox" and r.node_status == NodeStatus.WAITING],
    )
    views: dict[Key, NodeView] = {}
    for r in rows:
        attempt = None
        if r.attempt_id is not None:
            attempt = AttemptView(
                attempt_id=r.attempt_id,
                state=_ATTEMPT_STATES[r.state],
                number=r.number,
                dispatched_at=r.dispatched_at,
                started_at=r.started_at,
                lease_expires_at=r.lease_expires_at,
                deadline_at=r.deadline_at,
                error=r.attempt_error,
            )
        key = (r.node_id, r.iteration)
        decision: Mapping[Any, Any] | None = approvals.get(key)
        if r.kind == "sandbox" and r.node_status != parked:
            decision = reviews.get(r.current_attempt_id)
        views[key] = NodeView(
            node_id=key[0],
            iteration=key[1],
            status=_NODE_STATUSES[r.node_status],
            failures=r.failures,
            lost=r.lost,
            attempt=attempt,
            next_at=r.next_at,
            current_iteration=r.current_iteration,
            decision=dict(decision) if decision is not None else None,
            error=r.error,
        )
    view = run_view(run_id, run, views)
    return Loaded(view, run, {r.attempt_id: r for r in rows if r.attempt_id is not None})


def run_view(run_id: str, run: Any, nodes: dict[Key, NodeView]) -> RunView:
    """The decision's view of a run from its row (:data:`_RUN_COLUMNS`) and its nodes."""
    return RunView(
        run_id=run_id,
        status=RunStatus(run.status),
        input=run.input,
        nodes=nodes,
        cancel_requested=bool(run.cancel_requested),
        reopened=bool(run.reopened),
        budget=Budget.from_json(run.budget),
    )


_NEW_NODE = {
    "failures": 0,
    "lost": 0,
    "current_iteration": 0,
    "current_attempt_id": None,
    "next_at": None,
    "finished_at": None,
    "error": None,
}


def _upsert_node(
    tx: Tx, run_id: str, node_id: str, iteration: int, kind: str, values: dict[str, Any]
) -> None:
    """Set ``values`` on the node execution, creating it if it is new (one statement)."""
    key = {"run_id": run_id, "node_id": node_id, "iteration": iteration}
    values = {**values, "updated_at": tx.now}
    row = {**_NEW_NODE, **key, "kind": kind, "started_at": tx.now, **values}
    tx.upsert(s.nodes, ("run_id", "node_id", "iteration"), row, update=tuple(values))


def as_stored(value: Any) -> Any:
    """``value`` as a read of its JSON column returns it (tuples become lists; None
    is NULL, read as None): what a writer that holds a value it wrote hands on, instead
    of reading it back."""
    return None if value is None else json.loads(json.dumps(value))


def write_output(
    tx: Tx, run_id: str, node_id: str, iteration: int, value: Any, attempt_id: str | None
) -> None:
    """Insert or replace the output of a node execution (one statement); an output
    over the step output limit is refused (:class:`~smithers.shared.limits.OutputTooLarge`)."""
    check_size(value, tx.limits.output_bytes, f"the output of {node_id}", OutputTooLarge)
    row = {
        "run_id": run_id,
        "node_id": node_id,
        "iteration": iteration,
        "value": value,
        "attempt_id": attempt_id,
        "created_at": tx.now,
    }
    tx.upsert(s.outputs, ("run_id", "node_id", "iteration"), row)


def apply_decision(
    tx: Tx, run_id: str, decision: Decision, workflow: str = "", revision: str = ""
) -> list[Message]:
    """Write every action and its event, and set the run's next wake time.

    Returns the messages to send once the transaction has committed (``workflow``, the
    run's workflow name, goes into their labels). ``revision``, the run's module
    revision, is recorded on each new attempt, and its messages go to that revision's
    queues (:func:`smithers.shared.keys.revision_queue`), which only its holders consume.
    """
    return apply_and_tell(tx, run_id, decision, workflow, revision)[0]


def apply_and_tell(
    tx: Tx,
    run_id: str,
    decision: Decision,
    workflow: str = "",
    revision: str = "",
    priority: int = 0,
    in_place: InPlace | None = None,
) -> tuple[list[Message], bool]:
    """:func:`apply_decision`, and whether the run is due again at once (a cache hit
    frees its downstream nodes now; a zero-second timer or retry is due now). The
    messages carry the run's ``priority``. ``in_place``: a worker that may take the
    step, when the decision sends exactly one (:mod:`smithers.shared.store.inplace`);
    its message is still returned."""
    messages: list[Message] = []
    sends = sum(isinstance(a, (Dispatch, Redispatch)) for a in decision.actions)
    offer = in_place if in_place is not None and in_place.claim is None and sends == 1 else None
    terminal = False
    cache_hit = False
    counted: dict[Key, int] = {}  # attempts so far per node execution, where the decision could not tell
    if any(isinstance(a, Dispatch) and a.number is None for a in decision.actions):  # a reopened run
        counted = {(r[0], r[1]): int(r[2]) for r in tx.execute(_COUNT_RUN_ATTEMPTS, {"b_run_id": run_id})}
    for action in decision.actions:
        if isinstance(action, Dispatch):
            key = (action.node_id, action.iteration)
            number = action.number if action.number is not None else counted.get(key, 0) + 1
            message = _dispatch(tx, run_id, action, number, workflow, revision, offer)
            if message is None:
                cache_hit = True
            else:
                messages.append(replace(message, priority=priority) if priority else message)
        elif isinstance(action, Redispatch):
            messages.extend(_redispatch(tx, run_id, action, workflow, revision, priority))
        elif isinstance(action, EndAttempt):
            _end_attempt(tx, run_id, action)
        elif isinstance(action, SetNode):
            _set_node(tx, run_id, action)
        elif isinstance(action, OpenApproval):
            tx.conn.execute(
                s.approvals.insert().values(
                    run_id=run_id,
                    node_id=action.node_id,
                    iteration=action.iteration,
                    status="pending",
                    owner=action.owner,
                    fallback_owner=action.fallback_owner,
                    escalate_at=action.escalate_at,
                    requested_at=tx.now,
                    spec=dict(action.spec) if action.spec is not None else None,
                )
            )
        elif isinstance(action, EscalateApproval):
            escalate_approval(tx, run_id, action.node_id, action.iteration, action.fallback_owner)
        elif isinstance(action, ExpireApproval):
            expire_approval(tx, run_id, action.node_id, action.iteration, action.approved, action.note)
        elif isinstance(action, (ConsumeSignal, LaunchChild, CancelChild)):
            cache_hit |= _apply_link(tx, run_id, action)  # True: a child node failed, decide again
        elif isinstance(action, ParkOnBudget | SettleBudgetApproval | SetBudget):
            budget_action(tx, run_id, action)
        elif isinstance(action, SetRun):
            terminal = action.status.terminal
            _set_run(tx, run_id, action)
    wake_at = tx.now if cache_hit else decision.wake_at  # a hit frees downstream nodes now
    wake_at = _sooner(wake_at, offer.due if offer is not None else None)  # a claim's lease end, deadline
    tx.set_run(run_id, {"wake_at": None if terminal else wake_at, "updated_at": tx.now})
    return messages, not terminal and wake_at is not None and wake_at <= tx.now


def _sooner(a: float | None, b: float | None) -> float | None:
    return a if b is None else b if a is None else min(a, b)


def _apply_link(tx: Tx, run_id: str, action: ConsumeSignal | LaunchChild | CancelChild) -> bool:
    """Apply an action that links the run to a signal or a child run; True when the
    decision must be made again at once (a child that could not be launched failed its node)."""
    if isinstance(action, ConsumeSignal):
        consume(tx, run_id, action)
    elif isinstance(action, LaunchChild):
        return children.launch(tx, run_id, action) is None
    else:
        children.cancel(tx, run_id, action)
    return False


def _redispatch(
    tx: Tx, run_id: str, action: Redispatch, workflow: str, revision: str, priority: int
) -> list[Message]:
    """Send a queued attempt again (its message is the one to send; none if it is gone)."""
    row = tx.conn.execute(
        update(s.attempts)
        .where(s.attempts.c.attempt_id == action.attempt_id)
        .values(dispatched_at=tx.now)
        .returning(s.attempts.c.queue, s.attempts.c.timeout_s, s.attempts.c.number)
    ).first()
    if row is None:
        return []
    tx.emit(
        run_id,
        "attempt.redispatched",
        node_id=action.node_id,
        iteration=action.iteration,
        attempt_id=action.attempt_id,
    )
    queue, limit, number = revision_queue(row[0], revision), _time_limit(row[1]), int(row[2])
    where = (run_id, action.node_id, action.iteration)
    return [Message(action.attempt_id, queue, limit, *where, number, workflow, priority)]


# A step's worker stops it at its deadline (smithers.workers.interrupt); one that does
# not stop (blocked in C, or deaf to the interrupt) is killed by Celery's hard time
# limit this much later, which frees its slot.
HARD_LIMIT_GRACE_S = 3.0


def _time_limit(timeout_s: float | None) -> float | None:
    return None if timeout_s is None else timeout_s + HARD_LIMIT_GRACE_S


def _dispatch(
    tx: Tx,
    run_id: str,
    action: Dispatch,
    number: int,
    workflow: str,
    revision: str,
    in_place: InPlace | None = None,
) -> Message | None:
    """Create attempt ``number`` and queue the node; on a cache hit, finish it from the
    cache; if ``in_place`` takes it, create it claimed and the node running."""
    attempt_id = str(uuid.uuid4())
    queue = action.queue or queue_for(action.kind)
    hit = None
    if action.cache_key is not None:
        hit = tx.execute(_CACHE_LOOKUP, {"b_key": action.cache_key}).first()
        if hit is not None and hit.expires_at is not None and hit.expires_at <= tx.now:
            hit = None  # expired: a miss, refreshed when the step commits
    state = AttemptState.CACHED if hit is not None else AttemptState.QUEUED
    message = None
    claimed = None
    if hit is None:
        message = Message(
            attempt_id,
            revision_queue(queue, revision),
            _time_limit(action.timeout_s),
            run_id,
            action.node_id,
            action.iteration,
            number,
            workflow,
        )
        if in_place is not None:
            claimed = in_place.offer(tx, message, revision, action.cache_key, action.timeout_s)
    row = {
        "attempt_id": attempt_id,
        "run_id": run_id,
        "node_id": action.node_id,
        "iteration": action.iteration,
        "number": number,
        "state": state.value,
        "queue": queue,
        "dispatched_at": tx.now,
        "timeout_s": action.timeout_s,
        "cached": hit is not None,
        "cache_key": action.cache_key,
        "revision": revision or None,
        "claim_token": None,
        "worker": None,
        "started_at": None,
        "finished_at": tx.now if hit is not None else None,
        "heartbeat_at": None,
        "lease_expires_at": None,
        "deadline_at": None,
        "error": None,
    }
    if claimed is not None and in_place is not None:
        row = in_place.row = {**row, **claimed}
    tx.insert(s.attempts, row)
    values: dict[str, Any] = {
        "status": (NodeStatus.QUEUED if claimed is None else NodeStatus.RUNNING).value,
        "current_attempt_id": attempt_id,
        "next_at": None,
    }
    if action.failures is not None:
        values["failures"] = action.failures
    if action.lost is not None:
        values["lost"] = action.lost
    if hit is not None:
        values.update(status=NodeStatus.SUCCEEDED.value, finished_at=tx.now, error=None)
    _upsert_node(tx, run_id, action.node_id, action.iteration, action.kind.value, values)
    if hit is not None:
        write_output(tx, run_id, action.node_id, action.iteration, hit.value, attempt_id)
        tx.emit(
            run_id,
            "attempt.cached",
            node_id=action.node_id,
            iteration=action.iteration,
            attempt_id=attempt_id,
            payload={
                "number": number,
                "cache_key": action.cache_key,
                "scope": action.cache_scope,
                "cached_at": hit.created_at,
                "source_attempt_id": hit.attempt_id,
            },
        )
        tx.emit(
            run_id,
            "node.succeeded",
            node_id=action.node_id,
            iteration=action.iteration,
            payload={"cached": True},
        )
        return None
    tx.emit(
        run_id,
        "attempt.queued",
        node_id=action.node_id,
        iteration=action.iteration,
        attempt_id=attempt_id,
        payload={"number": number, "reason": action.reason, "queue": queue, "revision": revision or None},
    )
    if claimed is not None and in_place is not None:
        in_place.started(tx)
    return message


def _end_attempt(tx: Tx, run_id: str, action: EndAttempt) -> None:
    a = s.attempts
    row = tx.conn.execute(
        update(a)
        .where(
            a.c.attempt_id == action.attempt_id,
            a.c.state.in_([AttemptState.QUEUED.value, AttemptState.RUNNING.value, AttemptState.FAILED.value]),
        )
        .values(state=action.state.value, finished_at=tx.now, error=action.error)
        .returning(a.c.node_id, a.c.iteration)
    ).first()
    if row is not None:
        tx.emit(
            run_id,
            f"attempt.{action.state.value}",
            node_id=row[0],
            iteration=row[1],
            attempt_id=action.attempt_id,
            payload=dict(action.error or {}),
        )


def _set_node(tx: Tx, run_id: str, action: SetNode) -> None:
    values: dict[str, Any] = {
        "status": action.status.value,
        "next_at": action.next_at,
        "error": action.error,
    }
    if action.status.terminal:
        values["finished_at"] = tx.now
    for name in ("current_iteration", "failures", "lost"):
        if getattr(action, name) is not None:
            values[name] = getattr(action, name)
    _upsert_node(tx, run_id, action.node_id, action.iteration, action.kind.value, values)
    if action.output is not UNSET:
        write_output(tx, run_id, action.node_id, action.iteration, action.output, None)
    payload = dict(action.payload)
    if action.error:
        payload["error"] = action.error
    tx.emit(run_id, action.event, node_id=action.node_id, iteration=action.iteration, payload=payload)


def _set_run(tx: Tx, run_id: str, action: SetRun) -> None:
    values: dict[str, Any] = {"status": action.status.value, "updated_at": tx.now}
    if action.status.terminal:
        # an ended run waits for no holder: it is never shown revision_unavailable
        values.update(finished_at=tx.now, output=action.output, error=action.error, status_reason=None)
    tx.set_run(run_id, values)
    payload: dict[str, Any] = {}
    if action.error:
        payload["error"] = action.error
    tx.emit(run_id, f"run.{action.status.value}", payload=payload)


def postpone(tx: Tx, run_id: str, seconds: float) -> None:
    """Look at the run again in ``seconds`` (used when it cannot be decided now)."""
    tx.conn.execute(update(s.runs).where(s.runs.c.run_id == run_id).values(wake_at=tx.now + seconds))
