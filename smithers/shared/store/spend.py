"""Spending and ceilings in the store (smithers.shared.budget): what each attempt
reported, a run's totals, a parked step's approval, and a raised ceiling.

A run's spending is summed from the ``spend`` rows of its attempts each time a decision
needs it (only for a run with ceilings), so it is the same after a resume, a retry or a
rewind: their attempts' rows stay. Cached attempts have no row; they are counted apart.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, func, literal, select, update

from smithers.shared.actions import ParkOnBudget, SetBudget, SettleBudgetApproval
from smithers.shared.budget import Budget, SpendMeter, Spent
from smithers.shared.status import ApprovalStatus
from smithers.shared.store import schema as s
from smithers.shared.store.tx import Tx

_sp = s.spend
_a = s.attempts
_TOTALS = select(
    func.coalesce(func.sum(_sp.c.tokens_in), 0),
    func.coalesce(func.sum(_sp.c.tokens_out), 0),
    func.coalesce(func.sum(_sp.c.cost), 0.0),
    func.count(),
    select(func.count())
    .select_from(_a)
    .where(_a.c.run_id == bindparam("b_run_id"), _a.c.cached.is_(True))
    .scalar_subquery(),
).where(_sp.c.run_id == bindparam("b_run_id"))


def record(tx: Tx, attempt_id: str, meter: SpendMeter) -> None:
    """Add what an attempt reported to its ``spend`` row (created on its first report),
    in the caller's transaction: the worker's commit of the attempt's result. Written
    whether the result is accepted or refused (the money is spent either way); nothing
    when the attempt is gone (its run was deleted)."""
    if not meter.reported:
        return
    source = select(
        _a.c.attempt_id,
        _a.c.run_id,
        _a.c.node_id,
        _a.c.iteration,
        literal(meter.tokens_in),
        literal(meter.tokens_out),
        literal(meter.cost),
        literal(tx.now),
    ).where(_a.c.attempt_id == attempt_id)
    columns = ["attempt_id", "run_id", "node_id", "iteration", "tokens_in", "tokens_out", "cost"]
    columns.append("reported_at")
    # one upsert: the same attempt reported before (a redelivered message ran it again)
    # adds to its row, and two such commits at once cannot both insert it
    stmt = tx.dialect.upsert(
        _sp,
        ("attempt_id",),
        lambda excluded: {
            "tokens_in": _sp.c.tokens_in + excluded.tokens_in,
            "tokens_out": _sp.c.tokens_out + excluded.tokens_out,
            "cost": _sp.c.cost + excluded.cost,
            "reported_at": excluded.reported_at,
        },
    )
    tx.conn.execute(stmt.from_select(columns, source))


def totals(conn: Connection, run_id: str) -> Spent:
    """What the run spent over all its attempts, and how many were cache hits (one query)."""
    row = conn.execute(_TOTALS, {"b_run_id": run_id}).one()
    return Spent(int(row[0]), int(row[1]), float(row[2]), int(row[3]), int(row[4] or 0))


def by_node(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    """The run's spending per node execution, in node order."""
    query = (
        select(
            _sp.c.node_id,
            _sp.c.iteration,
            func.sum(_sp.c.tokens_in),
            func.sum(_sp.c.tokens_out),
            func.sum(_sp.c.cost),
            func.count(),
        )
        .where(_sp.c.run_id == run_id)
        .group_by(_sp.c.node_id, _sp.c.iteration)
        .order_by(_sp.c.node_id, _sp.c.iteration)
    )
    return [
        {
            "node_id": r[0],
            "iteration": int(r[1]),
            "tokens_in": int(r[2]),
            "tokens_out": int(r[3]),
            "cost": float(r[4]),
            "attempts": int(r[5]),
        }
        for r in conn.execute(query)
    ]


def spending(conn: Connection, run_id: str) -> dict[str, Any]:
    """The run's ceilings, its totals and its spending per node execution (for the
    gateway and the CLI): ``{"ceilings": {...} | None, "spent": {...}, "by_node": [...]}``."""
    raw = conn.execute(select(s.runs.c.budget).where(s.runs.c.run_id == run_id)).scalar()
    ceilings = Budget.from_json(raw)
    return {
        "ceilings": None if ceilings is None else ceilings.to_json(),
        "spent": totals(conn, run_id).to_json(),
        "by_node": by_node(conn, run_id),
    }


def by_workflow(conn: Connection) -> list[tuple[str, int, int, float]]:
    """(workflow, tokens in, tokens out, cost) summed over every stored run (metrics)."""
    r = s.runs.c
    query = (
        select(r.workflow, func.sum(_sp.c.tokens_in), func.sum(_sp.c.tokens_out), func.sum(_sp.c.cost))
        .select_from(_sp.join(s.runs, s.runs.c.run_id == _sp.c.run_id))
        .group_by(r.workflow)
    )
    return [(row[0], int(row[1]), int(row[2]), float(row[3])) for row in conn.execute(query)]


BudgetAction = ParkOnBudget | SettleBudgetApproval | SetBudget
BUDGET_ACTOR = "smithers:budget"  # who settles a parked step's approval the ceilings cover again


def budget_action(tx: Tx, run_id: str, action: BudgetAction) -> None:
    """Apply a budget action of a decision (in its transaction)."""
    if isinstance(action, ParkOnBudget):
        park(tx, run_id, action)
    elif isinstance(action, SettleBudgetApproval):
        settle(tx, run_id, action)
    else:
        set_budget(tx, run_id, action)


def settle(tx: Tx, run_id: str, action: SettleBudgetApproval) -> None:
    """Decide a parked step's pending approval approved by ``smithers:budget`` (the
    ceilings cover it again), with its ``approval.decided`` event and audit entry."""
    ap = s.approvals
    tx.conn.execute(
        update(ap)
        .where(ap.c.run_id == run_id, ap.c.node_id == action.node_id, ap.c.iteration == action.iteration)
        .values(status=ApprovalStatus.APPROVED.value, decided_by=BUDGET_ACTOR, decided_at=tx.now)
        .values(note=action.note)
    )
    detail = {"approved": True, "note": action.note, "decided_by": BUDGET_ACTOR}
    tx.emit(run_id, "approval.decided", node_id=action.node_id, iteration=action.iteration, payload=detail)
    tx.audit(
        "approval.decided",
        actor=BUDGET_ACTOR,
        target_type="approval",
        target_id=f"{run_id}/{action.node_id}/{action.iteration}",
        run_id=run_id,
        detail=detail,
    )


def park(tx: Tx, run_id: str, action: ParkOnBudget) -> None:
    """Open the parked step's approval that asks to raise the ceilings: a new pending
    row, or its earlier row (a raise that was approved) made pending again (its decision
    stays in the event log and the audit trail). In the decision's transaction."""
    ap = s.approvals
    values = {
        "status": ApprovalStatus.PENDING.value,
        "owner": None,
        "fallback_owner": None,
        "escalate_at": None,
        "requested_at": tx.now,
        "decided_by": None,
        "decided_at": None,
        "note": None,
        "spec": dict(action.spec),
        "payload": None,
        "escalated_at": None,
    }
    key = {"run_id": run_id, "node_id": action.node_id, "iteration": action.iteration}
    tx.upsert(ap, tuple(key), {**key, **values}, update=tuple(values))
    tx.emit(
        run_id,
        "approval.requested",
        node_id=action.node_id,
        iteration=action.iteration,
        payload={"kind": "budget", "description": action.spec.get("description")},
    )


def set_budget(tx: Tx, run_id: str, action: SetBudget) -> None:
    """Write the run's raised ceilings and their ``budget.raised`` event."""
    tx.set_run(run_id, {"budget": action.budget.to_json()})
    tx.emit(
        run_id,
        "budget.raised",
        node_id=action.node_id,
        iteration=action.iteration,
        payload={"ceilings": action.budget.to_json(), "by": action.by},
    )
