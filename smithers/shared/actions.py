"""What the scheduler's decision reads and writes: run views and actions (plain data).

The store builds a :class:`RunView` under the run's lock; :func:`smithers.shared.decision.decide`
returns a :class:`Decision` whose actions the store applies in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from smithers.shared.budget import Budget, Spent
from smithers.shared.status import AttemptState, NodeStatus, RunStatus
from smithers.shared.workflow import NodeKind

Key = tuple[str, int]
UNSET: Any = object()


@dataclass(frozen=True)
class AttemptView:
    """The current attempt of a node execution, as the decision needs it."""

    attempt_id: str
    state: AttemptState
    number: int
    dispatched_at: float
    started_at: float | None = None
    lease_expires_at: float | None = None
    deadline_at: float | None = None
    error: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class NodeView:
    """One node execution (run, node, iteration) that has started."""

    node_id: str
    iteration: int
    status: NodeStatus
    failures: int = 0
    lost: int = 0
    attempt: AttemptView | None = None
    next_at: float | None = None
    current_iteration: int = 0
    decision: Mapping[str, Any] | None = None  # an approval's or review's decision
    error: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class SignalView:
    """A signal sent to the run and not yet taken by a signal node."""

    signal_id: str
    name: str
    payload: Any
    sender: str | None
    received_at: float


@dataclass(frozen=True)
class ChildView:
    """The current child run of a child node execution (its latest epoch)."""

    run_id: str
    status: RunStatus
    cancel_requested: bool = False
    output: Any = None
    error: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RunView:
    """A run's state as loaded (under its row lock) by the scheduler."""

    run_id: str
    status: RunStatus
    input: Mapping[str, Any]
    nodes: Mapping[Key, NodeView]
    cancel_requested: bool = False
    reopened: bool = False  # a rewind or resume removed node rows (attempts stay)
    # the signals not yet taken, per name in arrival order (loaded for a workflow with signal nodes)
    signals: Mapping[str, tuple[SignalView, ...]] = field(default_factory=dict)
    # each child node execution's current child run (loaded for a workflow with child nodes)
    children: Mapping[Key, ChildView] = field(default_factory=dict)
    # the run's ceilings (None: none) and, when it has some, what it spent so far
    budget: Budget | None = None
    spent: Spent = field(default_factory=Spent)


class MissingOutputs(BaseException):
    """Raised by a partial decision (``decide(..., partial=True)``) that needs outputs it
    was not given: the caller loads ``keys`` (an absent output as ``None``) and decides
    again. A ``BaseException`` so a branch or loop predicate's ``except Exception``
    cannot swallow it."""

    def __init__(self, keys: Iterable[Key]) -> None:
        self.keys = frozenset(keys)
        super().__init__(sorted(self.keys))


@dataclass(frozen=True)
class DecisionConfig:
    """Tunables of the decision, from the scheduler's configuration."""

    redispatch_after_s: float = 300.0
    max_lost: int = 5
    # Since when the broker is known to hold every message sent (its epoch): a queued
    # attempt dispatched before it may have lost its message and is sent again at once.
    # 0: unknown (only ``redispatch_after_s`` re-sends)
    intact_since: float = 0.0


@dataclass(frozen=True)
class Dispatch:
    """Create a new attempt for a node execution and send it to a worker queue."""

    node_id: str
    iteration: int
    kind: NodeKind
    timeout_s: float | None
    reason: str  # start | retry | lost
    failures: int | None = None
    lost: int | None = None
    cache_key: str | None = None  # look the output up first; dispatch on a miss
    cache_scope: str | None = None
    number: int | None = None  # the new attempt's number; None: count the attempts so far
    queue: str | None = None  # the node's own queue (None: its kind's)


@dataclass(frozen=True)
class Redispatch:
    """Send an existing queued attempt again (its message may have been lost)."""

    attempt_id: str
    node_id: str
    iteration: int


@dataclass(frozen=True)
class EndAttempt:
    """Give up a live attempt; a late result from it will be refused."""

    attempt_id: str
    state: AttemptState
    error: Mapping[str, Any] | None


@dataclass(frozen=True)
class SetNode:
    """Create or update a node execution row, optionally writing its output."""

    node_id: str
    iteration: int
    kind: NodeKind
    status: NodeStatus
    event: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    output: Any = UNSET
    error: Mapping[str, Any] | None = None
    next_at: float | None = None
    current_iteration: int | None = None
    failures: int | None = None
    lost: int | None = None


@dataclass(frozen=True)
class OpenApproval:
    """Record a pending approval with its owners."""

    node_id: str
    iteration: int
    owner: str | None
    fallback_owner: str | None
    escalate_at: float | None
    spec: Mapping[str, Any] | None = None  # the declaration (smithers.shared.approval)


@dataclass(frozen=True)
class EscalateApproval:
    """A pending approval passed its escalation time: note it and emit its event, once."""

    node_id: str
    iteration: int
    fallback_owner: str | None


@dataclass(frozen=True)
class ExpireApproval:
    """A pending approval passed its timeout: decide it by its declared default."""

    node_id: str
    iteration: int
    approved: bool
    note: str


@dataclass(frozen=True)
class ConsumeSignal:
    """A signal node takes a signal: mark it taken by (node, iteration) and emit
    ``signal.consumed``."""

    signal_id: str
    name: str
    node_id: str
    iteration: int


@dataclass(frozen=True)
class LaunchChild:
    """Launch the child run of a child node execution, or find the one it has: the
    store derives its id (:func:`smithers.shared.child.child_run_id`)."""

    node_id: str
    iteration: int
    workflow: str
    input: Mapping[str, Any]


@dataclass(frozen=True)
class CancelChild:
    """Ask a child run to cancel (its parent was cancelled)."""

    node_id: str
    iteration: int
    child_run_id: str


@dataclass(frozen=True)
class ParkOnBudget:
    """A step the budget no longer covers: open (or open again) its approval that asks
    to raise the ceilings, with ``spec`` (smithers.shared.budget.raise_spec)."""

    node_id: str
    iteration: int
    spec: Mapping[str, Any]


@dataclass(frozen=True)
class SettleBudgetApproval:
    """A parked step whose approval is still pending is covered again (another step's
    approval raised the ceilings): decide its approval approved, by ``smithers:budget``."""

    node_id: str
    iteration: int
    note: str


@dataclass(frozen=True)
class SetBudget:
    """Set the run's ceilings (an approval raised them), with its ``budget.raised`` event."""

    budget: Budget
    node_id: str
    iteration: int
    by: str | None


@dataclass(frozen=True)
class SetRun:
    """Change the run's status (and record its output or error when it ends)."""

    status: RunStatus
    output: Any = None
    error: Mapping[str, Any] | None = None


Action = (
    Dispatch
    | Redispatch
    | EndAttempt
    | SetNode
    | OpenApproval
    | EscalateApproval
    | ExpireApproval
    | ConsumeSignal
    | LaunchChild
    | CancelChild
    | ParkOnBudget
    | SettleBudgetApproval
    | SetBudget
    | SetRun
)


@dataclass(frozen=True)
class Decision:
    """What to write, in order, and when the run next needs the scheduler."""

    actions: tuple[Action, ...]
    wake_at: float | None
