"""Workflows with cron schedules, loaded only by the schedule tests (every scheduler that
loads them fires their ticks, so they stay out of tests.integration.workflows)."""

from __future__ import annotations

from typing import Any

from smithers.shared import StepContext, Workflow

ticking = Workflow("t-scheduled")
ticking.schedule("* * * * * *", id="every-second", input={"kind": "tick"})


@ticking.task()
def stamp(ctx: StepContext) -> dict[str, Any]:
    return {"kind": ctx.input["kind"], "run_id": ctx.run_id}


report = Workflow("t-scheduled-report")
report.schedule("0 9 * * 1-5", tz="Europe/Paris", id="weekday", input={"kind": "report"}, catch_up=2)
report.schedule("0 * * * *", id="hourly", input={"kind": "hourly"})


@report.task()
def write(ctx: StepContext) -> dict[str, Any]:
    return {"kind": ctx.input["kind"]}
