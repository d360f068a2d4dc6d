"""Celery workers: step workers run Python steps; sandbox workers run containers.

``celery -A smithers.workers worker`` finds this package's ``celery`` attribute: the
app built from the ``SMITHERS_*`` environment on first access (this is an entry point).
"""

from __future__ import annotations

import os
from typing import Any

from smithers.workers.app import app_from_env, build_env, create_app, start_worker
from smithers.workers.step import WorkerEnv, run_attempt

__all__ = ["WorkerEnv", "app_from_env", "build_env", "create_app", "run_attempt", "start_worker"]


def __getattr__(name: str) -> Any:
    # ``app`` is the submodule smithers.workers.app, which Celery skips before ``celery``.
    if name == "celery":
        app = app_from_env(os.environ)
        globals()["celery"] = app  # built once
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
