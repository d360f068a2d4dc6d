"""History commands: time travel (rewind, replay, fork), the audit trail, backups."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smithers.cli import embedded_pg, exitcodes
from smithers.cli.context import actor_of, broker_of, deployment_of, registry_of, store_of
from smithers.cli.up import log_file
from smithers.shared import operations
from smithers.shared.config import Deployment
from smithers.shared.errors import Conflict, InvalidInput, NotFound

# add(name, fn) -> the sub-command's parser (its help in smithers.cli.main.COMMANDS)
Add = Callable[[str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser]


def cmd_db(args: argparse.Namespace) -> int:
    from smithers.shared.config import read_broker_url  # noqa: PLC0415
    from smithers.shared.store import backup  # noqa: PLC0415

    dep = deployment_of(args)
    if args.action == "prune":
        return _prune(args, dep)
    if args.path is None:
        raise InvalidInput(f"db {args.action} needs a path")
    path = Path(args.path).resolve()
    tools = None
    if embedded_pg.owns(dep.database_url, dep.data_dir):
        tools = embedded_pg.binaries()  # the server's own pg_dump / pg_restore (same version)
    if args.action == "backup":
        store_of(dep).close()  # an embedded store must exist: a backup creates none
        size = backup.backup(dep.database_url, path, tools)
        print(f"backup of {_safe_url(dep.database_url)} written to {path} ({size} bytes)")
        return exitcodes.OK
    if dep.broker_file is not None and read_broker_url(dep.broker_file) is not None:
        raise Conflict(f"a smithers up is running in {dep.data_dir}; stop it before restoring")
    if tools is not None and dep.data_dir is not None:
        # smithers up is stopped, and its PostgreSQL with it: run the server for the restore
        server = embedded_pg.EmbeddedPostgres(
            dep.data_dir, log_file(dep.data_dir / "logs", "postgres", os.environ)
        )
        server.start()
        try:
            backup.restore(dep.database_url, path, tools)
        finally:
            server.stop()
    else:
        backup.restore(dep.database_url, path)
    print(f"restored {path} into {_safe_url(dep.database_url)}")
    return exitcodes.OK


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    return make_url(url).render_as_string(hide_password=True)


def _prune(args: argparse.Namespace, dep: Deployment) -> int:
    from smithers.shared import retention  # noqa: PLC0415
    from smithers.shared.settings import parse_duration  # noqa: PLC0415

    if args.older_than is None:
        raise InvalidInput("db prune needs --older-than, e.g. --older-than 30d")
    older_than = parse_duration(args.older_than, "--older-than")
    store = store_of(dep)  # an embedded store must exist: a prune creates none
    try:
        pruned = retention.prune(store, older_than, dry_run=args.dry_run, actor=actor_of(args))
    finally:
        store.close()
    if args.dry_run:
        for run_id in pruned.run_ids:
            print(run_id)
        print(f"would delete {pruned.runs} finished run(s) older than {args.older_than} (dry run)")
    else:
        print(f"deleted {pruned.runs} finished run(s) older than {args.older_than} ({pruned.rows} rows)")
    return exitcodes.OK


def cmd_time_travel(args: argparse.Namespace) -> int:
    dep = deployment_of(args)
    new_input = operations.parse_input(args.input) if getattr(args, "input", None) else None
    if args.command == "fork" and new_input is None:
        raise InvalidInput("fork needs --input (the new run input, a JSON object)")
    result = operations.time_travel(
        store_of(dep),
        broker_of(dep, required=False),
        registry_of(dep),
        action=args.command,
        run_id=args.run_id,
        node_id=args.node_id,
        caller=actor_of(args),
        confirm=args.confirm,
        new_run_id=getattr(args, "new_run_id", None),
        new_input=new_input,
        item=getattr(args, "item", None),
    )
    print(json.dumps(result, sort_keys=True))
    return exitcodes.OK


def cmd_audit(args: argparse.Namespace) -> int:
    from smithers.shared.store.trail import run_trail  # noqa: PLC0415

    store = store_of(deployment_of(args))
    with store.read() as conn:
        trail = run_trail(conn, args.run_id)
    if trail["run"] is None and not trail["entries"]:
        raise NotFound(f"run {args.run_id!r} not found and nothing audited under that id")
    if args.json:
        print(json.dumps(trail, indent=2, default=str))
        return exitcodes.OK
    print_trail(trail)
    return exitcodes.OK


def print_trail(trail: dict[str, Any]) -> None:
    """A run's audit trail, one line per entry (the local and the remote ``audit``)."""
    if trail["run"]:
        r = trail["run"]
        print(
            f"{r['run_id']}  {r['workflow']} v{r['workflow_version']}  revision {r['module_revision'][:12]}"
            f"  deployment {r['deployment_version']}  launched by {r['launched_by']}"
        )
    for e in trail["entries"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["at"])) + f".{int(e['at'] % 1 * 1000):03d}Z"
        who = f" by {e['actor']}" if e.get("actor") else ""
        node = f" {e['node_id']}" if e.get("node_id") else ""
        print(
            f"{when}  {e['source']:<11} {e['type']}{node}{who}  {json.dumps(e['detail'], default=str)[:160]}"
        )


def register(add: Add) -> None:
    """Add ``rewind``, ``replay``, ``fork``, ``audit`` and ``db``."""
    for name in ("rewind", "replay", "fork"):
        p = add(name, cmd_time_travel)
        p.add_argument("run_id")
        p.add_argument("node_id")
        p.add_argument("--confirm", action="store_true", help="required: time travel changes history")
        p.add_argument(
            "--as", dest="actor", default=None, help="local mode: the caller recorded, asserted by you"
        )
        if name == "rewind":
            p.add_argument(
                "--item", type=int, default=None, help="a map node's item index: reopen that item alone"
            )
        else:
            p.add_argument("--run-id", dest="new_run_id", default=None, help="id of the new run")
        if name == "fork":
            p.add_argument("--input", required=True, help="the new run input, a JSON object")
    p = add("audit", cmd_audit)
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true")
    p = add("db", cmd_db)
    p.add_argument("action", choices=["backup", "restore", "prune"])
    p.add_argument("path", nargs="?", default=None, help="the backup file (backup, restore)")
    p.add_argument("--older-than", default=None, help="prune: finished runs older than this (30d, 12h, 90m)")
    p.add_argument("--dry-run", action="store_true", help="prune: list the runs, delete nothing")
    p.add_argument("--as", dest="actor", default=None, help="prune: who the audit entries name")
