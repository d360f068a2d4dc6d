"""A worker's side of an attempt: claim it, heartbeat it, commit its result (fenced).

A claim hands the worker a fresh ``claim_token``. Heartbeats and the result commit
succeed only while the attempt is still running under that token and is still the
node's current attempt; anything else is refused and recorded as an event.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from shared.status import AttemptState, NodeStatus
from shared.store import schema as s
from shared.store.state import write_output
from shared.store.tx import Tx


@dataclass(frozen=True)
class Claim:
    """What a worker needs to run a claimed attempt."""

    attempt_id: str
    claim_token: str
    run_id: str
    workflow: str
    module_revision: str
    node_id: str
    iteration: int
    number: int
    input: dict[str, Any]
    deadline_at: float | None


def claim(tx: Tx, attempt_id: str, worker: str, lease_s: float) -> Claim | None:
    """Take a queued attempt (or one whose lease expired); None if it is not ours to run."""
    a = s.attempts
    att = tx.conn.execute(select(a).where(a.c.attempt_id == attempt_id)).first()
    if att is None:
        return None
    run = tx.lock_run(att.run_id)
    if run is None:
        return None
    node = tx.conn.execute(
        select(s.nodes.c.current_attempt_id).where(
            s.nodes.c.run_id == att.run_id,
            s.nodes.c.node_id == att.node_id,
            s.nodes.c.iteration == att.iteration,
        )
    ).first()
    current = node is not None and node[0] == attempt_id
    takeover = (
        att.state == AttemptState.RUNNING
        and att.lease_expires_at is not None
        and att.lease_expires_at < tx.now
    )
    if not current or run.cancel_requested or not (att.state == AttemptState.QUEUED or takeover):
        tx.emit(
            att.run_id,
            "attempt.claim_refused",
            node_id=att.node_id,
            iteration=att.iteration,
            attempt_id=attempt_id,
            payload={"state": att.state, "worker": worker},
        )
        return None
    token = str(uuid.uuid4())
    deadline = None if att.timeout_s is None else tx.now + att.timeout_s
    tx.conn.execute(
        update(a)
        .where(a.c.attempt_id == attempt_id)
        .values(
            state=AttemptState.RUNNING.value,
            claim_token=token,
            worker=worker,
            started_at=tx.now,
            heartbeat_at=tx.now,
            lease_expires_at=tx.now + lease_s,
            deadline_at=deadline,
        )
    )
    tx.conn.execute(
        update(s.nodes)
        .where(
            s.nodes.c.run_id == att.run_id,
            s.nodes.c.node_id == att.node_id,
            s.nodes.c.iteration == att.iteration,
        )
        .values(status=NodeStatus.RUNNING.value, updated_at=tx.now)
    )
    tx.emit(
        att.run_id,
        "attempt.started",
        node_id=att.node_id,
        iteration=att.iteration,
        attempt_id=attempt_id,
        payload={"number": att.number, "worker": worker, "takeover": takeover},
    )
    return Claim(
        attempt_id=attempt_id,
        claim_token=token,
        run_id=att.run_id,
        workflow=run.workflow,
        module_revision=run.module_revision,
        node_id=att.node_id,
        iteration=att.iteration,
        number=att.number,
        input=run.input,
        deadline_at=deadline,
    )


def heartbeat(tx: Tx, attempt_id: str, token: str, lease_s: float) -> bool:
    """Extend the lease of a running attempt we own; False once we are fenced out."""
    a = s.attempts
    result = tx.conn.execute(
        update(a)
        .where(
            a.c.attempt_id == attempt_id, a.c.claim_token == token, a.c.state == AttemptState.RUNNING.value
        )
        .values(heartbeat_at=tx.now, lease_expires_at=tx.now + lease_s)
    )
    return result.rowcount == 1


def complete(
    tx: Tx,
    attempt_id: str,
    token: str,
    *,
    ok: bool,
    output: Any = None,
    error: dict[str, Any] | None = None,
) -> bool:
    """Commit an attempt's result, its output and events in one transaction.

    Succeeds only for a running attempt we own that is still the node's current
    attempt. Otherwise the result is refused, an ``attempt.refused`` event records it,
    and False is returned.
    """
    a = s.attempts
    att = tx.conn.execute(select(a).where(a.c.attempt_id == attempt_id)).first()
    if att is None:
        return False
    run = tx.lock_run(att.run_id)
    if run is None:
        return False
    node = tx.conn.execute(
        select(s.nodes.c.current_attempt_id).where(
            s.nodes.c.run_id == att.run_id,
            s.nodes.c.node_id == att.node_id,
            s.nodes.c.iteration == att.iteration,
        )
    ).first()
    owned = (
        att.state == AttemptState.RUNNING
        and att.claim_token == token
        and node is not None
        and node[0] == attempt_id
    )
    where = {"node_id": att.node_id, "iteration": att.iteration, "attempt_id": attempt_id}
    if not owned:
        tx.emit(
            att.run_id,
            "attempt.refused",
            **where,
            payload={"reason": "fenced out", "attempt_state": att.state, "ok": ok},
        )
        return False
    if ok:
        tx.conn.execute(
            update(a)
            .where(a.c.attempt_id == attempt_id)
            .values(state=AttemptState.SUCCEEDED.value, finished_at=tx.now)
        )
        tx.conn.execute(
            update(s.nodes)
            .where(
                s.nodes.c.run_id == att.run_id,
                s.nodes.c.node_id == att.node_id,
                s.nodes.c.iteration == att.iteration,
            )
            .values(status=NodeStatus.SUCCEEDED.value, finished_at=tx.now, updated_at=tx.now, error=None)
        )
        write_output(tx, att.run_id, att.node_id, att.iteration, output, attempt_id)
        tx.emit(att.run_id, "attempt.succeeded", **where, payload={"number": att.number})
        tx.emit(att.run_id, "node.succeeded", node_id=att.node_id, iteration=att.iteration)
    else:
        tx.conn.execute(
            update(a)
            .where(a.c.attempt_id == attempt_id)
            .values(state=AttemptState.FAILED.value, finished_at=tx.now, error=error)
        )
        tx.emit(att.run_id, "attempt.failed", **where, payload={"number": att.number, **(error or {})})
    tx.wake(att.run_id)
    return True
