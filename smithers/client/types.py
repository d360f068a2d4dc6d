"""The typed results of :class:`smithers.client.Client`: frozen dataclasses, one per
schema of the gateway's OpenAPI document, each built by ``from_json`` from a response body.

The families already modelled in pydantic (runs, events, a run's history, grants, cron
schedules, signals, workflows) come from :mod:`smithers.shared.api`, the models the gateway
serializes with; the others are still here, with :class:`Launched`, the client's answer to
a launch. ``from_json`` (and the models' ``model_validate``) reads the fields it knows and
ignores others: a newer gateway that adds a field does not break an older client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smithers.shared import api
from smithers.shared.api import Event, Output, Run
from smithers.shared.status import ApprovalStatus

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
class Launched:
    """The answer to a launch or rerun: the run, and whether this call created it (201);
    ``created`` is the client's (the status code's meaning), not the body's."""

    run: api.Run
    created: bool
    warnings: tuple[api.LaunchWarning, ...] = ()


class Signal(api.Signal):
    """A signal sent to a run; ``created`` False: a repeat of its ``signal_id`` (the first
    delivery came back). ``created`` is the client's (the status code's meaning), not the body's."""

    created: bool = True


@dataclass(frozen=True)
class Approval:
    """A pending or decided approval; ``context`` holds the declared upstream outputs
    (listings only)."""

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
    spec: dict[str, Any] | None
    payload: Any
    escalated_at: float | None
    context: dict[str, Any] | None = None
    workflow: str | None = None

    @classmethod
    def from_json(cls, data: Json) -> Approval:
        """Build from an ``Approval`` body."""
        return cls(
            run_id=str(data["run_id"]),
            node_id=str(data["node_id"]),
            iteration=int(data.get("iteration") or 0),
            status=ApprovalStatus(data["status"]),
            owner=_str(data.get("owner")),
            fallback_owner=_str(data.get("fallback_owner")),
            escalate_at=_float(data.get("escalate_at")),
            requested_at=float(data.get("requested_at") or 0.0),
            decided_by=_str(data.get("decided_by")),
            decided_at=_float(data.get("decided_at")),
            note=_str(data.get("note")),
            spec=_dict(data.get("spec")),
            payload=data.get("payload"),
            escalated_at=_float(data.get("escalated_at")),
            context=_dict(data.get("context")),
            workflow=_str(data.get("workflow")),
        )


@dataclass(frozen=True)
class SandboxReview:
    """One review decision on a sandbox's patches."""

    accept: bool
    actor: str
    note: str | None
    decided_at: float

    @classmethod
    def from_json(cls, data: Json) -> SandboxReview:
        """Build from a ``SandboxReview`` body."""
        return cls(
            accept=bool(data["accept"]),
            actor=str(data.get("actor", "")),
            note=_str(data.get("note")),
            decided_at=float(data.get("decided_at") or 0.0),
        )


@dataclass(frozen=True)
class Sandbox:
    """A sandbox step's record: status, review, manifest (patches with diffs) and reviews."""

    sandbox_id: str
    run_id: str
    node_id: str
    iteration: int
    attempt_id: str
    image: str
    status: str
    review_status: str | None
    request_bytes: int | None
    result_bytes: int | None
    manifest: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: float
    finished_at: float | None
    reviews: tuple[SandboxReview, ...]

    @classmethod
    def from_json(cls, data: Json) -> Sandbox:
        """Build from a ``Sandbox`` body."""
        return cls(
            sandbox_id=str(data["sandbox_id"]),
            run_id=str(data["run_id"]),
            node_id=str(data["node_id"]),
            iteration=int(data.get("iteration") or 0),
            attempt_id=str(data.get("attempt_id", "")),
            image=str(data.get("image", "")),
            status=str(data["status"]),
            review_status=_str(data.get("review_status")),
            request_bytes=_int(data.get("request_bytes")),
            result_bytes=_int(data.get("result_bytes")),
            manifest=_dict(data.get("manifest")),
            error=_dict(data.get("error")),
            created_at=float(data.get("created_at") or 0.0),
            finished_at=_float(data.get("finished_at")),
            reviews=tuple(SandboxReview.from_json(r) for r in data.get("reviews") or ()),
        )


@dataclass(frozen=True)
class Session:
    """Who the caller is: subject, scopes, expiry (``via`` bearer or session)."""

    subject: str
    scopes: tuple[str, ...]
    expires_at: float | None
    via: str

    @classmethod
    def from_json(cls, data: Json) -> Session:
        """Build from a ``Session`` body."""
        return cls(
            subject=str(data["subject"]),
            scopes=tuple(str(s) for s in data.get("scopes") or ()),
            expires_at=_float(data.get("expires_at")),
            via=str(data.get("via", "bearer")),
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
    approvals: tuple[Approval, ...]
    outputs: tuple[Output, ...]
    events: tuple[Event, ...]
    next_after_seq: int | None

    @classmethod
    def from_json(cls, data: Json) -> ApprovalContext:
        """Build from an ``ApprovalContext`` body."""
        return cls(
            # the context's run is a summary with its input (no output)
            run=Run.model_validate({"output": None, **data["run"]}),
            approvals=tuple(Approval.from_json(a) for a in data.get("approvals") or ()),
            outputs=tuple(Output.model_validate(o) for o in data.get("outputs") or ()),
            events=tuple(Event.model_validate(e) for e in data.get("events") or ()),
            next_after_seq=_int(data.get("next_after_seq")),
        )
