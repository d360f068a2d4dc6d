"""A run's history: its audit trail (run:read) and time travel (run:write).

Time travel (rewind, replay, fork) needs ``run:write`` and either the run's launcher
or ``admin`` as well, and ``confirm: true``. Each call is audited in_progress before
any change (:func:`smithers.shared.operations.time_travel`); one rewind per run at a time
(409) and a per-caller rate limit (429).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from smithers.gateway.auth import principal, requires
from smithers.gateway.body import BodySchema, check_run_id, read_body
from smithers.gateway.runs import refuse_secret_values
from smithers.gateway.services import services
from smithers.shared import operations
from smithers.shared.errors import Forbidden, NotFound
from smithers.shared.grants import Scope
from smithers.shared.store import runs as runs_store
from smithers.shared.store.queries import get_run
from smithers.shared.store.trail import run_trail
from smithers.shared.workflow import NODE_ID

bp = Blueprint("history", __name__, url_prefix="/v1/runs")

_NODE = {"type": "string", "pattern": NODE_ID.pattern, "description": "Rewind to before this node."}
_CONFIRM = {"type": "boolean", "enum": [True], "description": "Must be true: time travel changes history."}
_NEW_ID = {"type": "string", "pattern": runs_store.RUN_ID.pattern, "description": "The new run's id."}
_ITEM = {
    "type": "integer",
    "minimum": 0,
    "maximum": 1_000_000,
    "description": "With a map node: reopen only this item (by index), the map and what follows it.",
}
REWIND = BodySchema(
    "RewindRequest",
    {"node_id": _NODE, "confirm": _CONFIRM, "item": _ITEM},
    required=("node_id", "confirm"),
    description="Reopen a node and everything downstream of it; the run resumes from there.",
)
REPLAY = BodySchema(
    "ReplayRequest",
    {"node_id": _NODE, "confirm": _CONFIRM, "run_id": _NEW_ID},
    required=("node_id", "confirm"),
    description="A new run keeping this run's finished work upstream of the node (same input).",
)
FORK = BodySchema(
    "ForkRequest",
    {
        "node_id": _NODE,
        "confirm": _CONFIRM,
        "run_id": _NEW_ID,
        "input": {"type": "object", "description": "The new run's input."},
    },
    required=("node_id", "confirm", "input"),
    description="Like replay, with new input for the node and everything after it.",
)
BODIES = {"rewind": REWIND, "replay": REPLAY, "fork": FORK}


@bp.get("/<run_id>/audit")
@requires(Scope.RUN_READ)
def audit(run_id: str) -> Response:
    """The run's whole trail in time order (also after the run was deleted)."""
    check_run_id(run_id)
    with services().store.read() as conn:
        trail = run_trail(conn, run_id)
    if trail["run"] is None and not trail["entries"]:
        raise NotFound(f"run {run_id!r} not found and nothing audited under that id")
    return jsonify(trail)


def _travel(run_id: str, action: str) -> tuple[dict[str, Any], int]:
    check_run_id(run_id)
    body = read_body(BODIES[action])
    if "input" in body:
        refuse_secret_values(body["input"], "input")
    caller = principal()
    svc = services()
    with svc.store.read() as conn:
        run = get_run(conn, run_id)
    if run is None:
        raise NotFound(f"run {run_id!r} not found")
    if run.launched_by != caller.subject and Scope.ADMIN not in caller.scopes:
        raise Forbidden("time travel needs the run's launcher, or the scope 'admin'")
    result = operations.time_travel(
        svc.store,
        svc.broker,
        svc.registry,
        action=action,
        run_id=run_id,
        node_id=str(body["node_id"]),
        caller=caller.subject,
        confirm=body["confirm"] is True,
        new_run_id=body.get("run_id"),
        new_input=body.get("input"),
        item=body.get("item"),
    )
    return result, 200 if action == "rewind" else 201


@bp.post("/<run_id>/rewind")
@requires(Scope.RUN_WRITE)
def rewind(run_id: str) -> tuple[Response, int]:
    """Reopen ``node_id`` and everything downstream; the run becomes queued again."""
    result, status = _travel(run_id, "rewind")
    return jsonify(result), status


@bp.post("/<run_id>/replay")
@requires(Scope.RUN_WRITE)
def replay(run_id: str) -> tuple[Response, int]:
    """A new run from this run's state up to ``node_id``, same input, lineage recorded."""
    result, status = _travel(run_id, "replay")
    return jsonify(result), status


@bp.post("/<run_id>/fork")
@requires(Scope.RUN_WRITE)
def fork(run_id: str) -> tuple[Response, int]:
    """A new run from this run's state up to ``node_id``, with new input."""
    result, status = _travel(run_id, "fork")
    return jsonify(result), status
