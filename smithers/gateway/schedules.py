"""/v1/schedules: the cron schedules the deployment's workflows declare; pause, resume.

Reading needs ``run:read``; pausing and resuming change what runs are launched, so they
need ``run:write`` (as a launch does). The actor of a pause or resume is the token's
subject, recorded on the schedule and in the audit log. A schedule is named
``workflow:schedule_id``.
"""

from __future__ import annotations

from apiflask import APIBlueprint
from flask import request

from smithers.gateway.apidoc import AUTH, errors, param, reads
from smithers.gateway.auth import principal, requires
from smithers.gateway.body import check_query
from smithers.gateway.models import Empty
from smithers.gateway.services import services
from smithers.shared import scheduling
from smithers.shared.api import Schedule, ScheduleList
from smithers.shared.errors import InvalidInput
from smithers.shared.grants import Scope
from smithers.shared.workflow import WORKFLOW_NAME

bp = APIBlueprint("schedules", __name__)
SCHEDULE_PATH_ID = r"^[a-z][a-z0-9_.-]{0,127}:[a-z0-9][a-z0-9_-]{0,63}$"
SCHEDULE_PARAM = param(
    "schedule_id",
    "path",
    {"type": "string", "pattern": SCHEDULE_PATH_ID},
    "The schedule, `workflow:schedule_id` (as listed).",
)


@bp.get("/v1/schedules")
@requires(Scope.RUN_READ)
@bp.output(ScheduleList, description="Declared schedules with their state.")
@bp.doc(
    summary="List cron schedules",
    operation_id="listSchedules",
    description="The schedules the deployment's workflows declare (`wf.schedule(...)`), each"
    " with whether it is paused, its next tick and the latest run a tick launched.",
    responses=errors(*AUTH, 503),
)
@reads(
    param("workflow", "query", {"type": "string", "pattern": WORKFLOW_NAME.pattern}, "Only this workflow's.")
)
def index() -> ScheduleList:
    """Every declared schedule (of ``?workflow=`` when given) with its state."""
    check_query(("workflow",))
    workflow = request.args.get("workflow")
    if workflow is not None and not WORKFLOW_NAME.match(workflow):
        raise InvalidInput(f"workflow name {workflow!r} must match {WORKFLOW_NAME.pattern}")
    svc = services()
    found = scheduling.list_schedules(svc.store, svc.registry, workflow=workflow)
    return ScheduleList(schedules=tuple(Schedule.model_validate(view.to_json()) for view in found))


def _change(schedule_id: str, paused: bool) -> Schedule:
    check_query(())
    svc = services()
    view, _changed = scheduling.set_paused(
        svc.store, svc.registry, schedule_id, paused=paused, actor=principal().subject
    )
    return Schedule.model_validate(view.to_json())


@bp.post("/v1/schedules/<schedule_id>/pause")
@requires(Scope.RUN_WRITE)
@bp.input(Empty, arg_name="body")
@bp.output(Schedule, description="The schedule as it now is.")
@bp.doc(
    summary="Pause a cron schedule",
    operation_id="pauseSchedule",
    description="Until resumed it launches no run. The pauser is the token's subject (kept, audited);"
    " pausing a paused schedule changes nothing. 404: no declared schedule of that name.",
    responses=errors(*AUTH, 404, 413, 503),
)
@reads(SCHEDULE_PARAM)
def pause(schedule_id: str, body: Empty) -> Schedule:
    """Pause a schedule: it launches nothing until resumed (a repeat changes nothing)."""
    return _change(schedule_id, True)


@bp.post("/v1/schedules/<schedule_id>/resume")
@requires(Scope.RUN_WRITE)
@bp.input(Empty, arg_name="body")
@bp.output(Schedule, description="The schedule as it now is.")
@bp.doc(
    summary="Resume a cron schedule",
    operation_id="resumeSchedule",
    description="It fires again from its next tick; ticks that came while it was paused are skipped."
    " Audited with the token's subject. 404: no declared schedule of that name.",
    responses=errors(*AUTH, 404, 413, 503),
)
@reads(SCHEDULE_PARAM)
def resume(schedule_id: str, body: Empty) -> Schedule:
    """Resume a paused schedule from its next tick (ticks that came while paused are skipped)."""
    return _change(schedule_id, False)
