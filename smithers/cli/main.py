"""The ``smithers`` command line."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy.engine import make_url

from smithers.cli import commands_revisions as revisions_cli
from smithers.cli import exitcodes
from smithers.cli.childproc import watch_parent
from smithers.cli.follow import follow
from smithers.cli.profiles import target
from smithers.shared import operations, settings
from smithers.shared.broker import Broker
from smithers.shared.config import Deployment, decision_config, resolve_deployment
from smithers.shared.datadir import find_data_dir, read_record, where_looked
from smithers.shared.errors import (
    BrokerUnavailable,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    SmithersError,
    StoreUnavailable,
    Unauthorized,
)
from smithers.shared.redaction import redact
from smithers.shared.registry import Registry, load_registry
from smithers.shared.store import Store
from smithers.shared.store import spend as spend_store
from smithers.shared.store.advance import Decider
from smithers.shared.store.queries import attempts_of, get_run, list_runs, nodes_of

Handler = Callable[[argparse.Namespace], int]
# The sub-commands other modules add, by module and in the order ``smithers --help``
# lists them, with their help. Each module defines ``register(add)``, where
# ``add(name, fn) -> argparse.ArgumentParser`` creates one of its sub-commands (its help
# from here), and is imported only when one of its commands runs: ``smithers --help``
# lists them all from this table alone (tests/unit/test_cli_commands.py checks that each
# module adds exactly these).
COMMANDS: dict[str, dict[str, str]] = {
    "smithers.cli.commands_processes": {
        "up": "run scheduler, worker and gateway on one node (SQLite + embedded broker)",
        "scheduler": "run the scheduler process",
        "worker": "run a Celery worker",
    },
    "smithers.cli.commands_history": {
        "rewind": "reopen a node and everything downstream of it; the run resumes from there",
        "replay": "a new run from this run's state up to a node (same input)",
        "fork": "a new run from this run's state up to a node, with new input",
        "audit": "a run's whole audit trail in time order",
        "db": "back up or restore the store (SQLite online backup, pg_dump/pg_restore), or prune old runs",
    },
    "smithers.cli.commands_gateway": {
        "gateway": "serve the REST API and event streams (gunicorn)",
        "token": "issue, revoke and list bearer grants",
    },
    "smithers.cli.commands_sandbox": {
        "sandboxes": "list a run's sandboxes, their patches and reviews",
        "review": "accept or reject the patches of a sandbox step",
    },
    "smithers.cli.commands_ops": {
        "config": "the SMITHERS_* settings: each one's value here, or its default",
        "flower": "Celery Flower on the deployment's queues and workers (basic auth)",
        "metrics": "Prometheus metrics from the store and the queues (print, or --port)",
    },
    "smithers.cli.commands_revisions": {
        "revisions": "list a workflow's stored revisions and the live processes holding each",
    },
    "smithers.cli.approvals": {
        "approvals": "list approvals (pending by default), oldest request first",
        "deny": "deny a pending approval (as `approve --deny`)",
    },
    "smithers.cli.commands_login": {
        "login": "keep a gateway URL and token as a named profile (remote command line)",
        "logout": "forget a saved gateway profile",
    },
    "smithers.cli.commands_schedules": {
        "schedules": "list cron schedules, or pause / resume one (WORKFLOW:SCHEDULE_ID)",
    },
}


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


def decider(registry: Registry) -> Decider:
    """This command's decider: a launch makes the run's first decision itself."""
    return Decider(registry, decision_config(os.environ), settings.DECIDE_MAX_NODES.read(os.environ))


def _operator() -> str:
    """The local user running this command, as an actor: ``cli:$USER``."""
    return f"cli:{os.environ.get('USER', 'unknown')}"


def _actor(args: argparse.Namespace) -> str:
    return getattr(args, "actor", None) or _operator()


def asserted_by(args: argparse.Namespace) -> str | None:
    """The local operator who asserted another actor with ``--as`` (no token proves it),
    or None. Decisions record it in their event and audit entry (``asserted``)."""
    return _operator() if getattr(args, "actor", None) else None


def _record_assertion(args: argparse.Namespace) -> None:
    """One audit entry ``actor.asserted`` for a local command run ``--as`` someone: who
    ran it, whom it named, through what (the store, not a token)."""
    from smithers.shared.grants import TtlPolicy  # noqa: PLC0415
    from smithers.shared.store.approvals import assertion  # noqa: PLC0415
    from smithers.shared.store.grants import ControlPlaneStore  # noqa: PLC0415

    store = _store(_deployment(args))
    run_id = getattr(args, "run_id", None)
    try:
        ControlPlaneStore(store, TtlPolicy.from_env(os.environ)).record_event(
            "actor.asserted",
            actor=_operator(),
            target_type="command",
            target_id=str(args.command),
            run_id=run_id if isinstance(run_id, str) else None,
            detail={
                "command": str(args.command),
                "asserted_actor": str(args.actor),
                **assertion(_operator()),
            },
        )
    finally:
        store.close()


# -- commands ---------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    dep = _deployment(args)
    registry = _registry(dep)
    run_input = operations.parse_input(args.input)
    budget = operations.parse_budget(args.budget)
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
        decider=decider(registry),
        priority=args.priority,
        budget=budget,
    )
    print(f"run {run.run_id} {'launched' if created else 'already exists'} ({run.workflow})", flush=True)
    warning = (
        revisions_cli.launch_warning(store, registry, args.workflow) if not run.status.terminal else None
    )
    if warning is not None:
        print(f"warning: {warning['message']}", file=sys.stderr)
        return exitcodes.NO_HOLDER
    if args.detach:
        return exitcodes.OK
    return follow(store, run.run_id, wait_approval=args.wait, timeout_s=args.timeout)


def cmd_watch(args: argparse.Namespace) -> int:
    store = _store(_deployment(args))
    if args.after_seq:
        with store.read() as conn:
            run = get_run(conn, args.run_id)
        if run is not None and args.after_seq > run.last_seq:
            raise InvalidInput(
                f"--after-seq {args.after_seq} is beyond the run's last event ({run.last_seq})"
            )
    return follow(store, args.run_id, wait_approval=args.wait, timeout_s=args.timeout, after=args.after_seq)


def cmd_status(args: argparse.Namespace) -> int:
    store = _store(_deployment(args))
    with store.read() as conn:
        run = get_run(conn, args.run_id)
        if run is None:
            raise NotFound(f"run {args.run_id!r} not found")
        nodes = nodes_of(conn, args.run_id)
        attempts = attempts_of(conn, args.run_id)
        spending = spend_store.spending(conn, args.run_id)
    report = revisions_cli.revision_report(store, run)
    if args.json:
        print(
            json.dumps(
                {
                    "run": run.to_json(),
                    "revision": report,
                    "nodes": [n.to_json() for n in nodes],
                    "attempts": [a.to_json() for a in attempts],
                    "spending": spending,
                },
                indent=2,
                default=str,
            )
        )
        return exitcodes.OK
    print(f"{run.run_id}  {run.workflow} v{run.workflow_version}  {run.status.value}")
    print(f"  revision {run.module_revision[:12]}  deployment {run.deployment_version}")
    for line in revisions_cli.status_lines(report, run):
        print(line)
    ran = {a.attempt_id: a.revision for a in attempts}
    for n in nodes:
        it = f"[{n.iteration}]" if n.iteration else ""
        rev = ran.get(n.current_attempt_id or "")
        on = f"  revision {rev[:12]}" if rev else ""
        print(f"  {n.node_id + it:<28} {n.status.value:<10} failures={n.failures}{on}")
    spent, ceilings = spending["spent"], spending["ceilings"] or {}
    if spent["attempts"] or ceilings:
        limit = ", ".join(f"{k} {v}" for k, v in ceilings.items() if v is not None) or "none"
        print(f"  spent {spent['tokens']} tokens, cost {spent['cost']:g}  (ceilings: {limit})")
    if run.error:
        print(f"  error: {run.error.get('message', run.error)}")
    return exitcodes.OK


def cmd_runs(args: argparse.Namespace) -> int:
    store = _store(_deployment(args))
    if args.action == "migrate":
        return revisions_cli.cmd_runs_migrate(args, store, _actor(args))
    if args.run_id is not None:
        raise InvalidInput("`smithers runs` lists runs; `smithers runs migrate RUN --to REV` moves one")
    with store.read() as conn:
        runs = list_runs(conn, status=args.status, workflow=args.workflow, limit=args.limit)
    for r in runs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created_at))
        print(f"{r.run_id:<28} {r.workflow:<20} {r.status.value:<10} {when}  {r.module_revision[:12]}")
    return exitcodes.OK


def cmd_approve(args: argparse.Namespace) -> int:
    from smithers.cli.approvals import parse_payload  # noqa: PLC0415

    payload = parse_payload(args.payload)
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
        payload=redact(payload),
        asserted_by=asserted_by(args),
    )
    asserted = " (asserted with --as by a local operator)" if asserted_by(args) else ""
    print(f"{record.node_id} of {record.run_id}: {record.status.value} by {record.decided_by}{asserted}")
    return exitcodes.OK


def cmd_signal(args: argparse.Namespace) -> int:
    from smithers.cli.approvals import parse_payload, signal_line  # noqa: PLC0415

    payload = parse_payload(args.payload)
    dep = _deployment(args)
    store = _store(dep)
    record, created = operations.signal(
        store,
        _broker(dep, required=False),
        _registry(dep, required=False),
        args.run_id,
        args.name,
        signal_id=args.signal_id,
        payload=payload,
        sender=_actor(args),
    )
    print(signal_line(record.run_id, record.name, record.signal_id, record.sender, created))
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


def cmd_rerun(args: argparse.Namespace) -> int:
    dep = _deployment(args)
    store = _store(dep)
    run, created = operations.rerun(
        store,
        _broker(dep, required=dep.embedded),
        _registry(dep),
        args.run_id,
        rerun_id=args.new_run_id,
        launched_by=_actor(args),
        deployment_version=dep.deployment_version,
    )
    verb = "launched" if created else "already exists"
    print(f"run {run.run_id} {verb} ({run.workflow}, a rerun of {args.run_id})", flush=True)
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


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser of every sub-command. Given the command line ``argv``, only
    the module of the command it names is imported; every other command of
    :data:`COMMANDS` is there by name and help alone (enough for ``smithers --help``)."""
    parser = argparse.ArgumentParser(prog="smithers", description="Durable workflow engine.")
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {name: text for commands in COMMANDS.values() for name, text in commands.items()}

    def add(name: str, fn: Handler, help: str | None = None) -> argparse.ArgumentParser:
        text = help if help is not None else helps[name]
        p = sub.add_parser(name, help=text, description=text)
        _common(p)
        p.set_defaults(fn=fn)
        return p

    p = add("run", cmd_run, "launch a run and follow it node by node")
    p.add_argument("workflow")
    p.add_argument("--input", default="{}", help="run input, a JSON object")
    p.add_argument("--run-id", default=None, help="choose the run id (makes the launch idempotent)")
    p.add_argument("--priority", type=int, default=None, help="0..9, higher first (default 0)")
    p.add_argument(
        "--budget",
        default=None,
        help='spending ceilings overriding the workflow\'s, a JSON object: {"tokens": N, "cost": X}',
    )
    p.add_argument("--detach", action="store_true", help="print the run id and exit")
    p.add_argument("--as", dest="actor", default=None, help="launcher recorded on the run")
    _follow_opts(p)

    p = add("watch", cmd_watch, "follow a run until it settles")
    p.add_argument("run_id")
    p.add_argument(
        "--after-seq", type=int, default=0, metavar="N", help="resume after event N (the last seq you saw)"
    )
    _follow_opts(p)

    p = add("status", cmd_status, "show a run, its nodes and attempts")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")

    p = add("runs", cmd_runs, "list runs, newest first; `runs migrate` moves runs to another revision")
    p.add_argument("action", nargs="?", choices=("list", "migrate"), default="list")
    p.add_argument("run_id", nargs="?", default=None, help="migrate: the run to move")
    p.add_argument("--status")
    p.add_argument("--workflow", help="list: only this workflow's; migrate: every run of it --from REV")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--to", default=None, help="migrate: the target revision (hash or 8+ hex prefix)")
    p.add_argument(
        "--from", dest="source", default=None, help="migrate --workflow: the revision to move from"
    )
    p.add_argument("--note", default=None, help="migrate: why (kept in the audit row)")
    p.add_argument("--as", dest="actor", default=None, help="migrate: the actor recorded (default cli:$USER)")

    p = add("approve", cmd_approve, "approve (or --deny) a pending approval")
    p.add_argument("run_id")
    p.add_argument("node_id")
    p.add_argument("--deny", action="store_true")
    p.add_argument("--note", default=None)
    p.add_argument("--iteration", type=int, default=None)
    p.add_argument("--payload", default=None, help="the decision's payload (JSON), as the approval declares")
    p.add_argument(
        "--as",
        dest="actor",
        default=None,
        help="local mode only: the deciding subject, recorded as asserted by you (cli:$USER) with store"
        " access; remotely the token's subject decides",
    )

    p = add("signal", cmd_signal, "send a signal to a run (a signal node waiting for NAME takes it)")
    p.add_argument("run_id")
    p.add_argument("name")
    p.add_argument(
        "--id", dest="signal_id", default=None, help="the signal's id: the same id again is not sent twice"
    )
    p.add_argument(
        "--payload", default=None, help="the signal's payload (JSON), as the node's schema declares"
    )
    p.add_argument(
        "--as", dest="actor", default=None, help="local mode only: the sender recorded (default cli:$USER)"
    )

    p = add("cancel", cmd_cancel, "cancel a run")
    p.add_argument("run_id")
    p = add("resume", cmd_resume, "resume a failed or cancelled run under the same id")
    p.add_argument("run_id")
    p.add_argument("--detach", action="store_true")
    _follow_opts(p)
    p = add("rerun", cmd_rerun, "a new run of the same workflow with the same input (its parent this run)")
    p.add_argument("run_id")
    p.add_argument("--run-id", dest="new_run_id", default=None, help="choose the new run's id (idempotent)")
    p.add_argument("--detach", action="store_true")
    p.add_argument("--as", dest="actor", default=None, help="local mode: the launcher recorded, asserted")
    _follow_opts(p)
    p = add("delete", cmd_delete, "delete a run and its dependent rows (the audit entry stays)")
    p.add_argument("run_id")
    add("workflows", cmd_workflows, "list registered workflows")
    add("migrate", cmd_migrate, "create or upgrade the store schema")
    named = next((arg for arg in argv if not arg.startswith("-")), None) if argv is not None else None
    for module, commands in COMMANDS.items():
        if argv is None or named in commands:
            importlib.import_module(module).register(add)
        else:
            for name, text in commands.items():
                sub.add_parser(name, help=text, description=text, add_help=False)
    return parser


_EXIT = [
    (NotFound, exitcodes.NOT_FOUND),
    (InvalidInput, exitcodes.BAD_INPUT),
    (Conflict, exitcodes.CONFLICT),
    (Forbidden, exitcodes.DENIED),
    (Unauthorized, exitcodes.UNAUTHENTICATED),
    (RateLimited, exitcodes.UNAVAILABLE),
    (StoreUnavailable, exitcodes.UNAVAILABLE),
    (BrokerUnavailable, exitcodes.UNAVAILABLE),
]


def _dispatch(args: argparse.Namespace) -> int:
    """Through the gateway when SMITHERS_GATEWAY_URL or SMITHERS_PROFILE is set (see
    :mod:`smithers.cli.remote`), else on the store."""
    command = str(args.command)
    if command not in ("config", "login", "logout"):
        where = target(os.environ)
        if where is not None:
            from smithers.cli import remote  # noqa: PLC0415 (the HTTP client: remote mode only)

            return remote.dispatch(args, where)
    if getattr(args, "actor", None) and (command != "db" or args.action == "prune"):
        _record_assertion(args)  # (a restore makes the store: nothing to write it in before)
    return int(args.fn(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``smithers`` console script.

    Ctrl-C ends a command with exit 130 and no traceback. A reader that goes away
    (``smithers status RUN --json | head -1``) ends it with exit 141, as a shell reports
    a command killed by SIGPIPE, and no traceback either (the recipe of the Python docs,
    "Note on SIGPIPE": stdout is pointed at /dev/null so the exit flush cannot fail).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    watch_parent(os.environ)  # a child of `smithers up` ends with it
    try:
        code = _dispatch(args)
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
