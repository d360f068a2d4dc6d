"""Approvals as the API returns them (``/v1/approvals``, a decision's result, and what an
approver sees of the run they decide: ``/v1/runs/{run_id}/approval-context``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic.config import JsonDict

from smithers.shared.api.event import Event
from smithers.shared.api.model import Resource, Sparse
from smithers.shared.api.run import Output, RunSummary
from smithers.shared.status import ApprovalStatus

SPEC: JsonDict = {
    "description": "What the workflow declared for the approver (null before schema v7).",
    "properties": {
        "description": {"type": "string"},
        "show": {"type": "array", "items": {"type": "string"}},
        "schema": {"type": "object", "nullable": True},
        "options": {"type": "array", "items": {"type": "string"}},
        "default": {"type": "string", "enum": ["approve", "deny"], "nullable": True},
        "timeout_at": {"type": "number", "nullable": True},
    },
    "required": ["description", "show", "schema", "options", "default", "timeout_at"],
}


class Approval(Sparse):  # context and workflow: sent only where given (a listing)
    """A pending or decided approval; a listing adds `context` and `workflow`."""

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
    spec: dict[str, Any] | None = Field(json_schema_extra=SPEC)
    payload: Any = Field(json_schema_extra={"nullable": True, "description": "Any JSON value."})
    escalated_at: float | None
    context: dict[str, Any] | None = Field(
        None, description="Outputs of the declared upstream nodes (listings only)."
    )
    workflow: str | None = Field(None, description="The run's workflow (listings only).")


class ApprovalList(Resource):
    """Approvals with their context and workflow."""

    approvals: tuple[Approval, ...]


class ApprovedRun(RunSummary):
    """The run an approver decides on: its summary and its input (not its output)."""

    input: dict[str, Any]


class ApprovalContext(Resource):
    """What an approver sees of a run: its summary and input, the pending approvals the
    token holds, the outputs they show, and a page of the run's events."""

    run: ApprovedRun
    approvals: tuple[Approval, ...]
    outputs: tuple[Output, ...]
    events: tuple[Event, ...]
    next_after_seq: int | None = Field(description="`after_seq` of the next page of events.")
