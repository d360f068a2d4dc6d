"""/v1/workflows: the workflows this deployment registered, their stored revisions with
their live holders, and the bulk migration of a workflow's runs between revisions."""

from __future__ import annotations

import time

from apiflask import APIBlueprint

from smithers.gateway.apidoc import AUTH, errors, param, reads
from smithers.gateway.auth import principal, requires
from smithers.gateway.body import check_query
from smithers.gateway.models import MigrateWorkflowRequest
from smithers.gateway.services import services
from smithers.shared import operations
from smithers.shared.api import RevisionList, Workflow, WorkflowList, WorkflowMigration, WorkflowNode
from smithers.shared.errors import InvalidInput, NotFound
from smithers.shared.grants import Scope
from smithers.shared.registry import Registered
from smithers.shared.store import revisions
from smithers.shared.workflow import WORKFLOW_NAME

bp = APIBlueprint("workflows", __name__)


def workflow_model(entry: Registered) -> Workflow:
    """The public shape of a registered workflow and its graph."""
    wf = entry.workflow
    return Workflow(
        name=wf.name,
        version=wf.version,
        description=wf.description,
        module=entry.module,
        revision=entry.revision,
        nodes=tuple(
            WorkflowNode(
                id=node_id,
                kind=wf.nodes[node_id].kind.value,
                after=tuple(wf.nodes[node_id].after),
                loop=wf.nodes[node_id].loop,
            )
            for node_id in (wf.order or tuple(wf.nodes))
        ),
    )


@bp.get("/v1/workflows")
@requires(Scope.RUN_READ)
@bp.output(WorkflowList, description="Workflows by name.")
@bp.doc(summary="List registered workflows", operation_id="listWorkflows", responses=errors(*AUTH))
def index() -> WorkflowList:
    """Every registered workflow, by name."""
    check_query(())
    registry = services().registry
    return WorkflowList(workflows=tuple(workflow_model(registry.get(name)) for name in registry.names()))


def _workflow_name(name: str) -> str:
    if not WORKFLOW_NAME.match(name):
        raise InvalidInput(f"workflow name {name!r} must match {WORKFLOW_NAME.pattern}")
    return name


@bp.get("/v1/workflows/<name>/revisions")
@requires(Scope.RUN_READ)
@bp.output(RevisionList, description="Oldest first.")
@bp.doc(
    summary="List a workflow's stored revisions with their live holders",
    operation_id="listRevisions",
    responses=errors(*AUTH, 404, 503),
)
@reads(param("name", "path", {"type": "string", "pattern": WORKFLOW_NAME.pattern}, "The workflow's name."))
def revisions_of(name: str) -> RevisionList:
    """The stored revisions of a workflow (oldest first), each with its live holders."""
    check_query(())
    svc = services()
    _workflow_name(name)
    with svc.store.read() as conn:
        stored = revisions.list_revisions(conn, name)
        live = revisions.live_holders(conn, time.time(), svc.config.holder_ttl_s)
    if not stored:
        raise NotFound(f"workflow {name!r} has no stored revision")
    out = []
    for item in stored:
        holders = [
            {"process_id": h.process_id, "role": h.role, "last_seen": h.last_seen}
            for h in live
            if h.workflow == name and h.revision == item["revision"]
        ]
        out.append({**item, "holders": holders})
    return RevisionList.model_validate({"workflow": name, "revisions": out})


@bp.post("/v1/workflows/<name>/migrate")
@requires(Scope.ADMIN)
@bp.input(MigrateWorkflowRequest, arg_name="body")
@bp.output(WorkflowMigration, description="Each run moved on its own; `refused` says why not.")
@bp.doc(
    summary="Migrate every unfinished or failed run of a workflow from one revision to another",
    operation_id="migrateWorkflow",
    responses=errors(*AUTH, 404, 413, 503),
)
@reads(param("name", "path", {"type": "string", "pattern": WORKFLOW_NAME.pattern}, "The workflow's name."))
def migrate_all(name: str, body: MigrateWorkflowRequest) -> WorkflowMigration:
    """Migrate every unfinished or failed run of the workflow from one revision to
    another, each run on its own; ``refused`` lists the runs that could not move and why."""
    svc = services()
    result = operations.migrate_all(
        svc.store,
        svc.broker,
        _workflow_name(name),
        source=body.source,
        to=body.to,
        actor=principal().subject,
        note=body.note,
    )
    return WorkflowMigration.model_validate(result)
