"""Probes and metrics: /healthz (alive), /readyz (store and broker reachable, metrics\nwritable), /metrics.

None of them needs a token, and none says more than ok or unavailable.
"""

from __future__ import annotations

from apiflask import APIBlueprint
from flask import Response, jsonify

from smithers.gateway.apidoc import Responses, reply, text
from smithers.gateway.services import services
from smithers.shared.api import Health, NotReady, Ready
from smithers.shared.errors import MetricsUnavailable, SmithersError

bp = APIBlueprint("health", __name__)


@bp.get("/healthz")
@bp.output(Health, description="The process answers.")
@bp.doc(summary="Liveness", operation_id="healthz")
def healthz() -> Health:
    """The process answers."""
    return Health(status="ok")


@bp.get("/readyz")
@bp.output(Ready, description="Ready.")
@bp.doc(
    summary="Readiness: the store and the broker answer",
    operation_id="readyz",
    responses=Responses({503: reply(NotReady, "Not ready.")}),
)
def readyz() -> Ready | Response:
    """200 when the store answers a query, the broker a PING and the metrics can be
    written, else 503."""
    svc = services()
    checks = {"store": "ok", "broker": "ok", "metrics": "ok"}
    try:
        with svc.store.read() as conn:
            conn.exec_driver_sql("SELECT 1").scalar()
    except SmithersError:
        checks["store"] = "unavailable"
    if svc.broker is None:
        checks["broker"] = "not configured"
    elif not svc.broker.ping():
        checks["broker"] = "unavailable"
    if svc.metrics.problem() is not None:
        checks["metrics"] = "unavailable"
    if all(v == "ok" for v in checks.values()):
        return Ready(status="ready", checks=checks)
    down = ", ".join(k for k, v in checks.items() if v != "ok")
    body = {"error": {"code": "not_ready", "message": f"not ready: {down}"}, "checks": checks}
    response = jsonify(body)  # the error shape (NotReady): a Response, so @bp.output leaves it be
    response.status_code = 503
    return response


@bp.get("/metrics")
@bp.doc(
    summary="Prometheus metrics",
    operation_id="metrics",
    responses=Responses({200: text(("text/plain",), "Prometheus text format.")}),
)
def metrics() -> Response:
    """Prometheus text exposition; 503 when the metrics path is broken."""
    problem = services().metrics.problem()
    if problem is not None:
        raise MetricsUnavailable(f"metrics unavailable: {problem}")
    text, content_type = services().metrics.render()
    return Response(text, content_type=content_type)
