"""The Celery app: one thin task that decodes an attempt id and calls run_attempt.

Two ways to start a worker, one app: ``smithers worker`` builds its environment from
its options and calls :func:`start_worker`; ``celery -A smithers.workers worker`` finds
the app :func:`app_from_env` builds from the ``SMITHERS_*`` environment, and then takes
every option of Celery's own (``--pool``, ``--concurrency``, ``--autoscale``, ...).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from celery import Celery
from celery.signals import (
    celeryd_after_setup,
    celeryd_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)
from kombu import Queue

from smithers.shared import settings, tracing
from smithers.shared.broker import Broker, celery_settings
from smithers.shared.config import WorkerConfig, resolve_deployment
from smithers.shared.errors import BrokerUnavailable, InvalidInput
from smithers.shared.keys import AFTER_HEADER, QUEUES, STEP_TASK, revision_queue
from smithers.shared.logs import json_wanted, route_celery_logs, setup_logging
from smithers.shared.patching import gevent_patched
from smithers.shared.registry import Registry, load_registry
from smithers.shared.restarts import RESTART_WINDOW_S, RestartBudget
from smithers.shared.store import Store
from smithers.shared.workflow import QUEUE_NAME
from smithers.workers.holders import HOLDERS as _HOLDERS
from smithers.workers.step import WorkerEnv, run_attempt

log = logging.getLogger("smithers.worker")
POOLS = ("prefork", "threads", "gevent")


def create_app(env: WorkerEnv) -> Celery:
    """A Celery app bound to ``env`` (store, broker, workflows)."""
    tracing.configure("worker")  # only with OTEL_* set: see smithers.shared.tracing
    route_celery_logs("worker")  # Celery's own records through our handler (smithers.shared.logs)
    app = Celery("smithers", set_as_current=True)
    app.conf.update(celery_settings(env.broker.broker_url, env.config.visibility_timeout_s))
    app.conf.worker_concurrency = env.config.concurrency
    # What a worker consumes when Celery's -Q does not say (-Q adds any other queue)
    held = sorted({env.registry.get(name).revision for name in env.registry.names()})
    # (and each one's queues for the revisions held: a worker started without -Q, such as
    # Celery's in-process test worker, consumes them too)
    app.conf.task_queues = [
        Queue(name, routing_key=name)
        for q in env.config.queues
        for name in [q, *(revision_queue(q, rev) for rev in held if _plain(q))]
    ]

    @celeryd_after_setup.connect(weak=False)
    def _revision_queues(sender: Any = None, instance: Any = None, **_: Any) -> None:
        # Each queue this worker consumes (its -Q) also for every revision it holds:
        # steps of a revision reach only the workers that hold it (smithers.shared.keys).
        if instance is None or instance.app is not app:
            return
        queues = instance.app.amqp.queues
        for name in sorted(queues.consume_from or queues):
            if _plain(name):
                for revision in held:
                    queue = revision_queue(name, revision)
                    queues.select_add(Queue(queue, routing_key=queue))

    @worker_ready.connect(weak=False)
    def _announce(sender: Any = None, **_: Any) -> None:
        if sender is not None and getattr(sender, "app", app) is app:
            _HOLDERS.start(env)

    @worker_shutdown.connect(weak=False)
    def _leave(sender: Any = None, **_: Any) -> None:
        _HOLDERS.stop(env)

    @app.task(name=STEP_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True, bind=True)
    def step(self: Any, attempt_id: str) -> str:
        after = self.request.get(AFTER_HEADER)
        if not isinstance(attempt_id, str) or len(attempt_id) > 64 or not isinstance(after, int | None):
            log.error("malformed step message dropped")
            return "malformed"
        limits = self.request.timelimit or (None, None)  # (hard, soft) seconds of this message
        try:
            return run_attempt(env, attempt_id, after, time_limited=any(x is not None for x in limits))
        except Exception:
            # The message is acknowledged with the failure (a store outage, say) and its
            # attempt stays queued: a new broker epoch has a scheduler send it again once
            # the store is back, instead of after SMITHERS_REDISPATCH_AFTER.
            env.broker.forget_epoch()
            raise

    return app


def app_from_env(environ: Mapping[str, str]) -> Celery:
    """The app of ``celery -A smithers.workers``, from the ``SMITHERS_*`` environment.

    The queues are Celery's ``-Q`` (default ``steps``); a worker consuming ``sandbox``
    gets its sandbox runtime when Celery starts it. Under ``--pool gevent`` (the
    standard library already patched by Celery) the store takes a pooled connection
    per transaction instead of one per thread (psycopg 3 cooperates with gevent by itself).
    """
    setup_logging("worker", settings.LOG_LEVEL.read(environ))
    dep = resolve_deployment(environ)
    if dep.redis_url is None:
        raise BrokerUnavailable(
            "no broker: set SMITHERS_DATABASE_URL and SMITHERS_REDIS_URL (or SMITHERS_DATA_DIR"
            " of a running `smithers up`)"
        )
    registry = load_registry(dep.workflows, str(dep.project_dir) if dep.project_dir else None)
    config = WorkerConfig.from_env(environ, dep.data_dir)
    env = build_env(dep.database_url, dep.redis_url, registry, config, broker_url=dep.broker_url)

    @celeryd_init.connect(weak=False)
    def _from_options(sender: Any = None, options: dict[str, Any] | None = None, **_: Any) -> None:
        options = options or {}
        name = str(sender or "").partition("@")[0]
        if name and name != "celery":  # -n name@host: the worker's id is the name, as under `smithers worker`
            env.worker_id = name
        if env.sandbox_runner is None and "sandbox" in _queues(options.get("queues")):
            env.sandbox_runner = _sandbox_runner(env)
        concurrency = int(options.get("concurrency") or 0)
        if concurrency > env.config.concurrency:  # -c above SMITHERS_CONCURRENCY: room for its threads
            old, env.store = env.store, _open_store(env.store.url, concurrency)
            old.close()

    return create_app(env)


def _plain(queue: str) -> bool:
    """True for a queue of ours or a node's own (``gpu``), not a revision's (``steps.<12 hex>``)."""
    return queue in QUEUES or QUEUE_NAME.match(queue) is not None


def _queues(value: str | Sequence[str] | None) -> set[str]:
    items = value.split(",") if isinstance(value, str) else (value or [])
    return {q.strip() for q in items if q.strip()}


def build_env(
    database_url: str,
    redis_url: str,
    registry: Registry,
    config: WorkerConfig,
    name: str | None = None,
    broker_url: str | None = None,
) -> WorkerEnv:
    """Build a worker's environment; step messages come from ``broker_url`` (default
    the Redis URL). The store resets itself in a forked pool child (it checks its
    pid), so one environment serves the prefork, threads and gevent pools alike."""
    store = _open_store(database_url, config.concurrency)
    store.migrate()
    worker_id = name or f"{socket.gethostname()}:{os.getpid()}"
    env = WorkerEnv(store, Broker(redis_url, broker_url), registry, config, worker_id)
    if "sandbox" in config.queues:
        env.sandbox_runner = _sandbox_runner(env)
    return env


def _open_store(database_url: str, concurrency: int) -> Store:
    """The store of a worker running ``concurrency`` steps at once in a process (threads
    or greenlets; a prefork child runs one): each thread keeps a write and a read
    connection, and the heartbeat thread one more."""
    store = Store(database_url, max_connections=2 * concurrency + 4)
    if gevent_patched():
        # a greenlet per task: connections from the pool, not one per (green) thread
        store.pooled_writes = store.pooled_reads = True
    return store


def _sandbox_runner(env: WorkerEnv) -> Any:
    try:
        from smithers.workers.sandbox import make_sandbox_runner  # noqa: PLC0415 (docker SDK is optional)
    except ImportError as exc:
        log.error("sandbox queue requested but the sandbox runtime is unavailable: %s", exc)
        return None
    return make_sandbox_runner(env)


def start_worker(
    env: WorkerEnv, loglevel: str = "INFO", pool: str = "prefork", options: Sequence[str] = ()
) -> int:
    """Run a Celery worker consuming ``env.config.queues`` on ``pool`` (``prefork``,
    ``threads``, or ``gevent`` once gevent patched the standard library, before
    anything imported it: ``smithers worker --pool gevent`` patches first thing), with
    more of Celery's worker ``options`` (``--autoscale=10,2``, ...); blocks, and returns
    0 after a shutdown a signal asked for, else the exit code Celery stopped with.

    A worker that was consuming and stops on Celery's "Unrecoverable error" without
    being asked to (no shutdown signal) is started again in this process, up to
    :data:`RESTARTS_PER_MINUTE` times a minute: Celery 5.7 / kombu 5.7 can fail so
    while closing the connection a Redis restart broke (see :data:`RESTARTS_PER_MINUTE`).
    """
    if pool not in POOLS or (pool == "gevent" and not gevent_patched()):
        raise InvalidInput(
            f"pool {pool!r}: start_worker runs prefork, threads, or gevent in a process gevent patched"
        )
    app = create_app(env)
    quiet = ["--quiet"] if json_wanted(os.environ, sys.stderr) else []  # no text banner among JSON
    argv = [
        *quiet,
        "worker",
        f"--queues={','.join(env.config.queues)}",
        f"--concurrency={env.config.concurrency}",
        f"--loglevel={loglevel}",
        f"--hostname={env.worker_id}@%h",
        "--without-gossip",
        "--without-mingle",
        f"--pool={pool}",
        *options,
    ]
    asked = threading.Event()  # a shutdown signal (TERM, INT, QUIT) reached Celery
    ready = threading.Event()  # this run of the worker got as far as consuming

    @worker_shutting_down.connect(weak=False)
    def _asked(**_: Any) -> None:
        asked.set()

    @worker_ready.connect(weak=False)
    def _ready(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            ready.set()

    exits: list[int] = []  # the exit code each WorkController stopped with

    @worker_shutdown.connect(weak=False)
    def _stopped(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            exits.append(int(getattr(sender, "exitcode", None) or 0))

    restarts = RestartBudget(RESTARTS_PER_MINUTE, RESTART_WINDOW_S)
    while True:
        ready.clear()
        exits.clear()
        app.start(argv)  # returns None whatever the exit code (click 8): see _stopped
        code = exits[-1] if exits else 0
        if asked.is_set():
            return 0  # a shutdown a signal asked for (Celery gives Ctrl-C exit 1)
        if code == 0 or not ready.is_set():
            return code
        if not restarts.take(time.monotonic()):
            log.error(
                "celery worker stopped on an unrecoverable error (exit %d), %d times within a"
                " minute: exiting; a supervisor restarts it",
                code,
                RESTARTS_PER_MINUTE + 1,
            )
            return code
        log.warning(
            "celery worker stopped on an unrecoverable error (exit %d) without being asked to;"
            " starting it again in this process",
            code,
        )
        # Its delivered, unacknowledged messages may not have been given back (the error
        # is in that restore): Redis would return them after the visibility timeout. A new
        # epoch has a scheduler send their attempts again now ("Lost messages").
        env.broker.forget_epoch()


# Celery 5.7.0 with kombu 5.7.0 (the newest releases as of this writing) on Redis: when
# the connection breaks while the consumer has a BRPOP pending and a message delivered
# but not acknowledged (acks_late: a step running with a pool slot free),
# Consumer.on_connection_error_after_connected calls Connection.collect(), whose close
# of the default channel fails on the dead socket in the pending BRPOP's read, before
# the channel counts as closed; collect() then clears the transport's client. The
# Connection.close() that follows closes the channel again, now restoring the
# unacknowledged message, and kombu's Redis channel builds a connection pool from the
# cleared client: AttributeError "'NoneType' object has no attribute 'hostname'" (the
# shape of kombu issue #582), an "Unrecoverable error" on which Celery stops, with exit
# code 0 through Celery.worker_main. No setting avoids it (remote control, gossip and
# mingle are not involved); tests/integration/test_worker_restart.py meets it on
# nearly every restart of Redis.
RESTARTS_PER_MINUTE = 5
