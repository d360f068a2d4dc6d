"""Cron schedules as the API returns them (``/v1/schedules``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from smithers.shared.api.model import Resource


class Schedule(Resource):
    """A declared cron schedule and its state; `id` is `workflow:schedule_id`."""

    id: str = Field(description="`workflow:schedule_id`: how pause and resume name it.")
    workflow: str
    schedule_id: str
    cron: str = Field(description="Five fields, or six with a leading seconds field.")
    tz: str = Field(description="The IANA time zone the cron is read in.")
    input: dict[str, Any] = Field(description="The input of each run it launches.")
    catch_up: int = Field(description="Missed ticks fired after downtime, at most.")
    policy: str = Field(description="`skip` or `catch_up:N`.")
    paused: bool
    paused_by: str | None
    changed_at: float | None
    next_tick: float | None = Field(description="Epoch seconds of the next tick (null while paused).")
    next_tick_local: str | None = Field(description="The next tick, ISO 8601 in the schedule's zone.")
    last_tick: float | None = Field(description="The latest tick that launched a run.")
    last_run_id: str | None
    fired: int = Field(description="Ticks that launched a run.")
    skipped: int = Field(description="Ticks missed during downtime and skipped.")


class ScheduleList(Resource):
    """Declared schedules with their state."""

    schedules: tuple[Schedule, ...]
