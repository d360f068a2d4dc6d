"""The typed results of :class:`smithers.client.Client`: frozen dataclasses, one per
schema of the gateway's OpenAPI document, each built by ``from_json`` from a response body.

The families already modelled in pydantic (approvals, grants, sandboxes, sessions, cron
schedules, signals, workflows) come from
:mod:`smithers.shared.api`, the models the gateway serializes with; the others are still
here. ``from_json`` (and the models' ``model_validate``) reads the fields it knows and
ignores others: a newer gateway that adds a field does not break an older client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from smithers.shared import api
from smithers.shared.status import AttemptState, NodeStatus, RunStatus

Json = Mapping[str, Any]


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _dict(value: Any) -> dict[str, Any] | None:
    return None if value is None else dict(value)


@dataclass(frozen=True)
class Run:
    """A run (``Run``; in a page, ``RunSummary``: ``input`` and ``output`` are then None)."""

    run_id: str
    workflow: str
    workflow_version: str
    module_revision: str
    deployment_version: str
    status: RunStatus
    cancel_requested: bool
    created_at: float
    updated_at: float
    finished_at: float | None
    error: dict[str, Any] | None
    launched_by: str | None
    parent_run_id: str | None
    last_seq: int
    status_reason: str | None
    input: dict[str, Any] | None = None
    output: Any = None
    parent_node_id: str | None = None  # a child run: the parent's node that launched it
    parent_iteration: int | None = None
    priority: int = 0  # 0..9, higher first

    @classmethod
    def from_json(cls, data: Json) -> Run:
        """Build from a ``Run`` or ``RunSummary`` body."""
        return cls(
            run_id=str(data["run_id"]),
            workflow=str(data["workflow"]),
            workflow_version=str(data.get("workflow_version", "")),
            module_revision=str(data.get("module_revision", "")),
            deployment_version=str(data.get("deployment_version", "")),
            status=RunStatus(data["status"]),
            cancel_requested=bool(data.get("cancel_requested", False)),
            created_at=float(data.get("created_at", 0.0)),
            updated_at=float(data.get("updated_at", 0.0)),
            finished_at=_float(data.get("finished_at")),
            error=_dict(data.get("error")),
            launched_by=_str(data.get("launched_by")),
            parent_run_id=_str(data.get("parent_run_id")),
            last_seq=int(data.get("last_seq") or 0),
            status_reason=_str(data.get("status_reason")),
            input=_dict(data.get("input")),
            output=data.get("output"),
            parent_node_id=_str(data.get("parent_node_id")),
            parent_iteration=_int(data.get("parent_iteration")),
            priority=int(data.get("priority") or 0),
        )


@dataclass(frozen=True)
class LaunchWarning:
    """A warning of a launch: ``revision_unavailable`` when no live process holds the revision."""

    code: str
    message: str
    revision: str | None = None
    missing: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Json) -> LaunchWarning:
        """Build from one entry of ``LaunchedRun.warnings``."""
        return cls(
            code=str(data.get("code", "")),
            message=str(data.get("message", "")),
            revision=_str(data.get("revision")),
            missing=tuple(str(m) for m in data.get("missing") or ()),
        )


@dataclass(frozen=True)
class Launched:
    """The answer to a launch or rerun: the run, and whether this call created it (201)."""

    run: Run
    created: bool
    warnings: tuple[LaunchWarning, ...] = ()

    @classmethod
    def from_json(cls, data: Json, created: bool) -> Launched:
        """Build from a ``LaunchedRun`` (or ``Run``) body and the status code's meaning."""
        warnings = tuple(LaunchWarning.from_json(w) for w in data.get("warnings") or ())
        return cls(run=Run.from_json(data), created=created, warnings=warnings)


@dataclass(frozen=True)
class RunPage:
    """One page of run summaries, newest first; ``next_cursor`` is None on the last page."""

    runs: tuple[Run, ...]
    next_cursor: str | None
    feed_id: int

    @classmethod
    def from_json(cls, data: Json) -> RunPage:
        """Build from a ``RunPage`` body."""
        return cls(
            runs=tuple(Run.from_json(r) for r in data["runs"]),
            next_cursor=_str(data.get("next_cursor")),
            feed_id=int(data.get("feed_id") or 0),
        )


@dataclass(frozen=True)
class Node:
    """A node execution (run, node, iteration)."""

    node_id: str
    iteration: int
    kind: str
    status: NodeStatus
    failures: int
    lost: int
    current_attempt_id: str | None
    current_iteration: int
    next_at: float | None
    started_at: float | None
    finished_at: float | None
    error: dict[str, Any] | None

    @classmethod
    def from_json(cls, data: Json) -> Node:
        """Build from a ``Node`` body."""
        return cls(
            node_id=str(data["node_id"]),
            iteration=int(data.get("iteration") or 0),
            kind=str(data.get("kind", "")),
            status=NodeStatus(data["status"]),
            failures=int(data.get("failures") or 0),
            lost=int(data.get("lost") or 0),
            current_attempt_id=_str(data.get("current_attempt_id")),
            current_iteration=int(data.get("current_iteration") or 0),
            next_at=_float(data.get("next_at")),
            started_at=_float(data.get("started_at")),
            finished_at=_float(data.get("finished_at")),
            error=_dict(data.get("error")),
        )


@dataclass(frozen=True)
class Attempt:
    """One try of a node execution."""

    attempt_id: str
    node_id: str
    iteration: int
    number: int
    state: AttemptState
    queue: str
    worker: str | None
    started_at: float | None
    finished_at: float | None
    error: dict[str, Any] | None
    cached: bool
    revision: str | None

    @classmethod
    def from_json(cls, data: Json) -> Attempt:
        """Build from an ``Attempt`` body."""
        return cls(
            attempt_id=str(data["attempt_id"]),
            node_id=str(data["node_id"]),
            iteration=int(data.get("iteration") or 0),
            number=int(data.get("number") or 0),
            state=AttemptState(data["state"]),
            queue=str(data.get("queue", "")),
            worker=_str(data.get("worker")),
            started_at=_float(data.get("started_at")),
            finished_at=_float(data.get("finished_at")),
            error=_dict(data.get("error")),
            cached=bool(data.get("cached", False)),
            revision=_str(data.get("revision")),
        )


@dataclass(frozen=True)
class Output:
    """A node's stored output (redacted)."""

    node_id: str
    iteration: int
    value: Any

    @classmethod
    def from_json(cls, data: Json) -> Output:
        """Build from an ``Output`` body."""
        return cls(
            node_id=str(data["node_id"]), iteration=int(data.get("iteration") or 0), value=data["value"]
        )


@dataclass(frozen=True)
class RunRevision:
    """The run's module revision: held by a live scheduler and worker, and its stored graph."""

    revision: str
    workflow_version: str
    available: bool
    missing: tuple[str, ...]
    graph: dict[str, Any] | None

    @classmethod
    def from_json(cls, data: Json) -> RunRevision:
        """Build from a ``RunRevision`` body."""
        return cls(
            revision=str(data.get("revision", "")),
            workflow_version=str(data.get("workflow_version", "")),
            available=bool(data.get("available", False)),
            missing=tuple(str(m) for m in data.get("missing") or ()),
            graph=_dict(data.get("graph")),
        )


@dataclass(frozen=True)
class RunDetail:
    """A run with its nodes, attempts, outputs and revision, read in one snapshot."""

    run: Run
    revision: RunRevision
    nodes: tuple[Node, ...]
    attempts: tuple[Attempt, ...]
    outputs: tuple[Output, ...]

    @classmethod
    def from_json(cls, data: Json) -> RunDetail:
        """Build from a ``RunDetail`` body."""
        return cls(
            run=Run.from_json(data["run"]),
            revision=RunRevision.from_json(data.get("revision") or {}),
            nodes=tuple(Node.from_json(n) for n in data.get("nodes") or ()),
            attempts=tuple(Attempt.from_json(a) for a in data.get("attempts") or ()),
            outputs=tuple(Output.from_json(o) for o in data.get("outputs") or ()),
        )

    def output_of(self, node_id: str, iteration: int = 0) -> Any:
        """The output of one node execution, or None."""
        for out in self.outputs:
            if out.node_id == node_id and out.iteration == iteration:
                return out.value
        return None


@dataclass(frozen=True)
class Migration:
    """A run moved to another revision of its workflow."""

    run_id: str
    from_revision: str
    to_revision: str
    note: str | None
    migrated_by: str
    run: Run

    @classmethod
    def from_json(cls, data: Json) -> Migration:
        """Build from a ``Migration`` body."""
        return cls(
            run_id=str(data["run_id"]),
            from_revision=str(data["from"]),
            to_revision=str(data["to"]),
            note=_str(data.get("note")),
            migrated_by=str(data.get("migrated_by", "")),
            run=Run.from_json(data["run"]),
        )


class Signal(api.Signal):
    """A signal sent to a run; ``created`` False: a repeat of its ``signal_id`` (the first
    delivery came back). ``created`` is the client's (the status code's meaning), not the body's."""

    created: bool = True


@dataclass(frozen=True)
class AuditEntry:
    """One entry of a run's audit trail: an event, an audit row or a time-travel row."""

    at: float
    source: str
    type: str
    detail: Any
    actor: str | None = None
    node_id: str | None = None
    seq: int | None = None

    @classmethod
    def from_json(cls, data: Json) -> AuditEntry:
        """Build from one entry of ``AuditTrail.entries``."""
        return cls(
            at=float(data["at"]),
            source=str(data["source"]),
            type=str(data["type"]),
            detail=data.get("detail"),
            actor=_str(data.get("actor")),
            node_id=_str(data.get("node_id")),
            seq=_int(data.get("seq")),
        )


@dataclass(frozen=True)
class AuditTrail:
    """A run's whole audit trail in time order (``run`` is None once it was deleted)."""

    run: dict[str, Any] | None
    entries: tuple[AuditEntry, ...]
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: Json) -> AuditTrail:
        """Build from an ``AuditTrail`` body (``raw`` keeps it whole, for ``--json``)."""
        entries = tuple(AuditEntry.from_json(e) for e in data.get("entries") or ())
        return cls(run=_dict(data.get("run")), entries=entries, raw=dict(data))


@dataclass(frozen=True)
class TimeTravelResult:
    """The result of a rewind, replay or fork; ``new_run_id`` for replay and fork."""

    audit_id: int
    run_id: str
    action: str
    revision: str
    workflow_version: str
    new_run_id: str | None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: Json) -> TimeTravelResult:
        """Build from a ``TimeTravelResult`` body."""
        return cls(
            audit_id=int(data["audit_id"]),
            run_id=str(data["run_id"]),
            action=str(data["action"]),
            revision=str(data.get("revision", "")),
            workflow_version=str(data.get("workflow_version", "")),
            new_run_id=_str(data.get("new_run_id")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Ready:
    """The gateway's readiness: ``ready`` only when every check is ``ok``."""

    ready: bool
    checks: dict[str, str]

    @classmethod
    def from_json(cls, data: Json, ready: bool) -> Ready:
        """Build from a ``Ready`` or ``NotReady`` body."""
        return cls(ready=ready, checks={str(k): str(v) for k, v in (data.get("checks") or {}).items()})


@dataclass(frozen=True)
class Event:
    """One event of a run's history; ``seq`` is gap-free per run, ``feed_id`` orders all runs."""

    run_id: str
    seq: int
    feed_id: int | None
    type: str
    node_id: str | None
    iteration: int | None
    attempt_id: str | None
    payload: dict[str, Any]
    created_at: float

    @classmethod
    def from_json(cls, data: Json) -> Event:
        """Build from an ``Event`` body (one ``data:`` of an event stream)."""
        return cls(
            run_id=str(data["run_id"]),
            seq=int(data["seq"]),
            feed_id=_int(data.get("feed_id")),
            type=str(data["type"]),
            node_id=_str(data.get("node_id")),
            iteration=_int(data.get("iteration")),
            attempt_id=_str(data.get("attempt_id")),
            payload=dict(data.get("payload") or {}),
            created_at=float(data.get("created_at") or 0.0),
        )


@dataclass(frozen=True)
class StreamEnd:
    """Why a stream ended: ``terminal``, ``deleted`` (a run's stream only), or ``timeout``
    / ``shutdown`` (the client reconnects), and the last id the gateway sent."""

    reason: str
    last_id: int

    @classmethod
    def from_json(cls, data: Json) -> StreamEnd:
        """Build from the ``data`` of an ``event: end`` frame."""
        return cls(reason=str(data.get("reason", "")), last_id=int(data.get("last_id") or 0))


@dataclass(frozen=True)
class ApprovalContext:
    """What an approver sees of a run (``ApprovalContext``): its summary and input, the
    pending approvals the token holds, the outputs they show, and a page of events."""

    run: Run
    approvals: tuple[api.Approval, ...]
    outputs: tuple[Output, ...]
    events: tuple[Event, ...]
    next_after_seq: int | None

    @classmethod
    def from_json(cls, data: Json) -> ApprovalContext:
        """Build from an ``ApprovalContext`` body."""
        return cls(
            run=Run.from_json(data["run"]),
            approvals=tuple(api.Approval.model_validate(a) for a in data.get("approvals") or ()),
            outputs=tuple(Output.from_json(o) for o in data.get("outputs") or ()),
            events=tuple(Event.from_json(e) for e in data.get("events") or ()),
            next_after_seq=_int(data.get("next_after_seq")),
        )
