"""``smithers approvals`` (the inbox) and ``smithers deny``, and what ``approve`` shares
with them: the payload option and the line of one approval."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any, Protocol

from smithers.cli import exitcodes
from smithers.shared.approval import MAX_PAYLOAD_BYTES
from smithers.shared.errors import InvalidInput

# add(name, fn) -> the sub-command's parser (its help in smithers.cli.main.COMMANDS)
Add = Callable[[str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser]
ORDERS = ("oldest", "urgent", "newest")
STATUSES = ("pending", "approved", "denied")


class ApprovalLike(Protocol):
    """What :func:`approval_line` reads: a store record or a client's approval."""

    @property
    def run_id(self) -> str: ...
    @property
    def node_id(self) -> str: ...
    @property
    def iteration(self) -> int: ...
    @property
    def owner(self) -> str | None: ...
    @property
    def requested_at(self) -> float: ...
    @property
    def decided_by(self) -> str | None: ...


def parse_payload(text: str | None) -> Any:
    """``--payload``: JSON, bounded; None when not given."""
    if text is None:
        return None
    if len(text) > MAX_PAYLOAD_BYTES:
        raise InvalidInput(f"--payload is over {MAX_PAYLOAD_BYTES} bytes")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--payload is not JSON: {exc.msg} at column {exc.colno}") from None


def signal_line(run_id: str, name: str, signal_id: str, sender: str | None, created: bool) -> str:
    """What ``smithers signal`` prints, locally and remotely."""
    said = "sent" if created else "already sent (the first delivery)"
    return f"signal {name} ({signal_id}) to {run_id}: {said} by {sender}"


def approval_line(a: ApprovalLike) -> str:
    """One approval: run, node, owner, when requested, who decided."""
    it = f"[{a.iteration}]" if a.iteration else ""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a.requested_at))
    owner = f"owner {a.owner}" if a.owner else "any approver"
    decided = f"  decided by {a.decided_by}" if a.decided_by else ""
    return f"{a.run_id:<28} {a.node_id + it:<20} {owner:<24} requested {when}{decided}"


def cmd_approvals(args: argparse.Namespace) -> int:
    """List approvals from the store (``--json``: whole records)."""
    from smithers.cli.context import deployment_of, store_of  # noqa: PLC0415 (main imports this module)
    from smithers.shared.store.queries import approvals  # noqa: PLC0415

    store = store_of(deployment_of(args))
    with store.read() as conn:
        found = approvals(conn, status=args.status, run_id=args.run)
    if args.order == "newest":
        found.sort(key=lambda a: a.decided_at or a.requested_at, reverse=True)
    elif args.order == "urgent":
        found.sort(key=lambda a: (a.escalate_at or float("inf"), a.requested_at))
    found = found[: args.limit]
    if args.json:
        print(json.dumps([a.to_json() for a in found], indent=2, default=str))
        return exitcodes.OK
    for a in found:
        print(approval_line(a))
    return exitcodes.OK


def register(add: Add) -> None:
    """Add ``approvals`` and ``deny``."""
    from smithers.cli.commands_runs import cmd_approve  # noqa: PLC0415

    p = add("approvals", cmd_approvals)
    p.add_argument("--status", choices=STATUSES, default="pending")
    p.add_argument("--run", default=None, help="only this run's")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--order", choices=ORDERS, default="oldest")
    p.add_argument("--json", action="store_true")

    p = add("deny", cmd_approve)
    p.add_argument("run_id")
    p.add_argument("node_id")
    p.add_argument("--note", default=None)
    p.add_argument("--iteration", type=int, default=None)
    p.add_argument("--as", dest="actor", default=None, help="local mode: the deciding subject, asserted")
    p.set_defaults(deny=True, payload=None)
