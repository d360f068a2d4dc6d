"""Signals sent to a run: delivery (checked, idempotent by signal id, audited), the ones
a decision may take, and their consumption by a signal node.

A signal is kept whether or not the run has reached a node waiting for it; a signal
node takes the first one of its name not yet consumed, in arrival order
(:meth:`smithers.shared.decision._Decider.signal_waits`).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, select, update

from smithers.shared.actions import ConsumeSignal, SignalView
from smithers.shared.approval import validate
from smithers.shared.errors import Conflict, InvalidInput, NotFound
from smithers.shared.jsonsafe import check_json
from smithers.shared.limits import check_size
from smithers.shared.redaction import redact
from smithers.shared.status import RunStatus
from smithers.shared.store import schema as s
from smithers.shared.store.tx import Tx
from smithers.shared.workflow import Workflow

SIGNAL_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_sg = s.signals


@dataclass(frozen=True)
class SignalRecord:
    """A signal as stored (its payload redacted)."""

    run_id: str
    name: str
    signal_id: str
    payload: Any
    sender: str | None
    received_at: float
    consumed_node: str | None = None
    consumed_iteration: int | None = None
    consumed_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _record(row: Any) -> SignalRecord:
    m = row._mapping
    return SignalRecord(**{k: m[k] for k in SignalRecord.__dataclass_fields__})


def new_signal_id() -> str:
    """A fresh signal id (for a sender that chose none)."""
    return "sig-" + uuid.uuid4().hex[:24]


def check_signal_id(signal_id: str) -> str:
    """A client-chosen signal id: 1 to 128 of ``A-Z a-z 0-9 _ . : -``."""
    if not isinstance(signal_id, str) or not SIGNAL_ID.match(signal_id):
        raise InvalidInput(f"signal_id must match {SIGNAL_ID.pattern}")
    return signal_id


def deliver(
    tx: Tx,
    wf: Workflow,
    run_id: str,
    name: str,
    *,
    signal_id: str | None,
    payload: Any,
    sender: str | None,
) -> tuple[SignalRecord, bool]:
    """Keep a signal for ``run_id`` and wake the run; ``(record, created)``.

    The same ``signal_id`` again with the same payload returns the first delivery
    (``created`` False); with another name or payload it is a :class:`Conflict`. A name
    no node of ``wf`` waits for is :class:`NotFound`; the payload is bounded (the run
    input limit), checked against the node's schema, and redacted before it is stored.
    The row, its ``signal.received`` event and the audit entry (naming the sender) are
    one transaction."""
    sid = check_signal_id(signal_id) if signal_id is not None else new_signal_id()
    run = tx.lock_run(run_id)
    if run is None:
        raise NotFound(f"run {run_id!r} not found")
    node = wf.signal_node(name)
    if node is None:
        raise NotFound(f"workflow {wf.name!r} has no signal node waiting for {name!r}")
    check_json(payload, "payload")
    check_size(payload, tx.limits.input_bytes, "the signal payload")
    stored = redact(payload)
    found = tx.conn.execute(select(_sg).where(_sg.c.run_id == run_id, _sg.c.signal_id == sid)).first()
    if found is not None:
        first = _record(found)
        if first.name != name or first.payload != stored:
            raise Conflict(f"signal {sid!r} of run {run_id!r} was already sent with another name or payload")
        return first, False
    if RunStatus(run.status).terminal:
        raise Conflict(f"run {run_id!r} has ended ({run.status}); it takes no more signals")
    if node.signal_schema is not None:
        validate(node.signal_schema, payload)
    tx.conn.execute(
        _sg.insert().values(
            run_id=run_id,
            name=name,
            signal_id=sid,
            payload=stored,
            sender=sender,
            received_at=tx.now,
        )
    )
    detail = {"name": name, "signal_id": sid, "sender": sender}
    tx.emit(run_id, "signal.received", payload=detail)
    tx.audit(
        "signal.received",
        actor=sender,
        target_type="signal",
        target_id=f"{run_id}/{sid}",
        run_id=run_id,
        detail=detail,
    )
    tx.wake(run_id)
    row = tx.conn.execute(select(_sg).where(_sg.c.run_id == run_id, _sg.c.signal_id == sid)).one()
    return _record(row), True


def pending(conn: Connection, run_id: str) -> dict[str, tuple[SignalView, ...]]:
    """The run's signals no node has taken yet, per name in arrival order."""
    query = (
        select(_sg.c.signal_id, _sg.c.name, _sg.c.payload, _sg.c.sender, _sg.c.received_at)
        .where(_sg.c.run_id == run_id, _sg.c.consumed_at.is_(None))
        .order_by(_sg.c.id)
    )
    found: dict[str, list[SignalView]] = {}
    for r in conn.execute(query):
        found.setdefault(r.name, []).append(
            SignalView(r.signal_id, r.name, r.payload, r.sender, r.received_at)
        )
    return {name: tuple(items) for name, items in found.items()}


def consume(tx: Tx, run_id: str, action: ConsumeSignal) -> None:
    """Mark a signal taken by a signal node and emit ``signal.consumed`` (in the
    decision's transaction, under the run's lock)."""
    tx.conn.execute(
        update(_sg)
        .where(_sg.c.run_id == run_id, _sg.c.signal_id == action.signal_id, _sg.c.consumed_at.is_(None))
        .values(consumed_node=action.node_id, consumed_iteration=action.iteration, consumed_at=tx.now)
    )
    tx.emit(
        run_id,
        "signal.consumed",
        node_id=action.node_id,
        iteration=action.iteration,
        payload={"name": action.name, "signal_id": action.signal_id},
    )


def list_signals(conn: Connection, run_id: str) -> list[SignalRecord]:
    """Every signal of the run, in arrival order."""
    return [_record(r) for r in conn.execute(select(_sg).where(_sg.c.run_id == run_id).order_by(_sg.c.id))]
