"""The OpenAPI 3 document of the gateway, and docs/api.md rendered from it.

Request bodies come from the same :class:`~gateway.body.BodySchema` objects the views
validate with; the tests check that every route of the app is documented with the
scope its view demands, and run schemathesis against the document.
``python -m gateway.openapi > docs/api.md`` regenerates the Markdown.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from flask import Blueprint, Response, jsonify

from gateway import approvals, grants, history, runs, sandboxes
from gateway.body import BodySchema
from shared.status import ApprovalStatus, AttemptState, NodeStatus, RunStatus
from shared.store.runs import RUN_ID
from shared.workflow import NODE_ID

bp = Blueprint("openapi", __name__)

VERSION = "1.0.0"
DESCRIPTION = """Launch, follow and decide durable workflow runs.

**Tokens.** Every `/v1` operation needs `Authorization: Bearer <token>`, a JWT from
`smithers token issue --subject S --scopes a,b --ttl 15m` (or `POST /v1/grants`). Each
token is a grant row: `smithers token revoke JTI` refuses it at once. Lifetimes are
bounded: people get 15 minutes by default and 12 hours at most, automation
(`--kind automation`) 1 day by default and 30 days at most (`SMITHERS_TOKEN_TTL_*`).

| scope | allows |
|---|---|
| `run:read` | list and read runs, follow events, list workflows |
| `run:write` | launch, cancel, resume, rerun |
| `approval:read` | list approvals and sandbox diff reviews |
| `approval:submit` | decide approvals and diff reviews |
| `admin` | delete runs, issue and revoke grants |

No scope implies another: a token that launches cannot approve, and `admin` does
neither. A missing, expired, revoked or tampered token gets 401; a valid token without
the scope gets 403. Both are written to the audit log.

**Requests.** Bodies are JSON objects up to `SMITHERS_GATEWAY_MAX_BODY` bytes (1 MiB;
over it: 413). Malformed JSON, an unknown field or a wrong type is a 400 that names the
field; so is run input with a key or value that looks like a credential (pass secrets by
name to the worker, never through input). A refused request writes nothing. Errors are
`{"error": {"code": ..., "message": ...}}`; every response carries `X-Request-ID`.

**Streams.** Event streams are Server-Sent Events. `id:` is the run's `seq` (or the
feed id on `/v1/events`); reconnect with `Last-Event-ID` to resume with no gap and no
duplicate. A run's stream ends with `event: end` once the run is terminal and every
event was sent; any stream ends with `end` (reason `timeout`) after an hour, and idle
streams carry `: keep-alive` comments. Browsers' `EventSource` cannot send headers:
use a fetch-based SSE client."""
JSON = "application/json"
Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(
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


def _schemas() -> dict[str, Schema]:
    inner = _obj({"code": STR, "message": STR})
    error: Schema = {"type": "object", "required": ["error"], "properties": {"error": inner}}
    run = _obj(
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
            "parent_run_id": STR,
            "last_seq": {**INT, "description": "The seq of the run's newest event."},
        },
        nullable=("finished_at", "error", "launched_by", "parent_run_id"),
    )
    node = _obj(
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
    attempt = _obj(
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
        },
        nullable=(
            "worker",
            "started_at",
            "finished_at",
            "heartbeat_at",
            "lease_expires_at",
            "deadline_at",
            "error",
        ),
    )
    approval = _obj(
        {
            "run_id": STR,
            "node_id": STR,
            "iteration": INT,
            "status": {"type": "string", "enum": [s.value for s in ApprovalStatus]},
            "owner": STR,
            "fallback_owner": STR,
            "escalate_at": NUM,
            "requested_at": NUM,
            "decided_by": STR,
            "decided_at": NUM,
            "note": STR,
        },
        nullable=("owner", "fallback_owner", "escalate_at", "decided_by", "decided_at", "note"),
    )
    grant = _obj(
        {
            "jti": STR,
            "subject": STR,
            "scopes": {"type": "array", "items": STR},
            "kind": STR,
            "issuer": STR,
            "issued_at": NUM,
            "expires_at": NUM,
            "revoked_at": NUM,
            "revoked_by": STR,
            "note": STR,
            "state": {"type": "string", "enum": ["active", "expired", "revoked"]},
        },
        nullable=("revoked_at", "revoked_by", "note"),
    )
    workflow = _obj(
        {
            "name": STR,
            "version": STR,
            "description": STR,
            "module": STR,
            "revision": STR,
            "nodes": {
                "type": "array",
                "items": _obj({"id": STR, "kind": STR, "after": {"type": "array", "items": STR}}),
            },
        }
    )
    event = _obj(
        {
            "run_id": STR,
            "seq": INT,
            "feed_id": INT,
            "type": STR,
            "node_id": STR,
            "iteration": INT,
            "attempt_id": STR,
            "payload": OBJ,
            "created_at": NUM,
        },
        nullable=("node_id", "iteration", "attempt_id"),
    )
    schemas: dict[str, Schema] = {
        "Error": error,
        "Run": run,
        "RunPage": _obj(
            {"runs": {"type": "array", "items": _ref("Run")}, "next_cursor": STR}, nullable=("next_cursor",)
        ),
        "Node": node,
        "Attempt": attempt,
        "Output": _obj({"node_id": STR, "iteration": INT, "value": ANY}),
        "RunDetail": _obj(
            {
                "run": _ref("Run"),
                "nodes": {"type": "array", "items": _ref("Node")},
                "attempts": {"type": "array", "items": _ref("Attempt")},
                "outputs": {"type": "array", "items": _ref("Output")},
            }
        ),
        "TimeTravelResult": _obj(
            {"audit_id": INT, "run_id": STR, "action": STR},
        ),
        "AuditTrail": _obj(
            {
                "run": {**OBJ, "nullable": True},
                "entries": {
                    "type": "array",
                    "items": _obj({"at": NUM, "source": STR, "type": STR, "detail": ANY}),
                },
            }
        ),
        "Approval": approval,
        "ApprovalList": _obj({"approvals": {"type": "array", "items": _ref("Approval")}}),
        "Workflow": workflow,
        "WorkflowList": _obj({"workflows": {"type": "array", "items": _ref("Workflow")}}),
        "Grant": grant,
        "GrantList": _obj({"grants": {"type": "array", "items": _ref("Grant")}}),
        "IssuedGrant": _obj({"token": STR, "grant": _ref("Grant")}),
        "RevokedGrant": _obj({"grant": _ref("Grant")}),
        "Event": event,
        "Health": _obj({"status": STR}),
        "Ready": _obj({"status": STR, "checks": {"type": "object", "additionalProperties": STR}}),
        "NotReady": {
            "type": "object",
            "required": ["error", "checks"],
            "properties": {"error": inner, "checks": {"type": "object"}},
        },
    }
    schemas.update(_sandbox_schemas())
    for body in (
        runs.LAUNCH,
        runs.RERUN,
        approvals.DECISION,
        grants.ISSUE,
        sandboxes.REVIEW,
        history.REWIND,
        history.REPLAY,
        history.FORK,
    ):
        schemas[body.name] = body.openapi()
    return schemas


def _sandbox_schemas() -> dict[str, Schema]:
    review = _obj({"accept": BOOL, "actor": STR, "note": STR, "decided_at": NUM}, nullable=("note",))
    sandbox = _obj(
        {
            "sandbox_id": STR,
            "run_id": STR,
            "node_id": STR,
            "iteration": INT,
            "attempt_id": STR,
            "runtime": STR,
            "image": STR,
            "image_digest": STR,
            "container_id": STR,
            "limits": OBJ,
            "status": {"type": "string", "enum": ["created", "running", "succeeded", "failed", "lost"]},
            "review_status": {"type": "string", "enum": list(sandboxes.REVIEW_STATUSES)},
            "bundle_path": STR,
            "request_bytes": INT,
            "result_bytes": INT,
            "manifest": OBJ,
            "error": OBJ,
            "created_at": NUM,
            "finished_at": NUM,
            "reviews": {"type": "array", "items": _ref("SandboxReview")},
        },
        nullable=(
            "image_digest",
            "container_id",
            "review_status",
            "request_bytes",
            "result_bytes",
            "manifest",
            "error",
            "finished_at",
        ),
    )
    return {
        "SandboxReview": review,
        "Sandbox": sandbox,
        "SandboxList": _obj({"sandboxes": {"type": "array", "items": _ref("Sandbox")}}),
    }


_ERRORS = {
    400: "Bad input: malformed JSON, an unknown or mistyped field (named), a credential-like"
    " input key, a bad parameter.",
    401: "No bearer token, or one that is expired, revoked, tampered with or unknown.",
    403: "The token lacks the scope this operation needs (or is not the approval's owner).",
    404: "No such run, approval, workflow or grant.",
    409: "The request contradicts the current state.",
    413: "The request body is over the configured size.",
    429: "Too many time-travel calls from this caller in the last minute.",
    503: "The store is unavailable.",
}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Schema]:
    return {str(c): _json(_ref("Error"), _ERRORS[c]) for c in codes}


def _body(schema: BodySchema) -> Schema:
    return {
        "required": not schema.optional_body,
        "content": {JSON: {"schema": _ref(schema.name)}},
    }


def _param(name: str, where: str, schema: Schema, description: str, required: bool = False) -> Schema:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "schema": schema,
        "description": description,
    }


RUN_ID_PARAM = _param("run_id", "path", {"type": "string", "pattern": RUN_ID.pattern}, "The run id.")
NODE_ID_PARAM = _param(
    "node_id", "path", {"type": "string", "pattern": NODE_ID.pattern}, "The approval node."
)
CURSOR = {"type": "integer", "minimum": 0, "maximum": 2**62}
LAST_EVENT_ID = _param(
    "Last-Event-ID",
    "header",
    {"type": "string", "pattern": r"^(\d{1,18})?$"},
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


def _op(summary: str, scope: str | None, responses: dict[str, Schema], **extra: Any) -> Schema:
    op: Schema = {"summary": summary, "responses": responses, **extra}
    if scope is None:
        op["security"] = []
    else:
        op["x-required-scope"] = scope
        op["description"] = (extra.get("description", "") + f"\n\nScope: `{scope}`.").strip()
    return op


def _paths() -> dict[str, Schema]:
    auth = (400, 401, 403)
    return {
        "/v1/runs": {
            "post": _op(
                "Launch a run",
                "run:write",
                {
                    "201": _json(_ref("Run"), "The run was created."),
                    "200": _json(_ref("Run"), "A run with this id and the same input already exists."),
                    **_errors(*auth, 404, 409, 413, 503),
                },
                operationId="launchRun",
                description="Launch a run of a registered workflow. The same `run_id` with the same input"
                " returns the same run (200); with another input it is a 409. Nothing is written for a"
                " refused request.",
                requestBody=_body(runs.LAUNCH),
            ),
            "get": _op(
                "List runs",
                "run:read",
                {"200": _json(_ref("RunPage"), "Runs, newest first."), **_errors(*auth, 503)},
                operationId="listRuns",
                parameters=[
                    _param(
                        "status",
                        "query",
                        {"type": "string", "enum": list(runs.STATUSES)},
                        "Only runs in this status.",
                    ),
                    _param("workflow", "query", STR, "Only runs of this workflow."),
                    _param(
                        "limit",
                        "query",
                        {"type": "integer", "minimum": 1, "maximum": 200},
                        "Page size (default 50).",
                    ),
                    _param("cursor", "query", STR, "`next_cursor` of the previous page."),
                ],
            ),
        },
        "/v1/runs/{run_id}": {
            "parameters": [RUN_ID_PARAM],
            "get": _op(
                "Read a run with its nodes, attempts and outputs",
                "run:read",
                {"200": _json(_ref("RunDetail"), "The run."), **_errors(*auth, 404, 503)},
                operationId="getRun",
            ),
            "delete": _op(
                "Delete a run and every dependent row",
                "admin",
                {
                    "204": {"description": "Deleted; the audit entry of the deletion stays."},
                    **_errors(*auth, 404, 503),
                },
                operationId="deleteRun",
            ),
        },
        "/v1/runs/{run_id}/cancel": {
            "parameters": [RUN_ID_PARAM],
            "post": _op(
                "Cancel a run",
                "run:write",
                {
                    "200": _json(_ref("Run"), "Cancellation requested (a no-op once the run ended)."),
                    **_errors(*auth, 404, 413, 503),
                },
                operationId="cancelRun",
            ),
        },
        "/v1/runs/{run_id}/resume": {
            "parameters": [RUN_ID_PARAM],
            "post": _op(
                "Resume a failed or cancelled run under the same id",
                "run:write",
                {"200": _json(_ref("Run"), "The run is queued again."), **_errors(*auth, 404, 409, 413, 503)},
                operationId="resumeRun",
            ),
        },
        "/v1/runs/{run_id}/rerun": {
            "parameters": [RUN_ID_PARAM],
            "post": _op(
                "Launch a new run of the same workflow with the same input",
                "run:write",
                {
                    "201": _json(_ref("Run"), "The new run; its parent_run_id is the old run."),
                    "200": _json(_ref("Run"), "This rerun (by its chosen run_id) already exists."),
                    **_errors(*auth, 404, 409, 413, 503),
                },
                operationId="rerunRun",
                requestBody=_body(runs.RERUN),
            ),
        },
        "/v1/runs/{run_id}/events": {
            "parameters": [RUN_ID_PARAM],
            "get": _op(
                "Follow a run's events (Server-Sent Events)",
                "run:read",
                {"200": SSE, **_errors(*auth, 404, 503)},
                operationId="runEvents",
                description="`id:` is the run's seq. Resume with `Last-Event-ID` or `after_seq`: no gap, no"
                " duplicate. The stream ends with an `end` event once the run is terminal and every event"
                " was sent; comment lines keep it alive while idle.",
                parameters=[
                    _param("after_seq", "query", CURSOR, "Start after this seq (default 0)."),
                    LAST_EVENT_ID,
                ],
            ),
        },
        "/v1/events": {
            "get": _op(
                "Follow every run's events in commit order (Server-Sent Events)",
                "run:read",
                {"200": SSE, **_errors(*auth, 503)},
                operationId="allEvents",
                description="`id:` is the event's feed id, allocated in commit order. Resume with"
                " `Last-Event-ID` or `after_feed_id`.",
                parameters=[
                    _param("after_feed_id", "query", CURSOR, "Start after this feed id (default 0)."),
                    LAST_EVENT_ID,
                ],
            ),
        },
        "/v1/approvals": {
            "get": _op(
                "List approvals",
                "approval:read",
                {
                    "200": _json(_ref("ApprovalList"), "Approvals, oldest request first."),
                    **_errors(*auth, 503),
                },
                operationId="listApprovals",
                parameters=[
                    _param(
                        "status",
                        "query",
                        {"type": "string", "enum": [s.value for s in ApprovalStatus]},
                        "Default pending (of runs that have not ended).",
                    ),
                    _param(
                        "run_id", "query", {"type": "string", "pattern": RUN_ID.pattern}, "Only this run's."
                    ),
                    _param(
                        "limit",
                        "query",
                        {"type": "integer", "minimum": 1, "maximum": 200},
                        "At most this many.",
                    ),
                ],
            ),
        },
        "/v1/runs/{run_id}/approvals/{node_id}": {
            "parameters": [RUN_ID_PARAM, NODE_ID_PARAM],
            "post": _op(
                "Approve or deny a pending approval",
                "approval:submit",
                {
                    "200": _json(_ref("Approval"), "The decision was recorded."),
                    **_errors(*auth, 404, 409, 413, 503),
                },
                operationId="decideApproval",
                description="The decider is the token's subject. Where the approval names an owner, only the"
                " owner decides, or the fallback owner once the escalation time has passed (else 403).",
                requestBody=_body(approvals.DECISION),
            ),
        },
        "/v1/runs/{run_id}/sandboxes": {
            "parameters": [RUN_ID_PARAM],
            "get": _op(
                "List a run's sandboxes with their patches and reviews",
                "approval:read",
                {
                    "200": _json(_ref("SandboxList"), "Sandboxes, in creation order."),
                    **_errors(*auth, 404, 503),
                },
                operationId="listSandboxes",
                description="One sandbox per attempt of a sandbox step: runtime, image and digest,"
                " container, limits, status, bundle path and sizes, the checked manifest (each patch"
                " with its diff) and every review decision.",
                parameters=[
                    _param(
                        "review_status",
                        "query",
                        {"type": "string", "enum": list(sandboxes.REVIEW_STATUSES)},
                        "Only sandboxes in this review status (`pending`: waiting for a reviewer).",
                    )
                ],
            ),
        },
        "/v1/runs/{run_id}/sandboxes/{sandbox_id}/review": {
            "parameters": [
                RUN_ID_PARAM,
                _param(
                    "sandbox_id",
                    "path",
                    {"type": "string", "pattern": sandboxes.SANDBOX_ID.pattern},
                    "The sandbox.",
                ),
            ],
            "post": _op(
                "Accept or reject a sandbox's patches",
                "approval:submit",
                {
                    "200": _json(_ref("Sandbox"), "The decision was recorded."),
                    **_errors(*auth, 404, 409, 413, 503),
                },
                operationId="reviewSandbox",
                description="The reviewer is the token's subject. Accepted patches, already applied to the"
                " step's workspace by its worker, are handed to downstream nodes; a rejection fails the"
                ' step, or skips it when it was declared with `on_reject="skip"`. 409 when the sandbox'
                " has nothing pending (no patches, already decided, or superseded).",
                requestBody=_body(sandboxes.REVIEW),
            ),
        },
        "/v1/runs/{run_id}/audit": {
            "parameters": [RUN_ID_PARAM],
            "get": _op(
                "A run's whole audit trail in time order",
                "run:read",
                {
                    "200": _json(_ref("AuditTrail"), "Events, audit-log and time-travel rows."),
                    **_errors(*auth, 404, 503),
                },
                operationId="runAudit",
                description="Launch, every event, approval and review decisions with actor and note, time"
                " travel, deletion. Rows that outlive a deleted run are still listed.",
            ),
        },
        "/v1/runs/{run_id}/rewind": {
            "parameters": [RUN_ID_PARAM],
            "post": _op(
                "Rewind a run to before a node",
                "run:write",
                {
                    "200": _json(_ref("TimeTravelResult"), "Done; audited before and after."),
                    **_errors(*auth, 404, 409, 413, 429, 503),
                },
                operationId="rewindRun",
                description="Needs `run:write` and the run's launcher, or `admin` as well; `confirm: true`"
                " is required. 409 while another time-travel call on the run is in progress.",
                requestBody=_body(history.REWIND),
            ),
        },
        "/v1/runs/{run_id}/replay": {
            "parameters": [RUN_ID_PARAM],
            "post": _op(
                "Replay a run from a node into a new run",
                "run:write",
                {
                    "201": _json(_ref("TimeTravelResult"), "Done; audited before and after."),
                    **_errors(*auth, 404, 409, 413, 429, 503),
                },
                operationId="replayRun",
                description="Needs `run:write` and the run's launcher, or `admin` as well; `confirm: true`"
                " is required. 409 while another time-travel call on the run is in progress.",
                requestBody=_body(history.REPLAY),
            ),
        },
        "/v1/runs/{run_id}/fork": {
            "parameters": [RUN_ID_PARAM],
            "post": _op(
                "Fork a run at a node with new input",
                "run:write",
                {
                    "201": _json(_ref("TimeTravelResult"), "Done; audited before and after."),
                    **_errors(*auth, 404, 409, 413, 429, 503),
                },
                operationId="forkRun",
                description="Needs `run:write` and the run's launcher, or `admin` as well; `confirm: true`"
                " is required. 409 while another time-travel call on the run is in progress.",
                requestBody=_body(history.FORK),
            ),
        },
        "/v1/workflows": {
            "get": _op(
                "List registered workflows",
                "run:read",
                {"200": _json(_ref("WorkflowList"), "Workflows by name."), **_errors(*auth)},
                operationId="listWorkflows",
            ),
        },
        "/v1/grants": {
            "post": _op(
                "Issue a grant",
                "admin",
                {
                    "201": _json(_ref("IssuedGrant"), "The grant and its token (shown only once)."),
                    **_errors(*auth, 413, 503),
                },
                operationId="issueGrant",
                requestBody=_body(grants.ISSUE),
            ),
            "get": _op(
                "List grants",
                "admin",
                {"200": _json(_ref("GrantList"), "Grants, newest first."), **_errors(*auth, 503)},
                operationId="listGrants",
                parameters=[
                    _param(
                        "subject",
                        "query",
                        {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.@:+-]{0,127}$"},
                        "Only this subject's.",
                    ),
                    _param("state", "query", {"type": "string", "enum": ["active", "all"]}, "Default all."),
                ],
            ),
        },
        "/v1/grants/{jti}/revoke": {
            "parameters": [
                _param("jti", "path", {"type": "string", "pattern": r"^[A-Za-z0-9_-]{8,64}$"}, "The grant.")
            ],
            "post": _op(
                "Revoke a grant",
                "admin",
                {
                    "200": _json(_ref("RevokedGrant"), "Revoked (again is a no-op)."),
                    **_errors(*auth, 404, 413, 503),
                },
                operationId="revokeGrant",
            ),
        },
        "/healthz": {
            "get": _op(
                "Liveness",
                None,
                {"200": _json(_ref("Health"), "The process answers.")},
                operationId="healthz",
            ),
        },
        "/readyz": {
            "get": _op(
                "Readiness: the store and the broker answer",
                None,
                {"200": _json(_ref("Ready"), "Ready."), "503": _json(_ref("NotReady"), "Not ready.")},
                operationId="readyz",
            ),
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics",
                None,
                {
                    "200": {
                        "description": "Prometheus text format.",
                        "content": {"text/plain": {"schema": STR}},
                    }
                },
                operationId="metrics",
            ),
        },
        "/v1/openapi.json": {
            "get": _op("This document", None, {"200": _json(OBJ, "OpenAPI 3.0.")}, operationId="openapi"),
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.0 document."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Smithers gateway",
            "version": VERSION,
            "description": DESCRIPTION,
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": _schemas(),
        },
    }


@bp.get("/v1/openapi.json")
def serve() -> Response:
    """The OpenAPI document (no token needed)."""
    return jsonify(document())


# -- Markdown -----------------------------------------------------------------------------


def _type(schema: Schema) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    kind = str(schema.get("type", "any"))
    if kind == "array":
        kind = f"array of {_type(schema.get('items', {}))}"
    if "enum" in schema:
        kind += " (" + " | ".join(f"`{v}`" for v in schema["enum"]) + ")"
    if schema.get("nullable"):
        kind += ", nullable"
    return kind


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: dict[str, Any]) -> str:
    """docs/api.md: every operation with its scope, parameters, body and responses."""
    out = [
        "# Gateway API",
        "",
        "<!-- Generated from the OpenAPI document by `python -m gateway.openapi`; do not edit. -->",
        "",
        doc["info"]["description"],
        "",
        "The machine-readable document is served at `GET /v1/openapi.json`.",
        "",
    ]
    schemas = doc["components"]["schemas"]
    for path, item in doc["paths"].items():
        shared_params = item.get("parameters", [])
        for method in ("get", "post", "delete"):
            op = item.get(method)
            if op is None:
                continue
            out += [f"## `{method.upper()} {path}`", "", op["summary"] + ".", ""]
            scope = op.get("x-required-scope")
            out += [f"Scope: `{scope}`." if scope else "No token needed.", ""]
            desc = op.get("description", "").replace(f"Scope: `{scope}`.", "").strip()
            if desc:
                out += [desc, ""]
            params = [*shared_params, *op.get("parameters", [])]
            if params:
                out += ["| parameter | in | type | description |", "|---|---|---|---|"]
                out += [
                    f"| `{p['name']}` | {p['in']} | {_cell(_type(p['schema']))} | {_cell(p['description'])} |"
                    for p in params
                ]
                out.append("")
            body = op.get("requestBody")
            if body is not None:
                name = _type(body["content"][JSON]["schema"])
                schema = schemas[name]
                required = set(schema.get("required", []))
                out += [
                    f"Body (`{name}`{', optional' if not body['required'] else ''}): "
                    + schema.get("description", ""),
                    "",
                    "| field | type | required | description |",
                    "|---|---|---|---|",
                ]
                for field, spec in schema["properties"].items():
                    yes = "yes" if field in required else "no"
                    out.append(
                        f"| `{field}` | {_cell(_type(spec))} | {yes} | {_cell(spec.get('description', ''))} |"
                    )
                out += ["", "Unknown fields are refused with 400 naming the field.", ""]
            out += ["| status | meaning |", "|---|---|"]
            for status, response in op["responses"].items():
                content = response.get("content", {})
                shape = ""
                if JSON in content:
                    shape = f" (`{_type(content[JSON]['schema'])}`)"
                out.append(f"| {status} | {_cell(response['description'])}{shape} |")
            out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    if sys.argv[1:] == ["--json"]:
        print(json.dumps(document(), indent=2))
    else:
        sys.stdout.write(render_markdown(document()))
