"""Approvals: list them (approval:read) and decide one (approval:submit).

The decider is the token's subject. Where an approval names an owner, only the owner
decides, or the fallback owner once the escalation time has passed (enforced in
:mod:`smithers.shared.store.approvals`); anyone else gets 403.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from smithers.gateway.auth import principal, requires
from smithers.gateway.body import BodySchema, check_query, check_run_id, query_choice, query_int, read_body
from smithers.gateway.services import services
from smithers.shared import operations
from smithers.shared.errors import InvalidInput
from smithers.shared.grants import Scope
from smithers.shared.redaction import redact_text
from smithers.shared.status import ApprovalStatus
from smithers.shared.store import ApprovalRecord
from smithers.shared.store.queries import approvals as approvals_query
from smithers.shared.workflow import NODE_ID

bp = Blueprint("approvals", __name__)

MAX_NOTE = 4000
DECISION = BodySchema(
    "DecisionRequest",
    {
        "approved": {"type": "boolean", "description": "true approves, false denies."},
        "note": {"type": "string", "nullable": True, "maxLength": MAX_NOTE},
        "iteration": {
            "type": "integer",
            "nullable": True,
            "minimum": 0,
            "maximum": 1_000_000,
            "description": "Which iteration (inside a loop); by default the pending one.",
        },
    },
    required=("approved",),
    description="Approve or deny a pending approval, with a note.",
)


def approval_json(record: ApprovalRecord) -> dict[str, Any]:
    """The public shape of an approval."""
    return {**record.to_json(), "status": record.status.value}


@bp.get("/v1/approvals")
@requires(Scope.APPROVAL_READ)
def index() -> Response:
    """Approvals by status (pending by default), oldest request first."""
    check_query(("status", "run_id", "limit"))
    svc = services()
    status = query_choice("status", tuple(s.value for s in ApprovalStatus), "pending")
    limit = query_int("limit", svc.config.page_max, 1, svc.config.page_max) or svc.config.page_max
    run_id = _run_filter()
    with svc.store.read() as conn:
        found = approvals_query(conn, status=status, run_id=run_id)
    return jsonify({"approvals": [approval_json(a) for a in found[:limit]]})


def _run_filter() -> str | None:
    """The optional ``run_id`` filter, checked."""
    raw = request.args.get("run_id")
    return None if raw is None else check_run_id(raw)


@bp.post("/v1/runs/<run_id>/approvals/<node_id>")
@requires(Scope.APPROVAL_SUBMIT)
def decide(run_id: str, node_id: str) -> Response:
    """Record the caller's decision on a pending approval."""
    check_run_id(run_id)
    if not NODE_ID.fullmatch(node_id):
        raise InvalidInput(f"node id {node_id!r} must match {NODE_ID.pattern}")
    body = read_body(DECISION)
    note = body.get("note")
    svc = services()
    record = operations.approve(
        svc.store,
        svc.broker,
        run_id,
        node_id,
        approved=bool(body["approved"]),
        note=redact_text(note) if isinstance(note, str) else None,
        actor=principal().subject,
        iteration=body.get("iteration"),
    )
    return jsonify(approval_json(record))
