"""Move a run forward inside a write transaction: load it, decide, apply.

Every process that commits a change that can move a run calls :func:`advance` in that
same transaction, under the run's lock: a worker after its step's result, the gateway
after a launch, an approval or review decision, or a cancel, and the scheduler for what
time and recovery drive. The messages it returns go out after the commit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from smithers.shared import tracing
from smithers.shared.actions import (
    CancelChild,
    Decision,
    DecisionConfig,
    Key,
    LaunchChild,
    MissingOutputs,
    RunView,
    SetRun,
)
from smithers.shared.decision import decide
from smithers.shared.registry import Registry
from smithers.shared.status import NodeStatus, RunStatus
from smithers.shared.store import children as children_store
from smithers.shared.store import flow as flow_store
from smithers.shared.store import signals as signals_store
from smithers.shared.store import spend as spend_store
from smithers.shared.store.inplace import InPlace
from smithers.shared.store.queries import outputs_for
from smithers.shared.store.state import Message, apply_and_tell, load_run_view
from smithers.shared.store.tx import Tx
from smithers.shared.workflow import Workflow

# (workflow name, module revision) -> the workflow if this process holds that revision
Holds = Callable[[str, str], Workflow | None]
MAX_ROUNDS = 20  # decisions in a row for a run due again at once (cache hits, 0 s timers)
# A run due again sooner than this (a short retry delay, a deadline) gets a Redis wake-up:
# the scheduler that takes it holds the time and wakes for it, instead of finding it at
# its next sweep (smithers.scheduler.timers; two sweep intervals at the default).
NEAR_WAKE_S = 2.0


IN_FLIGHT = frozenset({NodeStatus.QUEUED, NodeStatus.RUNNING})


@dataclass
class Advanced:
    """What :func:`advance` did: ``decided`` False means the run was left for another
    process (its revision is not held here, or deciding it here costs too much), and
    ``workflow``/``revision`` say whose it is; ``messages`` go out after commit."""

    decided: bool
    messages: list[Message] = field(default_factory=list)
    wake_at: float | None = None
    workflow: str = ""
    revision: str = ""
    trace: Any = None  # the decision's span context (tracing on), for the publishes
    near: bool = False  # due again within NEAR_WAKE_S: send a wake-up after commit
    status: RunStatus | None = None  # the run's status once decided, if the decision set it
    gated: bool = False  # not decided: it must pass its flow gates, with ``gate`` (below)
    view: RunView | None = None  # the run as the decision saw it
    dispatched: int = 0  # attempts its last round sent

    @property
    def in_flight(self) -> int:
        """Node executions queued or running once decided: the scheduler paces a wide run
        by them (counted only when asked: a writer's decision has no use for it)."""
        if self.view is None:
            return 0
        return self.dispatched + sum(1 for n in self.view.nodes.values() if n.status in IN_FLIGHT)


def decide_loaded(
    tx: Tx, wf: Workflow, view: RunView, config: DecisionConfig, known: Mapping[Key, Any] | None = None
) -> Decision:
    """The decision for ``view``, given the outputs it reads: it is made as a partial
    decision, and each time it names outputs it was not given they are read (one
    query) and it is made again. Most decisions read none (a chain's next step); a
    branch, a cached node's key, a loop's condition or the run's result read theirs
    once. ``known``: outputs the caller wrote in ``tx`` and holds as stored (a step's
    result), which are not read again."""
    outputs: dict[Key, Any] = dict(known) if known else {}
    if wf.waits_for_signals():
        view = replace(view, signals=signals_store.pending(tx.conn, view.run_id))
    if wf.launches_children():
        view = replace(view, children=children_store.current(tx.conn, view.run_id))
    if view.budget is not None:  # a run with ceilings: what it spent so far
        view = replace(view, spent=spend_store.totals(tx.conn, view.run_id))
    while True:
        try:
            return decide(wf, view, outputs, tx.now, config, partial=True)
        except MissingOutputs as need:
            keys = need.keys - outputs.keys()
            if not keys:  # cannot happen: each round is given what the last one named
                asked = sorted(need.keys)
                raise RuntimeError(f"run {view.run_id}: the decision asked again for {asked}") from None
            outputs.update(outputs_for(tx.conn, view.run_id, {k[0] for k in keys}))
            for key in keys:
                outputs.setdefault(key, None)  # no output (skipped, failed, not run)


def advance(
    tx: Tx,
    run_id: str,
    holds: Holds,
    config: DecisionConfig,
    *,
    max_nodes: int | None = None,
    depth: int = 0,
    gate: bool = True,
    in_place: InPlace | None = None,
    known: Mapping[Key, Any] | None = None,
    loaded: tuple[RunView, Any] | None = None,
) -> Advanced:
    """Lock ``run_id``, decide it and apply the decision in ``tx``.

    ``holds`` gives the workflow of a (name, revision) this process runs, else None: a
    run of another revision is never decided with this code. ``max_nodes`` bounds the
    decision's cost: a run with more node executions is left for the scheduler (its
    wake time is set to now), which batches wide runs' decisions.

    A queued run of a workflow with flow limits (:mod:`smithers.shared.flow`) is first
    admitted at its gates, or left queued until the time they give; ``gate`` False
    returns such a run undecided (``gated``), for a caller that locks other runs after
    it in ``tx`` (the scheduler's batch): gate locks come after every run lock. A run
    that ends frees its slot in ``tx``. ``in_place``: the worker whose step commit this
    follows, which may take the one step a decision of this run sends
    (:mod:`smithers.shared.store.inplace`); ``known``: outputs of this run it wrote in
    ``tx`` (:func:`decide_loaded`). ``loaded``: the run's view and columns as the caller
    wrote them in ``tx`` (a launch's new run, :func:`~smithers.shared.store.runs.new_run_view`),
    for the first round instead of a read.
    """
    messages: list[Message] = []
    trace = None
    status: RunStatus | None = None
    related: list[str] = []  # children launched or asked to cancel, a child's parent
    for _ in range(MAX_ROUNDS):
        current = loaded if loaded is not None else load_run_view(tx, run_id)
        loaded = None
        if current is None:
            return Advanced(True, messages)
        view, row = current
        wf = holds(row.workflow, row.module_revision)
        if wf is None or (max_nodes is not None and len(view.nodes) > max_nodes):
            if wf is not None:
                tx.wake(run_id)
            return Advanced(False, messages, workflow=row.workflow, revision=row.module_revision)
        if wf.flow is not None and view.status is RunStatus.QUEUED and not view.cancel_requested:
            if not gate:
                return Advanced(
                    False, messages, workflow=row.workflow, revision=row.module_revision, gated=True
                )
            admission = flow_store.admit(tx, run_id, row.workflow, wf.flow, view.input, row.priority or 0)
            if not admission.admitted:
                return _held_back(tx, run_id, admission.wake_at, messages, row)
        # The launch's trace goes on here: a wake-up over Redis carries no context.
        with tracing.span("smithers.decide", row.traceparent, **{tracing.RUN_ID: run_id}):
            decision = decide_loaded(tx, wf, view, config, known)
            tx.decided(run_id)
            if in_place is not None:  # what it writes: read again by a worker's next commit
                in_place.note(decision.actions)
            sent, again = apply_and_tell(
                tx, run_id, decision, row.workflow, row.module_revision, row.priority or 0, in_place
            )
            messages.extend(sent)
            related.extend(_children(tx, run_id, decision))
            for action in decision.actions:
                if isinstance(action, SetRun):
                    status = action.status
                    if wf.flow is not None and status.terminal:  # its slot, in the same transaction
                        flow_store.release(tx, run_id, wf.flow)
            trace = tracing.current()
        if not again:
            break
    else:
        tx.wake(run_id)  # still due: the scheduler goes on with it
    related.extend(_parent(row, status))
    _decide_related(tx, related, holds, config, max_nodes, depth, messages)
    near = decision.wake_at is not None and decision.wake_at < tx.now + NEAR_WAKE_S
    if near:
        tx.woken.add(run_id)  # a wake-up only: the run's wake time stays the decision's
    return Advanced(
        True, messages, decision.wake_at, row.workflow, row.module_revision, trace, near, status,
        view=view, dispatched=len(sent),
    )  # fmt: skip


MAX_DEPTH = 8  # parent <-> child hops one transaction decides (nesting deeper: the scheduler)


def _decide_related(
    tx: Tx,
    related: list[str],
    holds: Holds,
    config: DecisionConfig,
    max_nodes: int | None,
    depth: int,
    messages: list[Message],
) -> None:
    """Decide, in ``tx``, the runs a decision moved: children it launched or asked to
    cancel, the parent of a child that ended (bounded by ``MAX_DEPTH``)."""
    if related:
        tx.flush()  # this run's row as decided: what the related runs' decisions read of it
    for other in dict.fromkeys(related):
        tx.wake(other)  # withdrawn if decided below; kept for the scheduler if not
        if depth < MAX_DEPTH:
            messages.extend(advance(tx, other, holds, config, max_nodes=max_nodes, depth=depth + 1).messages)


def _children(tx: Tx, run_id: str, decision: Decision) -> list[str]:
    """The children ``decision`` launched (still queued) or asked to cancel: decided next."""
    found: list[str] = []
    current = None
    for action in decision.actions:
        if isinstance(action, CancelChild):
            found.append(action.child_run_id)
        elif isinstance(action, LaunchChild):
            current = current if current is not None else children_store.current(tx.conn, run_id)
            child = current.get((action.node_id, action.iteration))
            if child is not None and child.status is RunStatus.QUEUED:
                found.append(child.run_id)
    return found


def _parent(row: Any, status: RunStatus | None) -> list[str]:
    """The parent of a child run that has just ended (its node is done)."""
    if status is not None and status.terminal and row.parent_node_id is not None:
        return [str(row.parent_run_id)]
    return []


def _held_back(tx: Tx, run_id: str, wake_at: float | None, messages: list[Message], row: Any) -> Advanced:
    """A queued run its gates did not admit: it stays queued until ``wake_at``."""
    tx.decided(run_id)
    tx.set_run(run_id, {"wake_at": wake_at, "updated_at": tx.now})
    near = wake_at is not None and wake_at < tx.now + NEAR_WAKE_S
    if near:
        tx.woken.add(run_id)
    return Advanced(True, messages, wake_at, row.workflow, row.module_revision, near=near)


@dataclass(frozen=True)
class Decider:
    """What a writer needs to decide the runs it changes: the workflows it holds, the
    decision's tunables and its cost bound (``SMITHERS_DECIDE_MAX_NODES``; 0: it never
    decides, the scheduler does)."""

    registry: Registry
    config: DecisionConfig
    max_nodes: int

    def holds(self, workflow: str, revision: str) -> Workflow | None:
        """The workflow if this process has ``workflow`` loaded at ``revision``."""
        entry = self.registry.find(workflow)
        return entry.workflow if entry is not None and entry.revision == revision else None

    def decides(self, workflow: Workflow | None) -> bool:
        """Whether :meth:`after` decides a run of ``workflow`` (known to this process)."""
        return self.max_nodes > 0 and workflow is not None and workflow.executions() <= self.max_nodes

    def after(
        self,
        tx: Tx,
        run_id: str,
        workflow: Workflow | None = None,
        in_place: InPlace | None = None,
        known: Mapping[Key, Any] | None = None,
        loaded: tuple[RunView, Any] | None = None,
    ) -> Advanced | None:
        """Decide ``run_id`` in ``tx`` after a change to it; None when writers do not
        decide, or the run's ``workflow`` (when the caller knows it) can have more node
        executions than the bound: the change itself woke the run for the scheduler.
        ``in_place``, ``known``, ``loaded``: see :func:`advance`."""
        if self.max_nodes <= 0 or (workflow is not None and workflow.executions() > self.max_nodes):
            return None
        return advance(
            tx,
            run_id,
            self.holds,
            self.config,
            max_nodes=self.max_nodes,
            in_place=in_place,
            known=known,
            loaded=loaded,
        )
