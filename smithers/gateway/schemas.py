"""Building blocks of the gateway's OpenAPI document: component schemas, parameters,
responses and the operation helper (used by :mod:`smithers.gateway.openapi`)."""

from __future__ import annotations

from typing import Any

from smithers.shared.store.runs import RUN_ID
from smithers.shared.workflow import NODE_ID

JSON = "application/json"
Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(
    props: dict[str, Schema], *, nullable: tuple[str, ...] = (), optional: tuple[str, ...] = ()
) -> Schema:
    for key in nullable:
        props[key] = {**props[key], "nullable": True}
    required = [k for k in props if k not in optional]
    return {"type": "object", "properties": props, "required": required}


STR: Schema = {"type": "string"}
NUM: Schema = {"type": "number"}
INT: Schema = {"type": "integer"}
BOOL: Schema = {"type": "boolean"}
OBJ: Schema = {"type": "object"}
ANY: Schema = {"nullable": True, "description": "Any JSON value."}


def component_schemas() -> dict[str, Schema]:
    inner = obj({"code": STR, "message": STR})
    error: Schema = {"type": "object", "required": ["error"], "properties": {"error": inner}}
    schemas: dict[str, Schema] = {
        "Error": error,
        "WebhookEvent": {
            "type": "object",
            "required": ["type"],
            "description": "A Standard Webhooks payload; fields not named here are ignored and never stored.",
            "properties": {
                "type": {"type": "string", "pattern": r"^[a-z][a-z0-9_.-]{0,63}$"},
                "timestamp": {**STR, "description": "When the sender made it (informative)."},
                "data": {
                    **OBJ,
                    "description": "What the type needs: `grant_id`, `subject`, `scopes`, `expires_at`"
                    " (epoch seconds), `kind`, `issued_at`, `note`, `reason`.",
                },
            },
        },
        "NotReady": {
            "type": "object",
            "required": ["error", "checks"],
            "properties": {"error": inner, "checks": {"type": "object"}},
        },
    }
    return schemas


ERROR_TEXT = {
    400: "Bad input: malformed JSON, an unknown or mistyped field (named), a credential-like"
    " input key, a bad parameter, a value strict JSON cannot hold (a non-finite number, an"
    " integer past ±(2^63-1), a NUL or a lone surrogate in a string, key or query parameter).",
    401: "No bearer token, or one that is expired, revoked, tampered with or unknown.",
    403: "The token lacks the scope this operation needs (or is not the approval's owner).",
    404: "No such run, approval, workflow, signal name or grant.",
    409: "The request contradicts the current state (or this gateway holds no key to sign with).",
    413: "The request body is over the configured size.",
    429: "Too many failed authentications from this address (`Retry-After` says when to retry),"
    " or, for time travel, too many calls from this caller in the last minute.",
    503: "The store is unavailable.",
}


def json_body(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def errors(*codes: int) -> dict[str, Schema]:
    return {str(c): json_body(ref("Error"), ERROR_TEXT[c]) for c in codes}


def param(name: str, where: str, schema: Schema, description: str, required: bool = False) -> Schema:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "schema": schema,
        "description": description,
    }


RUN_ID_PARAM = param("run_id", "path", {"type": "string", "pattern": RUN_ID.pattern}, "The run id.")
NODE_ID_PARAM = param("node_id", "path", {"type": "string", "pattern": NODE_ID.pattern}, "The approval node.")
CURSOR = {"type": "integer", "minimum": 0, "maximum": 2**62}
LAST_EVENT_ID = param(
    "Last-Event-ID",
    "header",
    {"type": "string", "pattern": r"^(\d{1,19})?$"},
    "Resume after this id (wins over the query); empty means no resume point.",
)
SSE: Schema = {
    "description": "A text/event-stream of events; each `data:` is an Event, `id:` its cursor.",
    "content": {
        "text/event-stream": {
            "schema": {
                "type": "object",
                "description": "One event of the stream: `data` is an Event as JSON; the last one has"
                " `event: end` and data {reason, last_id}.",
                "properties": {
                    "id": {"type": "string", "pattern": r"^\d+$"},
                    "event": {"type": "string"},
                    "data": {"type": "string"},
                    "retry": {"type": "integer"},
                },
            }
        }
    },
}


def op(summary: str, scope: str | None, responses: dict[str, Schema], **extra: Any) -> Schema:
    op: Schema = {"summary": summary, "responses": responses, **extra}
    if scope is None:
        op["security"] = []
    else:
        op["x-required-scope"] = scope
        needed = "any valid credential" if scope == "any" else f"`{scope}`"
        op["description"] = (extra.get("description", "") + f"\n\nScope: {needed}.").strip()
    return op


WEBHOOK_TEXT = {
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


def webhook_op(summary: str, operation_id: str, description: str) -> Schema:
    """A signed webhook: no bearer token; the three Standard Webhooks headers are its credential."""
    headers = [
        param("webhook-id", "header", {"type": "string", "pattern": r"^[A-Za-z0-9_.:=+/-]{1,128}$"},
              "The delivery's id, the same on each retry; applied once.", required=True),
        param("webhook-timestamp", "header", {"type": "string", "pattern": r"^\d{1,12}$"},
              "When it was signed, in seconds since the epoch.", required=True),
        param("webhook-signature", "header", {"type": "string", "maxLength": 2048},
              "`v1,<base64 HMAC-SHA256>` of `{webhook-id}.{webhook-timestamp}.{body}`, keyed with"
              " the decoded `whsec_` secret; several separated by spaces.", required=True),
    ]  # fmt: skip
    return op(
        summary,
        None,
        {
            "200": json_body(
                ref("WebhookResult"), "Applied (or audited only, for a type it does not act on)."
            ),
            **{str(c): json_body(ref("Error"), text) for c, text in WEBHOOK_TEXT.items()},
        },
        operationId=operation_id,
        description=description + "\n\nNo bearer token: the signature is the credential (a Standard"
        " Webhooks signature with this endpoint's secret), and `x-signature` names the scheme.",
        parameters=headers,
        requestBody={"required": True, "content": {JSON: {"schema": ref("WebhookEvent")}}},
        **{"x-signature": "standard-webhooks-v1"},
    )
