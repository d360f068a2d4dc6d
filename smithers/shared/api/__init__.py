"""The gateway's response bodies as pydantic models, shared by the gateway (which serializes
with them and publishes them in its OpenAPI document) and its client (which returns them).

Families converted so far: grants (:mod:`.grant`), cron schedules (:mod:`.schedule`),
signals (:mod:`.signal`) and workflows with their revisions (:mod:`.workflow`);
the others are still hand-written schemas in ``smithers.gateway.schemas`` and dataclasses
in ``smithers.client.types``.
"""

from __future__ import annotations

from smithers.shared.api.grant import Grant, GrantList, IssuedGrant, RevokedGrant
from smithers.shared.api.model import OpenAPI30, Resource
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
    "Grant",
    "GrantList",
    "Holder",
    "IssuedGrant",
    "OpenAPI30",
    "Resource",
    "Revision",
    "RevisionList",
    "RevokedGrant",
    "Schedule",
    "ScheduleList",
    "Signal",
    "Workflow",
    "WorkflowList",
    "WorkflowMigration",
    "WorkflowNode",
]
