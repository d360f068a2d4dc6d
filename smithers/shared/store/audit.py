"""Reading the audit log: grant issuance and revocation, denied requests, deletions,
approval decisions and whatever outside systems record through the control plane."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, Row, select

from smithers.shared.store import schema as s


@dataclass(frozen=True)
class AuditRecord:
    """One audit-log row; it outlives the run it names."""

    id: int
    at: float
    actor: str | None
    action: str
    target_type: str | None
    target_id: str | None
    run_id: str | None
    detail: dict[str, Any]
    count: int = 1  # like events folded onto this row (denied requests: per source, reason, interval)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def audit_record(row: Row[Any]) -> AuditRecord:
    """Map an ``audit_log`` row."""
    m = row._mapping
    return AuditRecord(
        id=int(m["id"]),
        at=m["at"],
        actor=m["actor"],
        action=m["action"],
        target_type=m["target_type"],
        target_id=m["target_id"],
        run_id=m["run_id"],
        detail=m["detail"] or {},
        count=int(m["count"] or 1),
    )


def audit_entries(
    conn: Connection,
    *,
    action: str | None = None,
    run_id: str | None = None,
    target_id: str | None = None,
    after_id: int = 0,
    limit: int = 200,
) -> list[AuditRecord]:
    """Audit rows with ``id > after_id``, oldest first, optionally filtered."""
    a = s.audit_log
    query = select(a).where(a.c.id > after_id)
    if action is not None:
        query = query.where(a.c.action == action)
    if run_id is not None:
        query = query.where(a.c.run_id == run_id)
    if target_id is not None:
        query = query.where(a.c.target_id == target_id)
    return [audit_record(row) for row in conn.execute(query.order_by(a.c.id).limit(limit))]
