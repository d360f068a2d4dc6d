"""The Flask app factory: services, blueprints, one JSON error handler, the access log."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from typing import Any

from apiflask import HTTPError
from flask import Flask, Response, g, jsonify, request
from flask.json.provider import DefaultJSONProvider
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from smithers.gateway import openapi
from smithers.gateway.access import REQUEST_ID_KEY, ROUTE_KEY, AccessLog
from smithers.gateway.auth import SCOPE_ATTR, configure_auth, source
from smithers.gateway.body import GatewayRequest
from smithers.gateway.config import GatewayConfig
from smithers.gateway.cors import install_cors
from smithers.gateway.fanout import Fanout
from smithers.gateway.limits import FailureLimiter, RequestLimits
from smithers.gateway.metrics import Metrics
from smithers.gateway.models import invalid_input
from smithers.gateway.services import EXTENSION, Services, services
from smithers.gateway.sse import frame
from smithers.gateway.store import GatewayStore
from smithers.shared import tracing
from smithers.shared.broker import Broker
from smithers.shared.config import resolve_deployment
from smithers.shared.errors import PayloadTooLarge, RateLimited, SmithersError
from smithers.shared.jsonsafe import check_text
from smithers.shared.metrics import StoreCollector
from smithers.shared.redaction import redact_text
from smithers.shared.registry import Registry, load_registry
from smithers.shared.store import Store
from smithers.shared.store.advance import Decider
from smithers.shared.store.grants import ControlPlaneStore

log = logging.getLogger("smithers.gateway")

_HTTP_CODES = {
    400: "invalid_input",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON with ``allow_nan=False``: no response carries ``NaN`` or ``Infinity``."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """``json.dumps`` refusing non-finite numbers."""
        kwargs.setdefault("allow_nan", False)
        return super().dumps(obj, **kwargs)


def create_app(
    config: GatewayConfig | None = None,
    *,
    store: Store | None = None,
    broker: Broker | None = None,
    registry: Registry | None = None,
) -> Flask:
    """Build the gateway app. Unset collaborators are built from ``config``; without one the
    config comes from the SMITHERS_* environment, as for ``flask --app smithers.gateway run``
    and ``gunicorn "smithers.gateway:create_app()"``."""
    if config is None:
        config = config_from_env()
    tracing.configure("gateway")  # only with OTEL_* set: see smithers.shared.tracing
    app = openapi.new_app()
    app.request_class = GatewayRequest
    app.json = StrictJSONProvider(app)
    app.url_map.merge_slashes = False  # GET /v1//runs is a 404, not a redirect
    # One byte over the limit: werkzeug stops a chunked body there without an error, so
    # smithers.gateway.body.read_json sees that byte and answers 413 instead of parsing a stub.
    app.config.update(MAX_CONTENT_LENGTH=config.max_body_bytes + 1)
    app.json.sort_keys = False
    if store is None:
        store = GatewayStore(config.database_url)
        store.migrate()
    if broker is None and config.redis_url:
        broker = Broker(config.redis_url, config.broker_url)
    metrics = Metrics(StoreCollector(store, broker))
    if registry is None:
        registry = load_registry(config.workflows)
    app.extensions[EXTENSION] = Services(
        config=config,
        store=store,
        broker=broker,
        registry=registry,
        decider=Decider(registry, config.decision, config.decide_max_nodes),
        control=ControlPlaneStore(store, config.ttl, cache_s=config.grant_cache_s),
        fanout=Fanout(
            store,
            frame,
            poll_s=config.sse_poll_s,
            idle_poll_s=config.sse_idle_poll_s,
            buffer=config.sse_buffer,
            on_count=metrics.count_streams,
        ),
        metrics=metrics,
        limiter=FailureLimiter(config.auth_failures, config.auth_window_s),
    )
    configure_auth(app, config)
    app.register_error_handler(Exception, handle_error)
    # in place of APIFlask's own handler of its HTTPError (raised by @bp.input for a bad body)
    app.register_error_handler(HTTPError, handle_error)
    app.before_request(_note_route)
    app.before_request(_strict_query)
    install_cors(app, config.cors_origins)
    tracing.instrument_app(app)
    app.after_request(_security_headers)
    limited = RequestLimits(app.wsgi_app, REQUEST_ID_KEY)
    app.wsgi_app = AccessLog(limited, metrics)  # type: ignore[method-assign]
    return app


def config_from_env() -> GatewayConfig:
    """The gateway's config from ``os.environ``, the way ``smithers gateway`` builds it."""
    return GatewayConfig.from_env(os.environ, resolve_deployment(os.environ))


def _note_route() -> None:
    rule = request.url_rule
    request.environ[ROUTE_KEY] = rule.rule if rule is not None else "unmatched"


def _strict_query() -> None:
    """Every endpoint: no NUL or lone surrogate in a query parameter's name or value."""
    for key in request.args:
        check_text(key, "a query parameter name")
        for value in request.args.getlist(key):
            check_text(value, f"query parameter {key!r}")


def _security_headers(response: Response) -> Response:
    # Responses carry run data and, from /v1/grants, tokens: never cache them anywhere.
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def required_scope(app: Flask, endpoint: str) -> str | None:
    """The scope a view demands (for the OpenAPI document and its tests)."""
    scope = getattr(app.view_functions[endpoint], SCOPE_ATTR, None)
    return None if scope is None else str(scope)


def error_body(code: str, message: str, status: int, details: dict[str, Any] | None = None) -> Response:
    """The one error shape: ``{"error": {"code", "message"}}``, with ``details`` when the
    error carries more (a migration's conflicts)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    response = jsonify({"error": error})
    response.status_code = status
    return response


def handle_error(exc: Exception) -> Response:
    """Turn any exception into the JSON error shape; 5xx details stay in the log."""
    rid = request.environ.get(REQUEST_ID_KEY, "-")
    headers: dict[str, str] = {}
    details: dict[str, Any] | None = None
    if isinstance(exc, HTTPError) and isinstance(exc.__cause__, ValidationError):
        exc = invalid_input(exc.__cause__, empty_body=getattr(g, "body_empty", False))  # @bp.input
    if isinstance(exc, RequestEntityTooLarge):
        exc = PayloadTooLarge(f"the request body is over {services().config.max_body_bytes} bytes")
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, SmithersError):
        status, code, message, details = exc.http_status, exc.code, exc.message, exc.details
        if status >= 500:
            log.warning("request %s: %s: %s", rid, exc.code, exc.message)
            message = _public_5xx(exc)
    elif isinstance(exc, HTTPException):
        status = exc.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        message = exc.description or exc.name
        if status == 405:
            allowed = exc.get_response().headers.get("Allow")
            if allowed:
                headers["Allow"] = allowed
    else:
        log.exception("request %s failed", rid)
        status, code, message = 500, "internal", f"internal error (request {rid})"
    if status == 401:
        services().limiter.failed(source())
    if status in (401, 403) or (status == 429 and getattr(g, "principal", None) is None):
        _audit_denial(status, code, message)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="smithers", error="invalid_token"'
    response = error_body(code, message, status, details)
    response.headers.update(headers)
    return response


def _public_5xx(exc: SmithersError) -> str:
    rid = request.environ.get(REQUEST_ID_KEY, "-")
    what = {"store_unavailable": "the store", "broker_unavailable": "the broker"}.get(
        exc.code, "a dependency"
    )
    return f"{what} is unavailable; retry later (request {rid})"


def _audit_denial(status: int, code: str, message: str) -> None:
    svc = services()
    svc.metrics.denied.labels(str(status)).inc()
    principal = getattr(g, "principal", None)
    detail: dict[str, Any] = {
        "status": status,
        "code": code,
        "reason": message,
        "method": request.method,
        "request_id": request.environ.get(REQUEST_ID_KEY),
        "remote_addr": request.remote_addr,
    }
    grant = getattr(g, "smithers_grant", None)
    actor = principal.subject if principal is not None else None
    if grant is not None:
        detail["jti"] = grant.jti
        actor = actor or grant.subject
    # one row per source, status and reason per interval, counting the requests it stands for
    window = int(time.time() // svc.config.auth_window_s)
    reason = (source(), str(status), actor or "", str(detail.get("jti") or ""), message, str(window))
    key = "\x1f".join(("request.denied", *reason))
    detail["interval_s"] = svc.config.auth_window_s
    try:
        svc.control.record_event(
            "request.denied",
            actor=actor,
            target_type="request",
            target_id=redact_text(request.path),
            detail=detail,
            dedupe_key=hashlib.sha256(key.encode("utf-8", "replace")).hexdigest(),
        )
    except SmithersError as exc:  # the refusal stands even if the audit cannot be written
        log.error("denied request %s not audited: %s", detail["request_id"], exc.message)
