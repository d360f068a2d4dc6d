"""Status enums of runs, nodes, attempts and approvals (lowercase string values)."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """Where a run stands. ``waiting`` means blocked on a person (approval or review)."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """True once the run will not change again without a resume or rewind."""
        return self in _TERMINAL_RUN


_TERMINAL_RUN = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})


class NodeStatus(StrEnum):
    """State of one node execution, addressed by (run, node, iteration)."""

    QUEUED = "queued"  # an attempt is dispatched, no worker has claimed it yet
    RUNNING = "running"  # a worker claimed the current attempt (or a loop is iterating)
    BACKOFF = "backoff"  # the last attempt failed; the next one is due at ``next_at``
    WAITING = "waiting"  # approval, review or timer
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    # the run's budget no longer covers its next attempt: it waits for an approval that
    # raises the ceilings (smithers.shared.budget)
    OVER_BUDGET = "over_budget"

    @property
    def terminal(self) -> bool:
        """True for succeeded, failed, skipped and cancelled."""
        return self in _TERMINAL_NODE


_TERMINAL_NODE = frozenset(
    {NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.CANCELLED}
)


class AttemptState(StrEnum):
    """State of one try of a node execution."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    LOST = "lost"  # its lease expired: the worker died or lost contact
    CANCELLED = "cancelled"
    CACHED = "cached"  # satisfied from the cache, never dispatched

    @property
    def live(self) -> bool:
        """True while a worker may still commit a result for this attempt."""
        return self in (AttemptState.QUEUED, AttemptState.RUNNING)


class ApprovalStatus(StrEnum):
    """A human decision on an approval node."""

    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
