"""The ``smithers`` command line."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from smithers.cli import exitcodes
from smithers.cli.follow import follow
from smithers.shared import operations
from smithers.shared.broker import Broker
from smithers.shared.config import Deployment, SchedulerConfig, WorkerConfig, resolve_deployment
from smithers.shared.datadir import find_data_dir, read_record, where_looked
from smithers.shared.errors import (
    BrokerUnavailable,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    SmithersError,
    StoreUnavailable,
)
from smithers.shared.logs import setup_logging
from smithers.shared.registry import Registry, load_registry
from smithers.shared.store import Store
from smithers.shared.store.queries import attempts_of, get_run, list_runs, nodes_of

Handler = Callable[[argparse.Namespace], int]
# Modules that add sub-commands: each defines ``register(add)`` where
# ``add(name, fn, help) -> argparse.ArgumentParser`` creates a sub-command.
EXTENSIONS = (
    "smithers.cli.commands_history",
    "smithers.cli.commands_gateway",
    "smithers.cli.commands_sandbox",
    "smithers.cli.commands_ops",
)


def _deployment(args: argparse.Namespace) -> Deployment:
    return resolve_deployment(os.environ, getattr(args, "data_dir", None))


def _looked(dep: Deployment) -> str:
    """Where the data directory came from, for the errors of a deployment not found."""
    if dep.data_dir is not None and dep.data_dir != find_data_dir(os.environ):
        return f"--data-dir {dep.data_dir}"
    return where_looked(os.environ)


def _registry(dep: Deployment, required: bool = True) -> Registry:
    """The deployment's workflows (``SMITHERS_WORKFLOWS``, else those ``smithers up``
    recorded). ``required``: no deployment at all is an error (exit 5), not an empty list."""
    if required and not dep.workflows and dep.data_dir is not None and read_record(dep.data_dir) is None:
        raise StoreUnavailable(
            f"no smithers deployment found ({_looked(dep)}) and SMITHERS_WORKFLOWS is not set;"
            " start `smithers up` in your project directory, or give its --data-dir"
        )
    return load_registry(dep.workflows, str(dep.project_dir) if dep.project_dir else None)


def _store(dep: Deployment, create: bool = False) -> Store:
    """The deployment's store, migrated. Only with ``create`` (``up``, ``migrate`` and the
    processes) may a new SQLite file be made: other commands need an existing one."""
    database = make_url(dep.database_url).database
    if not create and dep.database_url.startswith("sqlite") and database and database != ":memory:":
        path = Path(database)
        if not path.is_file():
            raise StoreUnavailable(
                f"no smithers store at {path} ({_looked(dep)}); start `smithers up` in your project"
                " directory first, or point --data-dir or SMITHERS_DATA_DIR at its data directory"
            )
    store = Store(dep.database_url)
    store.migrate()
    return store


def _broker(dep: Deployment, required: bool) -> Broker | None:
    if dep.redis_url is None:
        if required:
            where = dep.data_dir or "."
            raise BrokerUnavailable(
                f"no `smithers up` is running with data directory {where}; start it first"
                " (or set SMITHERS_DATABASE_URL and SMITHERS_REDIS_URL for a cluster)"
            )
        return None
    return Broker(dep.redis_url, dep.broker_url)


def _actor(args: argparse.Namespace) -> str:
    return getattr(args, "actor", None) or f"cli:{os.environ.get('USER', 'unknown')}"


# -- commands ---------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    dep = _deployment(args)
    registry = _registry(dep)
    run_input = operations.parse_input(args.input)
    registry.get(args.workflow)  # unknown workflow: refuse before touching anything
    if args.run_id is not None:
        from smithers.shared.store.runs import check_run_id  # noqa: PLC0415

        check_run_id(args.run_id)
    broker = _broker(dep, required=dep.embedded)
    store = _store(dep)
    run, created = operations.launch(
        store,
        broker,
        registry,
        workflow=args.workflow,
        run_input=run_input,
        run_id=args.run_id,
        launched_by=_actor(args),
        deployment_version=dep.deployment_version,
    )
    print(f"run {run.run_id} {'launched' if created else 'already exists'} ({run.workflow})", flush=True)
    if args.detach:
        return exitcodes.OK
    return follow(store, run.run_id, wait_approval=args.wait, timeout_s=args.timeout)


def cmd_watch(args: argparse.Namespace) -> int:
    store = _store(_deployment(args))
    return follow(store, args.run_id, wait_approval=args.wait, timeout_s=args.timeout)


def cmd_status(args: argparse.Namespace) -> int:
    store = _store(_deployment(args))
    with store.read() as conn:
        run = get_run(conn, args.run_id)
        if run is None:
            raise NotFound(f"run {args.run_id!r} not found")
        nodes = nodes_of(conn, args.run_id)
        attempts = attempts_of(conn, args.run_id)
    if args.json:
        print(
            json.dumps(
                {
                    "run": run.to_json(),
                    "nodes": [n.to_json() for n in nodes],
                    "attempts": [a.to_json() for a in attempts],
                },
                indent=2,
                default=str,
            )
        )
        return exitcodes.OK
    print(f"{run.run_id}  {run.workflow} v{run.workflow_version}  {run.status.value}")
    print(f"  revision {run.module_revision[:12]}  deployment {run.deployment_version}")
    for n in nodes:
        it = f"[{n.iteration}]" if n.iteration else ""
        print(f"  {n.node_id + it:<28} {n.status.value:<10} failures={n.failures}")
    if run.error:
        print(f"  error: {run.error.get('message', run.error)}")
    return exitcodes.OK


def cmd_runs(args: argparse.Namespace) -> int:
    store = _store(_deployment(args))
    with store.read() as conn:
        runs = list_runs(conn, status=args.status, workflow=args.workflow, limit=args.limit)
    for r in runs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created_at))
        print(f"{r.run_id:<28} {r.workflow:<20} {r.status.value:<10} {when}")
    return exitcodes.OK


def cmd_approve(args: argparse.Namespace) -> int:
    dep = _deployment(args)
    store = _store(dep)
    record = operations.approve(
        store,
        _broker(dep, required=False),
        args.run_id,
        args.node_id,
        approved=not args.deny,
        note=args.note,
        actor=_actor(args),
        iteration=args.iteration,
    )
    print(f"{record.node_id} of {record.run_id}: {record.status.value} by {record.decided_by}")
    return exitcodes.OK


def cmd_cancel(args: argparse.Namespace) -> int:
    dep = _deployment(args)
    run = operations.cancel(_store(dep), _broker(dep, required=False), args.run_id, _actor(args))
    print(f"run {run.run_id}: cancellation requested")
    return exitcodes.OK


def cmd_resume(args: argparse.Namespace) -> int:
    dep = _deployment(args)
    store = _store(dep)
    run = operations.resume(store, _broker(dep, required=False), args.run_id, _actor(args))
    print(f"run {run.run_id}: resumed")
    if args.detach:
        return exitcodes.OK
    return follow(store, run.run_id, wait_approval=args.wait, timeout_s=args.timeout)


def cmd_delete(args: argparse.Namespace) -> int:
    operations.delete(_store(_deployment(args)), args.run_id, _actor(args))
    print(f"run {args.run_id}: deleted")
    return exitcodes.OK


def cmd_workflows(args: argparse.Namespace) -> int:
    registry = _registry(_deployment(args))
    for name in registry.names():
        entry = registry.get(name)
        print(f"{name:<24} v{entry.workflow.version:<6} {entry.module:<28} {entry.revision[:12]}")
    return exitcodes.OK


def cmd_migrate(args: argparse.Namespace) -> int:
    store = Store(_deployment(args).database_url)
    print(f"schema version {store.migrate()}")
    return exitcodes.OK


def _stop_on_signals() -> threading.Event:
    """An event set by SIGINT, SIGTERM or SIGHUP (a closed terminal; unless ignored, as
    under nohup): the process then stops in order instead of dying mid-work."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if sig is not signal.SIGHUP or signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, lambda *_: stop.set())
    return stop


def cmd_scheduler(args: argparse.Namespace) -> int:
    from smithers.scheduler import Scheduler  # noqa: PLC0415

    dep = _deployment(args)
    setup_logging("scheduler", args.log_level)
    broker = _broker(dep, required=True)
    assert broker is not None
    store = _store(dep, create=True)
    Scheduler(store, broker, _registry(dep), SchedulerConfig.from_env(os.environ)).run_forever(
        _stop_on_signals()
    )
    return exitcodes.OK


# Default concurrency per pool: prefork one child per core (WorkerConfig); I/O-bound
# steps (waiting on a model API) want many more threads or greenlets than cores.
POOL_CONCURRENCY = {"threads": 8, "gevent": 32}


def cmd_worker(args: argparse.Namespace) -> int:
    from smithers.workers import build_env, start_worker  # noqa: PLC0415

    dep = _deployment(args)
    setup_logging("worker", args.log_level)
    if dep.redis_url is None:
        _broker(dep, required=True)
    assert dep.redis_url is not None
    config = WorkerConfig.from_env(os.environ, dep.data_dir)
    queues = tuple(q.strip() for q in args.queues.split(",") if q.strip())
    unknown = [q for q in queues if q not in ("steps", "sandbox")]
    if unknown:
        raise InvalidInput(f"unknown queue(s) {', '.join(unknown)}; use steps and/or sandbox")
    concurrency = args.concurrency or config.concurrency
    if not args.concurrency and not os.environ.get("SMITHERS_CONCURRENCY"):
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
    if args.pool == "gevent":
        # gevent patches the standard library before anything imports it: a fresh
        # interpreter running Celery's own command on the same app (smithers.workers)
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
    config = WorkerConfig(
        lease_s=config.lease_s,
        visibility_timeout_s=config.visibility_timeout_s,
        queues=queues,
        concurrency=concurrency,
        sandbox_root=config.sandbox_root,
        secrets_dir=config.secrets_dir,
    )
    env = build_env(dep.database_url, dep.redis_url, _registry(dep), config, args.name, dep.broker_url)
    start_worker(env, args.log_level, args.pool, pool_options)
    return exitcodes.OK


def cmd_up(args: argparse.Namespace) -> int:
    from smithers.cli.up import Supervisor, child_env, prepare  # noqa: PLC0415

    # `up` starts from its flags and environment alone, then records them for the others
    dep = resolve_deployment(os.environ, args.data_dir, recorded=False)
    registry = _registry(dep, required=False)
    if not len(registry):
        print("smithers up: no workflows registered; set SMITHERS_WORKFLOWS=module,module", file=sys.stderr)
    run_input = operations.parse_input(args.input) if args.run else None
    if args.run:
        registry.get(args.run)
    stop = _stop_on_signals()  # from here Ctrl-C stops everything started, quietly
    broker, dep, children = prepare(dep, args.concurrency, args.port, args.host, args.sandbox)
    sup = Supervisor(dep, child_env(dep), (dep.data_dir or Path(".")) / "logs", children)
    problems: list[str] = []

    def watch_children() -> None:
        while not stop.wait(0.5):
            problem = sup.check()
            if problem:
                problems.append(problem)
                stop.set()

    code = exitcodes.OK
    try:
        sup.start()
        print(f"smithers up: store {dep.database_url}", flush=True)
        print(
            f"smithers up: broker {dep.redis_url}; children: {', '.join(c.name for c in children)}",
            flush=True,
        )
        threading.Thread(target=watch_children, daemon=True).start()
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
        sup.stop()
        if broker is not None:
            broker.stop()


def _up_run(
    args: argparse.Namespace, dep: Deployment, registry: Registry, run_input: Any, stop: threading.Event
) -> int:
    store = Store(dep.database_url)
    broker = _broker(dep, required=True)
    run, _ = operations.launch(
        store,
        broker,
        registry,
        workflow=args.run,
        run_input=run_input,
        run_id=args.run_id,
        launched_by=_actor(args),
        deployment_version=dep.deployment_version,
    )
    print(f"run {run.run_id} launched ({run.workflow})", flush=True)
    return follow(store, run.run_id, wait_approval=args.wait, timeout_s=args.timeout, stop=stop)


# -- parser ----------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        help="embedded deployment directory (default: SMITHERS_DATA_DIR, else the nearest .smithers/"
        " with a deployment.json in the current directory or a parent, else ./.smithers)",
    )


def _follow_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true", help="keep following through approvals (no exit 3)")
    p.add_argument("--timeout", type=float, default=None, help="stop following after N seconds (exit 8)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="smithers", description="Durable workflow engine.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Handler, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        _common(p)
        p.set_defaults(fn=fn)
        return p

    p = add("up", cmd_up, "run scheduler, worker and gateway on one node (SQLite + embedded broker)")
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
    _follow_opts(p)

    p = add("run", cmd_run, "launch a run and follow it node by node")
    p.add_argument("workflow")
    p.add_argument("--input", default="{}", help="run input, a JSON object")
    p.add_argument("--run-id", default=None, help="choose the run id (makes the launch idempotent)")
    p.add_argument("--detach", action="store_true", help="print the run id and exit")
    p.add_argument("--as", dest="actor", default=None, help="launcher recorded on the run")
    _follow_opts(p)

    p = add("watch", cmd_watch, "follow a run until it settles")
    p.add_argument("run_id")
    _follow_opts(p)

    p = add("status", cmd_status, "show a run, its nodes and attempts")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")

    p = add("runs", cmd_runs, "list runs, newest first")
    p.add_argument("--status")
    p.add_argument("--workflow")
    p.add_argument("--limit", type=int, default=20)

    p = add("approve", cmd_approve, "approve (or --deny) a pending approval")
    p.add_argument("run_id")
    p.add_argument("node_id")
    p.add_argument("--deny", action="store_true")
    p.add_argument("--note", default=None)
    p.add_argument("--iteration", type=int, default=None)
    p.add_argument("--as", dest="actor", default=None, help="the deciding subject (default cli:$USER)")

    p = add("cancel", cmd_cancel, "cancel a run")
    p.add_argument("run_id")
    p = add("resume", cmd_resume, "resume a failed or cancelled run under the same id")
    p.add_argument("run_id")
    p.add_argument("--detach", action="store_true")
    _follow_opts(p)
    p = add("delete", cmd_delete, "delete a run and its dependent rows (the audit entry stays)")
    p.add_argument("run_id")
    add("workflows", cmd_workflows, "list registered workflows")
    add("migrate", cmd_migrate, "create or upgrade the store schema")
    p = add("scheduler", cmd_scheduler, "run the scheduler process")
    p.add_argument("--log-level", default="INFO")
    p = add("worker", cmd_worker, "run a Celery worker")
    p.add_argument("--queues", default="steps", help="steps, sandbox or steps,sandbox")
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
    for name in EXTENSIONS:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(add)
    return parser


_EXIT = [
    (NotFound, exitcodes.NOT_FOUND),
    (InvalidInput, exitcodes.BAD_INPUT),
    (Conflict, exitcodes.CONFLICT),
    (Forbidden, exitcodes.CONFLICT),
    (StoreUnavailable, exitcodes.UNAVAILABLE),
    (BrokerUnavailable, exitcodes.UNAVAILABLE),
]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``smithers`` console script.

    Ctrl-C ends a command with exit 130 and no traceback. A reader that goes away
    (``smithers status RUN --json | head -1``) ends it with exit 141, as a shell reports
    a command killed by SIGPIPE, and no traceback either (the recipe of the Python docs,
    "Note on SIGPIPE": stdout is pointed at /dev/null so the exit flush cannot fail).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.fn(args))
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit flush
        return code
    except SmithersError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        for cls, code in _EXIT:
            if isinstance(exc, cls):
                return code
        return exitcodes.BAD_INPUT if exc.http_status < 500 else exitcodes.UNAVAILABLE
    except KeyboardInterrupt:
        return exitcodes.INTERRUPTED
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return exitcodes.BROKEN_PIPE
