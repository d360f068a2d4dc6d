"""/v1/schedules: the cron schedules the deployment's workflows declare; pause, resume.

Reading needs ``run:read``; pausing and resuming change what runs are launched, so they
need ``run:write`` (as a launch does). The actor of a pause or resume is the token's
subject, recorded on the schedule and in the audit log. A schedule is named
``workflow:schedule_id``.
"""

from __future__ import annotations

from apiflask import APIBlueprint
from flask import request

from smithers.gateway.auth import principal, requires
from smithers.gateway.body import check_query
from smithers.gateway.models import Empty
from smithers.gateway.schemas import Schema, errors, json_body, op, param, ref
from smithers.gateway.services import services
from smithers.shared import scheduling
from smithers.shared.api import Schedule, ScheduleList
from smithers.shared.errors import InvalidInput
from smithers.shared.grants import Scope
from smithers.shared.workflow import WORKFLOW_NAME

bp = APIBlueprint("schedules", __name__)
SCHEDULE_PATH_ID = r"^[a-z][a-z0-9_.-]{0,127}:[a-z0-9][a-z0-9_-]{0,63}$"


@bp.get("/v1/schedules")
@requires(Scope.RUN_READ)
@bp.output(ScheduleList)
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
@bp.output(Schedule)
def pause(schedule_id: str, body: Empty) -> Schedule:
    """Pause a schedule: it launches nothing until resumed (a repeat changes nothing)."""
    return _change(schedule_id, True)


@bp.post("/v1/schedules/<schedule_id>/resume")
@requires(Scope.RUN_WRITE)
@bp.input(Empty, arg_name="body")
@bp.output(Schedule)
def resume(schedule_id: str, body: Empty) -> Schedule:
    """Resume a paused schedule from its next tick (ticks that came while paused are skipped)."""
    return _change(schedule_id, False)


# -- the OpenAPI document's part (smithers.gateway.openapi) -------------------------------


def paths() -> dict[str, Schema]:
    """The paths of this blueprint, with their scopes."""
    auth = (400, 401, 403, 429)
    schedule = param(
        "schedule_id",
        "path",
        {"type": "string", "pattern": SCHEDULE_PATH_ID},
        "The schedule, `workflow:schedule_id` (as listed).",
    )

    def change(summary: str, operation_id: str, description: str) -> Schema:
        return {
            "parameters": [schedule],
            "post": op(
                summary,
                "run:write",
                {
                    "200": json_body(ref("Schedule"), "The schedule as it now is."),
                    **errors(*auth, 404, 413, 503),
                },
                operationId=operation_id,
                description=description,
            ),
        }

    return {
        "/v1/schedules": {
            "get": op(
                "List cron schedules",
                "run:read",
                {
                    "200": json_body(ref("ScheduleList"), "Declared schedules with their state."),
                    **errors(*auth, 503),
                },
                operationId="listSchedules",
                description="The schedules the deployment's workflows declare (`wf.schedule(...)`), each"
                " with whether it is paused, its next tick and the latest run a tick launched.",
                parameters=[
                    param(
                        "workflow",
                        "query",
                        {"type": "string", "pattern": WORKFLOW_NAME.pattern},
                        "Only this workflow's.",
                    )
                ],
            )
        },
        "/v1/schedules/{schedule_id}/pause": change(
            "Pause a cron schedule",
            "pauseSchedule",
            "Until resumed it launches no run. The pauser is the token's subject (kept, audited);"
            " pausing a paused schedule changes nothing. 404: no declared schedule of that name.",
        ),
        "/v1/schedules/{schedule_id}/resume": change(
            "Resume a cron schedule",
            "resumeSchedule",
            "It fires again from its next tick; ticks that came while it was paused are skipped."
            " Audited with the token's subject. 404: no declared schedule of that name.",
        ),
    }
