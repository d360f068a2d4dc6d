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

from smithers.gateway.apidoc import errors, param, reads
from smithers.gateway.auth import source
from smithers.gateway.body import check_query, parse_json
from smithers.gateway.models import WebhookEvent
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
ERROR_TEXT = {
    400: "Malformed JSON, or a field of `data` missing or mistyped (named), or a lifetime over the"
    " kind's maximum.",
    401: "No signature headers, a malformed one, no signature matching the endpoint's secrets, or a"
    " timestamp outside the tolerance (stale).",
    403: "A scope this endpoint may not grant.",
    404: "The endpoint has no secret configured, or `grant.revoked` names an unknown grant.",
    409: "This `webhook-id` was already applied (`webhook_replayed`), or the grant id exists with"
    " other content.",
    413: "The body is over `SMITHERS_WEBHOOK_MAX_BODY` bytes.",
    429: "Too many failed authentications from this address (`Retry-After`).",
    503: "The store is unavailable.",
}
SIGNED = (
    "\n\nNo bearer token: the signature is the credential (a Standard Webhooks signature with"
    " this endpoint's secret), and `x-signature` names the scheme."
)
# the three Standard Webhooks headers: the credential, and the body they sign
signed = reads(
    param("webhook-id", "header", {"type": "string", "pattern": r"^[A-Za-z0-9_.:=+/-]{1,128}$"},
          "The delivery's id, the same on each retry; applied once.", required=True),
    param("webhook-timestamp", "header", {"type": "string", "pattern": r"^\d{1,12}$"},
          "When it was signed, in seconds since the epoch.", required=True),
    param("webhook-signature", "header", {"type": "string", "maxLength": 2048},
          "`v1,<base64 HMAC-SHA256>` of `{webhook-id}.{webhook-timestamp}.{body}`, keyed with"
          " the decoded `whsec_` secret; several separated by spaces.", required=True),
    body=WebhookEvent,
)  # fmt: skip


@bp.post("/idp")
@bp.output(WebhookResult, description="Applied (or audited only, for a type it does not act on).")
@bp.doc(
    summary="An identity provider's signed assertion",
    operation_id="idpWebhook",
    description="`grant.created` records a grant (`data`: `grant_id`, `subject`, `scopes`, `expires_at`;"
    " optional `kind`, default `person`, `issued_at`, `note`) with issuer `webhook:idp`,"
    " within the token lifetimes and `SMITHERS_WEBHOOK_IDP_SCOPES`; `grant.revoked`"
    " revokes one (`grant_id`, optional `reason`); `subject.revoked` revokes every grant of"
    " a deprovisioned subject (`subject`, optional `reason`). Other types are audited only." + SIGNED,
    responses=errors(*ERROR_TEXT, texts=ERROR_TEXT),
    extensions={"x-signature": "standard-webhooks-v1"},
)
@signed
def idp() -> WebhookResult:
    """An identity provider's assertion: grant.created, grant.revoked, subject.revoked."""
    return _deliver(Source.IDP)


@bp.post("/billing")
@bp.output(WebhookResult, description="Applied (or audited only, for a type it does not act on).")
@bp.doc(
    summary="A billing system's signed event",
    operation_id="billingWebhook",
    description="`subscription.active` records a grant as `grant.created` does (`kind` default"
    " `automation`, issuer `webhook:billing`, scopes within `SMITHERS_WEBHOOK_BILLING_SCOPES`)"
    " and revokes the subject's other billing grants (a plan that changed);"
    " `subscription.ended` revokes the subject's billing grants (its other grants stay)."
    " Other types (`invoice.paid`, ...) are audited only." + SIGNED,
    responses=errors(*ERROR_TEXT, texts=ERROR_TEXT),
    extensions={"x-signature": "standard-webhooks-v1"},
)
@signed
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
