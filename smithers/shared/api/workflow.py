"""Registered workflows and their stored revisions as the API returns them (``/v1/workflows``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from smithers.shared.api.model import Resource


class WorkflowNode(Resource):
    """A node of a registered workflow's graph."""

    id: str
    kind: str
    after: tuple[str, ...]
    loop: str | None = Field(description="The loop whose body this node is in.")


class Workflow(Resource):
    """A workflow this deployment registered."""

    name: str
    version: str
    description: str
    module: str
    revision: str
    nodes: tuple[WorkflowNode, ...]


class WorkflowList(Resource):
    """The registered workflows, by name."""

    workflows: tuple[Workflow, ...]


class Holder(Resource):
    """A live process holding a revision."""

    process_id: str
    role: str
    last_seen: float


class Revision(Resource):
    """A stored revision of a workflow with its live holders."""

    revision: str
    version: str
    module: str
    first_seen: float
    live_runs: int = Field(description="Its queued, running or waiting runs.")
    holders: tuple[Holder, ...]


class RevisionList(Resource):
    """A workflow's stored revisions, oldest first."""

    workflow: str
    revisions: tuple[Revision, ...]


class WorkflowMigration(Resource):
    """The bulk migration of a workflow's runs: those moved and those refused (with why)."""

    workflow: str
    from_revision: str = Field(alias="from")
    migrated: tuple[dict[str, Any], ...]
    refused: tuple[dict[str, Any], ...]
