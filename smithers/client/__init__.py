"""``smithers.client``: typed clients of the gateway's REST API and event streams,
:class:`Client` (``httpx.Client``) and :class:`AsyncClient` (``httpx.AsyncClient``, asyncio).

It talks HTTP only (an import contract keeps the store, the broker and the processes out
of it); the remote ``smithers`` command line (``SMITHERS_GATEWAY_URL``) is built on it.
"""

from __future__ import annotations

from smithers.client.api import operations
from smithers.client.async_client import AsyncClient
from smithers.client.client import EXCLUDED, Client
from smithers.client.errors import ApiError, GatewayUnavailable
from smithers.client.stream import AsyncEventStream, EventStream
from smithers.client.types import (
    Launched,
    Ready,
    Signal,
    StreamEnd,
)
from smithers.shared.api import (
    Approval,
    ApprovalContext,
    Attempt,
    AuditEntry,
    AuditTrail,
    Event,
    Grant,
    IssuedGrant,
    LaunchWarning,
    Migration,
    Node,
    Output,
    Revision,
    RevisionList,
    Run,
    RunDetail,
    RunPage,
    RunRevision,
    RunSummary,
    Sandbox,
    SandboxReview,
    Schedule,
    Session,
    TimeTravelResult,
    Workflow,
    WorkflowMigration,
    WorkflowNode,
)

__all__ = [
    "EXCLUDED",
    "ApiError",
    "Approval",
    "ApprovalContext",
    "AsyncClient",
    "AsyncEventStream",
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
    "RunSummary",
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
