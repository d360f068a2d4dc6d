"""The budget half of the pure decision: park a dispatch the run's ceilings no longer
cover, and move a parked step on once its approval is decided (smithers.shared.budget).

Like the rest of the decision it performs no I/O: the run's ceilings and spending come
in the :class:`~smithers.shared.actions.RunView`, loaded before it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from smithers.shared.actions import NodeView, ParkOnBudget, SetBudget, SettleBudgetApproval
from smithers.shared.budget import BUDGET_DENIED, Budget, exceeded, raise_spec
from smithers.shared.errors import InvalidInput
from smithers.shared.status import ApprovalStatus, NodeStatus
from smithers.shared.workflow import Node

if TYPE_CHECKING:
    from smithers.shared.decision_steps import Steps


def parks(
    steps: Steps, node: Node, iteration: int, reason: str, failures: int | None, lost: int | None
) -> bool:
    """Park the dispatch of ``node`` (``reason``: start, retry, lost) if a ceiling is
    reached: the node goes ``over_budget`` (keeping its failure counts) and its approval
    asks to raise the ceilings. True when it was parked (nothing is dispatched)."""
    budget = steps.budget
    over = exceeded(budget, steps.run.spent)
    if budget is None or not over:
        return False
    spec = raise_spec(node.id, budget, steps.run.spent, over, reason)
    steps.set_node(
        node,
        iteration,
        NodeStatus.OVER_BUDGET,
        "budget.exceeded",
        payload={**spec["budget"], "reason": reason},
        failures=failures,
        lost=lost,
    )
    steps.actions.append(ParkOnBudget(node.id, iteration, spec))
    return True


def budget_decided(steps: Steps, node: Node, st: NodeView) -> None:
    """A parked step: once its approval is decided, approved sets the new ceilings (the
    payload's) and dispatches it again (parked anew if they still do not cover it);
    denied fails it with ``budget_exceeded``. Still pending but covered again (another
    step's approval raised the ceilings), its approval is settled and it is dispatched."""
    row = st.decision
    if row is None:
        return
    if row.get("status") == ApprovalStatus.PENDING:
        if not exceeded(steps.budget, steps.run.spent):  # raised meanwhile for another step
            steps.actions.append(SettleBudgetApproval(node.id, st.iteration, "the ceilings were raised"))
            steps.dispatch(node, st.iteration, str((row.get("spec") or {}).get("reason") or "start"))
        return
    if row.get("status") not in (ApprovalStatus.APPROVED, ApprovalStatus.DENIED):
        return
    by = row.get("decided_by")
    spec = row.get("spec") or {}
    if row.get("status") == ApprovalStatus.DENIED:
        error = {
            "code": BUDGET_DENIED,
            "message": f"raising the run's budget was denied by {by}",
            "note": row.get("note"),
            **({"budget": spec["budget"]} if "budget" in spec else {}),
        }
        steps.set_node(node, st.iteration, NodeStatus.FAILED, "node.failed", error=error)
        return
    current = steps.budget or Budget()
    try:
        raised = current.merged(row.get("payload") or {})
    except InvalidInput:  # checked against the schema when decided; kept as it was
        raised = current
    if raised != current:
        steps.budget = raised
        steps.actions.append(SetBudget(raised, node.id, st.iteration, by))
    steps.dispatch(node, st.iteration, str(spec.get("reason") or "start"))
