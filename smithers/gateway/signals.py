"""Signals: send one to a run (run:write).

``POST /v1/runs/{run_id}/signals/{name}`` keeps the signal for the run's signal node
waiting for ``name`` (or for the one it reaches later). The sender is the token's
subject, recorded with the signal and in the audit log. A client-chosen ``signal_id``
makes it idempotent: the same id and payload again return the first delivery (200).
"""

from __future__ import annotations

from apiflask import APIBlueprint

from smithers.gateway.apidoc import AUTH, RUN_ID_PARAM, errors, param, reads, reply
from smithers.gateway.auth import principal, requires
from smithers.gateway.body import check_run_id
from smithers.gateway.models import SignalRequest
from smithers.gateway.services import services
from smithers.shared import operations
from smithers.shared.api import Signal
from smithers.shared.errors import InvalidInput
from smithers.shared.grants import Scope
from smithers.shared.workflow import SIGNAL_NAME

bp = APIBlueprint("signals", __name__)


@bp.post("/v1/runs/<run_id>/signals/<name>")
@requires(Scope.RUN_WRITE)
@bp.input(SignalRequest, arg_name="body")
@bp.output(Signal, status_code=201, description="The signal was kept (and taken, if a node waited for it).")
@bp.doc(
    summary="Send a signal to a run",
    operation_id="sendSignal",
    description="Kept for the run's signal node waiting for `name`, or for the first one the run"
    " reaches later (in arrival order). The sender is the token's subject (stored, audited)."
    " The `payload` is checked against the node's declared schema (400 naming the field)."
    " 404: no such run, or no node of its workflow waits for `name`; 409: the `signal_id`"
    " was sent with another payload, or the run has ended.",
    responses={
        200: reply(Signal, "The same `signal_id` and payload again: the first delivery."),
        **errors(*AUTH, 404, 409, 413, 503),
    },
)
@reads(
    RUN_ID_PARAM,
    param(
        "name",
        "path",
        {"type": "string", "pattern": SIGNAL_NAME.pattern},
        "The signal's name, as a signal node of the run's workflow declares it.",
    ),
)
def send(run_id: str, name: str, body: SignalRequest) -> tuple[Signal, int]:
    """Send the signal ``name`` to a run: 201 first delivery, 200 a repeat."""
    check_run_id(run_id)
    if not SIGNAL_NAME.fullmatch(name):
        raise InvalidInput(f"signal name {name!r} must match {SIGNAL_NAME.pattern}")
    svc = services()
    record, created = operations.signal(
        svc.store,
        svc.broker,
        svc.registry,
        run_id,
        name,
        signal_id=body.signal_id,
        payload=body.payload,
        sender=principal().subject,
        decider=svc.decider,
    )
    return Signal.model_validate(record.to_json()), 201 if created else 200
