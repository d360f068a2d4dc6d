"""/v1/control: signed webhooks from an identity provider and a billing system.

No bearer token: the credential is the delivery's Standard Webhooks signature
(:mod:`smithers.shared.webhook`), checked against the endpoint's own secrets
(``SMITHERS_WEBHOOK_{IDP,BILLING}_SECRETS``) before the body is parsed. What each
delivery asks for is written as normalized grants and audit entries, once per
``webhook-id`` (:mod:`smithers.shared.store.webhooks`); the payload itself is never
stored. A failed signature counts as a failed authentication of its source address
(429 after too many) and is audited as a denied request.
"""

from __future__ import annotations

import time

from apiflask import APIBlueprint
from flask import request

from smithers.gateway.auth import source
from smithers.gateway.body import check_query, parse_json
from smithers.gateway.services import services
from smithers.shared.api import WebhookResult
from smithers.shared.errors import InvalidInput, NotFound, PayloadTooLarge, RateLimited
from smithers.shared.store import webhooks as webhooks_store
from smithers.shared.webhook import Source, parse, verify

bp = APIBlueprint("control", __name__, url_prefix="/v1/control")
SECRETS_SETTING = {
    Source.IDP: "SMITHERS_WEBHOOK_IDP_SECRETS",
    Source.BILLING: "SMITHERS_WEBHOOK_BILLING_SECRETS",
}


@bp.post("/idp")
@bp.output(WebhookResult)
def idp() -> WebhookResult:
    """An identity provider's assertion: grant.created, grant.revoked, subject.revoked."""
    return _deliver(Source.IDP)


@bp.post("/billing")
@bp.output(WebhookResult)
def billing() -> WebhookResult:
    """A billing event: subscription.active, subscription.ended; other types are audited only."""
    return _deliver(Source.BILLING)


def _deliver(sender: Source) -> WebhookResult:
    svc = services()
    hooks = svc.config.webhooks
    keys = hooks.secrets(sender)
    if not keys:
        raise NotFound(f"the {sender.value} webhook is not configured ({SECRETS_SETTING[sender]} is unset)")
    wait = svc.limiter.retry_after(source())
    if wait is not None:
        raise RateLimited(f"too many failed authentications from this address; retry in {wait} s", wait)
    check_query(())
    body = _body(min(hooks.max_body_bytes, svc.config.max_body_bytes))
    delivery = verify(
        sender,
        keys,
        request.headers.get,
        body,
        now=time.time(),
        tolerance_s=hooks.tolerance_s,
    )
    if not body.strip():
        raise InvalidInput("a JSON object body is required")
    event = parse(sender, parse_json(body), hooks.scopes(sender))
    try:
        result = webhooks_store.apply(svc.store, svc.config.ttl, delivery, event, hooks.tolerance_s)
    finally:
        svc.control.forget()  # a revocation it made applies at once in this worker
    return WebhookResult.model_validate(result)


def _body(limit: int) -> bytes:
    """The raw body, read no further than one byte past ``limit`` (413 over it)."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"a webhook body is at most {limit} bytes")
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise PayloadTooLarge(f"a webhook body is at most {limit} bytes")
    return bytes(raw)
