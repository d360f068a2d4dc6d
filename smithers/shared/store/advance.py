"""Move a run forward inside a write transaction: load it, decide, apply.

Every process that commits a change that can move a run calls :func:`advance` in that
same transaction, under the run's lock: a worker after its step's result, the gateway
after a launch, an approval or review decision, or a cancel, and the scheduler for what
time and recovery drive. The messages it returns go out after the commit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from smithers.shared import tracing
from smithers.shared.actions import Decision, DecisionConfig, Key, MissingOutputs, RunView, SetRun
from smithers.shared.decision import decide
from smithers.shared.registry import Registry
from smithers.shared.status import RunStatus
from smithers.shared.store import signals as signals_store
from smithers.shared.store import spend as spend_store
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


def decide_loaded(tx: Tx, wf: Workflow, view: RunView, config: DecisionConfig) -> Decision:
    """The decision for ``view``, given the outputs it reads: it is made as a partial
    decision, and each time it names outputs it was not given they are read (one
    query) and it is made again. Most decisions read none (a chain's next step); a
    branch, a cached node's key, a loop's condition or the run's result read theirs
    once."""
    outputs: dict[Key, Any] = {}
    if wf.waits_for_signals():
        view = replace(view, signals=signals_store.pending(tx.conn, view.run_id))
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
) -> Advanced:
    """Lock ``run_id``, decide it and apply the decision in ``tx``.

    ``holds`` gives the workflow of a (name, revision) this process runs, else None: a
    run of another revision is never decided with this code. ``max_nodes`` bounds the
    decision's cost: a run with more node executions is left for the scheduler (its
    wake time is set to now), which batches wide runs' decisions.
    """
    messages: list[Message] = []
    trace = None
    status: RunStatus | None = None
    for _ in range(MAX_ROUNDS):
        loaded = load_run_view(tx, run_id)
        if loaded is None:
            return Advanced(True, messages)
        view, row = loaded
        wf = holds(row.workflow, row.module_revision)
        if wf is None or (max_nodes is not None and len(view.nodes) > max_nodes):
            if wf is not None:
                tx.wake(run_id)
            return Advanced(False, messages, workflow=row.workflow, revision=row.module_revision)
        # The launch's trace goes on here: a wake-up over Redis carries no context.
        with tracing.span("smithers.decide", row.traceparent, **{tracing.RUN_ID: run_id}):
            decision = decide_loaded(tx, wf, view, config)
            tx.decided(run_id)
            sent, again = apply_and_tell(tx, run_id, decision, row.workflow, row.module_revision)
            messages.extend(sent)
            for action in decision.actions:
                if isinstance(action, SetRun):
                    status = action.status
            trace = tracing.current()
        if not again:
            break
    else:
        tx.wake(run_id)  # still due: the scheduler goes on with it
    near = decision.wake_at is not None and decision.wake_at < tx.now + NEAR_WAKE_S
    if near:
        tx.woken.add(run_id)  # a wake-up only: the run's wake time stays the decision's
    return Advanced(True, messages, decision.wake_at, row.workflow, row.module_revision, trace, near, status)


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

    def after(self, tx: Tx, run_id: str, workflow: Workflow | None = None) -> Advanced | None:
        """Decide ``run_id`` in ``tx`` after a change to it; None when writers do not
        decide, or the run's ``workflow`` (when the caller knows it) can have more node
        executions than the bound: the change itself woke the run for the scheduler."""
        if self.max_nodes <= 0 or (workflow is not None and workflow.executions() > self.max_nodes):
            return None
        return advance(tx, run_id, self.holds, self.config, max_nodes=self.max_nodes)
