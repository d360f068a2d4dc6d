"""Signals: send one to a run (run:write).

``POST /v1/runs/{run_id}/signals/{name}`` keeps the signal for the run's signal node
waiting for ``name`` (or for the one it reaches later). The sender is the token's
subject, recorded with the signal and in the audit log. A client-chosen ``signal_id``
makes it idempotent: the same id and payload again return the first delivery (200).
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from smithers.gateway.auth import principal, requires
from smithers.gateway.body import BodySchema, check_run_id, read_body
from smithers.gateway.services import services
from smithers.shared import operations
from smithers.shared.errors import InvalidInput
from smithers.shared.grants import Scope
from smithers.shared.store.signals import SIGNAL_ID
from smithers.shared.workflow import SIGNAL_NAME

bp = Blueprint("signals", __name__)

SIGNAL = BodySchema(
    "SignalRequest",
    {
        "signal_id": {
            "type": "string",
            "pattern": SIGNAL_ID.pattern,
            "description": "Chosen by the client to make the delivery idempotent; generated when absent.",
        },
        "payload": {
            "nullable": True,
            "description": "Any JSON value, checked against the signal node's declared schema;"
            " bounded by the run input limit and redacted before it is stored.",
        },
    },
    optional_body=True,
    description="A signal for the run's signal node waiting for this name.",
)


@bp.post("/v1/runs/<run_id>/signals/<name>")
@requires(Scope.RUN_WRITE)
def send(run_id: str, name: str) -> tuple[Response, int]:
    """Send the signal ``name`` to a run: 201 first delivery, 200 a repeat."""
    check_run_id(run_id)
    if not SIGNAL_NAME.fullmatch(name):
        raise InvalidInput(f"signal name {name!r} must match {SIGNAL_NAME.pattern}")
    body = read_body(SIGNAL)
    svc = services()
    record, created = operations.signal(
        svc.store,
        svc.broker,
        svc.registry,
        run_id,
        name,
        signal_id=body.get("signal_id"),
        payload=body.get("payload"),
        sender=principal().subject,
        decider=svc.decider,
    )
    return jsonify(record.to_json()), 201 if created else 200
