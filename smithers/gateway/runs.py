"""/v1/runs: launch, list, read, cancel, resume, rerun and delete runs."""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from dataclasses import replace
from typing import Any

from apiflask import APIBlueprint
from flask import request

from smithers.gateway.apidoc import AUTH, PAGE, RUN_ID_PARAM, errors, param, reads, reply
from smithers.gateway.auth import principal, requires
from smithers.gateway.body import check_query, check_run_id, query_choice, query_int
from smithers.gateway.models import Empty, LaunchRequest, MigrateRequest, RerunRequest
from smithers.gateway.services import services
from smithers.shared import operations
from smithers.shared.api import LaunchedRun, Migration, Run, RunDetail, RunPage, RunSummary
from smithers.shared.errors import InvalidInput, NotFound
from smithers.shared.grants import Scope
from smithers.shared.redaction import redact_text
from smithers.shared.status import RunStatus
from smithers.shared.store import RunRecord, revisions
from smithers.shared.store import runs as runs_store
from smithers.shared.store import spend as spend_store
from smithers.shared.store.children import links as child_links
from smithers.shared.store.queries import (
    attempts_of,
    get_run,
    latest_feed_id,
    list_runs,
    nodes_of,
    outputs_of,
)

bp = APIBlueprint("runs", __name__, url_prefix="/v1/runs")

RUN_ID_PATTERN = runs_store.RUN_ID.pattern
STATUSES = tuple(s.value for s in RunStatus)
MAX_TIME = 2**40  # epoch seconds: far beyond any creation time
RUN_ID_SEARCH = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def run_json(run: RunRecord) -> dict[str, Any]:
    """The public shape of a run as a dict (a shallow copy: ``asdict`` deep-copies the input)."""
    body = dict(vars(run))
    body["status"] = run.status.value
    return body


def run_summary(run: RunRecord) -> dict[str, Any]:
    """A run in a list as a dict: without its input and output (``GET /v1/runs/<id>`` has them)."""
    body = run_json(run)
    del body["input"], body["output"]
    return body


def run_model(run: RunRecord) -> Run:
    """The public shape of a run (read from a shallow copy: ``asdict`` deep-copies the input)."""
    return Run.model_validate(vars(run))


def refuse_secret_values(value: Any, path: str) -> None:
    """Refuse strings that look like a secret (a bearer token, a JWT, a provider key):
    run input is stored, and no secret may be."""
    if isinstance(value, str):
        if redact_text(value) != value:
            raise InvalidInput(
                f"{path} looks like a secret (a token or key); pass secrets by name to the worker,"
                " never through run input"
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            refuse_secret_values(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            refuse_secret_values(item, f"{path}[{i}]")


def _run_id(run_id: str) -> str:
    return check_run_id(run_id)


def _reread(run_id: str) -> RunRecord:
    with services().store.read() as conn:
        run = get_run(conn, run_id)
    if run is None:
        raise NotFound(f"run {run_id!r} not found")
    return run


@bp.post("")
@requires(Scope.RUN_WRITE)
@bp.input(LaunchRequest, arg_name="body")
@bp.output(LaunchedRun, status_code=201, description="The run was created.")
@bp.doc(
    summary="Launch a run",
    operation_id="launchRun",
    description="Launch a run of a registered workflow. The same `run_id` with the same input"
    " returns the same run (200); with another input it is a 409. Nothing is written for a"
    " refused request. `warnings` holds a `revision_unavailable` entry when no live"
    " scheduler or worker holds the workflow's revision (the run is created and waits).",
    responses={
        200: reply(LaunchedRun, "A run with this id and the same input already exists."),
        **errors(*AUTH, 404, 409, 413, 503),
    },
)
def launch(body: LaunchRequest) -> tuple[LaunchedRun, int, dict[str, str]]:
    """201 with a new run; 200 with the same run when its id and input are repeated."""
    svc = services()
    entry = svc.registry.get(body.workflow)
    run_input = operations.check_input(body.input, entry.workflow.public_inputs, svc.store.limits.input_bytes)
    refuse_secret_values(run_input, "input")
    run, created = operations.launch(
        svc.store,
        svc.broker,
        svc.registry,
        workflow=body.workflow,
        run_input=run_input,
        run_id=body.run_id,
        launched_by=principal().subject,
        deployment_version=svc.config.deployment_version,
        decider=svc.decider,
        priority=body.priority,
        budget=body.budget,
    )
    if created:
        # runs.launch reads the row back before its run.launched event is flushed (seq 1)
        run = replace(run, last_seq=max(run.last_seq, 1))
    launched = LaunchedRun.model_validate({**vars(run), "warnings": _holder_warnings(run.workflow)})
    return launched, 201 if created else 200, {"Location": f"/v1/runs/{run.run_id}"}


def _holder_warnings(workflow: str) -> list[dict[str, Any]]:
    """``[{"code": "revision_unavailable", ...}]`` when no live scheduler or worker holds
    the workflow's revision: the run would sit queued (docs/api.md)."""
    svc = services()
    warning = operations.holder_warning(svc.store, svc.registry, workflow, svc.config.holder_ttl_s)
    return [] if warning is None else [warning]


def _encode_cursor(run: RunRecord) -> str:
    raw = json.dumps([run.created_at, run.run_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(text: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        at, rid = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidInput("cursor is not one this API returned") from None
    if not isinstance(at, int | float) or isinstance(at, bool) or not isinstance(rid, str):
        raise InvalidInput("cursor is not one this API returned")
    return float(at), rid


@bp.get("")
@requires(Scope.RUN_READ)
@bp.output(RunPage, description="Run summaries (no input or output), newest first.")
@bp.doc(
    summary="List runs",
    operation_id="listRuns",
    description="Summaries of runs without their input and output, so a page stays"
    " small: `GET /v1/runs/{run_id}` returns a run with its input, output and node"
    " outputs.",
    responses=errors(*AUTH, 503),
)
@reads(
    param("status", "query", {"type": "string", "enum": list(STATUSES)}, "Only runs in this status."),
    param("workflow", "query", {"type": "string"}, "Only runs of this workflow."),
    param("limit", "query", PAGE, "Page size (default 50)."),
    param("cursor", "query", {"type": "string"}, "`next_cursor` of the previous page."),
    param("since", "query", {"type": "integer", "minimum": 0}, "Created at or after (epoch s)."),
    param("until", "query", {"type": "integer", "minimum": 0}, "Created before (epoch s)."),
    param(
        "q",
        "query",
        {"type": "string", "pattern": RUN_ID_SEARCH.pattern},
        "Only runs whose id contains this.",
    ),
)
def index() -> RunPage:
    """Run summaries (no input or output) newest first, filtered by status, workflow,
    creation time and part of the run id; ``next_cursor`` pages on."""
    check_query(("status", "workflow", "limit", "cursor", "since", "until", "q"))
    svc = services()
    status = query_choice("status", STATUSES)
    workflow = request.args.get("workflow") or None
    limit = query_int("limit", 50, 1, svc.config.page_max) or 50
    cursor = request.args.get("cursor")
    before = _decode_cursor(cursor) if cursor else None
    since = query_int("since", None, 0, MAX_TIME)
    until = query_int("until", None, 0, MAX_TIME)
    search = request.args.get("q")  # present but empty is refused, as the document says
    if search is not None and not RUN_ID_SEARCH.fullmatch(search):
        raise InvalidInput(f"q must match {RUN_ID_SEARCH.pattern} (a part of a run id)")
    with svc.store.read() as conn:
        feed_id = latest_feed_id(conn)  # first: whatever changes after the page is streamed
        found = list_runs(
            conn,
            status=status,
            workflow=workflow,
            before=before,
            limit=limit + 1,
            since=since,
            until=until,
            run_id_contains=search,
            summary=True,
        )
    page = found[:limit]
    next_cursor = _encode_cursor(page[-1]) if len(found) > limit else None
    return RunPage(
        runs=tuple(RunSummary.model_validate(vars(r)) for r in page), next_cursor=next_cursor, feed_id=feed_id
    )


@bp.get("/<run_id>")
@requires(Scope.RUN_READ)
@bp.output(RunDetail, description="The run.")
@bp.doc(
    summary="Read a run with its nodes, attempts and outputs",
    operation_id="getRun",
    responses=errors(*AUTH, 404, 503),
)
@reads(RUN_ID_PARAM)
def show(run_id: str) -> RunDetail:
    """The run with its nodes, attempts and outputs, read in one snapshot."""
    _run_id(run_id)
    with services().store.read() as conn:
        run = get_run(conn, run_id)
        if run is None:
            raise NotFound(f"run {run_id!r} not found")
        nodes = nodes_of(conn, run_id)
        attempts = attempts_of(conn, run_id)
        outputs = outputs_of(conn, run_id)
        spending = spend_store.spending(conn, run_id)
        graph = revisions.stored_graph(conn, run.workflow, run.module_revision)
        children = child_links(conn, run_id)
        missing = revisions.missing_roles(
            conn, run.workflow, run.module_revision, time.time(), services().config.holder_ttl_s
        )
    return RunDetail.model_validate(
        {
            "run": vars(run),
            "revision": {
                "revision": run.module_revision,
                "workflow_version": run.workflow_version,
                "available": not missing,
                "missing": missing,
                "graph": graph,
            },
            "nodes": [vars(n) for n in nodes],
            "attempts": [vars(a) for a in attempts],
            "outputs": [
                {"node_id": node, "iteration": it, "value": value}
                for (node, it), value in sorted(outputs.items())
            ],
            "children": [vars(c) for c in children],
            "spending": spending,
        }
    )


@bp.post("/<run_id>/cancel")
@requires(Scope.RUN_WRITE)
@bp.input(Empty, arg_name="body")
@bp.output(Run, description="Cancellation requested (a no-op once the run ended).")
@bp.doc(summary="Cancel a run", operation_id="cancelRun", responses=errors(*AUTH, 404, 413, 503))
@reads(RUN_ID_PARAM)
def cancel(run_id: str, body: Empty) -> Run:
    """Ask for the run's cancellation (a no-op once it ended)."""
    _run_id(run_id)
    svc = services()
    operations.cancel(svc.store, svc.broker, run_id, principal().subject, svc.decider)
    return run_model(_reread(run_id))


@bp.post("/<run_id>/resume")
@requires(Scope.RUN_WRITE)
@bp.input(Empty, arg_name="body")
@bp.output(Run, description="The run is queued again.")
@bp.doc(
    summary="Resume a failed or cancelled run under the same id",
    operation_id="resumeRun",
    responses=errors(*AUTH, 404, 409, 413, 503),
)
@reads(RUN_ID_PARAM)
def resume(run_id: str, body: Empty) -> Run:
    """Reopen a failed or cancelled run under the same id."""
    _run_id(run_id)
    svc = services()
    operations.resume(svc.store, svc.broker, run_id, principal().subject, svc.decider)
    return run_model(_reread(run_id))


@bp.post("/<run_id>/migrate")
@requires(Scope.ADMIN)
@bp.input(MigrateRequest, arg_name="body")
@bp.output(Migration, description="Migrated; audited (actor, from, to, note).")
@bp.doc(
    summary="Move a run to another revision of its workflow",
    operation_id="migrateRun",
    description="Allowed when every node that already ran is in the target revision with the"
    " same kind; otherwise 409 `revision_conflict` with `error.details.conflicts` listing the"
    " nodes. The target must be a revision the store has seen (a process held it or a run"
    " launched with it). Also 409 for a succeeded or cancelled run, or one already on it.",
    responses=errors(*AUTH, 404, 409, 413, 503),
)
@reads(RUN_ID_PARAM)
def migrate(run_id: str, body: MigrateRequest) -> Migration:
    """Move the run to another revision of its workflow; 409 ``revision_conflict`` lists
    the nodes that already ran and differ there."""
    _run_id(run_id)
    svc = services()
    result = operations.migrate(
        svc.store, svc.broker, run_id, to=body.to, actor=principal().subject, note=body.note
    )
    return Migration.model_validate({**result, "run": vars(_reread(run_id))})


@bp.post("/<run_id>/rerun")
@requires(Scope.RUN_WRITE)
@bp.input(RerunRequest, arg_name="body")
@bp.output(Run, status_code=201, description="The new run; its parent_run_id is the old run.")
@bp.doc(
    summary="Launch a new run of the same workflow with the same input",
    operation_id="rerunRun",
    responses={
        200: reply(Run, "This rerun (by its chosen run_id) already exists."),
        **errors(*AUTH, 404, 409, 413, 503),
    },
)
@reads(RUN_ID_PARAM)
def rerun(run_id: str, body: RerunRequest) -> tuple[Run, int, dict[str, str]]:
    """A new run of the same workflow with the same input, its parent the old run."""
    _run_id(run_id)
    svc = services()
    run, created = operations.rerun(
        svc.store,
        svc.broker,
        svc.registry,
        run_id,
        rerun_id=body.run_id,
        launched_by=principal().subject,
        deployment_version=svc.config.deployment_version,
        decider=svc.decider,
    )
    if created:
        run = replace(run, last_seq=max(run.last_seq, 1))  # as in launch()
    return run_model(run), 201 if created else 200, {"Location": f"/v1/runs/{run.run_id}"}


@bp.delete("/<run_id>")
@requires(Scope.ADMIN)
@bp.doc(
    summary="Delete a run and every dependent row",
    operation_id="deleteRun",
    responses={
        204: {"description": "Deleted; the audit entry of the deletion stays."},
        **errors(*AUTH, 404, 503),
    },
)
@reads(RUN_ID_PARAM)
def delete(run_id: str) -> tuple[str, int]:
    """Delete the run and its dependent rows; the audit entry of the deletion stays."""
    _run_id(run_id)
    operations.delete(services().store, run_id, principal().subject)
    return "", 204
