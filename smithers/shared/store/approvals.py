"""Approval decisions: owner checks, the decision row, its event and audit entry."""

from __future__ import annotations

from sqlalchemy import select, update

from smithers.shared.errors import Conflict, Forbidden, NotFound
from smithers.shared.status import ApprovalStatus
from smithers.shared.store import schema as s
from smithers.shared.store.records import ApprovalRecord, approval_record
from smithers.shared.store.tx import Tx


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
) -> ApprovalRecord:
    """Record a decision on a pending approval and wake the scheduler.

    ``iteration`` None picks the pending one (the newest iteration). The decision row,
    its ``approval.decided`` event and the audit entry are one transaction.
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
    status = ApprovalStatus.APPROVED if approved else ApprovalStatus.DENIED
    tx.conn.execute(
        update(ap)
        .where(
            ap.c.run_id == run_id,
            ap.c.node_id == node_id,
            ap.c.iteration == approval.iteration,
        )
        .values(status=status.value, decided_by=actor, decided_at=tx.now, note=note)
    )
    detail = {"approved": approved, "note": note, "decided_by": actor}
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
