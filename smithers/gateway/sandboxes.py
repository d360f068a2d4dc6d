"""Sandboxes of a run and their diff reviews: list (approval:read), decide (approval:submit).

A sandbox step's patches wait for review unless it sets ``auto_accept_diffs``. The
reviewer is the token's subject; the decision, its note and time are stored with the
sandbox, as an event and in the audit log (:mod:`smithers.shared.store.sandboxes`).
"""

from __future__ import annotations

import re

from apiflask import APIBlueprint

from smithers.gateway.apidoc import AUTH, RUN_ID_PARAM, errors, param, reads
from smithers.gateway.auth import principal, requires
from smithers.gateway.body import check_query, query_choice
from smithers.gateway.models import ReviewRequest
from smithers.gateway.services import services
from smithers.shared import operations
from smithers.shared.api import Sandbox, SandboxList
from smithers.shared.errors import InvalidInput, NotFound
from smithers.shared.grants import Scope
from smithers.shared.redaction import redact_text
from smithers.shared.store import runs as runs_store
from smithers.shared.store import sandboxes as sandboxes_store
from smithers.shared.store.queries import get_run

bp = APIBlueprint("sandboxes", __name__, url_prefix="/v1/runs")

SANDBOX_ID = re.compile(r"^[a-z0-9_-]{1,64}$")
REVIEW_STATUSES = tuple(s.value for s in sandboxes_store.ReviewStatus)


def sandbox_model(record: sandboxes_store.SandboxRecord) -> Sandbox:
    """The public shape of a sandbox: its record, manifest (with diffs) and reviews."""
    return Sandbox.model_validate(record.to_json())


@bp.get("/<run_id>/sandboxes")
@requires(Scope.APPROVAL_READ)
@bp.output(SandboxList, description="Sandboxes, in creation order.")
@bp.doc(
    summary="List a run's sandboxes with their patches and reviews",
    operation_id="listSandboxes",
    description="One sandbox per attempt of a sandbox step: runtime, image and digest,"
    " container, limits, status, bundle path and sizes, the checked manifest (each patch"
    " with its diff) and every review decision.",
    responses=errors(*AUTH, 404, 503),
)
@reads(
    RUN_ID_PARAM,
    param(
        "review_status",
        "query",
        {"type": "string", "enum": list(REVIEW_STATUSES)},
        "Only sandboxes in this review status (`pending`: waiting for a reviewer).",
    ),
)
def index(run_id: str) -> SandboxList:
    """A run's sandboxes in creation order, optionally only those in one review status."""
    runs_store.check_run_id(run_id)
    check_query(("review_status",))
    review_status = query_choice("review_status", REVIEW_STATUSES)
    with services().store.read() as conn:
        if get_run(conn, run_id) is None:
            raise NotFound(f"run {run_id!r} not found")
        found = sandboxes_store.sandboxes_of(conn, run_id, review_status)
    return SandboxList(sandboxes=tuple(sandbox_model(r) for r in found))


@bp.post("/<run_id>/sandboxes/<sandbox_id>/review")
@requires(Scope.APPROVAL_SUBMIT)
@bp.input(ReviewRequest, arg_name="body")
@bp.output(Sandbox, description="The decision was recorded.")
@bp.doc(
    summary="Accept or reject a sandbox's patches",
    operation_id="reviewSandbox",
    description="The reviewer is the token's subject. Accepted patches, already applied to the"
    " step's workspace by its worker, are handed to downstream nodes; a rejection fails the"
    ' step, or skips it when it was declared with `on_reject="skip"`. 409 when the sandbox'
    " has nothing pending (no patches, already decided, or superseded).",
    responses=errors(*AUTH, 404, 409, 413, 503),
)
@reads(
    RUN_ID_PARAM,
    param("sandbox_id", "path", {"type": "string", "pattern": SANDBOX_ID.pattern}, "The sandbox."),
)
def review(run_id: str, sandbox_id: str, body: ReviewRequest) -> Sandbox:
    """Record the caller's decision on a sandbox's pending patches and wake the scheduler."""
    runs_store.check_run_id(run_id)
    if not SANDBOX_ID.fullmatch(sandbox_id):
        raise InvalidInput(f"sandbox id {sandbox_id!r} must match {SANDBOX_ID.pattern}")
    note = body.note
    svc = services()
    record = operations.review(
        svc.store,
        svc.broker,
        run_id,
        sandbox_id,
        accept=body.accept,
        note=redact_text(note) if isinstance(note, str) else None,
        actor=principal().subject,
        decider=svc.decider,
    )
    return sandbox_model(record)
