"""The Celery app: one thin task that decodes an attempt id and calls run_attempt."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import Celery
from kombu import Queue

from smithers.shared.broker import Broker, celery_settings
from smithers.shared.config import WorkerConfig
from smithers.shared.keys import AFTER_HEADER, QUEUES, STEP_TASK
from smithers.shared.registry import Registry
from smithers.shared.store import Store
from smithers.workers.step import WorkerEnv, run_attempt

log = logging.getLogger("smithers.worker")


def _survive_broker_loss() -> None:
    """Keep the worker alive when Redis goes away while a step runs.

    With Celery 5.5-5.7 and kombu 5.7, losing the Redis connection while a message is
    unacknowledged leaves channels whose ``connection`` is already None; restoring or
    acknowledging through them raises ``AttributeError: 'NoneType' object has no
    attribute 'hostname'`` (or ``'client'``), which Celery reports as an
    "Unrecoverable error" and the worker exits instead of reconnecting (seen in
    tests/integration/test_durability.py). Raising redis' ConnectionError there instead
    turns it into the connection error Celery already knows how to ignore and recover
    from. Nothing is lost: the step's attempt lease re-dispatches it.
    """
    import redis as redis_py  # noqa: PLC0415
    from kombu.transport import redis as kombu_redis  # noqa: PLC0415

    original = kombu_redis.Channel._connparams  # type: ignore[attr-defined]
    if getattr(original, "__smithers_patched__", False):
        return

    def connparams(self: Any, asynchronous: bool = False) -> Any:
        if self.connection is None or getattr(self.connection, "client", None) is None:
            raise redis_py.exceptions.ConnectionError("the broker channel was closed")
        return original(self, asynchronous=asynchronous)

    connparams.__smithers_patched__ = True  # type: ignore[attr-defined]
    kombu_redis.Channel._connparams = connparams  # type: ignore[attr-defined]


def create_app(env: WorkerEnv) -> Celery:
    """A Celery app bound to ``env`` (store, broker, workflows)."""
    _survive_broker_loss()
    app = Celery("smithers", set_as_current=True)
    app.conf.update(celery_settings(env.broker.redis_url, env.config.visibility_timeout_s))
    app.conf.task_queues = [Queue(q, routing_key=q) for q in QUEUES]

    @app.task(name=STEP_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True, bind=True)
    def step(self: Any, attempt_id: str) -> str:
        after = self.request.get(AFTER_HEADER)
        if not isinstance(attempt_id, str) or len(attempt_id) > 64 or not isinstance(after, int | None):
            log.error("malformed step message dropped")
            return "malformed"
        return run_attempt(env, attempt_id, after)

    return app


def build_env(
    database_url: str, redis_url: str, registry: Registry, config: WorkerConfig, name: str | None = None
) -> WorkerEnv:
    """Build a worker's environment; the store is reset after every fork."""
    store = Store(database_url)
    store.migrate()
    worker_id = name or f"{socket.gethostname()}:{os.getpid()}"
    env = WorkerEnv(store, Broker(redis_url), registry, config, worker_id)
    if "sandbox" in config.queues:
        env.sandbox_runner = _sandbox_runner(env)
    return env


def _sandbox_runner(env: WorkerEnv) -> Any:
    try:
        from smithers.workers.sandbox import make_sandbox_runner  # noqa: PLC0415 (docker SDK is optional)
    except ImportError as exc:
        log.error("sandbox queue requested but the sandbox runtime is unavailable: %s", exc)
        return None
    return make_sandbox_runner(env)


def start_worker(env: WorkerEnv, loglevel: str = "INFO") -> None:
    """Run a Celery worker (prefork pool) consuming ``env.config.queues``; blocks."""
    app = create_app(env)
    argv = [
        "worker",
        f"--queues={','.join(env.config.queues)}",
        f"--concurrency={env.config.concurrency}",
        f"--loglevel={loglevel}",
        f"--hostname={env.worker_id}@%h",
        "--without-gossip",
        "--without-mingle",
        "--pool=prefork",
    ]
    app.worker_main(argv)
