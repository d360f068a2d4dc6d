"""The scheduler process: resolves workflow graphs and dispatches Celery tasks."""

from __future__ import annotations

from smithers.scheduler.loop import Scheduler

__all__ = ["Scheduler"]
