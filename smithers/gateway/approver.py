"""GET /v1/runs/{run_id}/approval-context: what an approver sees of the run they decide.

A token with ``approval:read`` but not ``run:read`` may read, of a run where it holds
a pending approval, what the decision is about: the run's summary and input, each
pending approval it holds with what its workflow declared (``spec``), the outputs of the
nodes the approval shows or, declaring none, of those it comes after, and the run's
events. It holds an approval when the approval names no owner (anyone with the scopes
decides it), or names it as the owner or the fallback owner (who decides once the
escalation time has passed: :func:`smithers.shared.store.approvals.may_decide`). Any
other run, or one that does not exist, is 403, so the answer says nothing about runs
beyond those. A token that also has ``run:read`` reads every run's pending approvals
this way (and gets 404 for a run that does not exist).
"""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint
from sqlalchemy import Connection

from smithers.gateway.apidoc import AUTH, CURSOR, PAGE, RUN_ID_PARAM, errors, param, reads
from smithers.gateway.approvals import approval_json
from smithers.gateway.auth import principal, requires
from smithers.gateway.body import check_query, check_run_id, query_int
from smithers.gateway.runs import run_summary
from smithers.gateway.services import services
from smithers.shared.api import ApprovalContext
from smithers.shared.errors import Forbidden, NotFound
from smithers.shared.grants import Scope
from smithers.shared.store import ApprovalRecord, RunRecord, revisions
from smithers.shared.store.queries import approvals as approvals_query
from smithers.shared.store.queries import events_after, get_run, outputs_for

bp = APIBlueprint("approver", __name__)
MAX_SEQ = 2**62


def holds(approval: ApprovalRecord, subject: str) -> bool:
    """Whether ``subject`` is among those who decide ``approval`` (now or after escalation)."""
    return approval.owner is None or subject in (approval.owner, approval.fallback_owner)


@bp.get("/v1/runs/<run_id>/approval-context")
@requires(Scope.APPROVAL_READ)
@bp.output(ApprovalContext, description="The run as its approver sees it.")
@bp.doc(
    summary="Read what an approver decides on",
    operation_id="approvalContext",
    description="For a token that holds a pending approval of the run (the approval names"
    " no owner, or names the token's subject as its owner or fallback owner): the run's"
    " summary and input, those pending approvals with their declaration, the outputs of"
    " the nodes each shows (or, declaring none, comes after), and the run's events in seq"
    " order, paged by `after_seq` (`next_after_seq` is the next page's). No `run:read`"
    " needed; any other run, existing or not, is 403. With `run:read` as well: every"
    " pending approval of any run (404 for a run that does not exist).",
    responses=errors(*AUTH, 404, 503),
)
@reads(
    RUN_ID_PARAM,
    param("after_seq", "query", CURSOR, "Events after this seq (default 0)."),
    param("limit", "query", PAGE, "At most this many events (default 200)."),
)
def context(run_id: str) -> ApprovalContext:
    """The run as its approver sees it; ``after_seq`` and ``limit`` page its events."""
    check_run_id(run_id)
    check_query(("after_seq", "limit"))
    svc = services()
    after = query_int("after_seq", 0, 0, MAX_SEQ) or 0
    limit = query_int("limit", svc.config.page_max, 1, svc.config.page_max) or svc.config.page_max
    caller = principal()
    reads_runs = Scope.RUN_READ in caller.scopes
    refused = Forbidden(f"you hold no pending approval on run {run_id!r} (reading it needs 'run:read')")
    with svc.store.read() as conn:
        run = get_run(conn, run_id)
        if run is None:
            raise NotFound(f"run {run_id!r} not found") if reads_runs else refused
        pending = approvals_query(conn, status="pending", run_id=run_id)
        held = [a for a in pending if reads_runs or holds(a, caller.subject)]
        if not held:
            raise refused
        upstream = _upstream(conn, run)
        outputs: dict[tuple[str, int], Any] = {}
        shown = []
        for approval in held:
            context = _outputs(conn, approval, upstream.get(approval.node_id, ()))
            outputs.update(context)
            shown.append(approval_json(approval, {node: value for (node, _), value in context.items()}))
        events = events_after(conn, run_id, after, limit + 1)
    page = events[:limit]
    summary = run_summary(run)
    summary["input"] = run.input
    return ApprovalContext.model_validate(
        {
            "run": summary,
            "approvals": shown,
            "outputs": [
                {"node_id": node, "iteration": it, "value": value}
                for (node, it), value in sorted(outputs.items())
            ],
            "events": [e.to_json() for e in page],
            "next_after_seq": page[-1].seq if len(events) > limit else None,
        }
    )


def _upstream(conn: Connection, run: RunRecord) -> dict[str, tuple[str, ...]]:
    """Each node's direct upstream nodes in the run's own revision (empty when unknown)."""
    graph = revisions.stored_graph(conn, run.workflow, run.module_revision) or {}
    return {
        str(node.get("id")): tuple(str(a) for a in node.get("after") or ())
        for node in graph.get("nodes") or ()
        if isinstance(node, dict)
    }


def _outputs(
    conn: Connection, approval: ApprovalRecord, after: tuple[str, ...]
) -> dict[tuple[str, int], Any]:
    """The outputs the approval is about: the nodes it shows, else those it comes after;
    of its own iteration where they ran in it, else of their first."""
    nodes = tuple((approval.spec or {}).get("show") or ()) or after
    stored = outputs_for(conn, approval.run_id, nodes)
    found: dict[tuple[str, int], Any] = {}
    for node in nodes:
        for key in ((node, approval.iteration), (node, 0)):
            if key in stored:
                found[key] = stored[key]
                break
    return found
