"""Signals as the API returns them (``POST /v1/runs/{run_id}/signals/{name}``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from smithers.shared.api.model import Resource


class Signal(Resource):
    """A signal sent to a run, as stored (its payload redacted)."""

    run_id: str
    name: str
    signal_id: str
    payload: Any = Field(json_schema_extra={"nullable": True, "description": "As stored (redacted)."})
    sender: str | None
    received_at: float
    consumed_node: str | None
    consumed_iteration: int | None
    consumed_at: float | None
