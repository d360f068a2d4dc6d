"""A run's history as the API returns it: its audit trail (``/v1/runs/{run_id}/audit``) and
the results of time travel (``rewind``, ``replay``, ``fork``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from smithers.shared.api.model import Resource, Sparse
from smithers.shared.status import RunStatus


class AuditedRun(Resource):
    """The run an audit trail is of, while it exists."""

    run_id: str
    workflow: str
    workflow_version: str
    module_revision: str
    deployment_version: str
    status: RunStatus
    launched_by: str | None
    parent_run_id: str | None


class AuditEntry(Sparse):
    """One entry of a run's audit trail: an event, an audit-log row or a time-travel row;
    each source sends only its own optional fields."""

    at: float
    source: str = Field(description="`event`, `audit` or `time_travel`.")
    type: str
    detail: Any = Field(json_schema_extra={"nullable": True, "description": "Any JSON value."})
    seq: int | None = Field(None, description="An event's seq.")
    node_id: str | None = Field(None, description="An event's node.")
    iteration: int | None = Field(None, description="An event's iteration.")
    actor: str | None = Field(None, description="Who did it (audit and time-travel rows).")
    target: str | None = Field(None, description="An audit row's `type:id`.")
    status: str | None = Field(None, description="A time-travel row's outcome.")
    finished_at: float | None = Field(None, description="When a time-travel call ended.")


class AuditTrail(Resource):
    """A run's whole trail in time order; ``run`` is null once the run was deleted."""

    run: AuditedRun | None
    entries: tuple[AuditEntry, ...]


class TimeTravelResult(Sparse):
    """The result of a rewind (``node_id``, ``reopened``, rows removed), or of a replay or
    fork (``new_run_id``, ``from_node``); each action sends only its own optional fields."""

    audit_id: int
    run_id: str
    action: str
    revision: str = Field(description="The module revision the new attempts run.")
    workflow_version: str
    node_id: str | None = Field(None, description="Rewind: the node reopened with its downstream.")
    item: int | None = Field(None, description="Rewind: the map item reopened, when one was named.")
    reopened: tuple[str, ...] | None = Field(None, description="Rewind: the nodes reopened.")
    node_rows_removed: int | None = None
    cache_rows_removed: int | None = None
    patches_reverted: int | None = None
    new_run_id: str | None = Field(None, description="Replay and fork: the new run.")
    from_node: str | None = Field(None, description="Replay and fork: the node it starts from.")
