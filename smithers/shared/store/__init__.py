"""The durable store: SQLAlchemy Core on one SQLite file or PostgreSQL."""

from __future__ import annotations

from smithers.shared.store.records import (
    ApprovalRecord,
    AttemptRecord,
    EventRecord,
    NodeRecord,
    RunRecord,
)
from smithers.shared.store.store import Store
from smithers.shared.store.tx import Tx

__all__ = [
    "ApprovalRecord",
    "AttemptRecord",
    "EventRecord",
    "NodeRecord",
    "RunRecord",
    "Store",
    "Tx",
]
