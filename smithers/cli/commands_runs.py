"""The run commands: run, watch, status, runs, approve, signal, cancel, resume, rerun,
delete, workflows and migrate."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

from smithers.cli import commands_revisions as revisions_cli
from smithers.cli import exitcodes
from smithers.cli.context import (
    actor_of,
    asserted_by,
    broker_of,
    decider,
    deployment_of,
    follow_opts,
    registry_of,
    store_of,
)
from smithers.cli.follow import follow
from smithers.shared import operations
from smithers.shared.errors import (
    InvalidInput,
    NotFound,
)
from smithers.shared.redaction import redact
from smithers.shared.store import Store
from smithers.shared.store import spend as spend_store
from smithers.shared.store.queries import attempts_of, get_run, list_runs, nodes_of

# add(name, fn) -> the sub-command's parser (its help in smithers.cli.main.COMMANDS)
Add = Callable[[str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser]


def cmd_run(args: argparse.Namespace) -> int:
    dep = deployment_of(args)
    registry = registry_of(dep)
    run_input = operations.parse_input(args.input)
    budget = operations.parse_budget(args.budget)
    registry.get(args.workflow)  # unknown workflow: refuse before touching anything
    if args.run_id is not None:
        from smithers.shared.store.runs import check_run_id  # noqa: PLC0415

        check_run_id(args.run_id)
    broker = broker_of(dep, required=dep.embedded)
    store = store_of(dep)
    run, created = operations.launch(
        store,
        broker,
        registry,
        workflow=args.workflow,
        run_input=run_input,
        run_id=args.run_id,
        launched_by=actor_of(args),
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
    store = store_of(deployment_of(args))
    if args.after_seq:
        with store.read() as conn:
            run = get_run(conn, args.run_id)
        if run is not None and args.after_seq > run.last_seq:
            raise InvalidInput(
                f"--after-seq {args.after_seq} is beyond the run's last event ({run.last_seq})"
            )
    return follow(store, args.run_id, wait_approval=args.wait, timeout_s=args.timeout, after=args.after_seq)


def cmd_status(args: argparse.Namespace) -> int:
    store = store_of(deployment_of(args))
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
    store = store_of(deployment_of(args))
    if args.action == "migrate":
        return revisions_cli.cmd_runs_migrate(args, store, actor_of(args))
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
    dep = deployment_of(args)
    store = store_of(dep)
    record = operations.approve(
        store,
        broker_of(dep, required=False),
        args.run_id,
        args.node_id,
        approved=not args.deny,
        note=args.note,
        actor=actor_of(args),
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
    dep = deployment_of(args)
    store = store_of(dep)
    record, created = operations.signal(
        store,
        broker_of(dep, required=False),
        registry_of(dep, required=False),
        args.run_id,
        args.name,
        signal_id=args.signal_id,
        payload=payload,
        sender=actor_of(args),
    )
    print(signal_line(record.run_id, record.name, record.signal_id, record.sender, created))
    return exitcodes.OK


def cmd_cancel(args: argparse.Namespace) -> int:
    dep = deployment_of(args)
    run = operations.cancel(store_of(dep), broker_of(dep, required=False), args.run_id, actor_of(args))
    print(f"run {run.run_id}: cancellation requested")
    return exitcodes.OK


def cmd_resume(args: argparse.Namespace) -> int:
    dep = deployment_of(args)
    store = store_of(dep)
    run = operations.resume(store, broker_of(dep, required=False), args.run_id, actor_of(args))
    print(f"run {run.run_id}: resumed")
    if args.detach:
        return exitcodes.OK
    return follow(store, run.run_id, wait_approval=args.wait, timeout_s=args.timeout)


def cmd_rerun(args: argparse.Namespace) -> int:
    dep = deployment_of(args)
    store = store_of(dep)
    run, created = operations.rerun(
        store,
        broker_of(dep, required=dep.embedded),
        registry_of(dep),
        args.run_id,
        rerun_id=args.new_run_id,
        launched_by=actor_of(args),
        deployment_version=dep.deployment_version,
    )
    verb = "launched" if created else "already exists"
    print(f"run {run.run_id} {verb} ({run.workflow}, a rerun of {args.run_id})", flush=True)
    if args.detach:
        return exitcodes.OK
    return follow(store, run.run_id, wait_approval=args.wait, timeout_s=args.timeout)


def cmd_delete(args: argparse.Namespace) -> int:
    operations.delete(store_of(deployment_of(args)), args.run_id, actor_of(args))
    print(f"run {args.run_id}: deleted")
    return exitcodes.OK


def cmd_workflows(args: argparse.Namespace) -> int:
    registry = registry_of(deployment_of(args))
    for name in registry.names():
        entry = registry.get(name)
        print(f"{name:<24} v{entry.workflow.version:<6} {entry.module:<28} {entry.revision[:12]}")
    return exitcodes.OK


def cmd_migrate(args: argparse.Namespace) -> int:
    store = Store(deployment_of(args).database_url)
    print(f"schema version {store.migrate()}")
    return exitcodes.OK


def register(add: Add) -> None:
    """Add the run commands' parsers (their help in :data:`smithers.cli.main.COMMANDS`)."""
    p = add("run", cmd_run)
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
    follow_opts(p)

    p = add("watch", cmd_watch)
    p.add_argument("run_id")
    p.add_argument(
        "--after-seq", type=int, default=0, metavar="N", help="resume after event N (the last seq you saw)"
    )
    follow_opts(p)

    p = add("status", cmd_status)
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")

    p = add("runs", cmd_runs)
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

    p = add("approve", cmd_approve)
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

    p = add("signal", cmd_signal)
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

    p = add("cancel", cmd_cancel)
    p.add_argument("run_id")
    p = add("resume", cmd_resume)
    p.add_argument("run_id")
    p.add_argument("--detach", action="store_true")
    follow_opts(p)
    p = add("rerun", cmd_rerun)
    p.add_argument("run_id")
    p.add_argument("--run-id", dest="new_run_id", default=None, help="choose the new run's id (idempotent)")
    p.add_argument("--detach", action="store_true")
    p.add_argument("--as", dest="actor", default=None, help="local mode: the launcher recorded, asserted")
    follow_opts(p)
    p = add("delete", cmd_delete)
    p.add_argument("run_id")
    add("workflows", cmd_workflows)
    add("migrate", cmd_migrate)
