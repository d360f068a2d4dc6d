"""Flow control in the store: admission of a queued run at its workflow's gates, and the
release of its concurrency slot in the transaction that ends it.

The rules are :mod:`smithers.shared.flow`'s; the accounting is here, in the database, so
it holds across schedulers, gateways and workers and after any crash. Every admission
and release locks its gate row (``flow_gates``, ``FOR UPDATE`` on PostgreSQL; SQLite's
write lock holds the whole database) and counts under that lock; a slot is a
``flow_slots`` row, removed with the run's terminal transition, never left to a timer.

Lock order: the run's row, then its gates (concurrency before rate); a release never
waits for another run's row (the next in line is woken with ``SKIP LOCKED``), so two
transactions cannot wait on each other through a gate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update

from smithers.shared.flow import (
    FlowPolicy,
    Waiter,
    key_value,
    may_take_slot,
    next_in_line,
    rate_record,
    rate_wait,
)
from smithers.shared.store import schema as s
from smithers.shared.store.tx import Tx

# A run waiting for a slot is also looked at again this often: a backstop for a hand-off
# wake-up that was skipped (the run was locked) and lost with Redis.
WAIT_RECHECK_S = 30.0
CONCURRENCY = "concurrency"
RATE = "rate"
WAITING = "waiting"
HELD = "held"

_g = s.flow_gates
_sl = s.flow_slots


@dataclass(frozen=True)
class Admission:
    """Whether a run may start now; if not, when to look at it again."""

    admitted: bool
    wake_at: float | None = None


def _gate(tx: Tx, workflow: str, kind: str, key: str) -> Any:
    """The gate row, created if new, locked until commit."""
    tx.execute(
        tx.dialect.insert_or_ignore(_g, ("workflow", "kind", "key")),
        {"workflow": workflow, "kind": kind, "key": key, "held": 0, "starts": None, "updated_at": tx.now},
    )
    query = select(_g.c.held, _g.c.starts).where(
        _g.c.workflow == workflow, _g.c.kind == kind, _g.c.key == key
    )
    return tx.execute(tx.dialect.lock_run(query)).one()


def _set_gate(tx: Tx, workflow: str, kind: str, key: str, **values: Any) -> None:
    tx.execute(
        update(_g)
        .where(_g.c.workflow == workflow, _g.c.kind == kind, _g.c.key == key)
        .values(updated_at=tx.now, **values)
    )


def admit(
    tx: Tx, run_id: str, workflow: str, policy: FlowPolicy, run_input: Mapping[str, Any], priority: int
) -> Admission:
    """Admit the queued run ``run_id`` (whose row ``tx`` holds) through its workflow's
    gates, or put it in line: atomic with ``tx``. Admitted, it holds a concurrency slot
    (if the workflow has a limit) and its start is counted against the rate; else it
    waits, with a ``run.throttled`` event the first time, until the time returned."""
    slot = tx.execute(select(_sl.c.state, _sl.c.since).where(_sl.c.run_id == run_id)).first()
    if slot is not None and slot.state == HELD:
        return Admission(True)
    since = slot.since if slot is not None else tx.now
    ckey = key_value(policy.concurrency_key, run_input)
    if policy.concurrency is not None:
        gate = _gate(tx, workflow, CONCURRENCY, ckey)
        rows = tx.execute(
            select(_sl.c.run_id, _sl.c.priority, _sl.c.since).where(
                _sl.c.workflow == workflow, _sl.c.key == ckey, _sl.c.state == WAITING
            )
        )
        line = [Waiter(r.run_id, r.priority, r.since) for r in rows]
        if not may_take_slot(policy.concurrency, int(gate.held), Waiter(run_id, priority, since), line):
            return _wait(tx, run_id, workflow, ckey, priority, slot, CONCURRENCY, tx.now + WAIT_RECHECK_S)
    if policy.rate is not None:
        rkey = key_value(policy.rate_key, run_input)
        rate_gate = _gate(tx, workflow, RATE, rkey)
        starts = list(rate_gate.starts or [])
        until = rate_wait(policy.rate, starts, tx.now)
        if until is not None:
            return _wait(tx, run_id, workflow, ckey, priority, slot, RATE, until)
        _set_gate(tx, workflow, RATE, rkey, starts=rate_record(policy.rate, starts, tx.now))
    if policy.concurrency is not None:
        _set_gate(tx, workflow, CONCURRENCY, ckey, held=_g.c.held + 1)
        row = {
            "run_id": run_id,
            "workflow": workflow,
            "key": ckey,
            "state": HELD,
            "priority": priority,
            "since": since,
        }
        tx.upsert(_sl, ("run_id",), row, update=("state",))
    elif slot is not None:
        tx.execute(delete(_sl).where(_sl.c.run_id == run_id))
    if slot is not None:
        tx.emit(run_id, "run.admitted", payload={"waited_s": round(tx.now - since, 3)})
    return Admission(True)


def _wait(
    tx: Tx, run_id: str, workflow: str, key: str, priority: int, slot: Any, reason: str, until: float
) -> Admission:
    if slot is None:
        row = {"run_id": run_id, "workflow": workflow, "key": key, "state": WAITING, "priority": priority}
        tx.insert(_sl, {**row, "since": tx.now})
        tx.emit(run_id, "run.throttled", payload={"reason": reason, "key": key})
    return Admission(False, until)


_SKIP_LOCKED = select(s.runs.c.run_id).with_for_update(skip_locked=True)


def release(tx: Tx, run_id: str, policy: FlowPolicy | None = None) -> None:
    """Free what the run holds at its gates (it ended, or is deleted), in ``tx``: its
    slot goes to the first in line, which is woken (its wake time set now, unless
    another transaction holds its row: that one is deciding it, and finds the slot
    free). A run that holds nothing costs one statement."""
    row = tx.execute(
        delete(_sl).where(_sl.c.run_id == run_id).returning(_sl.c.workflow, _sl.c.key, _sl.c.state)
    ).first()
    if row is None or row.state != HELD:
        return
    gate = _gate(tx, row.workflow, CONCURRENCY, row.key)
    held = max(int(gate.held) - 1, 0)
    _set_gate(tx, row.workflow, CONCURRENCY, row.key, held=held)
    limit = policy.concurrency if policy is not None and policy.concurrency is not None else held + 1
    waiting = tx.execute(
        select(_sl.c.run_id, _sl.c.priority, _sl.c.since).where(
            _sl.c.workflow == row.workflow, _sl.c.key == row.key, _sl.c.state == WAITING
        )
    )
    first = next_in_line(limit - held, [Waiter(r.run_id, r.priority, r.since) for r in waiting])
    if not first:
        return
    ids = [w.run_id for w in first]
    unlocked = _SKIP_LOCKED.where(s.runs.c.run_id.in_(ids))
    tx.execute(update(s.runs).where(s.runs.c.run_id.in_(unlocked)).values(wake_at=tx.now))
    tx.woken.update(ids)  # a Redis wake-up after commit for each


def holding(tx: Tx, workflow: str, key: str) -> int:
    """How many runs hold a concurrency slot of ``workflow`` at ``key`` (diagnostics)."""
    q = select(_g.c.held).where(_g.c.workflow == workflow, _g.c.kind == CONCURRENCY, _g.c.key == key)
    value = tx.execute(q).scalar()
    return int(value or 0)
