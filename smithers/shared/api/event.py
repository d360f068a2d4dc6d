"""Events as the API sends them: each ``data:`` of the event streams (``/v1/runs/{run_id}/events``,
``/v1/events``), and the events of an approver's page (``/v1/runs/{run_id}/approval-context``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from smithers.shared.api.model import Resource


class Event(Resource):
    """One event of a run's history; ``seq`` is gap-free per run, ``feed_id`` orders all runs."""

    run_id: str
    seq: int
    feed_id: int | None = Field(
        description="Place in the all-runs feed; on PostgreSQL null until the event is numbered,"
        " shortly after its commit (the all-runs stream only sends numbered events)."
    )
    type: str
    node_id: str | None
    iteration: int | None
    attempt_id: str | None
    payload: dict[str, Any]
    created_at: float
