"""Celery workers: step workers run Python steps; sandbox workers run containers."""

from __future__ import annotations

from smithers.workers.app import build_env, create_app, start_worker
from smithers.workers.step import WorkerEnv, run_attempt

__all__ = ["WorkerEnv", "build_env", "create_app", "run_attempt", "start_worker"]
