"""``smithers sandboxes RUN`` and ``smithers review RUN SANDBOX --accept|--reject``."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from smithers.cli import exitcodes
from smithers.cli.context import actor_of, asserted_by, broker_of, deployment_of, store_of
from smithers.shared import operations
from smithers.shared.store.sandboxes import sandboxes_of

# add(name, fn) -> the sub-command's parser (its help in smithers.cli.main.COMMANDS)
Add = Callable[[str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser]


def cmd_sandboxes(args: argparse.Namespace) -> int:
    """List a run's sandboxes: status, review, patches, image and sizes."""
    store = store_of(deployment_of(args))
    with store.read() as conn:
        records = sandboxes_of(conn, args.run_id)
    if args.json:
        print(json.dumps([r.to_json() for r in records], indent=2, default=str))
        return exitcodes.OK
    print_sandboxes(args.run_id, [r.to_json() for r in records], diff=args.diff)
    return exitcodes.OK


def print_sandboxes(run_id: str, records: list[dict[str, Any]], *, diff: bool) -> None:
    """A run's sandboxes as JSON-ready dicts, a line each with its patches and reviews
    (the local and the remote ``sandboxes``)."""
    if not records:
        print(f"run {run_id} has no sandboxes")
    for r in records:
        print(_line(r))
        for patch in (r.get("manifest") or {}).get("patches", []):
            print(f"    patch {patch.get('path')} ({patch.get('size')} bytes)")
            if diff and patch.get("diff"):
                for text in str(patch["diff"]).splitlines():
                    print(f"      {text}")
        for decision in r.get("reviews") or ():
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(decision["decided_at"]))
            verdict = "accepted" if decision["accept"] else "rejected"
            print(f"    {verdict} by {decision['actor']} at {when}: {decision.get('note') or ''}")
        if r.get("error"):
            print(f"    error: {r['error'].get('message', '')}")


def _line(r: dict[str, Any]) -> str:
    it = f"[{r['iteration']}]" if r.get("iteration") else ""
    review_status = r.get("review_status") or "-"
    sizes = f"request={r.get('request_bytes') or 0}B result={r.get('result_bytes') or 0}B"
    return (
        f"{r['sandbox_id']}  {r['node_id'] + it:<20} {r['status']!s:<10} review={review_status!s:<10}"
        f" {r['image']} {sizes}"
    )


def cmd_review(args: argparse.Namespace) -> int:
    """Accept or reject the patches a sandbox step proposed."""
    dep = deployment_of(args)
    record = operations.review(
        store_of(dep),
        broker_of(dep, required=False),
        args.run_id,
        args.sandbox,
        accept=args.accept,
        note=args.note,
        actor=actor_of(args),
        by_node=True,
        asserted_by=asserted_by(args),
    )
    verdict = "accepted" if args.accept else "rejected"
    print(f"sandbox {record.sandbox_id} ({record.node_id}) of {record.run_id}: {verdict} by {actor_of(args)}")
    return exitcodes.OK


def register(add: Add) -> None:
    """Add the sandbox sub-commands to the ``smithers`` parser."""
    p = add("sandboxes", cmd_sandboxes)
    p.add_argument("run_id")
    p.add_argument("--diff", action="store_true", help="print each patch")
    p.add_argument("--json", action="store_true")

    p = add("review", cmd_review)
    p.add_argument("run_id")
    p.add_argument("sandbox", help="the sandbox id, or the node id of the sandbox waiting for review")
    verdict = p.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--accept", dest="accept", action="store_true")
    verdict.add_argument("--reject", dest="accept", action="store_false")
    p.add_argument("--note", default=None)
    p.add_argument(
        "--as", dest="actor", default=None, help="local mode only: the reviewer, recorded as asserted by you"
    )
