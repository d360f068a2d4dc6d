"""A worker's side of an attempt: claim it, heartbeat it, commit its result (fenced).

A claim hands the worker a fresh ``claim_token``. Heartbeats and the result commit
succeed only while the attempt is still running under that token and is still the
node's current attempt; anything else is refused and recorded as an event.

Short steps are claimed lazily: :func:`peek` checks, without taking the write lock,
that a delivered attempt is queued, current and not cancelled, and the worker starts
the step at once. If the step finishes within ``CLAIM_AFTER_S`` its claim and its
result are one transaction (:func:`complete` with ``token=None``, which accepts the
result only if the attempt is still queued, i.e. nobody else claimed or ended it);
otherwise the worker's heartbeat thread claims it then, with the real start time,
and from there on it is an ordinary claimed attempt with a lease. Either way the
commit is exactly-once: of two deliveries of one attempt, one commits and the other
is refused and recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from smithers.shared.keys import SANDBOX_QUEUE
from smithers.shared.status import AttemptState, NodeStatus
from smithers.shared.store import schema as s
from smithers.shared.store.engine import dialect_of
from smithers.shared.store.inplace import Claim, emit_started, start_columns
from smithers.shared.store.sandboxes import hold_for_review
from smithers.shared.store.state import Loaded, as_stored, write_output
from smithers.shared.store.tx import Tx

CLAIM_AFTER_S = 0.25  # a step still running after this is claimed (lease, deadline)
TIMEOUT_CODE = "timeout"  # the error code of an attempt that ran past its deadline

_RUN_OF = select(s.attempts.c.run_id).where(s.attempts.c.attempt_id == bindparam("b_attempt_id"))
_WITH_RUN_AND_NODE = s.attempts.join(s.runs, s.runs.c.run_id == s.attempts.c.run_id).outerjoin(
    s.nodes,
    (s.nodes.c.run_id == s.attempts.c.run_id)
    & (s.nodes.c.node_id == s.attempts.c.node_id)
    & (s.nodes.c.iteration == s.attempts.c.iteration),
)
_PEEK = (
    select(
        s.attempts,
        s.runs.c.workflow,
        s.runs.c.module_revision,
        s.runs.c.input,
        s.runs.c.cancel_requested,
        s.nodes.c.current_attempt_id,
    )
    .select_from(_WITH_RUN_AND_NODE)
    .where(s.attempts.c.attempt_id == bindparam("b_attempt_id"))
)
_LOAD = _PEEK.where(s.runs.c.run_id == bindparam("b_run_id"))  # read with the run locked
_WAKE_BY = (
    update(s.runs)
    .where(
        s.runs.c.run_id == bindparam("b_run_id"),
        (s.runs.c.wake_at.is_(None)) | (s.runs.c.wake_at > bindparam("b_at")),
    )
    .values(wake_at=bindparam("b_at"))
)


@dataclass(frozen=True)
class CacheWrite:
    """Where a successful output is cached: the policy's scope, version and expiry."""

    scope: str
    version: str
    ttl_ms: int | None
    workflow: str


def peek(conn: Connection, attempt_id: str, now: float, after: int | None = None) -> Claim | None:
    """An unclaimed :class:`Claim` if the attempt is queued, current and its run not
    cancelled (read-only, no write lock); None means "ask :func:`claim`", which
    takes over an expired lease or records why the attempt is not ours to run.

    ``after`` is the publish key of the transaction that dispatched the attempt when
    its message was sent before that transaction committed (PostgreSQL,
    :meth:`smithers.shared.store.tx.Tx.publish_key`): the read waits for the transaction to end."""
    if after is not None:
        dialect_of(conn).wait_for(conn, after)
    row = conn.execute(_PEEK, {"b_attempt_id": attempt_id}).first()  # attempt, run, node
    if row is None or row.state != AttemptState.QUEUED:
        return None
    if row.cancel_requested or row.current_attempt_id != attempt_id:
        return None
    return _claim_of(row, None, None if row.timeout_s is None else now + row.timeout_s, now)


_STANDING = (
    select(
        s.attempts.c.state, s.attempts.c.claim_token, s.runs.c.cancel_requested, s.nodes.c.current_attempt_id
    )
    .select_from(_WITH_RUN_AND_NODE)
    .where(s.attempts.c.attempt_id == bindparam("b_attempt_id"))
)


def standing(conn: Connection, attempt_id: str, token: str) -> str | None:
    """Why a running attempt we claimed (``token``) is no longer ours to run, read-only:
    ``"cancelled"`` (its run's cancel was asked for), ``"lost"`` (given up, taken over,
    ended or no longer the node's current attempt); None while it still is ours. What a
    worker's heartbeat thread asks while a step runs, to stop it early."""
    row = conn.execute(_STANDING, {"b_attempt_id": attempt_id}).first()
    if row is None:
        return "lost"
    if row.cancel_requested or row.state == AttemptState.CANCELLED:
        return "cancelled"
    ours = row.state == AttemptState.RUNNING and row.claim_token == token
    return None if ours and row.current_attempt_id == attempt_id else "lost"


_OWNER = (
    select(s.runs.c.workflow, s.runs.c.module_revision)
    .select_from(s.attempts.join(s.runs, s.runs.c.run_id == s.attempts.c.run_id))
    .where(s.attempts.c.attempt_id == bindparam("b_attempt_id"))
)


def revision_of(conn: Connection, attempt_id: str) -> tuple[str, str] | None:
    """(workflow, module revision) of the attempt's run now, or None (read-only): what a
    worker must hold to run it."""
    row = conn.execute(_OWNER, {"b_attempt_id": attempt_id}).first()
    return None if row is None else (row[0], row[1])


def claim(
    tx: Tx,
    attempt_id: str,
    worker: str,
    lease_s: float,
    started_at: float | None = None,
    run_id: str | None = None,
) -> Claim | None:
    """Take a queued attempt (or one whose lease expired); None if it is not ours to run.

    ``started_at`` is when the worker started the step, for a lazy claim (see the
    module docstring); the lease runs from now, the deadline from the start.
    ``run_id``, when the caller knows the attempt's run, saves a lookup.
    """
    loaded = _load(tx, attempt_id, run_id)
    if loaded is None:
        return None
    att, current = loaded
    takeover = (
        att.state == AttemptState.RUNNING
        and att.lease_expires_at is not None
        and att.lease_expires_at < tx.now
    )
    if not current or att.cancel_requested or not (att.state == AttemptState.QUEUED or takeover):
        tx.emit(
            att.run_id,
            "attempt.claim_refused",
            node_id=att.node_id,
            iteration=att.iteration,
            attempt_id=attempt_id,
            payload={"state": att.state, "worker": worker},
        )
        return None
    started = _start(tx, att, worker, started_at, takeover)
    values = {**started, "state": AttemptState.RUNNING.value, "lease_expires_at": tx.now + lease_s}
    tx.set(s.attempts, {"attempt_id": attempt_id}, values)
    node_key = {"run_id": att.run_id, "node_id": att.node_id, "iteration": att.iteration}
    tx.set(s.nodes, node_key, {"status": NodeStatus.RUNNING.value, "updated_at": tx.now})
    deadline = started["deadline_at"]
    # The scheduler looks again when the lease runs out (a dead worker's step is given up
    # then, not at a later sweep) or the step's time is up, whichever comes first.
    due = values["lease_expires_at"] if deadline is None else min(deadline, values["lease_expires_at"])
    tx.execute(_WAKE_BY, {"b_run_id": att.run_id, "b_at": due})
    return _claim_of(att, started["claim_token"], deadline, started["started_at"])


def _load(tx: Tx, attempt_id: str, run_id: str | None = None) -> tuple[Any, bool] | None:
    """The attempt's row joined with its run's (locked) and node's columns
    (:data:`_PEEK`), and whether it is the node's current attempt; None if either row
    is gone (or the attempt is not of ``run_id``).

    The run is locked first and the rest read after, in one joined statement: what
    the attempt and node rows say is then what holds until commit.
    """
    if run_id is None:
        row = tx.execute(_RUN_OF, {"b_attempt_id": attempt_id}).first()
        if row is None:
            return None
        run_id = str(row[0])
    tx.hold_run(run_id)
    att = tx.execute(_LOAD, {"b_attempt_id": attempt_id, "b_run_id": run_id}).first()
    if att is None:
        return None
    return att, att.current_attempt_id == attempt_id


def _start(tx: Tx, att: Any, worker: str | None, started_at: float | None, takeover: bool) -> dict[str, Any]:
    """Record that ``worker`` started the attempt (its ``attempt.started`` event); the
    attempt columns a start sets (:func:`~smithers.shared.store.inplace.start_columns`)."""
    values = start_columns(tx, att.timeout_s, worker, started_at)
    at = values["started_at"]
    emit_started(tx, att.run_id, att.node_id, att.iteration, att.attempt_id, att.number, worker, at, takeover)
    return values


def _claim_of(att: Any, token: str | None, deadline: float | None, started_at: float) -> Claim:
    """The :class:`Claim` for an attempt row joined with its run's columns (:data:`_PEEK`)."""
    return Claim(
        attempt_id=att.attempt_id,
        claim_token=token,
        run_id=att.run_id,
        workflow=att.workflow,
        module_revision=att.module_revision,
        node_id=att.node_id,
        iteration=att.iteration,
        number=att.number,
        input=att.input,
        deadline_at=deadline,
        cache_key=att.cache_key,
        started_at=started_at,
    )


def heartbeat(tx: Tx, attempt_id: str, token: str, lease_s: float) -> bool:
    """Extend the lease of a running attempt we own; False once we are fenced out."""
    where = {"attempt_id": attempt_id, "claim_token": token, "state": AttemptState.RUNNING.value}
    return tx.update(s.attempts, where, {"heartbeat_at": tx.now, "lease_expires_at": tx.now + lease_s}) == 1


def complete(
    tx: Tx,
    attempt_id: str,
    token: str | None,
    *,
    ok: bool,
    output: Any = None,
    error: dict[str, Any] | None = None,
    cache: CacheWrite | None = None,
    worker: str | None = None,
    started_at: float | None = None,
    run_id: str | None = None,
    loaded: Loaded | None = None,
) -> bool:
    """Commit an attempt's result, its output and events in one transaction.

    Succeeds only for a running attempt we own (``token``) that is still the node's
    current attempt, or, with ``token=None`` (a lazy claim: ``worker`` and
    ``started_at`` say who ran it since when), for an attempt still queued and
    current, it is then claimed and finished here; either way only while its run's
    cancel was not asked for. A failure whose error code is ``timeout`` (a step its
    worker stopped at its deadline) is recorded ``timed_out``. Otherwise the result is
    refused, an ``attempt.refused`` event records it, and False is returned. A
    sandbox attempt whose patches need review commits its output but leaves the node
    ``waiting`` (see :func:`smithers.shared.store.sandboxes.hold_for_review`). ``run_id`` is
    the attempt's run when the caller knows it (saves a lookup).

    ``loaded``: the run as :func:`~smithers.shared.store.state.load_run` read it in
    ``tx`` (locked), for a caller that decides the run next: the attempt is checked on
    it instead of being read again, and its ``view`` is left as the commit leaves the
    run (or marked stale).
    """
    a = s.attempts
    found: tuple[Any, bool] | None = _loaded_attempt(loaded, attempt_id) if loaded is not None else None
    if found is None:  # not read with the run, or not its node's current attempt: read why
        found = _load(tx, attempt_id, run_id)
    if found is None:
        return False
    att, current = found
    if token is None:
        owned = current and att.state == AttemptState.QUEUED
    else:
        owned = current and att.state == AttemptState.RUNNING and att.claim_token == token
    where = {"node_id": att.node_id, "iteration": att.iteration, "attempt_id": attempt_id}
    if not owned or att.cancel_requested:
        reason = "run cancelled" if att.cancel_requested else "fenced out"
        tx.emit(
            att.run_id,
            "attempt.refused",
            **where,
            payload={"reason": reason, "attempt_state": att.state, "ok": ok},
        )
        return False
    values: dict[str, Any] = {"finished_at": tx.now}
    if token is None:  # claimed and finished in this one transaction
        values.update(_start(tx, att, worker, started_at, takeover=False))
    if ok:
        tx.set(a, {"attempt_id": attempt_id}, {**values, "state": AttemptState.SUCCEEDED.value})
        tx.emit(att.run_id, "attempt.succeeded", **where, payload={"number": att.number})
        # A sandbox result with patches to review holds the node (output written,
        # downstream blocked) until the review is decided.
        held = att.queue == SANDBOX_QUEUE and hold_for_review(tx, att.run_id, attempt_id) is not None
        status = NodeStatus.WAITING if held else NodeStatus.SUCCEEDED
        tx.set(
            s.nodes,
            {"run_id": att.run_id, "node_id": att.node_id, "iteration": att.iteration},
            {
                "status": status.value,
                "finished_at": None if held else tx.now,
                "updated_at": tx.now,
                "error": None,
            },
        )
        write_output(tx, att.run_id, att.node_id, att.iteration, output, attempt_id)
        if cache is not None and att.cache_key and not held:
            _write_cache(tx, att.cache_key, cache, att.run_id, att.node_id, output, attempt_id)
        if not held:
            tx.emit(att.run_id, "node.succeeded", node_id=att.node_id, iteration=att.iteration)
        if loaded is not None:  # a held node's review rows are read again with it
            _after_result(loaded, att, AttemptState.SUCCEEDED, None, values)
            loaded.stale = held
    else:
        # A step its worker stopped at its deadline is timed out, as if the scheduler had.
        timed_out = (error or {}).get("code") == TIMEOUT_CODE
        state = AttemptState.TIMED_OUT if timed_out else AttemptState.FAILED
        tx.set(a, {"attempt_id": attempt_id}, {**values, "state": state.value, "error": error})
        payload = {"number": att.number, **(error or {})}
        tx.emit(att.run_id, f"attempt.{state.value}", **where, payload=payload)
        if loaded is not None:
            _after_result(loaded, att, state, error, values)
    tx.wake(att.run_id)
    return True


@dataclass(frozen=True)
class _Attempt:
    """The columns :func:`complete` reads of an attempt (what a row of :data:`_LOAD` gives)."""

    attempt_id: str
    run_id: str
    node_id: str
    iteration: int
    number: int
    state: str
    claim_token: str | None
    queue: str
    cache_key: str | None
    timeout_s: float | None
    cancel_requested: bool


def _loaded_attempt(loaded: Loaded, attempt_id: str) -> tuple[_Attempt, bool] | None:
    """The attempt as the run was read whole, if it is its node's current attempt."""
    r = loaded.current.get(attempt_id)
    if r is None:
        return None
    att = _Attempt(
        r.attempt_id, loaded.view.run_id, r.node_id, r.iteration, r.number, r.state, r.claim_token,
        r.queue, r.cache_key, r.timeout_s, bool(loaded.run.cancel_requested),
    )  # fmt: skip
    return att, True


def _after_result(
    loaded: Loaded, att: Any, state: AttemptState, error: dict[str, Any] | None, values: dict[str, Any]
) -> None:
    """Leave ``loaded.view`` as a read after :func:`complete`'s writes would give it."""
    view = loaded.view
    key = (att.node_id, att.iteration)
    node = view.nodes[key]
    assert node.attempt is not None
    attempt = replace(
        node.attempt,
        state=state,
        error=as_stored(error) if error is not None else node.attempt.error,
        started_at=values.get("started_at", node.attempt.started_at),
        deadline_at=values.get("deadline_at", node.attempt.deadline_at),
    )
    if state is AttemptState.SUCCEEDED:
        node = replace(node, status=NodeStatus.SUCCEEDED, error=None, attempt=attempt)
    else:
        node = replace(node, attempt=attempt)
    loaded.view = replace(view, nodes={**view.nodes, key: node})


def _write_cache(
    tx: Tx, key: str, cache: CacheWrite, run_id: str, node_id: str, value: Any, attempt_id: str
) -> None:
    """Insert or refresh a cache row (an expired row is replaced): one upsert, so two
    runs writing the same key at once both commit (the second waits for the first's
    row and updates it) instead of one losing its commit to a unique violation."""
    values = {
        "scope": cache.scope,
        "workflow": cache.workflow,
        "run_id": run_id,
        "node_id": node_id,
        "version": cache.version,
        "value": value,
        "created_at": tx.now,
        "attempt_id": attempt_id,
        "expires_at": None if cache.ttl_ms is None else tx.now + cache.ttl_ms / 1000,
    }
    tx.upsert(s.cache_entries, ("key",), {"key": key, **values}, update=tuple(values))
