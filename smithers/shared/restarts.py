"""How often a supervised thing may be restarted: at most a few times in a window.

``smithers up`` restarts its children and embedded servers with it, and a worker its
Celery consumer (smithers.workers.app); past the budget each gives up and says so.
"""

from __future__ import annotations

from collections import deque

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0


class RestartBudget:
    """At most ``limit`` restarts within any ``window_s`` seconds."""

    def __init__(self, limit: int = MAX_RESTARTS, window_s: float = RESTART_WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self._times: deque[float] = deque()

    def take(self, now: float) -> bool:
        """Count a restart at ``now`` if the budget allows one; False when it is spent."""
        while self._times and now - self._times[0] >= self.window_s:
            self._times.popleft()
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True
