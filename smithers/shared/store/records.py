"""Row-to-dataclass mapping, in one place. Records are frozen plain data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Row

from smithers.shared.status import ApprovalStatus, AttemptState, NodeStatus, RunStatus


@dataclass(frozen=True)
class RunRecord:
    """A run as stored."""

    run_id: str
    workflow: str
    workflow_version: str
    module_revision: str
    deployment_version: str
    input: dict[str, Any]
    status: RunStatus
    cancel_requested: bool
    created_at: float
    updated_at: float
    finished_at: float | None
    output: Any
    error: dict[str, Any] | None
    launched_by: str | None
    parent_run_id: str | None
    last_seq: int
    status_reason: str | None = None  # "revision_unavailable": no live process holds its revision
    parent_node_id: str | None = None  # a child run: the parent's node that launched it
    parent_iteration: int | None = None  # and its iteration (smithers.shared.child)
    priority: int = 0  # 0..9, higher first (smithers.shared.flow)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (status as its string value)."""
        return asdict(self)


@dataclass(frozen=True)
class NodeRecord:
    """A node execution (run, node, iteration) as stored."""

    node_id: str
    iteration: int
    kind: str
    status: NodeStatus
    failures: int
    lost: int
    current_attempt_id: str | None
    current_iteration: int
    next_at: float | None
    started_at: float
    finished_at: float | None
    error: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class AttemptRecord:
    """One try of a node execution."""

    attempt_id: str
    run_id: str
    node_id: str
    iteration: int
    number: int
    state: AttemptState
    queue: str
    worker: str | None
    dispatched_at: float
    started_at: float | None
    finished_at: float | None
    heartbeat_at: float | None
    lease_expires_at: float | None
    deadline_at: float | None
    error: dict[str, Any] | None
    cached: bool
    revision: str | None = None  # the module revision this attempt runs

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class EventRecord:
    """One event of a run's history."""

    run_id: str
    seq: int
    feed_id: int | None  # None until numbered (PostgreSQL: smithers.shared.store.feed)
    type: str
    node_id: str | None
    iteration: int | None
    attempt_id: str | None
    payload: dict[str, Any]
    created_at: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class ApprovalRecord:
    """A pending or decided approval."""

    run_id: str
    node_id: str
    iteration: int
    status: ApprovalStatus
    owner: str | None
    fallback_owner: str | None
    escalate_at: float | None
    requested_at: float
    decided_by: str | None
    decided_at: float | None
    note: str | None
    spec: Mapping[str, Any] | None = None  # the declaration (smithers.shared.approval)
    payload: Any = None
    escalated_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def run_record(row: Row[Any]) -> RunRecord:
    """Map a ``runs`` row."""
    return run_record_from(row._mapping)


def run_record_from(m: Mapping[Any, Any]) -> RunRecord:
    """Map the column values of a ``runs`` row."""
    return RunRecord(
        run_id=m["run_id"],
        workflow=m["workflow"],
        workflow_version=m["workflow_version"],
        module_revision=m["module_revision"],
        deployment_version=m["deployment_version"],
        input=m["input"],
        status=RunStatus(m["status"]),
        cancel_requested=bool(m["cancel_requested"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        finished_at=m["finished_at"],
        output=m["output"],
        error=m["error"],
        launched_by=m["launched_by"],
        parent_run_id=m["parent_run_id"],
        last_seq=int(m["next_seq"]),
        status_reason=m.get("status_reason"),
        parent_node_id=m.get("parent_node_id"),
        parent_iteration=m.get("parent_iteration"),
        priority=int(m.get("priority") or 0),
    )


def node_record(row: Row[Any]) -> NodeRecord:
    """Map a ``nodes`` row."""
    m = row._mapping
    return NodeRecord(
        node_id=m["node_id"],
        iteration=m["iteration"],
        kind=m["kind"],
        status=NodeStatus(m["status"]),
        failures=m["failures"],
        lost=m["lost"],
        current_attempt_id=m["current_attempt_id"],
        current_iteration=m["current_iteration"],
        next_at=m["next_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        error=m["error"],
    )


def attempt_record(row: Row[Any]) -> AttemptRecord:
    """Map an ``attempts`` row (the claim token is never exposed)."""
    m = row._mapping
    return AttemptRecord(
        attempt_id=m["attempt_id"],
        run_id=m["run_id"],
        node_id=m["node_id"],
        iteration=m["iteration"],
        number=m["number"],
        state=AttemptState(m["state"]),
        queue=m["queue"],
        worker=m["worker"],
        dispatched_at=m["dispatched_at"],
        started_at=m["started_at"],
        finished_at=m["finished_at"],
        heartbeat_at=m["heartbeat_at"],
        lease_expires_at=m["lease_expires_at"],
        deadline_at=m["deadline_at"],
        error=m["error"],
        cached=bool(m["cached"]),
        revision=m.get("revision"),
    )


def event_record(row: Row[Any]) -> EventRecord:
    """Map an ``events`` row."""
    m = row._mapping
    return EventRecord(
        run_id=m["run_id"],
        seq=int(m["seq"]),
        feed_id=None if m["feed_id"] is None else int(m["feed_id"]),
        type=m["type"],
        node_id=m["node_id"],
        iteration=m["iteration"],
        attempt_id=m["attempt_id"],
        payload=m["payload"],
        created_at=m["created_at"],
    )


def approval_record(row: Row[Any]) -> ApprovalRecord:
    """Map an ``approvals`` row."""
    m = row._mapping
    return ApprovalRecord(
        run_id=m["run_id"],
        node_id=m["node_id"],
        iteration=m["iteration"],
        status=ApprovalStatus(m["status"]),
        owner=m["owner"],
        fallback_owner=m["fallback_owner"],
        escalate_at=m["escalate_at"],
        requested_at=m["requested_at"],
        decided_by=m["decided_by"],
        decided_at=m["decided_at"],
        note=m["note"],
        spec=m["spec"],
        payload=m["payload"],
        escalated_at=m["escalated_at"],
    )
