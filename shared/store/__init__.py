"""The durable store: SQLAlchemy Core on one SQLite file or PostgreSQL."""

from __future__ import annotations

from shared.store.records import (
    ApprovalRecord,
    AttemptRecord,
    EventRecord,
    NodeRecord,
    RunRecord,
)
from shared.store.store import Store
from shared.store.tx import Tx

__all__ = [
    "ApprovalRecord",
    "AttemptRecord",
    "EventRecord",
    "NodeRecord",
    "RunRecord",
    "Store",
    "Tx",
]
