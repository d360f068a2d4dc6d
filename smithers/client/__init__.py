"""``smithers.client``: a typed client of the gateway's REST API and event streams.

It talks HTTP only (an import contract keeps the store, the broker and the processes out
of it); the remote ``smithers`` command line (``SMITHERS_GATEWAY_URL``) is built on it.
"""

from __future__ import annotations

from smithers.client.client import EXCLUDED, Client, operations
from smithers.client.errors import ApiError, GatewayUnavailable
from smithers.client.stream import EventStream
from smithers.client.types import (
    Attempt,
    AuditEntry,
    AuditTrail,
    Event,
    Launched,
    LaunchWarning,
    Migration,
    Node,
    Output,
    Ready,
    Run,
    RunDetail,
    RunPage,
    RunRevision,
    Signal,
    StreamEnd,
    TimeTravelResult,
)
from smithers.shared.api import (
    Approval,
    Grant,
    IssuedGrant,
    Revision,
    RevisionList,
    Sandbox,
    SandboxReview,
    Schedule,
    Session,
    Workflow,
    WorkflowMigration,
    WorkflowNode,
)

__all__ = [
    "EXCLUDED",
    "ApiError",
    "Approval",
    "Attempt",
    "AuditEntry",
    "AuditTrail",
    "Client",
    "Event",
    "EventStream",
    "GatewayUnavailable",
    "Grant",
    "IssuedGrant",
    "LaunchWarning",
    "Launched",
    "Migration",
    "Node",
    "Output",
    "Ready",
    "Revision",
    "RevisionList",
    "Run",
    "RunDetail",
    "RunPage",
    "RunRevision",
    "Sandbox",
    "SandboxReview",
    "Schedule",
    "Session",
    "Signal",
    "StreamEnd",
    "TimeTravelResult",
    "Workflow",
    "WorkflowMigration",
    "WorkflowNode",
    "operations",
]
