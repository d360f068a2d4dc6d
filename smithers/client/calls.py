"""Each operation of the gateway's API as a :class:`Call`: the request and its parser.

A builder here takes a method's arguments and returns the request to send (method, path,
query, JSON body, the statuses that are an answer) with the function that turns the answer
into its typed result. It does no I/O: :class:`~smithers.client.Client` sends a call with
``httpx.Client`` and :class:`~smithers.client.AsyncClient` with ``httpx.AsyncClient``, so
the two have the same methods, results and errors from one definition (sans-I/O, as
h11 and Flask's ``sansio`` keep their protocol apart from the transport).

A builder that is the client of one OpenAPI operation carries its ``operationId``
(:func:`operation`); :data:`EXCLUDED` names the few a client has no use for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from smithers.client.errors import GatewayUnavailable, error_from
from smithers.client.types import Launched, Ready, Signal
from smithers.shared.api import (
    Approval,
    ApprovalContext,
    ApprovalList,
    AuditTrail,
    Grant,
    GrantList,
    Health,
    IssuedGrant,
    LaunchedRun,
    Migration,
    RevisionList,
    RevokedGrant,
    Run,
    RunDetail,
    RunPage,
    Sandbox,
    SandboxList,
    Schedule,
    ScheduleList,
    Session,
    TimeTravelResult,
    Workflow,
    WorkflowList,
    WorkflowMigration,
)

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
OPERATION_ATTR = "__smithers_operation__"

# Operations of the OpenAPI document with no client method, and why (checked by a test).
EXCLUDED = {
    "createSession": "the console's cookie session: a client sends its bearer token on every request",
    "endSession": "signs a console session out (clears its cookie); a bearer token has no session",
    "consoleRedirect": "the browser console's static files, not an API",
    "console": "the browser console's static files, not an API",
    "consoleFile": "the browser console's static files, not an API",
    "idpWebhook": "a signed delivery from an identity provider (HMAC, no bearer token), not a client's call",
    "billingWebhook": "a signed delivery from a billing system (HMAC, no bearer token), not a client's call",
}


def operation(operation_id: str) -> Callable[[F], F]:
    """Mark a builder (or a client's method) as the client of one OpenAPI operation."""

    def mark(fn: F) -> F:
        setattr(fn, OPERATION_ATTR, operation_id)
        return fn

    return mark


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how its answer becomes a ``T``: a status outside ``ok`` raises the
    error of its family (:func:`~smithers.client.errors.error_from`), else ``parse`` runs."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    params: Mapping[str, str] | None = None
    ok: tuple[int, ...] = (200,)

    def result(self, response: httpx.Response) -> T:
        """The typed result of ``response`` (read in full), or the gateway's refusal raised."""
        return self.parse(check(response, self.ok))


@dataclass(frozen=True)
class Follow:
    """An event stream to follow: its path, the id to resume after and which id that is
    (``seq`` of a run's stream, ``feed_id`` of every run's), and when to stop."""

    path: str
    after: int
    by: str
    deadline: float | None
    reconnect_for_s: float


def check(response: httpx.Response, ok: tuple[int, ...]) -> httpx.Response:
    """``response`` when its status is in ``ok``; else its error, raised."""
    if response.status_code not in ok:
        raise error_from(response.status_code, response.content, response.headers.get("Retry-After"))
    return response


def unreachable(base_url: str, exc: Exception) -> GatewayUnavailable:
    """The error for a request that got no answer."""
    return GatewayUnavailable(f"the gateway at {base_url} did not answer: {exc}")


def body(response: httpx.Response) -> Any:
    """The answer's JSON; an answer that is not JSON (a proxy's page) is the gateway's fault."""
    try:
        return response.json()
    except ValueError:
        request = response.request
        raise GatewayUnavailable(
            f"{request.method} {request.url.path}: the gateway's answer is not JSON"
        ) from None


def _seg(value: str) -> str:
    """A path segment, percent-encoded (the gateway checks the id's pattern)."""
    return quote(value, safe="")


def _query(**params: Any) -> dict[str, str]:
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items() if v is not None}


def _given(**fields: Any) -> dict[str, Any]:
    """The optional body fields that were given (None: left out)."""
    return {k: v for k, v in fields.items() if v is not None}


def _deadline(timeout_s: float | None) -> float | None:
    return None if timeout_s is None else time.monotonic() + timeout_s


# -- runs -------------------------------------------------------------------------------


@operation("launchRun")
def launch_run(
    workflow: str,
    input: Mapping[str, Any] | None = None,
    *,
    run_id: str | None = None,
    priority: int | None = None,
    budget: Mapping[str, Any] | None = None,
) -> Call[Launched]:
    """Launch a run; with ``run_id`` the launch is idempotent (``created`` False on a
    repeat); ``priority`` 0..9, higher first; ``budget``: spending ceilings overriding
    the workflow's (``{"tokens": N, "cost": X}``)."""

    def parse(response: httpx.Response) -> Launched:
        launched = LaunchedRun.model_validate(body(response))
        return Launched(launched, created=response.status_code == 201, warnings=launched.warnings)

    fields = _given(run_id=run_id, priority=priority, budget=None if budget is None else dict(budget))
    payload = {"workflow": workflow, "input": dict(input or {}), **fields}
    return Call("POST", "/v1/runs", parse, json=payload, ok=(200, 201))


@operation("listRuns")
def list_runs(
    *,
    status: str | None = None,
    workflow: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
    since: int | None = None,
    until: int | None = None,
    q: str | None = None,
) -> Call[RunPage]:
    """One page of run summaries, newest first (``next_cursor`` pages on)."""
    params = _query(
        status=status, workflow=workflow, limit=limit, cursor=cursor, since=since, until=until, q=q
    )
    return Call("GET", "/v1/runs", lambda r: RunPage.model_validate(body(r)), params=params)


@operation("getRun")
def get_run(run_id: str) -> Call[RunDetail]:
    """The run with its nodes, attempts, outputs and revision."""
    return Call("GET", f"/v1/runs/{_seg(run_id)}", lambda r: RunDetail.model_validate(body(r)))


@operation("deleteRun")
def delete_run(run_id: str) -> Call[None]:
    """Delete the run and its dependent rows (``admin``); the audit entry stays."""
    return Call("DELETE", f"/v1/runs/{_seg(run_id)}", lambda r: None, ok=(204,))


@operation("cancelRun")
def cancel_run(run_id: str) -> Call[Run]:
    """Ask for the run's cancellation (a no-op once it ended)."""
    return Call("POST", f"/v1/runs/{_seg(run_id)}/cancel", lambda r: Run.model_validate(body(r)))


@operation("resumeRun")
def resume_run(run_id: str) -> Call[Run]:
    """Reopen a failed or cancelled run under the same id."""
    return Call("POST", f"/v1/runs/{_seg(run_id)}/resume", lambda r: Run.model_validate(body(r)))


@operation("rerunRun")
def rerun_run(run_id: str, *, new_run_id: str | None = None) -> Call[Launched]:
    """A new run of the same workflow and input, its parent this one."""

    def parse(response: httpx.Response) -> Launched:
        return Launched(Run.model_validate(body(response)), created=response.status_code == 201)

    path = f"/v1/runs/{_seg(run_id)}/rerun"
    return Call("POST", path, parse, json=_given(run_id=new_run_id), ok=(200, 201))


@operation("migrateRun")
def migrate_run(run_id: str, to: str, *, note: str | None = None) -> Call[Migration]:
    """Move the run to another revision of its workflow (``admin``)."""
    payload = {"to": to, **_given(note=note)}
    path = f"/v1/runs/{_seg(run_id)}/migrate"
    return Call("POST", path, lambda r: Migration.model_validate(body(r)), json=payload)


# -- events (the clients wrap these in their streams) -------------------------------------


def run_events(
    run_id: str, *, after_seq: int = 0, timeout_s: float | None = None, reconnect_for_s: float = 60.0
) -> Follow:
    """The run's stream after ``after_seq`` (operation ``runEvents``)."""
    path = f"/v1/runs/{_seg(run_id)}/events"
    return Follow(path, after_seq, "seq", _deadline(timeout_s), reconnect_for_s)


def all_events(
    *, after_feed_id: int = 0, timeout_s: float | None = None, reconnect_for_s: float = 60.0
) -> Follow:
    """Every run's stream after ``after_feed_id`` (operation ``allEvents``)."""
    return Follow("/v1/events", after_feed_id, "feed_id", _deadline(timeout_s), reconnect_for_s)


# -- approvals, signals and reviews ----------------------------------------------------------


@operation("listApprovals")
def list_approvals(
    *,
    status: str | None = None,
    run_id: str | None = None,
    limit: int | None = None,
    order: str | None = None,
) -> Call[list[Approval]]:
    """Approvals (pending by default) with their declared context."""
    params = _query(status=status, run_id=run_id, limit=limit, order=order)
    return Call(
        "GET", "/v1/approvals", lambda r: list(ApprovalList.model_validate(body(r)).approvals), params=params
    )


@operation("approvalContext")
def approval_context(run_id: str, *, after_seq: int = 0, limit: int | None = None) -> Call[ApprovalContext]:
    """The run as its approver sees it (``approval:read`` and a pending approval of it)."""
    path = f"/v1/runs/{_seg(run_id)}/approval-context"
    params = _query(after_seq=after_seq, limit=limit)
    return Call("GET", path, lambda r: ApprovalContext.model_validate(body(r)), params=params)


@operation("decideApproval")
def decide_approval(
    run_id: str,
    node_id: str,
    approved: bool,
    *,
    note: str | None = None,
    payload: Any = None,
    iteration: int | None = None,
) -> Call[Approval]:
    """Approve (or deny) a pending approval as the token's subject."""
    decision = {"approved": approved, **_given(note=note, payload=payload, iteration=iteration)}
    path = f"/v1/runs/{_seg(run_id)}/approvals/{_seg(node_id)}"
    return Call("POST", path, lambda r: Approval.model_validate(body(r)), json=decision)


def approve(run_id: str, node_id: str, *, note: str | None = None, payload: Any = None) -> Call[Approval]:
    """:meth:`decide_approval` with ``approved=True``."""
    return decide_approval(run_id, node_id, True, note=note, payload=payload)


def deny(run_id: str, node_id: str, *, note: str | None = None) -> Call[Approval]:
    """:meth:`decide_approval` with ``approved=False``."""
    return decide_approval(run_id, node_id, False, note=note)


@operation("sendSignal")
def send_signal(run_id: str, name: str, payload: Any = None, *, signal_id: str | None = None) -> Call[Signal]:
    """Send the signal ``name`` to a run (``run:write``); with ``signal_id`` it is
    idempotent (``created`` False on a repeat with the same payload)."""

    def parse(response: httpx.Response) -> Signal:
        return Signal.model_validate({**body(response), "created": response.status_code == 201})

    path = f"/v1/runs/{_seg(run_id)}/signals/{_seg(name)}"
    return Call("POST", path, parse, json=_given(signal_id=signal_id, payload=payload), ok=(200, 201))


@operation("listSandboxes")
def list_sandboxes(run_id: str, *, review_status: str | None = None) -> Call[list[Sandbox]]:
    """A run's sandboxes in creation order, with their patches and reviews."""
    path = f"/v1/runs/{_seg(run_id)}/sandboxes"
    params = _query(review_status=review_status)
    return Call("GET", path, lambda r: list(SandboxList.model_validate(body(r)).sandboxes), params=params)


@operation("reviewSandbox")
def review_sandbox(run_id: str, sandbox_id: str, accept: bool, *, note: str | None = None) -> Call[Sandbox]:
    """Accept or reject a sandbox's pending patches as the token's subject."""
    path = f"/v1/runs/{_seg(run_id)}/sandboxes/{_seg(sandbox_id)}/review"
    review = {"accept": accept, **_given(note=note)}
    return Call("POST", path, lambda r: Sandbox.model_validate(body(r)), json=review)


# -- history --------------------------------------------------------------------------------


@operation("runAudit")
def audit(run_id: str) -> Call[AuditTrail]:
    """The run's whole audit trail in time order (also after it was deleted)."""
    return Call("GET", f"/v1/runs/{_seg(run_id)}/audit", lambda r: AuditTrail.model_validate(body(r)))


def _travel(run_id: str, action: str, fields: dict[str, Any]) -> Call[TimeTravelResult]:
    path = f"/v1/runs/{_seg(run_id)}/{action}"
    parse = TimeTravelResult.model_validate
    return Call("POST", path, lambda r: parse(body(r)), json={**fields, "confirm": True}, ok=(200, 201))


@operation("rewindRun")
def rewind(run_id: str, node_id: str, *, item: int | None = None) -> Call[TimeTravelResult]:
    """Reopen ``node_id`` and everything downstream of it; the run resumes from there.
    With ``item``, of the map ``node_id`` only that item runs again."""
    return _travel(run_id, "rewind", {"node_id": node_id, **_given(item=item)})


@operation("replayRun")
def replay(run_id: str, node_id: str, *, new_run_id: str | None = None) -> Call[TimeTravelResult]:
    """A new run keeping this run's work upstream of ``node_id`` (same input)."""
    return _travel(run_id, "replay", {"node_id": node_id, **_given(run_id=new_run_id)})


@operation("forkRun")
def fork(
    run_id: str, node_id: str, input: Mapping[str, Any], *, new_run_id: str | None = None
) -> Call[TimeTravelResult]:
    """Like :meth:`replay`, with new input."""
    return _travel(run_id, "fork", {"node_id": node_id, "input": dict(input), **_given(run_id=new_run_id)})


# -- schedules --------------------------------------------------------------------------------


@operation("listSchedules")
def list_schedules(*, workflow: str | None = None) -> Call[list[Schedule]]:
    """The declared cron schedules (of ``workflow``) with their state (``run:read``)."""
    params = _query(workflow=workflow)
    return Call(
        "GET", "/v1/schedules", lambda r: list(ScheduleList.model_validate(body(r)).schedules), params=params
    )


@operation("pauseSchedule")
def pause_schedule(schedule_id: str) -> Call[Schedule]:
    """Pause ``workflow:schedule_id`` (``run:write``)."""
    return Call(
        "POST", f"/v1/schedules/{_seg(schedule_id)}/pause", lambda r: Schedule.model_validate(body(r))
    )


@operation("resumeSchedule")
def resume_schedule(schedule_id: str) -> Call[Schedule]:
    """Resume ``workflow:schedule_id`` from its next tick (``run:write``)."""
    return Call(
        "POST", f"/v1/schedules/{_seg(schedule_id)}/resume", lambda r: Schedule.model_validate(body(r))
    )


# -- workflows --------------------------------------------------------------------------------


@operation("listWorkflows")
def list_workflows() -> Call[list[Workflow]]:
    """The workflows this deployment registered."""
    return Call("GET", "/v1/workflows", lambda r: list(WorkflowList.model_validate(body(r)).workflows))


@operation("listRevisions")
def list_revisions(workflow: str) -> Call[RevisionList]:
    """A workflow's stored revisions, oldest first, with their live holders."""
    path = f"/v1/workflows/{_seg(workflow)}/revisions"
    return Call("GET", path, lambda r: RevisionList.model_validate(body(r)))


@operation("migrateWorkflow")
def migrate_workflow(
    workflow: str, source: str, to: str, *, note: str | None = None
) -> Call[WorkflowMigration]:
    """Move every unfinished or failed run of ``workflow`` from revision ``source`` to ``to``."""
    path = f"/v1/workflows/{_seg(workflow)}/migrate"
    payload = {"from": source, "to": to, **_given(note=note)}
    return Call("POST", path, lambda r: WorkflowMigration.model_validate(body(r)), json=payload)


# -- grants and the caller --------------------------------------------------------------------


@operation("issueGrant")
def issue_grant(
    subject: str,
    scopes: list[str] | tuple[str, ...],
    *,
    kind: str | None = None,
    ttl_s: int | None = None,
    note: str | None = None,
) -> Call[IssuedGrant]:
    """Issue a grant (``admin``); the token is in the answer, this once."""
    payload = {"subject": subject, "scopes": list(scopes), **_given(kind=kind, ttl_s=ttl_s, note=note)}
    return Call("POST", "/v1/grants", lambda r: IssuedGrant.model_validate(body(r)), json=payload, ok=(201,))


@operation("listGrants")
def list_grants(*, subject: str | None = None, active_only: bool = True) -> Call[list[Grant]]:
    """Grants, newest first (``active_only=False``: revoked and expired too)."""
    params = _query(subject=subject, state="active" if active_only else "all")
    return Call("GET", "/v1/grants", lambda r: list(GrantList.model_validate(body(r)).grants), params=params)


@operation("revokeGrant")
def revoke_grant(jti: str) -> Call[Grant]:
    """Revoke a grant at once (twice is a no-op)."""
    return Call(
        "POST", f"/v1/grants/{_seg(jti)}/revoke", lambda r: RevokedGrant.model_validate(body(r)).grant
    )


@operation("readSession")
def whoami() -> Call[Session]:
    """Who the token names: its subject, scopes and expiry."""
    return Call("GET", "/v1/session", lambda r: Session.model_validate(body(r)))


# -- probes -----------------------------------------------------------------------------------


@operation("healthz")
def health() -> Call[bool]:
    """True when the gateway process answers."""
    return Call("GET", "/healthz", lambda r: Health.model_validate(body(r)).status == "ok")


@operation("readyz")
def ready() -> Call[Ready]:
    """Whether the store, the broker and the metrics are ready (``ready`` False on 503)."""
    return Call(
        "GET", "/readyz", lambda r: Ready.from_json(body(r), ready=r.status_code == 200), ok=(200, 503)
    )


@operation("metrics")
def metrics() -> Call[str]:
    """The Prometheus text exposition."""
    return Call("GET", "/metrics", lambda r: r.text)


def _document(response: httpx.Response) -> dict[str, Any]:
    document: dict[str, Any] = body(response)
    return document


@operation("openapi")
def openapi() -> Call[dict[str, Any]]:
    """The gateway's OpenAPI document."""
    return Call("GET", "/v1/openapi.json", _document)
