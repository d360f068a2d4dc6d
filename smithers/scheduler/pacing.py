"""Adaptive batching: how soon a run may be decided again, from its last decision's cost.

A run is decided again no sooner than :data:`BATCH_SPACING` times its last decision's
CPU cost (at most :data:`MAX_BATCH_DELAY_S`), so a wide fan-out (an expensive decision,
many completions) is decided once per batch of completions while a chain (a cheap
decision) never waits. Only expensive decisions are remembered, and only for as long as
they can delay a run, so the map stays as small as the set of wide runs decided in the
last moment, however many runs the scheduler has decided: an earlier version kept every
run's cost for a minute and, past 10,000 entries, rebuilt the map on every wake-up.
"""

from __future__ import annotations

MIN_BATCHED_COST_S = 0.005  # decisions cheaper than this are never delayed
MAX_BATCH_DELAY_S = 2.0  # past this (decisions over 0.5 s) a run takes more than a fifth
BATCH_SPACING = 4  # an expensive run is decided again after 4x its last decision's cost
PRUNE_EVERY_S = 1.0  # between passes that forget costs too old to delay anything


class Pacing:
    """When each run may next be decided (in memory, per scheduler: nothing durable)."""

    def __init__(self) -> None:
        self._not_before: dict[str, float] = {}  # run -> when it may be decided (expensive runs)
        self._deferred: dict[str, float] = {}  # runs woken too soon -> when they may be decided
        self._pruned_at = 0.0

    def __len__(self) -> int:
        return len(self._not_before)

    def decided(self, run_id: str, ended_at: float, cost_s: float) -> None:
        """``run_id`` was decided at ``ended_at`` (time.time()) for ``cost_s`` CPU seconds."""
        if cost_s > MIN_BATCHED_COST_S:
            self._not_before[run_id] = ended_at + min(BATCH_SPACING * cost_s, MAX_BATCH_DELAY_S)
        else:
            self._not_before.pop(run_id, None)

    def due(self, ids: set[str], now: float) -> list[str]:
        """Of ``ids`` and the runs deferred earlier, those that may be decided at ``now``,
        sorted; the others are deferred (:meth:`next_at`)."""
        ready: list[str] = []
        for run_id in ids | self._deferred.keys():
            not_before = self._not_before.get(run_id, 0.0)
            if now >= not_before:
                ready.append(run_id)
                self._deferred.pop(run_id, None)
            else:
                self._deferred[run_id] = not_before
        if now - self._pruned_at >= PRUNE_EVERY_S:
            # A time passed delays nothing: forget it (runs that ended, chains that
            # went cheap). Once a second, so the pass costs O(1) per decision.
            self._not_before = {k: t for k, t in self._not_before.items() if t > now}
            self._pruned_at = now
        return sorted(ready)

    def next_at(self) -> float | None:
        """The soonest time a deferred run may be decided, or None."""
        return min(self._deferred.values(), default=None)
