"""A run's whole audit trail in time order, from every table that records it.

Run events (launch, every state change, approvals, sandbox reviews), audit-log rows
(approval and review decisions with actor and note, deletion), and time-travel audit
rows. Rows that outlive a deleted run (audit log, time travel) still appear.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from smithers.shared.store import schema as s
from smithers.shared.store.queries import events_after, get_run
from smithers.shared.store.timetravel import audit_rows


def run_trail(conn: Connection, run_id: str) -> dict[str, Any]:
    """``{"run": {...} | None, "entries": [...]}`` with entries sorted by time."""
    run = get_run(conn, run_id)
    entries: list[dict[str, Any]] = []
    for ev in events_after(conn, run_id, 0, 1_000_000):
        entries.append(
            {
                "at": ev.created_at,
                "source": "event",
                "type": ev.type,
                "seq": ev.seq,
                "node_id": ev.node_id,
                "iteration": ev.iteration,
                "detail": ev.payload,
            }
        )
    log = s.audit_log
    for row in conn.execute(select(log).where(log.c.run_id == run_id).order_by(log.c.at, log.c.id)):
        entries.append(
            {
                "at": row.at,
                "source": "audit",
                "type": row.action,
                "actor": row.actor,
                "target": f"{row.target_type}:{row.target_id}",
                "detail": row.detail,
            }
        )
    for tt in audit_rows(conn, run_id):
        entries.append(
            {
                "at": tt["started_at"],
                "source": "time_travel",
                "type": f"time_travel.{tt['action']}",
                "actor": tt["caller"],
                "status": tt["status"],
                "finished_at": tt["finished_at"],
                "detail": {"params": tt["params"], "result": tt["result"]},
            }
        )
    order = {"event": 0, "audit": 1, "time_travel": 2}
    entries.sort(key=lambda e: (e["at"], order[e["source"]], e.get("seq") or 0))
    summary = None
    if run is not None:
        summary = {
            "run_id": run.run_id,
            "workflow": run.workflow,
            "workflow_version": run.workflow_version,
            "module_revision": run.module_revision,
            "deployment_version": run.deployment_version,
            "status": run.status.value,
            "launched_by": run.launched_by,
            "parent_run_id": run.parent_run_id,
        }
    return {"run": summary, "entries": entries}
