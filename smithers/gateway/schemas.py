"""Building blocks of the gateway's OpenAPI document: component schemas, parameters,
responses and the operation helper (used by :mod:`smithers.gateway.openapi`)."""

from __future__ import annotations

from typing import Any

from smithers.shared.status import AttemptState, NodeStatus, RunStatus
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
    run = obj(
        {
            "run_id": STR,
            "workflow": STR,
            "workflow_version": STR,
            "module_revision": STR,
            "deployment_version": STR,
            "input": OBJ,
            "status": {"type": "string", "enum": [s.value for s in RunStatus]},
            "cancel_requested": BOOL,
            "created_at": NUM,
            "updated_at": NUM,
            "finished_at": NUM,
            "output": ANY,
            "error": OBJ,
            "launched_by": STR,
            "parent_run_id": {
                **STR,
                "description": "The run this one is a rerun, replay or child of (a child has"
                " parent_node_id).",
            },
            "parent_node_id": {**STR, "description": "A child run: the parent's node that launched it."},
            "parent_iteration": {**INT, "description": "A child run: that node execution's iteration."},
            "last_seq": {**INT, "description": "The seq of the run's newest event."},
            "status_reason": {
                **STR,
                "description": "Why a live run cannot move: `revision_unavailable` while no live"
                " scheduler or worker holds its module revision; null otherwise.",
            },
            "priority": {**INT, "description": "0..9, higher first (the launch's `priority`)."},
        },
        nullable=(
            "finished_at",
            "error",
            "launched_by",
            "parent_run_id",
            "status_reason",
            "parent_node_id",
            "parent_iteration",
        ),
    )
    node = obj(
        {
            "node_id": STR,
            "iteration": INT,
            "kind": STR,
            "status": {"type": "string", "enum": [s.value for s in NodeStatus]},
            "failures": INT,
            "lost": INT,
            "current_attempt_id": STR,
            "current_iteration": INT,
            "next_at": NUM,
            "started_at": NUM,
            "finished_at": NUM,
            "error": OBJ,
        },
        nullable=("current_attempt_id", "next_at", "finished_at", "error"),
    )
    attempt = obj(
        {
            "attempt_id": STR,
            "run_id": STR,
            "node_id": STR,
            "iteration": INT,
            "number": INT,
            "state": {"type": "string", "enum": [s.value for s in AttemptState]},
            "queue": STR,
            "worker": STR,
            "dispatched_at": NUM,
            "started_at": NUM,
            "finished_at": NUM,
            "heartbeat_at": NUM,
            "lease_expires_at": NUM,
            "deadline_at": NUM,
            "error": OBJ,
            "cached": BOOL,
            "revision": {**STR, "description": "The module revision this attempt runs."},
        },
        nullable=(
            "revision",
            "worker",
            "started_at",
            "finished_at",
            "heartbeat_at",
            "lease_expires_at",
            "deadline_at",
            "error",
        ),
    )
    event = obj(
        {
            "run_id": STR,
            "seq": INT,
            "feed_id": {
                **INT,
                "description": "Place in the all-runs feed; on PostgreSQL null until the event "
                "is numbered, shortly after its commit (the all-runs stream only sends numbered events).",
            },
            "type": STR,
            "node_id": STR,
            "iteration": INT,
            "attempt_id": STR,
            "payload": OBJ,
            "created_at": NUM,
        },
        nullable=("feed_id", "node_id", "iteration", "attempt_id"),
    )
    schemas: dict[str, Schema] = {
        "Error": error,
        "Run": run,
        "RunSummary": {
            **run,
            "description": "A run without its input and output (GET /v1/runs/{run_id} has them).",
            "properties": {k: v for k, v in run["properties"].items() if k not in ("input", "output")},
            "required": [k for k in run["required"] if k not in ("input", "output")],
        },
        "RunPage": obj(
            {
                "runs": {"type": "array", "items": ref("RunSummary")},
                "next_cursor": STR,
                "feed_id": {**INT, "description": "Follow `/v1/events` from here to see every change after."},
            },
            nullable=("next_cursor",),
        ),
        "Node": node,
        "Attempt": attempt,
        "Output": obj({"node_id": STR, "iteration": INT, "value": ANY}),
        "RunDetail": obj(
            {
                "run": ref("Run"),
                "nodes": {"type": "array", "items": ref("Node")},
                "attempts": {"type": "array", "items": ref("Attempt")},
                "outputs": {"type": "array", "items": ref("Output")},
                "revision": ref("RunRevision"),
                "spending": ref("RunSpending"),
                "children": {
                    "type": "array",
                    "items": ref("ChildRun"),
                    "description": "The child runs its child nodes launched (every epoch).",
                },
            }
        ),
        "ChildRun": obj(
            {
                "run_id": STR,
                "workflow": STR,
                "status": {"type": "string", "enum": [s.value for s in RunStatus]},
                "node_id": STR,
                "iteration": INT,
                "epoch": {
                    **INT,
                    "description": "0 for the node execution's first child; one more each time a"
                    " rewind or resume ran the node again.",
                },
            }
        ),
        "RunSpending": obj(
            {
                "ceilings": {
                    **obj({"tokens": {**INT, "nullable": True}, "cost": {**NUM, "nullable": True}}),
                    "nullable": True,
                    "description": "The run's spending ceilings (the workflow's, the launch's, or as an"
                    " approval raised them); null: none.",
                },
                "spent": {
                    **obj(
                        {
                            "tokens_in": INT,
                            "tokens_out": INT,
                            "tokens": {**INT, "description": "tokens_in + tokens_out"},
                            "cost": NUM,
                            "attempts": {**INT, "description": "Attempts that reported spending."},
                            "cached_attempts": {**INT, "description": "Cache hits: they cost nothing."},
                        }
                    ),
                    "description": "Summed over every attempt that ran: failed ones, retries and ones"
                    " a rewind discarded included.",
                },
                "by_node": {
                    "type": "array",
                    "items": obj(
                        {
                            "node_id": STR,
                            "iteration": INT,
                            "tokens_in": INT,
                            "tokens_out": INT,
                            "cost": NUM,
                            "attempts": INT,
                        }
                    ),
                },
            }
        ),
        "RunRevision": obj(
            {
                "revision": STR,
                "workflow_version": STR,
                "available": {**BOOL, "description": "A live scheduler and a live worker hold it."},
                "missing": {"type": "array", "items": {"type": "string", "enum": ["scheduler", "worker"]}},
                "graph": {
                    **OBJ,
                    "nullable": True,
                    "description": "The revision's graph as stored when first seen (nodes, kinds, edges,"
                    " branch paths, loop bodies, condition names); null for a run from before revisions"
                    " were stored.",
                },
            }
        ),
        "LaunchedRun": {
            "allOf": [
                ref("Run"),
                obj(
                    {
                        "warnings": {
                            "type": "array",
                            "description": "`revision_unavailable` when no live scheduler or worker holds"
                            " the workflow's revision: the run stays queued until one starts.",
                            "items": obj(
                                {
                                    "code": STR,
                                    "message": STR,
                                    "revision": STR,
                                    "missing": {"type": "array", "items": STR},
                                }
                            ),
                        }
                    }
                ),
            ]
        },
        "Migration": obj(
            {"run_id": STR, "from": STR, "to": STR, "note": STR, "migrated_by": STR, "run": ref("Run")},
            nullable=("note",),
        ),
        "TimeTravelResult": obj(
            {
                "audit_id": INT,
                "run_id": STR,
                "action": STR,
                "revision": {**STR, "description": "The module revision the new attempts run."},
                "workflow_version": STR,
            },
        ),
        "AuditTrail": obj(
            {
                "run": {**OBJ, "nullable": True},
                "entries": {
                    "type": "array",
                    "items": obj({"at": NUM, "source": STR, "type": STR, "detail": ANY}),
                },
            }
        ),
        "ApprovalContext": obj(
            {
                "run": {"allOf": [ref("RunSummary"), obj({"input": OBJ})]},
                "approvals": {"type": "array", "items": ref("Approval")},
                "outputs": {"type": "array", "items": ref("Output")},
                "events": {"type": "array", "items": ref("Event")},
                "next_after_seq": {**INT, "description": "`after_seq` of the next page of events."},
            },
            nullable=("next_after_seq",),
        ),
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
        "Event": event,
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
