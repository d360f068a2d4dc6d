"""GET /v1/workflows: the workflows this deployment registered."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from smithers.gateway.auth import requires
from smithers.gateway.body import check_query
from smithers.gateway.services import services
from smithers.shared.grants import Scope
from smithers.shared.registry import Registered

bp = Blueprint("workflows", __name__)


def workflow_json(entry: Registered) -> dict[str, Any]:
    """The public shape of a registered workflow and its graph."""
    wf = entry.workflow
    return {
        "name": wf.name,
        "version": wf.version,
        "description": wf.description,
        "module": entry.module,
        "revision": entry.revision,
        "nodes": [
            {
                "id": node_id,
                "kind": wf.nodes[node_id].kind.value,
                "after": list(wf.nodes[node_id].after),
                "loop": wf.nodes[node_id].loop,
            }
            for node_id in (wf.order or tuple(wf.nodes))
        ],
    }


@bp.get("/v1/workflows")
@requires(Scope.RUN_READ)
def index() -> Response:
    """Every registered workflow, by name."""
    check_query(())
    registry = services().registry
    return jsonify({"workflows": [workflow_json(registry.get(name)) for name in registry.names()]})
