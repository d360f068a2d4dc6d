"""The gateway's response bodies as pydantic models, shared by the gateway (which serializes
with them and publishes them in its OpenAPI document) and its client (which returns them).

Families converted so far: approvals (:mod:`.approval`), signed webhooks' results
(:mod:`.control`), grants (:mod:`.grant`), the probes (:mod:`.health`), sandboxes and
their reviews (:mod:`.sandbox`), cron schedules (:mod:`.schedule`), console sessions
(:mod:`.session`), signals (:mod:`.signal`) and workflows with their revisions
(:mod:`.workflow`);
the others are still hand-written schemas in ``smithers.gateway.schemas`` and dataclasses
in ``smithers.client.types``.
"""

from __future__ import annotations

from smithers.shared.api.approval import Approval, ApprovalList
from smithers.shared.api.control import WebhookResult
from smithers.shared.api.grant import Grant, GrantList, IssuedGrant, RevokedGrant
from smithers.shared.api.health import Health, Ready
from smithers.shared.api.model import OpenAPI30, Resource
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
    "ApprovalList",
    "Grant",
    "GrantList",
    "Health",
    "Holder",
    "IssuedGrant",
    "OpenAPI30",
    "Ready",
    "Resource",
    "Revision",
    "RevisionList",
    "RevokedGrant",
    "Sandbox",
    "SandboxList",
    "SandboxReview",
    "Schedule",
    "ScheduleList",
    "Session",
    "Signal",
    "SignedOut",
    "WebhookResult",
    "Workflow",
    "WorkflowList",
    "WorkflowMigration",
    "WorkflowNode",
]
