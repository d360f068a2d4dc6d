"""Approvals: list them (approval:read) and decide one (approval:submit).

Each listed approval carries what its workflow declared for the approver (``spec``:
description, the upstream nodes to show, a payload schema or options, a default on
timeout) and ``context``: the outputs of those upstream nodes, as stored (redacted).
A decision's ``payload`` is checked against the declaration before it is recorded.

The decider is the token's subject. Where an approval names an owner, only the owner
decides, or the fallback owner once the escalation time has passed (enforced in
:mod:`smithers.shared.store.approvals`); anyone else gets 403.
"""

from __future__ import annotations

import math
from typing import Any

from apiflask import APIBlueprint
from flask import request
from sqlalchemy import Connection

from smithers.gateway.apidoc import AUTH, NODE_ID_PARAM, PAGE, RUN_ID_PARAM, errors, param, reads
from smithers.gateway.auth import principal, requires
from smithers.gateway.body import check_query, check_run_id, query_choice, query_int
from smithers.gateway.models import DecisionRequest
from smithers.gateway.services import services
from smithers.shared import operations
from smithers.shared.api import Approval, ApprovalList
from smithers.shared.errors import InvalidInput
from smithers.shared.grants import Scope
from smithers.shared.redaction import redact, redact_text
from smithers.shared.status import ApprovalStatus
from smithers.shared.store import ApprovalRecord
from smithers.shared.store.queries import approvals as approvals_query
from smithers.shared.store.queries import get_run, outputs_for
from smithers.shared.store.runs import RUN_ID
from smithers.shared.workflow import NODE_ID

bp = APIBlueprint("approvals", __name__)

MAX_NOTE = 4000
ORDERS = ("oldest", "urgent", "newest")


def approval_json(record: ApprovalRecord, context: dict[str, Any] | None = None) -> dict[str, Any]:
    """The public shape of an approval (with ``context`` when it was loaded)."""
    body = {**record.to_json(), "status": record.status.value}
    if context is not None:
        body["context"] = context
    return body


def _deadline(record: ApprovalRecord) -> float:
    """When an approval next changes hands by itself: escalation or timeout."""
    due = [record.escalate_at, (record.spec or {}).get("timeout_at")]
    return min((d for d in due if d is not None), default=math.inf)


def _context(conn: Connection, record: ApprovalRecord) -> dict[str, Any]:
    """The declared upstream outputs of ``record``: its iteration's, else the first."""
    shown = tuple((record.spec or {}).get("show") or ())
    outputs = outputs_for(conn, record.run_id, shown)
    found: dict[str, Any] = {}
    for node in shown:
        for key in ((node, record.iteration), (node, 0)):
            if key in outputs:
                found[node] = outputs[key]
                break
    return found


@bp.get("/v1/approvals")
@requires(Scope.APPROVAL_READ)
@bp.output(ApprovalList, description="Approvals, oldest request first.")
@bp.doc(summary="List approvals", operation_id="listApprovals", responses=errors(*AUTH, 503))
@reads(
    param(
        "status",
        "query",
        {"type": "string", "enum": [s.value for s in ApprovalStatus]},
        "Default pending (of runs that have not ended).",
    ),
    param("run_id", "query", {"type": "string", "pattern": RUN_ID.pattern}, "Only this run's."),
    param("limit", "query", PAGE, "At most this many."),
    param(
        "order",
        "query",
        {"type": "string", "enum": list(ORDERS)},
        "`oldest` request first (default), most `urgent` first (the earliest escalation"
        " or timeout), or `newest` decision first.",
    ),
)
def index() -> ApprovalList:
    """Approvals by status (pending by default), oldest request first or most urgent first."""
    check_query(("status", "run_id", "limit", "order"))
    svc = services()
    status = query_choice("status", tuple(s.value for s in ApprovalStatus), "pending")
    order = query_choice("order", ORDERS, "oldest")
    limit = query_int("limit", svc.config.page_max, 1, svc.config.page_max) or svc.config.page_max
    run_id = _run_filter()
    with svc.store.read() as conn:
        found = approvals_query(conn, status=status, run_id=run_id)
        if order == "urgent":
            found.sort(key=lambda a: (_deadline(a), a.requested_at))
        elif order == "newest":
            found.sort(key=lambda a: a.decided_at or a.requested_at, reverse=True)
        page = found[:limit]
        runs = {r: get_run(conn, r) for r in {a.run_id for a in page}}
        body = []
        for a in page:
            run = runs.get(a.run_id)
            workflow = run.workflow if run is not None else None
            body.append(
                Approval.model_validate({**approval_json(a, _context(conn, a)), "workflow": workflow})
            )
    return ApprovalList(approvals=tuple(body))


def _run_filter() -> str | None:
    """The optional ``run_id`` filter, checked."""
    raw = request.args.get("run_id")
    return None if raw is None else check_run_id(raw)


@bp.post("/v1/runs/<run_id>/approvals/<node_id>")
@requires(Scope.APPROVAL_SUBMIT)
@bp.input(DecisionRequest, arg_name="body")
@bp.output(Approval, description="The decision was recorded.")
@bp.doc(
    summary="Approve or deny a pending approval",
    operation_id="decideApproval",
    description="The decider is the token's subject. Where the approval names an owner, only the"
    " owner decides, or the fallback owner once the escalation time has passed (else 403)."
    " A `payload` must match what the approval declares (`spec.schema`, a JSON Schema subset,"
    " or one of `spec.options`); approving such an approval needs one (else 400).",
    responses=errors(*AUTH, 404, 409, 413, 503),
)
@reads(RUN_ID_PARAM, NODE_ID_PARAM)
def decide(run_id: str, node_id: str, body: DecisionRequest) -> Approval:
    """Record the caller's decision on a pending approval."""
    check_run_id(run_id)
    if not NODE_ID.fullmatch(node_id):
        raise InvalidInput(f"node id {node_id!r} must match {NODE_ID.pattern}")
    note = body.note
    svc = services()
    record = operations.approve(
        svc.store,
        svc.broker,
        run_id,
        node_id,
        approved=body.approved,
        note=redact_text(note) if isinstance(note, str) else None,
        actor=principal().subject,
        iteration=body.iteration,
        payload=redact(body.payload),  # then checked against the declaration
        decider=svc.decider,
    )
    return Approval.model_validate(approval_json(record))
