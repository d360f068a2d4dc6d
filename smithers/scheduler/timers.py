"""The wake times a scheduler holds in memory, so it wakes on time for each run.

A run's next wake time is in the store (``runs.wake_at``), and the sweep reads the
ones that are due. Read only at each sweep, a retry 0.2 s away or a lease about to run
out would wait for the next sweep (``SMITHERS_SWEEP_INTERVAL``); so the sweep reads a
little ahead (:data:`HORIZONS` sweep intervals), each decision tells the scheduler when
its run needs it next, and the scheduler's wait for wake-ups ends at the soonest of
them. Nothing here is durable: a scheduler that restarts finds the same times in the
store at its first sweep, and another scheduler deciding the run first only makes this
one's decision at that time a no-op.
"""

from __future__ import annotations

import heapq

HORIZONS = 2  # sweep intervals read ahead: the next sweep overlaps this one's horizon
MAX_HELD = 10_000  # past this the sweep still finds the rest, at sweep granularity


class Timers:
    """Runs due within the horizon, by wake time (one time per run)."""

    def __init__(self, horizon_s: float, max_held: int = MAX_HELD) -> None:
        self.horizon_s = horizon_s
        self.max_held = max_held
        self._at: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []  # may hold stale entries: checked against _at

    def __len__(self) -> int:
        return len(self._at)

    def hold(self, run_id: str, at: float, now: float) -> None:
        """Wake for ``run_id`` at ``at`` if that is sooner than a time held for it
        (a sweep's reading: whoever looks earlier decides the later time anew)."""
        old = self._at.get(run_id)
        if old is None or at < old:
            self._put(run_id, at, now)

    def decided(self, run_id: str, at: float | None, now: float) -> None:
        """Wake for ``run_id`` at ``at`` and no other time (a decision's own wake time;
        None: it needs no wake-up)."""
        if at is None:
            self._at.pop(run_id, None)
        else:
            self._put(run_id, at, now)

    def next_at(self) -> float | None:
        """The soonest wake time held, or None."""
        while self._heap and self._at.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> set[str]:
        """The runs whose time has come (no longer held)."""
        due: set[str] = set()
        while self._heap and self._heap[0][0] <= now:
            at, run_id = heapq.heappop(self._heap)
            if self._at.get(run_id) == at:
                del self._at[run_id]
                due.add(run_id)
        return due

    def _put(self, run_id: str, at: float, now: float) -> None:
        if at > now + self.horizon_s:
            self._at.pop(run_id, None)  # the sweep finds it nearer the time
            return
        if run_id not in self._at and len(self._at) >= self.max_held:
            return
        self._at[run_id] = at
        heapq.heappush(self._heap, (at, run_id))
        if len(self._heap) > 2 * len(self._at) + 1000:  # stale entries: rebuild
            self._heap = [(t, r) for r, t in self._at.items()]
            heapq.heapify(self._heap)
