"""The OpenAPI 3 document of the gateway, and docs/api.md rendered from it.

Request bodies come from the same :class:`~smithers.gateway.body.BodySchema` objects the views
validate with; the tests check that every route of the app is documented with the
scope its view demands, and run schemathesis against the document.
``python -m smithers.gateway.openapi > docs/api.md`` regenerates the Markdown.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from flask import Blueprint, Response, jsonify

from smithers.gateway import approvals, grants, history, runs, sandboxes, schedules, signals, workflows
from smithers.gateway.apidoc import render_markdown
from smithers.gateway.auth import ANY_SCOPE
from smithers.gateway.schemas import (
    CURSOR,
    LAST_EVENT_ID,
    NODE_ID_PARAM,
    OBJ,
    RUN_ID_PARAM,
    SSE,
    STR,
    Schema,
    component_schemas,
    errors,
    json_body,
    op,
    param,
    ref,
    request_body,
    webhook_op,
)
from smithers.shared.status import ApprovalStatus
from smithers.shared.store.runs import RUN_ID
from smithers.shared.workflow import SIGNAL_NAME, WORKFLOW_NAME

bp = Blueprint("openapi", __name__)
WORKFLOW_PARAM = param(
    "name", "path", {"type": "string", "pattern": WORKFLOW_NAME.pattern}, "The workflow's name."
)

VERSION = "1.0.0"
DESCRIPTION = """Launch, follow and decide durable workflow runs.

**Tokens.** Every `/v1` operation but the signed webhooks under `/v1/control` needs
`Authorization: Bearer <token>`, a JWT from
`smithers token issue --subject S --scopes a,b --ttl 15m` (or `POST /v1/grants`). Each
token is a grant row: `smithers token revoke JTI` refuses it at once. Lifetimes are
bounded: people get 15 minutes by default and 12 hours at most, automation
(`--kind automation`) 1 day by default and 30 days at most (`SMITHERS_TOKEN_TTL_*`);
an automation grant carries `admin` or `approval:submit` only where
`SMITHERS_TOKEN_AUTOMATION_PRIVILEGED_SCOPES` allows it. Tokens are HS256 by default, or
signed with a key pair (`SMITHERS_JWT_ALGORITHM`): a gateway holding only the public key
verifies them and answers 409 to `POST /v1/grants`. JWTs of a configured identity
provider (`SMITHERS_IDP_ISSUERS_FILE`: JWKS, issuer, audience, a claim mapped to scopes)
are accepted too; each is recorded once as a grant row naming its issuer, and revocable.

| scope | allows |
|---|---|
| `run:read` | list and read runs, follow events, list workflows and cron schedules |
| `run:write` | launch, cancel, resume, rerun; pause and resume cron schedules |
| `approval:read` | list approvals and diff reviews; read the runs it holds a pending approval of |
| `approval:submit` | decide approvals and diff reviews |
| `admin` | delete runs, issue and revoke grants, migrate runs between revisions |

No scope implies another: a token that launches cannot approve, and `admin` does
neither. A missing, expired, revoked or tampered token gets 401; a valid token without
the scope gets 403. Both are written to the audit log.

**Webhooks.** `POST /v1/control/idp` and `POST /v1/control/billing` take no bearer
token: the credential is the delivery's signature, as Standard Webhooks defines it
(`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
"id.timestamp.body">` with the endpoint's `whsec_` secret). A missing or wrong signature,
or a timestamp more than `SMITHERS_WEBHOOK_TOLERANCE` (5 minutes) from the gateway's clock,
is a 401; an id already applied is a 409 (`webhook_replayed`). Each delivery is written as
normalized grants and audit entries, never as its payload.

**Console sessions.** The console (`/ui/`) exchanges a token once, at `POST /v1/session`,
for an HttpOnly, SameSite=Strict cookie with the same grant and scopes; requests with
that cookie that change anything also send the session's `X-CSRF-Token`.

**Requests.** Bodies are JSON objects up to `SMITHERS_GATEWAY_MAX_BODY` bytes (1 MiB;
over it: 413); run input is also bounded by `SMITHERS_MAX_INPUT_BYTES` (1 MiB of
JSON; over it: 413, `payload_too_large`). Malformed JSON, an unknown field or a wrong
type is a 400 that names the field; so is run input with a key or value that looks like
a credential (pass secrets by name to the worker, never through input). A refused
request writes nothing. Errors are `{"error": {"code": ..., "message": ...}}`; every
response carries `X-Request-ID`.

**Streams.** Event streams are Server-Sent Events. `id:` is the run's `seq` (or the
feed id on `/v1/events`); reconnect with `Last-Event-ID` to resume with no gap and no
duplicate. A run's stream ends with `event: end` once the run is terminal and every
event was sent; any stream ends with `end` (reason `timeout`) after an hour, and idle
streams carry `: keep-alive` comments. Browsers' `EventSource` cannot send headers:
use a fetch-based SSE client."""


def _paths() -> dict[str, Schema]:
    auth = (400, 401, 403, 429)  # 429: too many failed authentications from the address
    return {
        "/v1/runs": {
            "post": op(
                "Launch a run",
                "run:write",
                {
                    "201": json_body(ref("LaunchedRun"), "The run was created."),
                    "200": json_body(
                        ref("LaunchedRun"), "A run with this id and the same input already exists."
                    ),
                    **errors(*auth, 404, 409, 413, 503),
                },
                operationId="launchRun",
                description="Launch a run of a registered workflow. The same `run_id` with the same input"
                " returns the same run (200); with another input it is a 409. Nothing is written for a"
                " refused request. `warnings` holds a `revision_unavailable` entry when no live"
                " scheduler or worker holds the workflow's revision (the run is created and waits).",
                requestBody=request_body(runs.LAUNCH),
            ),
            "get": op(
                "List runs",
                "run:read",
                {
                    "200": json_body(ref("RunPage"), "Run summaries (no input or output), newest first."),
                    **errors(*auth, 503),
                },
                operationId="listRuns",
                description="Summaries of runs without their input and output, so a page stays"
                " small: `GET /v1/runs/{run_id}` returns a run with its input, output and node"
                " outputs.",
                parameters=[
                    param(
                        "status",
                        "query",
                        {"type": "string", "enum": list(runs.STATUSES)},
                        "Only runs in this status.",
                    ),
                    param("workflow", "query", STR, "Only runs of this workflow."),
                    param(
                        "limit",
                        "query",
                        {"type": "integer", "minimum": 1, "maximum": 200},
                        "Page size (default 50).",
                    ),
                    param("cursor", "query", STR, "`next_cursor` of the previous page."),
                    param(
                        "since", "query", {"type": "integer", "minimum": 0}, "Created at or after (epoch s)."
                    ),
                    param("until", "query", {"type": "integer", "minimum": 0}, "Created before (epoch s)."),
                    param(
                        "q",
                        "query",
                        {"type": "string", "pattern": runs.RUN_ID_SEARCH.pattern},
                        "Only runs whose id contains this.",
                    ),
                ],
            ),
        },
        "/v1/runs/{run_id}": {
            "parameters": [RUN_ID_PARAM],
            "get": op(
                "Read a run with its nodes, attempts and outputs",
                "run:read",
                {"200": json_body(ref("RunDetail"), "The run."), **errors(*auth, 404, 503)},
                operationId="getRun",
            ),
            "delete": op(
                "Delete a run and every dependent row",
                "admin",
                {
                    "204": {"description": "Deleted; the audit entry of the deletion stays."},
                    **errors(*auth, 404, 503),
                },
                operationId="deleteRun",
            ),
        },
        "/v1/runs/{run_id}/cancel": {
            "parameters": [RUN_ID_PARAM],
            "post": op(
                "Cancel a run",
                "run:write",
                {
                    "200": json_body(ref("Run"), "Cancellation requested (a no-op once the run ended)."),
                    **errors(*auth, 404, 413, 503),
                },
                operationId="cancelRun",
            ),
        },
        "/v1/runs/{run_id}/resume": {
            "parameters": [RUN_ID_PARAM],
            "post": op(
                "Resume a failed or cancelled run under the same id",
                "run:write",
                {
                    "200": json_body(ref("Run"), "The run is queued again."),
                    **errors(*auth, 404, 409, 413, 503),
                },
                operationId="resumeRun",
            ),
        },
        "/v1/runs/{run_id}/migrate": {
            "parameters": [RUN_ID_PARAM],
            "post": op(
                "Move a run to another revision of its workflow",
                "admin",
                {
                    "200": json_body(ref("Migration"), "Migrated; audited (actor, from, to, note)."),
                    **errors(*auth, 404, 409, 413, 503),
                },
                operationId="migrateRun",
                description="Allowed when every node that already ran is in the target revision with the"
                " same kind; otherwise 409 `revision_conflict` with `error.details.conflicts` listing the"
                " nodes. The target must be a revision the store has seen (a process held it or a run"
                " launched with it). Also 409 for a succeeded or cancelled run, or one already on it.",
                requestBody=request_body(runs.MIGRATE),
            ),
        },
        "/v1/runs/{run_id}/rerun": {
            "parameters": [RUN_ID_PARAM],
            "post": op(
                "Launch a new run of the same workflow with the same input",
                "run:write",
                {
                    "201": json_body(ref("Run"), "The new run; its parent_run_id is the old run."),
                    "200": json_body(ref("Run"), "This rerun (by its chosen run_id) already exists."),
                    **errors(*auth, 404, 409, 413, 503),
                },
                operationId="rerunRun",
                requestBody=request_body(runs.RERUN),
            ),
        },
        "/v1/runs/{run_id}/events": {
            "parameters": [RUN_ID_PARAM],
            "get": op(
                "Follow a run's events (Server-Sent Events)",
                "run:read",
                {"200": SSE, **errors(*auth, 404, 503)},
                operationId="runEvents",
                description="`id:` is the run's seq. Resume with `Last-Event-ID` or `after_seq`: no gap, no"
                " duplicate. The stream ends with an `end` event once the run is terminal and every event"
                " was sent; comment lines keep it alive while idle.",
                parameters=[
                    param("after_seq", "query", CURSOR, "Start after this seq (default 0)."),
                    LAST_EVENT_ID,
                ],
            ),
        },
        "/v1/events": {
            "get": op(
                "Follow every run's events in commit order (Server-Sent Events)",
                "run:read",
                {"200": SSE, **errors(*auth, 503)},
                operationId="allEvents",
                description="`id:` is the event's feed id, allocated in commit order (on PostgreSQL"
                " shortly after the commit; until then the event's `feed_id` is `null` where it is"
                " shown and this stream has not sent it). Resume with `Last-Event-ID` or `after_feed_id`.",
                parameters=[
                    param("after_feed_id", "query", CURSOR, "Start after this feed id (default 0)."),
                    LAST_EVENT_ID,
                ],
            ),
        },
        "/v1/approvals": {
            "get": op(
                "List approvals",
                "approval:read",
                {
                    "200": json_body(ref("ApprovalList"), "Approvals, oldest request first."),
                    **errors(*auth, 503),
                },
                operationId="listApprovals",
                parameters=[
                    param(
                        "status",
                        "query",
                        {"type": "string", "enum": [s.value for s in ApprovalStatus]},
                        "Default pending (of runs that have not ended).",
                    ),
                    param(
                        "run_id", "query", {"type": "string", "pattern": RUN_ID.pattern}, "Only this run's."
                    ),
                    param(
                        "limit",
                        "query",
                        {"type": "integer", "minimum": 1, "maximum": 200},
                        "At most this many.",
                    ),
                    param(
                        "order",
                        "query",
                        {"type": "string", "enum": list(approvals.ORDERS)},
                        "`oldest` request first (default), most `urgent` first (the earliest escalation"
                        " or timeout), or `newest` decision first.",
                    ),
                ],
            ),
        },
        "/v1/runs/{run_id}/approvals/{node_id}": {
            "parameters": [RUN_ID_PARAM, NODE_ID_PARAM],
            "post": op(
                "Approve or deny a pending approval",
                "approval:submit",
                {
                    "200": json_body(ref("Approval"), "The decision was recorded."),
                    **errors(*auth, 404, 409, 413, 503),
                },
                operationId="decideApproval",
                description="The decider is the token's subject. Where the approval names an owner, only the"
                " owner decides, or the fallback owner once the escalation time has passed (else 403)."
                " A `payload` must match what the approval declares (`spec.schema`, a JSON Schema subset,"
                " or one of `spec.options`); approving such an approval needs one (else 400).",
                requestBody=request_body(approvals.DECISION),
            ),
        },
        "/v1/runs/{run_id}/signals/{name}": {
            "parameters": [
                RUN_ID_PARAM,
                param(
                    "name",
                    "path",
                    {"type": "string", "pattern": SIGNAL_NAME.pattern},
                    "The signal's name, as a signal node of the run's workflow declares it.",
                ),
            ],
            "post": op(
                "Send a signal to a run",
                "run:write",
                {
                    "201": json_body(
                        ref("Signal"), "The signal was kept (and taken, if a node waited for it)."
                    ),
                    "200": json_body(
                        ref("Signal"), "The same `signal_id` and payload again: the first delivery."
                    ),
                    **errors(*auth, 404, 409, 413, 503),
                },
                operationId="sendSignal",
                description="Kept for the run's signal node waiting for `name`, or for the first one the run"
                " reaches later (in arrival order). The sender is the token's subject (stored, audited)."
                " The `payload` is checked against the node's declared schema (400 naming the field)."
                " 404: no such run, or no node of its workflow waits for `name`; 409: the `signal_id`"
                " was sent with another payload, or the run has ended.",
                requestBody=request_body(signals.SIGNAL),
            ),
        },
        "/v1/runs/{run_id}/approval-context": {
            "parameters": [RUN_ID_PARAM],
            "get": op(
                "Read what an approver decides on",
                "approval:read",
                {
                    "200": json_body(ref("ApprovalContext"), "The run as its approver sees it."),
                    **errors(*auth, 404, 503),
                },
                operationId="approvalContext",
                description="For a token that holds a pending approval of the run (the approval names"
                " no owner, or names the token's subject as its owner or fallback owner): the run's"
                " summary and input, those pending approvals with their declaration, the outputs of"
                " the nodes each shows (or, declaring none, comes after), and the run's events in seq"
                " order, paged by `after_seq` (`next_after_seq` is the next page's). No `run:read`"
                " needed; any other run, existing or not, is 403. With `run:read` as well: every"
                " pending approval of any run (404 for a run that does not exist).",
                parameters=[
                    param("after_seq", "query", CURSOR, "Events after this seq (default 0)."),
                    param(
                        "limit",
                        "query",
                        {"type": "integer", "minimum": 1, "maximum": 200},
                        "At most this many events (default 200).",
                    ),
                ],
            ),
        },
        "/v1/runs/{run_id}/sandboxes": {
            "parameters": [RUN_ID_PARAM],
            "get": op(
                "List a run's sandboxes with their patches and reviews",
                "approval:read",
                {
                    "200": json_body(ref("SandboxList"), "Sandboxes, in creation order."),
                    **errors(*auth, 404, 503),
                },
                operationId="listSandboxes",
                description="One sandbox per attempt of a sandbox step: runtime, image and digest,"
                " container, limits, status, bundle path and sizes, the checked manifest (each patch"
                " with its diff) and every review decision.",
                parameters=[
                    param(
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
                param(
                    "sandbox_id",
                    "path",
                    {"type": "string", "pattern": sandboxes.SANDBOX_ID.pattern},
                    "The sandbox.",
                ),
            ],
            "post": op(
                "Accept or reject a sandbox's patches",
                "approval:submit",
                {
                    "200": json_body(ref("Sandbox"), "The decision was recorded."),
                    **errors(*auth, 404, 409, 413, 503),
                },
                operationId="reviewSandbox",
                description="The reviewer is the token's subject. Accepted patches, already applied to the"
                " step's workspace by its worker, are handed to downstream nodes; a rejection fails the"
                ' step, or skips it when it was declared with `on_reject="skip"`. 409 when the sandbox'
                " has nothing pending (no patches, already decided, or superseded).",
                requestBody=request_body(sandboxes.REVIEW),
            ),
        },
        "/v1/runs/{run_id}/audit": {
            "parameters": [RUN_ID_PARAM],
            "get": op(
                "A run's whole audit trail in time order",
                "run:read",
                {
                    "200": json_body(ref("AuditTrail"), "Events, audit-log and time-travel rows."),
                    **errors(*auth, 404, 503),
                },
                operationId="runAudit",
                description="Launch, every event, approval and review decisions with actor and note, time"
                " travel, deletion. Rows that outlive a deleted run are still listed.",
            ),
        },
        "/v1/runs/{run_id}/rewind": {
            "parameters": [RUN_ID_PARAM],
            "post": op(
                "Rewind a run to before a node",
                "run:write",
                {
                    "200": json_body(ref("TimeTravelResult"), "Done; audited before and after."),
                    **errors(*auth, 404, 409, 413, 503),
                },
                operationId="rewindRun",
                description="Needs `run:write` and the run's launcher, or `admin` as well; `confirm: true`"
                " is required. 409 while another time-travel call on the run is in progress.",
                requestBody=request_body(history.REWIND),
            ),
        },
        "/v1/runs/{run_id}/replay": {
            "parameters": [RUN_ID_PARAM],
            "post": op(
                "Replay a run from a node into a new run",
                "run:write",
                {
                    "201": json_body(ref("TimeTravelResult"), "Done; audited before and after."),
                    **errors(*auth, 404, 409, 413, 503),
                },
                operationId="replayRun",
                description="Needs `run:write` and the run's launcher, or `admin` as well; `confirm: true`"
                " is required. 409 while another time-travel call on the run is in progress.",
                requestBody=request_body(history.REPLAY),
            ),
        },
        "/v1/runs/{run_id}/fork": {
            "parameters": [RUN_ID_PARAM],
            "post": op(
                "Fork a run at a node with new input",
                "run:write",
                {
                    "201": json_body(ref("TimeTravelResult"), "Done; audited before and after."),
                    **errors(*auth, 404, 409, 413, 503),
                },
                operationId="forkRun",
                description="Needs `run:write` and the run's launcher, or `admin` as well; `confirm: true`"
                " is required. 409 while another time-travel call on the run is in progress.",
                requestBody=request_body(history.FORK),
            ),
        },
        "/v1/workflows": {
            "get": op(
                "List registered workflows",
                "run:read",
                {"200": json_body(ref("WorkflowList"), "Workflows by name."), **errors(*auth)},
                operationId="listWorkflows",
            ),
        },
        "/v1/workflows/{name}/revisions": {
            "parameters": [WORKFLOW_PARAM],
            "get": op(
                "List a workflow's stored revisions with their live holders",
                "run:read",
                {"200": json_body(ref("RevisionList"), "Oldest first."), **errors(*auth, 404, 503)},
                operationId="listRevisions",
            ),
        },
        "/v1/workflows/{name}/migrate": {
            "parameters": [WORKFLOW_PARAM],
            "post": op(
                "Migrate every unfinished or failed run of a workflow from one revision to another",
                "admin",
                {
                    "200": json_body(
                        ref("WorkflowMigration"), "Each run moved on its own; `refused` says why not."
                    ),
                    **errors(*auth, 404, 413, 503),
                },
                operationId="migrateWorkflow",
                requestBody=request_body(workflows.MIGRATE_ALL),
            ),
        },
        "/v1/grants": {
            "post": op(
                "Issue a grant",
                "admin",
                {
                    "201": json_body(ref("IssuedGrant"), "The grant and its token (shown only once)."),
                    **errors(*auth, 409, 413, 503),
                },
                operationId="issueGrant",
                requestBody=request_body(grants.ISSUE),
            ),
            "get": op(
                "List grants",
                "admin",
                {"200": json_body(ref("GrantList"), "Grants, newest first."), **errors(*auth, 503)},
                operationId="listGrants",
                parameters=[
                    param(
                        "subject",
                        "query",
                        {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.@:+-]{0,127}$"},
                        "Only this subject's.",
                    ),
                    param("state", "query", {"type": "string", "enum": ["active", "all"]}, "Default all."),
                ],
            ),
        },
        "/v1/grants/{jti}/revoke": {
            "parameters": [
                param("jti", "path", {"type": "string", "pattern": r"^[A-Za-z0-9_-]{8,64}$"}, "The grant.")
            ],
            "post": op(
                "Revoke a grant",
                "admin",
                {
                    "200": json_body(ref("RevokedGrant"), "Revoked (again is a no-op)."),
                    **errors(*auth, 404, 413, 503),
                },
                operationId="revokeGrant",
            ),
        },
        "/v1/session": {
            "post": op(
                "Start a console session",
                ANY_SCOPE,
                {
                    "201": json_body(ref("Session"), "The session cookie was set; keep `csrf_token`."),
                    **errors(400, 401, 403, 409, 503),
                },
                operationId="createSession",
                description="Exchange the bearer token in `Authorization` for `smithers_session`, an"
                " HttpOnly, SameSite=Strict cookie (Secure over https or with"
                " `SMITHERS_SESSION_SECURE_COOKIE=true`) naming the same grant and at most its scopes,"
                " for `SMITHERS_SESSION_TTL` or until the grant expires. Requests with the cookie are"
                " checked like the token (the grant row, the same scopes); those that change anything"
                " also need `X-CSRF-Token`. Revoking the grant ends its sessions at once.",
            ),
            "get": op(
                "Who is calling",
                ANY_SCOPE,
                {
                    "200": json_body(ref("Session"), "Subject, scopes, expiry; the session's CSRF token."),
                    **errors(400, 401, 503),
                },
                operationId="readSession",
            ),
            "delete": op(
                "Sign out",
                ANY_SCOPE,
                {
                    "200": json_body(ref("SignedOut"), "The session cookie was cleared."),
                    **errors(400, 401, 403, 503),
                },
                operationId="endSession",
                description="With the session cookie, `X-CSRF-Token` is needed (else 403).",
            ),
        },
        "/v1/control/idp": {
            "post": webhook_op(
                "An identity provider's signed assertion",
                "idpWebhook",
                "`grant.created` records a grant (`data`: `grant_id`, `subject`, `scopes`, `expires_at`;"
                " optional `kind`, default `person`, `issued_at`, `note`) with issuer `webhook:idp`,"
                " within the token lifetimes and `SMITHERS_WEBHOOK_IDP_SCOPES`; `grant.revoked`"
                " revokes one (`grant_id`, optional `reason`); `subject.revoked` revokes every grant of"
                " a deprovisioned subject (`subject`, optional `reason`). Other types are audited only.",
            ),
        },
        "/v1/control/billing": {
            "post": webhook_op(
                "A billing system's signed event",
                "billingWebhook",
                "`subscription.active` records a grant as `grant.created` does (`kind` default"
                " `automation`, issuer `webhook:billing`, scopes within `SMITHERS_WEBHOOK_BILLING_SCOPES`)"
                " and revokes the subject's other billing grants (a plan that changed);"
                " `subscription.ended` revokes the subject's billing grants (its other grants stay)."
                " Other types (`invoice.paid`, ...) are audited only.",
            ),
        },
        "/ui": {
            "get": op(
                "The console (redirect)",
                None,
                {"308": {"description": "To `/ui/`."}},
                operationId="consoleRedirect",
            ),
        },
        "/ui/": {
            "get": op(
                "The console",
                None,
                {"200": {"description": "The console's page.", "content": {"text/html": {"schema": STR}}}},
                operationId="console",
                description="A browser UI on this API (docs/console.md); static files under a strict"
                " Content-Security-Policy. It needs no credential; every call it makes does.",
            ),
        },
        "/ui/{name}": {
            "parameters": [param("name", "path", STR, "A console file (`app.js`, `app.css`, ...).")],
            "get": op(
                "A console file",
                None,
                {
                    "200": {
                        "description": "The file.",
                        "content": {"text/javascript": {"schema": STR}, "text/css": {"schema": STR}},
                    },
                    **errors(404),
                },
                operationId="consoleFile",
            ),
        },
        "/healthz": {
            "get": op(
                "Liveness",
                None,
                {"200": json_body(ref("Health"), "The process answers.")},
                operationId="healthz",
            ),
        },
        "/readyz": {
            "get": op(
                "Readiness: the store and the broker answer",
                None,
                {"200": json_body(ref("Ready"), "Ready."), "503": json_body(ref("NotReady"), "Not ready.")},
                operationId="readyz",
            ),
        },
        "/metrics": {
            "get": op(
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
            "get": op("This document", None, {"200": json_body(OBJ, "OpenAPI 3.0.")}, operationId="openapi"),
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
        "paths": {**_paths(), **schedules.paths()},
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {**component_schemas(), **schedules.SCHEMAS},
        },
    }


@bp.get("/v1/openapi.json")
def serve() -> Response:
    """The OpenAPI document (no token needed)."""
    return jsonify(document())


__all__ = ["bp", "document", "render_markdown", "serve"]

if __name__ == "__main__":
    if sys.argv[1:] == ["--json"]:
        print(json.dumps(document(), indent=2))
    else:
        sys.stdout.write(render_markdown(document()))
