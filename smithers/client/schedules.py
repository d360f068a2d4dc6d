"""The client's view of a cron schedule (``Schedule`` in the OpenAPI document)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from smithers.client.types import Json, _float, _str


@dataclass(frozen=True)
class Schedule:
    """A declared cron schedule and its state; ``id`` is ``workflow:schedule_id``."""

    id: str
    workflow: str
    schedule_id: str
    cron: str
    tz: str
    catch_up: int
    policy: str
    paused: bool
    input: dict[str, Any] = field(default_factory=dict)
    paused_by: str | None = None
    changed_at: float | None = None
    next_tick: float | None = None
    next_tick_local: str | None = None
    last_tick: float | None = None
    last_run_id: str | None = None
    fired: int = 0
    skipped: int = 0

    @classmethod
    def from_json(cls, data: Json) -> Schedule:
        """Build from a ``Schedule`` body."""
        return cls(
            id=str(data["id"]),
            workflow=str(data["workflow"]),
            schedule_id=str(data["schedule_id"]),
            cron=str(data["cron"]),
            tz=str(data["tz"]),
            catch_up=int(data.get("catch_up") or 0),
            policy=str(data.get("policy") or "skip"),
            paused=bool(data.get("paused")),
            input=dict(data.get("input") or {}),
            paused_by=_str(data.get("paused_by")),
            changed_at=_float(data.get("changed_at")),
            next_tick=_float(data.get("next_tick")),
            next_tick_local=_str(data.get("next_tick_local")),
            last_tick=_float(data.get("last_tick")),
            last_run_id=_str(data.get("last_run_id")),
            fired=int(data.get("fired") or 0),
            skipped=int(data.get("skipped") or 0),
        )
