"""A typed client for the gateway's REST API (``docs/api.md``).

>>> from smithers.client import Client
>>> with Client("https://smithers.example", token) as api:        # doctest: +SKIP
...     launched = api.launch_run("hello", {"name": "ada"})
...     for event in api.follow_run(launched.run.run_id):
...         print(event.seq, event.type)

Every method is one operation of the OpenAPI document (its ``operationId`` is on the
method, see :data:`EXCLUDED` for the few a client has no use for), returns the types of
:mod:`smithers.client.types` and raises the errors of :mod:`smithers.shared.errors` for a
gateway's refusal (:mod:`smithers.client.errors`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from smithers.client.errors import GatewayUnavailable, error_from
from smithers.client.stream import EventStream
from smithers.client.types import (
    Launched,
    Ready,
    Signal,
)
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
    RunSummary,
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

F = TypeVar("F", bound=Callable[..., Any])
OPERATION_ATTR = "__smithers_operation__"
USER_AGENT = "smithers-client/1"

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
    """Mark a method as the client of one OpenAPI operation."""

    def mark(fn: F) -> F:
        setattr(fn, OPERATION_ATTR, operation_id)
        return fn

    return mark


def operations() -> dict[str, str]:
    """``{operationId: method name}`` of every :class:`Client` method that calls one."""
    found: dict[str, str] = {}
    for name in dir(Client):
        op = getattr(getattr(Client, name), OPERATION_ATTR, None)
        if op is not None:
            found[str(op)] = name
    return found


def _seg(value: str) -> str:
    """A path segment, percent-encoded (the gateway checks the id's pattern)."""
    return quote(value, safe="")


def _query(**params: Any) -> dict[str, str]:
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items() if v is not None}


class Client:
    """The gateway's REST API over one ``httpx.Client`` (connection pooling, TLS).

    ``base_url`` is the gateway's root (``https://host:8080``); ``token`` a bearer token
    (``smithers token issue``); ``verify`` a CA bundle path or False for TLS.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout_s,
            verify=verify,
            transport=transport,
            follow_redirects=False,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    # -- plumbing -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        """Send one request; a status outside ``ok`` raises its error."""
        try:
            if json is None and method == "POST":
                response = self.http.request(method, path, params=params, content=b"")
            else:
                response = self.http.request(method, path, json=json, params=params)
        except httpx.TransportError as exc:
            raise GatewayUnavailable(f"the gateway at {self.base_url} did not answer: {exc}") from None
        if response.status_code not in ok:
            raise error_from(response.status_code, response.content, response.headers.get("Retry-After"))
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise GatewayUnavailable(f"{method} {path}: the gateway's answer is not JSON") from None

    # -- runs -----------------------------------------------------------------------------

    @operation("launchRun")
    def launch_run(
        self,
        workflow: str,
        input: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        priority: int | None = None,
        budget: Mapping[str, Any] | None = None,
    ) -> Launched:
        """Launch a run; with ``run_id`` the launch is idempotent (``created`` False on a
        repeat); ``priority`` 0..9, higher first; ``budget``: spending ceilings overriding
        the workflow's (``{"tokens": N, "cost": X}``)."""
        body: dict[str, Any] = {"workflow": workflow, "input": dict(input or {})}
        if run_id is not None:
            body["run_id"] = run_id
        if priority is not None:
            body["priority"] = priority
        if budget is not None:
            body["budget"] = dict(budget)
        response = self.request("POST", "/v1/runs", json=body, ok=(200, 201))
        launched = LaunchedRun.model_validate(response.json())
        return Launched(launched, created=response.status_code == 201, warnings=launched.warnings)

    @operation("listRuns")
    def list_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        since: int | None = None,
        until: int | None = None,
        q: str | None = None,
    ) -> RunPage:
        """One page of run summaries, newest first (``next_cursor`` pages on)."""
        params = _query(
            status=status, workflow=workflow, limit=limit, cursor=cursor, since=since, until=until, q=q
        )
        return RunPage.model_validate(self._json("GET", "/v1/runs", params=params))

    def iter_runs(
        self,
        *,
        status: str | None = None,
        workflow: str | None = None,
        page_size: int = 50,
        since: int | None = None,
        until: int | None = None,
        q: str | None = None,
    ) -> Iterator[RunSummary]:
        """Every matching run summary, newest first, following ``next_cursor`` page by page."""
        cursor: str | None = None
        while True:
            page = self.list_runs(
                status=status,
                workflow=workflow,
                limit=page_size,
                cursor=cursor,
                since=since,
                until=until,
                q=q,
            )
            yield from page.runs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    @operation("getRun")
    def get_run(self, run_id: str) -> RunDetail:
        """The run with its nodes, attempts, outputs and revision."""
        return RunDetail.model_validate(self._json("GET", f"/v1/runs/{_seg(run_id)}"))

    @operation("deleteRun")
    def delete_run(self, run_id: str) -> None:
        """Delete the run and its dependent rows (``admin``); the audit entry stays."""
        self.request("DELETE", f"/v1/runs/{_seg(run_id)}", ok=(204,))

    @operation("cancelRun")
    def cancel_run(self, run_id: str) -> Run:
        """Ask for the run's cancellation (a no-op once it ended)."""
        return Run.model_validate(self._json("POST", f"/v1/runs/{_seg(run_id)}/cancel"))

    @operation("resumeRun")
    def resume_run(self, run_id: str) -> Run:
        """Reopen a failed or cancelled run under the same id."""
        return Run.model_validate(self._json("POST", f"/v1/runs/{_seg(run_id)}/resume"))

    @operation("rerunRun")
    def rerun_run(self, run_id: str, *, new_run_id: str | None = None) -> Launched:
        """A new run of the same workflow and input, its parent this one."""
        body = {"run_id": new_run_id} if new_run_id is not None else {}
        response = self.request("POST", f"/v1/runs/{_seg(run_id)}/rerun", json=body, ok=(200, 201))
        return Launched(Run.model_validate(response.json()), created=response.status_code == 201)

    @operation("migrateRun")
    def migrate_run(self, run_id: str, to: str, *, note: str | None = None) -> Migration:
        """Move the run to another revision of its workflow (``admin``)."""
        body: dict[str, Any] = {"to": to}
        if note is not None:
            body["note"] = note
        return Migration.model_validate(self._json("POST", f"/v1/runs/{_seg(run_id)}/migrate", json=body))

    # -- events ---------------------------------------------------------------------------

    @operation("runEvents")
    def follow_run(
        self,
        run_id: str,
        *,
        after_seq: int = 0,
        timeout_s: float | None = None,
        reconnect_for_s: float = 60.0,
    ) -> EventStream:
        """The run's events after ``after_seq``, as they happen, until the run ends.

        Reconnects on its own and resumes from the last seq it yielded: no gap, no
        duplicate. ``timeout_s`` stops following after that long (``end.reason`` then
        ``"deadline"``)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        return EventStream(
            self.http,
            f"/v1/runs/{_seg(run_id)}/events",
            after=after_seq,
            by="seq",
            deadline=deadline,
            reconnect_for_s=reconnect_for_s,
        )

    @operation("allEvents")
    def follow_all(
        self, *, after_feed_id: int = 0, timeout_s: float | None = None, reconnect_for_s: float = 60.0
    ) -> EventStream:
        """Every run's events in commit order after ``after_feed_id`` (``RunPage.feed_id``
        gives a starting point); never ends by itself."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        return EventStream(
            self.http,
            "/v1/events",
            after=after_feed_id,
            by="feed_id",
            deadline=deadline,
            reconnect_for_s=reconnect_for_s,
        )

    # -- approvals and reviews --------------------------------------------------------------

    @operation("listApprovals")
    def list_approvals(
        self,
        *,
        status: str | None = None,
        run_id: str | None = None,
        limit: int | None = None,
        order: str | None = None,
    ) -> list[Approval]:
        """Approvals (pending by default) with their declared context."""
        params = _query(status=status, run_id=run_id, limit=limit, order=order)
        return list(ApprovalList.model_validate(self._json("GET", "/v1/approvals", params=params)).approvals)

    @operation("approvalContext")
    def approval_context(
        self, run_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> ApprovalContext:
        """The run as its approver sees it (``approval:read`` and a pending approval of it)."""
        params = _query(after_seq=after_seq, limit=limit)
        return ApprovalContext.model_validate(
            self._json("GET", f"/v1/runs/{_seg(run_id)}/approval-context", params=params)
        )

    @operation("decideApproval")
    def decide_approval(
        self,
        run_id: str,
        node_id: str,
        approved: bool,
        *,
        note: str | None = None,
        payload: Any = None,
        iteration: int | None = None,
    ) -> Approval:
        """Approve (or deny) a pending approval as the token's subject."""
        body: dict[str, Any] = {"approved": approved}
        for key, value in (("note", note), ("payload", payload), ("iteration", iteration)):
            if value is not None:
                body[key] = value
        path = f"/v1/runs/{_seg(run_id)}/approvals/{_seg(node_id)}"
        return Approval.model_validate(self._json("POST", path, json=body))

    @operation("sendSignal")
    def send_signal(
        self, run_id: str, name: str, payload: Any = None, *, signal_id: str | None = None
    ) -> Signal:
        """Send the signal ``name`` to a run (``run:write``); with ``signal_id`` it is
        idempotent (``created`` False on a repeat with the same payload)."""
        body: dict[str, Any] = {}
        if signal_id is not None:
            body["signal_id"] = signal_id
        if payload is not None:
            body["payload"] = payload
        path = f"/v1/runs/{_seg(run_id)}/signals/{_seg(name)}"
        response = self.request("POST", path, json=body, ok=(200, 201))
        return Signal.model_validate({**response.json(), "created": response.status_code == 201})

    def approve(self, run_id: str, node_id: str, *, note: str | None = None, payload: Any = None) -> Approval:
        """:meth:`decide_approval` with ``approved=True``."""
        return self.decide_approval(run_id, node_id, True, note=note, payload=payload)

    def deny(self, run_id: str, node_id: str, *, note: str | None = None) -> Approval:
        """:meth:`decide_approval` with ``approved=False``."""
        return self.decide_approval(run_id, node_id, False, note=note)

    @operation("listSandboxes")
    def list_sandboxes(self, run_id: str, *, review_status: str | None = None) -> list[Sandbox]:
        """A run's sandboxes in creation order, with their patches and reviews."""
        params = _query(review_status=review_status)
        body = self._json("GET", f"/v1/runs/{_seg(run_id)}/sandboxes", params=params)
        return list(SandboxList.model_validate(body).sandboxes)

    @operation("reviewSandbox")
    def review_sandbox(
        self, run_id: str, sandbox_id: str, accept: bool, *, note: str | None = None
    ) -> Sandbox:
        """Accept or reject a sandbox's pending patches as the token's subject."""
        body: dict[str, Any] = {"accept": accept}
        if note is not None:
            body["note"] = note
        path = f"/v1/runs/{_seg(run_id)}/sandboxes/{_seg(sandbox_id)}/review"
        return Sandbox.model_validate(self._json("POST", path, json=body))

    # -- history ----------------------------------------------------------------------------

    @operation("runAudit")
    def audit(self, run_id: str) -> AuditTrail:
        """The run's whole audit trail in time order (also after it was deleted)."""
        return AuditTrail.model_validate(self._json("GET", f"/v1/runs/{_seg(run_id)}/audit"))

    def _travel(self, run_id: str, action: str, body: dict[str, Any]) -> TimeTravelResult:
        path = f"/v1/runs/{_seg(run_id)}/{action}"
        response = self.request("POST", path, json={**body, "confirm": True}, ok=(200, 201))
        return TimeTravelResult.model_validate(response.json())

    @operation("rewindRun")
    def rewind(self, run_id: str, node_id: str, *, item: int | None = None) -> TimeTravelResult:
        """Reopen ``node_id`` and everything downstream of it; the run resumes from there.
        With ``item``, of the map ``node_id`` only that item runs again."""
        body: dict[str, Any] = {"node_id": node_id}
        if item is not None:
            body["item"] = item
        return self._travel(run_id, "rewind", body)

    @operation("replayRun")
    def replay(self, run_id: str, node_id: str, *, new_run_id: str | None = None) -> TimeTravelResult:
        """A new run keeping this run's work upstream of ``node_id`` (same input)."""
        body: dict[str, Any] = {"node_id": node_id}
        if new_run_id is not None:
            body["run_id"] = new_run_id
        return self._travel(run_id, "replay", body)

    @operation("forkRun")
    def fork(
        self, run_id: str, node_id: str, input: Mapping[str, Any], *, new_run_id: str | None = None
    ) -> TimeTravelResult:
        """Like :meth:`replay`, with new input."""
        body: dict[str, Any] = {"node_id": node_id, "input": dict(input)}
        if new_run_id is not None:
            body["run_id"] = new_run_id
        return self._travel(run_id, "fork", body)

    # -- schedules --------------------------------------------------------------------------

    @operation("listSchedules")
    def list_schedules(self, *, workflow: str | None = None) -> list[Schedule]:
        """The declared cron schedules (of ``workflow``) with their state (``run:read``)."""
        body = self._json("GET", "/v1/schedules", params=_query(workflow=workflow))
        return list(ScheduleList.model_validate(body).schedules)

    @operation("pauseSchedule")
    def pause_schedule(self, schedule_id: str) -> Schedule:
        """Pause ``workflow:schedule_id`` (``run:write``)."""
        return Schedule.model_validate(self._json("POST", f"/v1/schedules/{_seg(schedule_id)}/pause"))

    @operation("resumeSchedule")
    def resume_schedule(self, schedule_id: str) -> Schedule:
        """Resume ``workflow:schedule_id`` from its next tick (``run:write``)."""
        return Schedule.model_validate(self._json("POST", f"/v1/schedules/{_seg(schedule_id)}/resume"))

    # -- workflows --------------------------------------------------------------------------

    @operation("listWorkflows")
    def list_workflows(self) -> list[Workflow]:
        """The workflows this deployment registered."""
        return list(WorkflowList.model_validate(self._json("GET", "/v1/workflows")).workflows)

    @operation("listRevisions")
    def list_revisions(self, workflow: str) -> RevisionList:
        """A workflow's stored revisions, oldest first, with their live holders."""
        return RevisionList.model_validate(self._json("GET", f"/v1/workflows/{_seg(workflow)}/revisions"))

    @operation("migrateWorkflow")
    def migrate_workflow(
        self, workflow: str, source: str, to: str, *, note: str | None = None
    ) -> WorkflowMigration:
        """Move every unfinished or failed run of ``workflow`` from revision ``source`` to ``to``."""
        body: dict[str, Any] = {"from": source, "to": to}
        if note is not None:
            body["note"] = note
        path = f"/v1/workflows/{_seg(workflow)}/migrate"
        return WorkflowMigration.model_validate(self._json("POST", path, json=body))

    # -- grants and the caller ----------------------------------------------------------------

    @operation("issueGrant")
    def issue_grant(
        self,
        subject: str,
        scopes: list[str] | tuple[str, ...],
        *,
        kind: str | None = None,
        ttl_s: int | None = None,
        note: str | None = None,
    ) -> IssuedGrant:
        """Issue a grant (``admin``); the token is in the answer, this once."""
        body: dict[str, Any] = {"subject": subject, "scopes": list(scopes)}
        for key, value in (("kind", kind), ("ttl_s", ttl_s), ("note", note)):
            if value is not None:
                body[key] = value
        return IssuedGrant.model_validate(self._json("POST", "/v1/grants", json=body, ok=(201,)))

    @operation("listGrants")
    def list_grants(self, *, subject: str | None = None, active_only: bool = True) -> list[Grant]:
        """Grants, newest first (``active_only=False``: revoked and expired too)."""
        params = _query(subject=subject, state="active" if active_only else "all")
        return list(GrantList.model_validate(self._json("GET", "/v1/grants", params=params)).grants)

    @operation("revokeGrant")
    def revoke_grant(self, jti: str) -> Grant:
        """Revoke a grant at once (twice is a no-op)."""
        return RevokedGrant.model_validate(self._json("POST", f"/v1/grants/{_seg(jti)}/revoke")).grant

    @operation("readSession")
    def whoami(self) -> Session:
        """Who the token names: its subject, scopes and expiry."""
        return Session.model_validate(self._json("GET", "/v1/session"))

    # -- probes -------------------------------------------------------------------------------

    @operation("healthz")
    def health(self) -> bool:
        """True when the gateway process answers."""
        return Health.model_validate(self._json("GET", "/healthz")).status == "ok"

    @operation("readyz")
    def ready(self) -> Ready:
        """Whether the store, the broker and the metrics are ready (``ready`` False on 503)."""
        response = self.request("GET", "/readyz", ok=(200, 503))
        return Ready.from_json(response.json(), ready=response.status_code == 200)

    @operation("metrics")
    def metrics(self) -> str:
        """The Prometheus text exposition."""
        return self.request("GET", "/metrics").text

    @operation("openapi")
    def openapi(self) -> dict[str, Any]:
        """The gateway's OpenAPI document."""
        document: dict[str, Any] = self._json("GET", "/v1/openapi.json")
        return document
