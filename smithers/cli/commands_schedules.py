"""``smithers schedules [list|pause|resume]``: the cron schedules of the deployment's
workflows, locally (the store and the registry) or through the gateway (the same lines)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from smithers.cli import exitcodes
from smithers.shared.errors import InvalidInput

if TYPE_CHECKING:
    from smithers.client import Client

# add(name, fn) -> the sub-command's parser (its help in smithers.cli.main.COMMANDS)
Add = Callable[[str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser]


def schedule_line(s: dict[str, Any]) -> str:
    """One schedule: id, cron and zone, policy, state, next tick, latest run."""
    state = f"paused by {s['paused_by']}" if s["paused"] else "active"
    nxt = f"next {s['next_tick_local']}" if s["next_tick_local"] else "next -"
    last = f"last run {s['last_run_id']}" if s["last_run_id"] else "no run yet"
    return f"{s['id']:<32} {s['cron']:<16} {s['tz']:<16} {s['policy']:<11} {state:<20} {nxt}  {last}"


def _check(args: argparse.Namespace) -> None:
    if args.action == "list" and args.schedule_id is not None:
        raise InvalidInput("`smithers schedules list` takes no schedule id (use --workflow)")
    if args.action != "list" and args.schedule_id is None:
        raise InvalidInput(f"`smithers schedules {args.action}` needs a schedule id, WORKFLOW:SCHEDULE_ID")


def _print(found: list[dict[str, Any]], as_json: bool, changed: bool | None = None) -> int:
    if as_json:
        print(json.dumps(found if changed is None else found[0], indent=2))
        return exitcodes.OK
    for s in found:
        print(schedule_line(s) + ("" if changed is None or changed else "  (unchanged)"))
    return exitcodes.OK


def cmd_schedules(args: argparse.Namespace) -> int:
    """List, pause or resume schedules on the store (the actor: ``--as``, else cli:$USER)."""
    from smithers.cli.context import actor_of, deployment_of, registry_of, store_of  # noqa: PLC0415
    from smithers.shared import scheduling  # noqa: PLC0415

    _check(args)
    dep = deployment_of(args)
    store, registry = store_of(dep), registry_of(dep)
    if args.action == "list":
        found = scheduling.list_schedules(store, registry, workflow=args.workflow)
        return _print([v.to_json() for v in found], args.json)
    view, changed = scheduling.set_paused(
        store, registry, args.schedule_id, paused=args.action == "pause", actor=actor_of(args)
    )
    return _print([view.to_json()], args.json, changed)


def remote_schedules(args: argparse.Namespace, api: Client) -> int:
    """:func:`cmd_schedules` through the gateway (the actor: the token's subject)."""
    _check(args)
    if args.action == "list":
        return _print(
            [s.model_dump(mode="json") for s in api.list_schedules(workflow=args.workflow)], args.json
        )
    if args.action == "pause":
        return _print([api.pause_schedule(args.schedule_id).model_dump(mode="json")], args.json, True)
    return _print([api.resume_schedule(args.schedule_id).model_dump(mode="json")], args.json, True)


def register(add: Add) -> None:
    """Add ``schedules``."""
    p = add("schedules", cmd_schedules)
    p.add_argument("action", nargs="?", choices=("list", "pause", "resume"), default="list")
    p.add_argument("schedule_id", nargs="?", default=None, help="pause, resume: WORKFLOW:SCHEDULE_ID")
    p.add_argument("--workflow", default=None, help="list: only this workflow's")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--as", dest="actor", default=None, help="local mode only: the actor recorded (default cli:$USER)"
    )
