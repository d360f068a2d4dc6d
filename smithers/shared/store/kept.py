"""A run's view kept across the steps of a chain a worker runs in place.

A worker running a chain in place (:mod:`smithers.shared.store.inplace`) reads its run
whole at its first step's commit (:func:`~smithers.shared.store.state.load_run`). At each
later step's commit it reads, under the run's lock and in one statement, the run row and
only the node executions that may have changed since its last commit: those that commit
wrote (its step's, and every one its decision's actions named) and those still live in
the view it kept (not finished, or with an attempt queued or running: a heartbeat extends
a lease without an event). The others are taken from the kept view if the run's
``next_seq`` is what the worker's last commit left: every other change of a run appends an
event, which moves it. If it moved, the run is read whole again, in the same transaction
and under the same lock, as before.

A step's commit then fetches and maps a few rows instead of every node of the run: the
cost of the read no longer grows with the chain.

Where the decision did nothing but dispatch the step taken in place, and nothing else of
the run is live, the worker knows the run as its commit left it (the result, as
:func:`~smithers.shared.store.attempts.complete` leaves the view, and the attempt row it
inserted): the next commit reads the run row alone, locking it (one statement, one round
trip on PostgreSQL where the partial read is two). The lease of that attempt is not read
again: its worker's own heartbeat may extend it without an event, but the commit that
reads the view ends that attempt before its decision looks at it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from smithers.shared.actions import AttemptView, Dispatch, Key, NodeView
from smithers.shared.status import AttemptState, NodeStatus
from smithers.shared.store.inplace import InPlace
from smithers.shared.store.state import Loaded, load_run, read_run, run_view
from smithers.shared.store.tx import Tx

_LIVE_ATTEMPTS = frozenset({AttemptState.QUEUED, AttemptState.RUNNING})


@dataclass(frozen=True)
class Kept:
    """A run as a worker's commit left it: the view read in that commit (``loaded``),
    the run's ``next_seq`` after it (``seq``) and the node executions it wrote
    (``touched``), which are read again."""

    loaded: Loaded
    seq: int
    touched: frozenset[Key]
    whole: bool = False  # ``loaded`` is the run as the commit left it: only its row is read again


@dataclass(frozen=True)
class _Current:
    """What a commit checks of an attempt the worker inserted (a row of the whole read)."""

    attempt_id: str
    node_id: str
    iteration: int
    number: int
    state: str
    claim_token: str | None
    queue: str
    cache_key: str | None
    timeout_s: float | None


def _live(node: NodeView) -> bool:
    return not node.status.terminal or (node.attempt is not None and node.attempt.state in _LIVE_ATTEMPTS)


def reload(tx: Tx, run_id: str, kept: Kept | None) -> Loaded | None:
    """Lock the run and read what its decision needs, as :func:`load_run` does, reading
    again only what may have changed since ``kept`` (see the module docstring); None if
    the run is gone. Without ``kept``: :func:`load_run`."""
    if kept is None:
        return load_run(tx, run_id)
    if kept.whole:
        run = tx.lock_run(run_id)
        if run is None:
            return None
        if run.next_seq != kept.seq:
            return read_run(tx, run_id)
        nodes, current = dict(kept.loaded.view.nodes), dict(kept.loaded.current)
        return Loaded(run_view(run_id, run, nodes), run, current)
    view = kept.loaded.view
    names = {k[0] for k in kept.touched}
    names.update(k[0] for k, node in view.nodes.items() if _live(node))
    tx.hold_run(run_id)
    fresh = read_run(tx, run_id, names)
    if fresh is None:
        return None
    if fresh.run.next_seq != kept.seq:  # another writer changed the run: read it whole
        return read_run(tx, run_id)
    nodes = {k: node for k, node in view.nodes.items() if k[0] not in names}
    nodes.update(fresh.view.nodes)
    current = {a: r for a, r in kept.loaded.current.items() if r.node_id not in names}
    current.update(fresh.current)
    return Loaded(replace(fresh.view, nodes=nodes), fresh.run, current)


def keep(tx: Tx, run_id: str, loaded: Loaded | None, in_place: InPlace, done: Key) -> Kept | None:
    """What a worker keeps of ``run_id`` after a commit (``tx``, ended) that completed the
    step ``done``, read the run as ``loaded`` and decided it with ``in_place``; None
    where the view cannot be kept: the commit did not read the run whole or left it to
    be read again (a node held for review), a decision's action named no node execution,
    or other runs were decided with it (a parent, a child: their decisions can change
    this one too)."""
    if loaded is None or loaded.stale or in_place.touched is None or run_id not in tx.seq_written:
        return None
    if tx.decided_runs - {run_id}:
        return None
    seq, touched = tx.seq_written[run_id], frozenset({*in_place.touched, done})
    left = _as_left(loaded, in_place, done)
    return Kept(loaded, seq, touched) if left is None else Kept(left, seq, touched, whole=True)


def _as_left(loaded: Loaded, in_place: InPlace, done: Key) -> Loaded | None:
    """The run as the commit left it, if its decision did nothing but dispatch the step
    ``in_place`` took and nothing else of the run is live (see the module docstring)."""
    claim, row, actions = in_place.claim, in_place.row, in_place.actions
    if claim is None or row is None or len(actions) != 1 or not isinstance(actions[0], Dispatch):
        return None
    action: Dispatch = actions[0]
    key = (claim.node_id, claim.iteration)
    view = loaded.view
    if any(_live(node) for k, node in view.nodes.items() if k != key):
        return None
    base = view.nodes.get(key)
    if base is not None and base.decision is not None:  # a budget approval's: read with the node
        return None
    attempt = AttemptView(
        attempt_id=row["attempt_id"],
        state=AttemptState(row["state"]),
        number=row["number"],
        dispatched_at=row["dispatched_at"],
        started_at=row["started_at"],
        lease_expires_at=row["lease_expires_at"],
        deadline_at=row["deadline_at"],
        error=None,
    )
    failures = action.failures if action.failures is not None else base.failures if base else 0
    lost = action.lost if action.lost is not None else base.lost if base else 0
    node = NodeView(
        node_id=key[0],
        iteration=key[1],
        status=NodeStatus.RUNNING,
        failures=failures,
        lost=lost,
        attempt=attempt,
        next_at=None,
        current_iteration=base.current_iteration if base else 0,
        decision=None,
        error=base.error if base else None,
    )
    current: dict[str, Any] = {
        a: r for a, r in loaded.current.items() if (r.node_id, r.iteration) not in (key, done)
    }
    current[row["attempt_id"]] = _Current(
        row["attempt_id"], key[0], key[1], row["number"], row["state"], row["claim_token"],
        row["queue"], row["cache_key"], row["timeout_s"],
    )  # fmt: skip
    return Loaded(replace(view, nodes={**view.nodes, key: node}), loaded.run, current)
