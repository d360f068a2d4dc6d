"""Adaptive batching: when a run may be decided again, from its last decision's cost and
the completions reported since.

A run is decided again no sooner than :data:`BATCH_SPACING` times its last decision's
CPU cost, so a wide fan-out (an expensive decision, many completions) is decided once
per batch of completions while a chain (a cheap decision) never waits. Past that, a run
whose decision said how many node executions it left in flight waits for enough of
them to report (each a wake-up): as many as make the decision worth
:data:`STEP_BUDGET_S` of CPU per completion, or :data:`COMPLETED_SHARE` of those in
flight if fewer, and at most :data:`MAX_BATCH_DELAY_S` after the decision. Spacing by
time alone let a wide run take a fifth of the scheduler for as long as it lasted, so
its CPU per step grew as its steps slowed (docs/benchmarks.md, "Fan-out and fan-in by
width"); spaced by completions it is about constant per step.

Only expensive decisions are remembered, and only for as long as they can delay a run,
so the map stays as small as the set of wide runs decided in the last moment, however
many runs the scheduler has decided: an earlier version kept every run's cost for a
minute and, past 10,000 entries, rebuilt the map on every wake-up.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

MIN_BATCHED_COST_S = 0.005  # decisions cheaper than this are never delayed
MAX_BATCH_DELAY_S = 2.0  # the longest a woken run waits after its last decision
BATCH_SPACING = 4  # an expensive run is decided again no sooner than 4x its last decision's cost
STEP_BUDGET_S = 0.0005  # ... and once it has that much decision CPU per reported completion
COMPLETED_SHARE = 0.5  # ... or half of what it left in flight has reported
PRUNE_EVERY_S = 1.0  # between passes that forget costs too old to delay anything


@dataclass
class _Paced:
    earliest: float  # not before (BATCH_SPACING x cost)
    latest: float  # whatever has reported by then (MAX_BATCH_DELAY_S)
    wanted: int  # completions that make it due between the two (0: due at earliest)
    seen: int = 0  # wake-ups since the decision

    def at(self) -> float:
        return self.earliest if self.seen >= self.wanted else self.latest


class Pacing:
    """When each run may next be decided (in memory, per scheduler: nothing durable)."""

    def __init__(self) -> None:
        self._paced: dict[str, _Paced] = {}  # run -> its wait (expensive runs)
        self._deferred: dict[str, float] = {}  # runs woken too soon -> when they may be decided
        self._pruned_at = 0.0

    def __len__(self) -> int:
        return len(self._paced)

    def decided(self, run_id: str, ended_at: float, cost_s: float, in_flight: int = 0) -> None:
        """``run_id`` was decided at ``ended_at`` (time.time()) for ``cost_s`` CPU seconds,
        leaving ``in_flight`` node executions queued or running (0: not known)."""
        if cost_s <= MIN_BATCHED_COST_S:
            self._paced.pop(run_id, None)
            return
        wanted = 0
        if in_flight > 0:
            wanted = max(1, min(math.ceil(cost_s / STEP_BUDGET_S), math.ceil(in_flight * COMPLETED_SHARE)))
        earliest = ended_at + min(BATCH_SPACING * cost_s, MAX_BATCH_DELAY_S)
        self._paced[run_id] = _Paced(earliest, ended_at + MAX_BATCH_DELAY_S, wanted)

    def due(self, woken: Mapping[str, int], now: float) -> list[str]:
        """Of the runs ``woken`` (with how many wake-ups each) and those deferred earlier,
        those that may be decided at ``now``, sorted; the others are deferred
        (:meth:`next_at`)."""
        ready: list[str] = []
        for run_id in woken.keys() | self._deferred.keys():
            paced = self._paced.get(run_id)
            if paced is None:
                ready.append(run_id)
                self._deferred.pop(run_id, None)
                continue
            paced.seen += woken.get(run_id, 0)
            at = paced.at()
            if now >= at:
                ready.append(run_id)
                self._deferred.pop(run_id, None)
            else:
                self._deferred[run_id] = at
        if now - self._pruned_at >= PRUNE_EVERY_S:
            # A wait that is over delays nothing: forget it (runs that ended, chains that
            # went cheap). Once a second, so the pass costs O(1) per decision.
            self._paced = {k: p for k, p in self._paced.items() if p.latest > now}
            self._pruned_at = now
        return sorted(ready)

    def next_at(self) -> float | None:
        """The soonest time a deferred run may be decided, or None."""
        return min(self._deferred.values(), default=None)
