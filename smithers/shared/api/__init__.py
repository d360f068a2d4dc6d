"""The gateway's response bodies as pydantic models, shared by the gateway (which serializes
with them and publishes them in its OpenAPI document) and its client (which returns them).

Families converted so far: events (:mod:`.event`), grants (:mod:`.grant`), a run's
history (:mod:`.history`), runs (:mod:`.run`), cron schedules (:mod:`.schedule`), signals
(:mod:`.signal`) and workflows with their revisions (:mod:`.workflow`); the others are
still hand-written schemas in ``smithers.gateway.schemas`` and dataclasses in
``smithers.client.types``.
"""

from __future__ import annotations

from smithers.shared.api.event import Event
from smithers.shared.api.grant import Grant, GrantList, IssuedGrant, RevokedGrant
from smithers.shared.api.history import AuditedRun, AuditEntry, AuditTrail, TimeTravelResult
from smithers.shared.api.model import OpenAPI30, Resource
from smithers.shared.api.run import (
    Attempt,
    Ceilings,
    ChildRun,
    LaunchedRun,
    LaunchWarning,
    Migration,
    Node,
    NodeSpending,
    Output,
    Run,
    RunDetail,
    RunPage,
    RunRevision,
    RunSpending,
    RunSummary,
    Spent,
)
from smithers.shared.api.schedule import Schedule, ScheduleList
from smithers.shared.api.signal import Signal
from smithers.shared.api.workflow import (
    Holder,
    Revision,
    RevisionList,
    Workflow,
    WorkflowList,
    WorkflowMigration,
    WorkflowNode,
)

__all__ = [
    "Attempt",
    "AuditEntry",
    "AuditTrail",
    "AuditedRun",
    "Ceilings",
    "ChildRun",
    "Event",
    "Grant",
    "GrantList",
    "Holder",
    "IssuedGrant",
    "LaunchWarning",
    "LaunchedRun",
    "Migration",
    "Node",
    "NodeSpending",
    "OpenAPI30",
    "Output",
    "Resource",
    "Revision",
    "RevisionList",
    "RevokedGrant",
    "Run",
    "RunDetail",
    "RunPage",
    "RunRevision",
    "RunSpending",
    "RunSummary",
    "Schedule",
    "ScheduleList",
    "Signal",
    "Spent",
    "TimeTravelResult",
    "Workflow",
    "WorkflowList",
    "WorkflowMigration",
    "WorkflowNode",
]
