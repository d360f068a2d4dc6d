"""The gateway's response bodies as pydantic models, shared by the gateway (which serializes
with them and publishes them in its OpenAPI document) and its client (which returns them).

Families: approvals (:mod:`.approval`), signed webhooks' results (:mod:`.control`),
error bodies (:mod:`.error`), events (:mod:`.event`), grants (:mod:`.grant`), the probes
(:mod:`.health`), a run's history (:mod:`.history`), runs (:mod:`.run`), sandboxes and
their reviews (:mod:`.sandbox`), cron schedules (:mod:`.schedule`), console sessions
(:mod:`.session`), signals (:mod:`.signal`) and workflows with their revisions
(:mod:`.workflow`).
"""

from __future__ import annotations

from smithers.shared.api.approval import Approval, ApprovalContext, ApprovalList, ApprovedRun
from smithers.shared.api.control import WebhookResult
from smithers.shared.api.error import Error, ErrorDetail, NotReady
from smithers.shared.api.event import Event
from smithers.shared.api.grant import Grant, GrantList, IssuedGrant, RevokedGrant
from smithers.shared.api.health import Health, Ready
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
from smithers.shared.api.sandbox import Sandbox, SandboxList, SandboxReview
from smithers.shared.api.schedule import Schedule, ScheduleList
from smithers.shared.api.session import Session, SignedOut
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
    "Approval",
    "ApprovalContext",
    "ApprovalList",
    "ApprovedRun",
    "Attempt",
    "AuditEntry",
    "AuditTrail",
    "AuditedRun",
    "Ceilings",
    "ChildRun",
    "Error",
    "ErrorDetail",
    "Event",
    "Grant",
    "GrantList",
    "Health",
    "Holder",
    "IssuedGrant",
    "LaunchWarning",
    "LaunchedRun",
    "Migration",
    "Node",
    "NodeSpending",
    "NotReady",
    "OpenAPI30",
    "Output",
    "Ready",
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
    "Sandbox",
    "SandboxList",
    "SandboxReview",
    "Schedule",
    "ScheduleList",
    "Session",
    "Signal",
    "SignedOut",
    "Spent",
    "TimeTravelResult",
    "WebhookResult",
    "Workflow",
    "WorkflowList",
    "WorkflowMigration",
    "WorkflowNode",
]
