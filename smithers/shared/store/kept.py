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
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from smithers.shared.actions import Key, NodeView
from smithers.shared.status import AttemptState
from smithers.shared.store.inplace import InPlace
from smithers.shared.store.state import Loaded, load_run, read_run
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


def _live(node: NodeView) -> bool:
    return not node.status.terminal or (node.attempt is not None and node.attempt.state in _LIVE_ATTEMPTS)


def reload(tx: Tx, run_id: str, kept: Kept | None) -> Loaded | None:
    """Lock the run and read what its decision needs, as :func:`load_run` does, reading
    again only what may have changed since ``kept`` (see the module docstring); None if
    the run is gone. Without ``kept``: :func:`load_run`."""
    if kept is None:
        return load_run(tx, run_id)
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
    return Kept(loaded, tx.seq_written[run_id], frozenset({*in_place.touched, done}))
