"""Workflow revisions on the command line: ``smithers runs migrate``, ``smithers revisions``,
the launch warning when no live process holds a workflow's revision, and what
``smithers status`` shows of a run's revision."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from smithers.cli import exitcodes
from smithers.shared import operations, settings
from smithers.shared.broker import Broker
from smithers.shared.config import resolve_deployment
from smithers.shared.errors import InvalidInput
from smithers.shared.registry import Registry
from smithers.shared.store import RunRecord, Store, revisions

LAUNCH_GRACE_S = 5.0  # a process that just started announces itself within this


def holder_ttl() -> float:
    """SMITHERS_HOLDER_TTL of this environment."""
    return settings.HOLDER_TTL.read(os.environ)


def launch_warning(store: Store, registry: Registry, workflow: str) -> dict[str, Any] | None:
    """The launch's ``revision_unavailable`` warning, after up to ``LAUNCH_GRACE_S`` for a
    process that is starting to announce itself; None when a scheduler and a worker hold it."""
    deadline = time.monotonic() + LAUNCH_GRACE_S
    while True:
        warning = operations.holder_warning(store, registry, workflow, holder_ttl())
        if warning is None or time.monotonic() >= deadline:
            return warning
        time.sleep(0.25)


def revision_report(store: Store, run: RunRecord) -> dict[str, Any]:
    """What ``status`` shows of the run's revision: held by whom, and its stored graph."""
    with store.read() as conn:
        missing = revisions.missing_roles(conn, run.workflow, run.module_revision, time.time(), holder_ttl())
        graph = revisions.stored_graph(conn, run.workflow, run.module_revision)
    return {
        "revision": run.module_revision,
        "workflow_version": run.workflow_version,
        "available": not missing,
        "missing": missing,
        "graph": graph,
    }


def status_lines(report: dict[str, Any], run: RunRecord) -> list[str]:
    """The revision lines of ``smithers status``."""
    lines = []
    if run.status_reason == revisions.UNAVAILABLE or (report["missing"] and not run.status.terminal):
        lines.append(
            f"  revision_unavailable: no live {' or '.join(report['missing']) or 'holder'} holds revision"
            f" {run.module_revision[:12]} (deploy it again, or `smithers runs migrate {run.run_id} --to REV`)"
        )
    if report["graph"] is not None:
        shape = ", ".join(f"{n['id']}:{n['kind']}" for n in report["graph"]["nodes"])
        lines.append(f"  graph of {run.module_revision[:12]}: {shape}")
    return lines


def cmd_runs_migrate(args: argparse.Namespace, store: Store, actor: str) -> int:
    """``smithers runs migrate RUN --to REV`` or ``--workflow W --from REV --to REV``."""
    dep = resolve_deployment(os.environ, getattr(args, "data_dir", None))
    broker = Broker(dep.redis_url, dep.broker_url) if dep.redis_url else None
    if not args.to:
        raise InvalidInput("runs migrate needs --to REVISION")
    if args.run_id and (args.source or args.workflow):
        raise InvalidInput("give either a run id or --workflow W --from REV, not both")
    if args.run_id:
        result = operations.migrate(store, broker, args.run_id, to=args.to, actor=actor, note=args.note)
        print(f"run {result['run_id']}: revision {result['from'][:12]} -> {result['to'][:12]}")
        return exitcodes.OK
    if not (args.workflow and args.source):
        raise InvalidInput("runs migrate needs a run id, or --workflow W --from REV for every run of W")
    bulk = operations.migrate_all(
        store, broker, args.workflow, source=args.source, to=args.to, actor=actor, note=args.note
    )
    for item in bulk["migrated"]:
        print(f"run {item['run_id']}: revision {item['from'][:12]} -> {item['to'][:12]}")
    for item in bulk["refused"]:
        print(f"run {item['run_id']}: refused: {item['message']}", file=sys.stderr)
    print(f"{len(bulk['migrated'])} migrated, {len(bulk['refused'])} refused")
    return exitcodes.CONFLICT if bulk["refused"] else exitcodes.OK


def cmd_revisions(args: argparse.Namespace) -> int:
    """``smithers revisions WORKFLOW``: stored revisions, oldest first, with live holders."""
    dep = resolve_deployment(os.environ, args.data_dir)
    store = Store(dep.database_url)
    store.migrate()
    with store.read() as conn:
        stored = revisions.list_revisions(conn, args.workflow)
        live = revisions.live_holders(conn, time.time(), holder_ttl())
    if args.json:
        out = [
            {
                **r,
                "holders": [
                    vars(h) for h in live if h.workflow == args.workflow and h.revision == r["revision"]
                ],
            }
            for r in stored
        ]
        print(json.dumps({"workflow": args.workflow, "revisions": out}, indent=2))
        return exitcodes.OK
    for r in stored:
        held = sorted({h.role for h in live if h.workflow == args.workflow and h.revision == r["revision"]})
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["first_seen"]))
        holders = ",".join(held) or "not held"
        runs = f"{r['live_runs']:>5} live runs"
        print(
            f"{r['revision'][:12]}  v{r['version']:<6} {r['module']:<24} {when}  {runs}  held by: {holders}"
        )
    return exitcodes.OK


def register(add: Callable[[str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser]) -> None:
    """Add ``revisions``."""
    p = add("revisions", cmd_revisions)
    p.add_argument("workflow")
    p.add_argument("--json", action="store_true")
