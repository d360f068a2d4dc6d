"""A run's history: its audit trail (run:read) and time travel (run:write).

Time travel (rewind, replay, fork) needs ``run:write`` and either the run's launcher
or ``admin`` as well, and ``confirm: true``. Each call is audited in_progress before
any change (:func:`smithers.shared.operations.time_travel`); one rewind per run at a time
(409) and a per-caller rate limit (429).
"""

from __future__ import annotations

from apiflask import APIBlueprint

from smithers.gateway.apidoc import AUTH, RUN_ID_PARAM, errors, reads
from smithers.gateway.auth import principal, requires
from smithers.gateway.body import check_run_id
from smithers.gateway.models import ForkRequest, ReplayRequest, RewindRequest
from smithers.gateway.runs import refuse_secret_values
from smithers.gateway.services import services
from smithers.shared import operations
from smithers.shared.api import AuditTrail, TimeTravelResult
from smithers.shared.errors import Forbidden, NotFound
from smithers.shared.grants import Scope
from smithers.shared.store.queries import get_run
from smithers.shared.store.trail import run_trail

bp = APIBlueprint("history", __name__, url_prefix="/v1/runs")


@bp.get("/<run_id>/audit")
@requires(Scope.RUN_READ)
@bp.output(AuditTrail, description="Events, audit-log and time-travel rows.")
@bp.doc(
    summary="A run's whole audit trail in time order",
    operation_id="runAudit",
    description="Launch, every event, approval and review decisions with actor and note, time"
    " travel, deletion. Rows that outlive a deleted run are still listed.",
    responses=errors(*AUTH, 404, 503),
)
@reads(RUN_ID_PARAM)
def audit(run_id: str) -> AuditTrail:
    """The run's whole trail in time order (also after the run was deleted)."""
    check_run_id(run_id)
    with services().store.read() as conn:
        trail = run_trail(conn, run_id)
    if trail["run"] is None and not trail["entries"]:
        raise NotFound(f"run {run_id!r} not found and nothing audited under that id")
    return AuditTrail.model_validate(trail)


def _travel(
    run_id: str, action: str, body: RewindRequest | ReplayRequest | ForkRequest
) -> tuple[TimeTravelResult, int]:
    check_run_id(run_id)
    new_input = body.input if isinstance(body, ForkRequest) else None
    if new_input is not None:
        refuse_secret_values(new_input, "input")
    caller = principal()
    svc = services()
    with svc.store.read() as conn:
        run = get_run(conn, run_id)
    if run is None:
        raise NotFound(f"run {run_id!r} not found")
    if run.launched_by != caller.subject and Scope.ADMIN not in caller.scopes:
        raise Forbidden("time travel needs the run's launcher, or the scope 'admin'")
    result = operations.time_travel(
        svc.store,
        svc.broker,
        svc.registry,
        action=action,
        run_id=run_id,
        node_id=body.node_id,
        caller=caller.subject,
        confirm=body.confirm is True,
        new_run_id=None if isinstance(body, RewindRequest) else body.run_id,
        new_input=new_input,
        item=body.item if isinstance(body, RewindRequest) else None,
    )
    return TimeTravelResult.model_validate(result), 200 if action == "rewind" else 201


@bp.post("/<run_id>/rewind")
@requires(Scope.RUN_WRITE)
@bp.input(RewindRequest, arg_name="body")
@bp.output(TimeTravelResult, description="Done; audited before and after.")
@bp.doc(
    summary="Rewind a run to before a node",
    operation_id="rewindRun",
    description="Needs `run:write` and the run's launcher, or `admin` as well; `confirm: true`"
    " is required. 409 while another time-travel call on the run is in progress.",
    responses=errors(*AUTH, 404, 409, 413, 503),
)
@reads(RUN_ID_PARAM)
def rewind(run_id: str, body: RewindRequest) -> tuple[TimeTravelResult, int]:
    """Reopen ``node_id`` and everything downstream; the run becomes queued again."""
    return _travel(run_id, "rewind", body)


@bp.post("/<run_id>/replay")
@requires(Scope.RUN_WRITE)
@bp.input(ReplayRequest, arg_name="body")
@bp.output(TimeTravelResult, status_code=201, description="Done; audited before and after.")
@bp.doc(
    summary="Replay a run from a node into a new run",
    operation_id="replayRun",
    description="Needs `run:write` and the run's launcher, or `admin` as well; `confirm: true`"
    " is required. 409 while another time-travel call on the run is in progress.",
    responses=errors(*AUTH, 404, 409, 413, 503),
)
@reads(RUN_ID_PARAM)
def replay(run_id: str, body: ReplayRequest) -> tuple[TimeTravelResult, int]:
    """A new run from this run's state up to ``node_id``, same input, lineage recorded."""
    return _travel(run_id, "replay", body)


@bp.post("/<run_id>/fork")
@requires(Scope.RUN_WRITE)
@bp.input(ForkRequest, arg_name="body")
@bp.output(TimeTravelResult, status_code=201, description="Done; audited before and after.")
@bp.doc(
    summary="Fork a run at a node with new input",
    operation_id="forkRun",
    description="Needs `run:write` and the run's launcher, or `admin` as well; `confirm: true`"
    " is required. 409 while another time-travel call on the run is in progress.",
    responses=errors(*AUTH, 404, 409, 413, 503),
)
@reads(RUN_ID_PARAM)
def fork(run_id: str, body: ForkRequest) -> tuple[TimeTravelResult, int]:
    """A new run from this run's state up to ``node_id``, with new input."""
    return _travel(run_id, "fork", body)
