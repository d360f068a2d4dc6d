"""Approval decisions: owner checks, the payload check, the decision row, its event and
audit entry; the escalation and timeout the scheduler's decision asks for."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from smithers.shared.approval import TIMEOUT_ACTOR, check_payload
from smithers.shared.errors import Conflict, Forbidden, NotFound
from smithers.shared.status import ApprovalStatus
from smithers.shared.store import schema as s
from smithers.shared.store.records import ApprovalRecord, approval_record
from smithers.shared.store.tx import Tx

ASSERTED_VIA = "local store access"


def assertion(operator: str) -> dict[str, str]:
    """The marker of an actor asserted by ``operator`` through the store, not proven by a
    token: ``{"by": operator, "via": "local store access"}``."""
    return {"by": operator, "via": ASSERTED_VIA}


def may_decide(approval: ApprovalRecord, actor: str, now: float) -> bool:
    """Owner rule: no owner -> anyone with the scope; else the owner, or the fallback
    owner once the escalation time has passed."""
    if approval.owner is None or actor == approval.owner:
        return True
    return (
        approval.fallback_owner is not None
        and actor == approval.fallback_owner
        and approval.escalate_at is not None
        and now >= approval.escalate_at
    )


def decide(
    tx: Tx,
    run_id: str,
    node_id: str,
    iteration: int | None,
    *,
    approved: bool,
    note: str | None,
    actor: str,
    payload: Any = None,
    asserted_by: str | None = None,
) -> ApprovalRecord:
    """Record a decision on a pending approval and wake the scheduler.

    ``iteration`` None picks the pending one (the newest iteration). The decision row,
    its ``approval.decided`` event and the audit entry are one transaction. ``payload`` is
    checked against the approval's stored declaration (schema or options) first.
    ``asserted_by`` names the local operator who asserted ``actor`` without a token
    (``smithers approve --as`` with store access): the event and the audit entry say so.
    """
    if tx.lock_run(run_id) is None:
        raise NotFound(f"run {run_id!r} not found")
    ap = s.approvals
    query = select(ap).where(ap.c.run_id == run_id, ap.c.node_id == node_id)
    if iteration is not None:
        query = query.where(ap.c.iteration == iteration)
    rows = [approval_record(r) for r in tx.conn.execute(query.order_by(ap.c.iteration.desc()))]
    if not rows:
        raise NotFound(f"run {run_id!r} has no approval {node_id!r}")
    pending = [r for r in rows if r.status is ApprovalStatus.PENDING]
    if not pending:
        raise Conflict(f"approval {node_id!r} of run {run_id!r} was already decided")
    approval = pending[0]
    if not may_decide(approval, actor, tx.now):
        raise Forbidden(
            f"approval {node_id!r} belongs to {approval.owner!r}"
            + (f" (fallback {approval.fallback_owner!r} after escalation)" if approval.fallback_owner else "")
        )
    check_payload(approval.spec, approved, payload)
    status = ApprovalStatus.APPROVED if approved else ApprovalStatus.DENIED
    tx.conn.execute(
        update(ap)
        .where(
            ap.c.run_id == run_id,
            ap.c.node_id == node_id,
            ap.c.iteration == approval.iteration,
        )
        .values(status=status.value, decided_by=actor, decided_at=tx.now, note=note, payload=payload)
    )
    detail: dict[str, Any] = {"approved": approved, "note": note, "decided_by": actor}
    if payload is not None:
        detail["payload"] = payload
    if asserted_by is not None:
        detail["asserted"] = assertion(asserted_by)
    tx.emit(run_id, "approval.decided", node_id=node_id, iteration=approval.iteration, payload=detail)
    tx.audit(
        "approval.decided",
        actor=actor,
        target_type="approval",
        target_id=f"{run_id}/{node_id}/{approval.iteration}",
        run_id=run_id,
        detail=detail,
    )
    tx.wake(run_id)
    row = tx.conn.execute(
        select(ap).where(ap.c.run_id == run_id, ap.c.node_id == node_id, ap.c.iteration == approval.iteration)
    ).one()
    return approval_record(row)


def _where(run_id: str, node_id: str, iteration: int) -> Any:
    ap = s.approvals.c
    return (ap.run_id == run_id) & (ap.node_id == node_id) & (ap.iteration == iteration)


def escalate_approval(tx: Tx, run_id: str, node_id: str, iteration: int, fallback_owner: str | None) -> None:
    """Mark a pending approval escalated and emit ``approval.escalated`` (inside the
    decision's transaction, under the run's lock: at most once per approval)."""
    tx.conn.execute(update(s.approvals).where(_where(run_id, node_id, iteration)).values(escalated_at=tx.now))
    tx.emit(
        run_id,
        "approval.escalated",
        node_id=node_id,
        iteration=iteration,
        payload={"fallback_owner": fallback_owner},
    )


def expire_approval(tx: Tx, run_id: str, node_id: str, iteration: int, approved: bool, note: str) -> None:
    """Decide a pending approval by its declared default after its timeout: the row, its
    ``approval.decided`` event and the audit entry, in the decision's transaction."""
    status = ApprovalStatus.APPROVED if approved else ApprovalStatus.DENIED
    tx.conn.execute(
        update(s.approvals)
        .where(_where(run_id, node_id, iteration))
        .values(status=status.value, decided_by=TIMEOUT_ACTOR, decided_at=tx.now, note=note)
    )
    detail = {"approved": approved, "note": note, "decided_by": TIMEOUT_ACTOR, "timeout": True}
    tx.emit(run_id, "approval.decided", node_id=node_id, iteration=iteration, payload=detail)
    tx.audit(
        "approval.decided",
        actor=TIMEOUT_ACTOR,
        target_type="approval",
        target_id=f"{run_id}/{node_id}/{iteration}",
        run_id=run_id,
        detail=detail,
    )
