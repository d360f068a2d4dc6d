"""Following a run from the store: one line per event, then the exit code."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, Protocol, TextIO

from smithers.cli import exitcodes
from smithers.shared.status import RunStatus
from smithers.shared.store import Store
from smithers.shared.store.queries import approvals, events_after, get_run
from smithers.shared.store.sandboxes import sandboxes_of

QUIET = {"attempt.claim_refused", "attempt.redispatched", "attempt.queued", "attempt.succeeded"}


_SIMPLE = {
    "node.succeeded": "✓ {node} succeeded",
    "node.retry_scheduled": "↻ {node} retry in {delay_s}s",
    "node.skipped": "- {node} skipped ({reason})",
    "timer.set": "⏲ {node} timer set",
    "timer.fired": "⏲ {node} timer fired",
    "branch.chosen": "⑂ {node} chose path {path!r}",
    "loop.iteration": "⟳ {node} iteration {iteration}",
    "attempt.started": "▸ {node} started (attempt {number})",
    "attempt.failed": "✗ {node} attempt {number} failed: {message}",
    "attempt.timed_out": "✗ {node} timed out: {message}",
    "attempt.lost": "✗ {node} worker lost: {message}",
    "attempt.refused": "! {node} late result refused ({reason})",
}


class EventLike(Protocol):
    """What :func:`describe` reads of an event: a store record or a client's event."""

    @property
    def type(self) -> str: ...
    @property
    def node_id(self) -> str | None: ...
    @property
    def iteration(self) -> int | None: ...
    @property
    def payload(self) -> Any: ...
    @property
    def created_at(self) -> float: ...


def describe(ev: EventLike, started: float) -> str | None:
    """A human line for an event, or None for events not worth a line."""
    p: dict[str, Any] = dict(ev.payload or {})
    at = f"{ev.created_at - started:7.2f}s"
    label = ev.node_id or ""
    if ev.node_id and ev.iteration:
        label += f"[{ev.iteration}]"
    node = f"{label:<24}"
    t = ev.type
    raw = p.get("error")
    error: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if t in QUIET:
        return None
    if t in _SIMPLE:
        fields = {
            "delay_s": None,
            "reason": None,
            "path": None,
            "iteration": None,
            "number": None,
            "message": "",
            **p,
        }
        return f"{at}  " + _SIMPLE[t].format(node=node, **fields)
    if t == "run.launched":
        return f"{at}  run launched: {p.get('workflow')} v{p.get('workflow_version')}"
    if t.startswith("run."):
        extra = f": {error.get('message', '')}" if error else ""
        return f"{at}  run {t[4:]}{extra}"
    if t == "node.failed":
        return f"{at}  ✗ {node} failed: {error.get('message', '')}"
    if t == "approval.requested":
        owner = f" (owner {p['owner']})" if p.get("owner") else ""
        return f"{at}  ? {node} waiting for approval{owner}"
    if t == "signal.waiting":
        return f"{at}  ? {node} waiting for signal {p.get('name')} (smithers signal RUN {p.get('name')})"
    if t == "child.launched":
        return f"{at}  → {node} launched child run {p.get('child_run_id')} ({p.get('workflow')})"
    if t.startswith("budget."):
        return _budget(t, at, node, p)
    if t == "signal.received":
        return f"{at}  ! signal {p.get('name')} ({p.get('signal_id')}) from {p.get('sender')}"
    if t == "approval.escalated":
        fallback = p.get("fallback_owner")
        return f"{at}  ? {node} escalated" + (f": {fallback} may decide now" if fallback else "")
    if t == "approval.decided":
        verdict = "approved" if p.get("approved") else "denied"
        return f"{at}  ! {node} {verdict} by {p.get('decided_by')}: {p.get('note') or ''}"
    return f"{at}  · {node} {t}"


def _budget(t: str, at: str, node: str, p: dict[str, Any]) -> str:
    """A budget event's line (smithers.shared.budget)."""
    if t == "budget.exceeded":
        spent = p.get("spent") or {}
        over = ", ".join(p.get("exceeded") or ())
        return (
            f"{at}  $ {node} parked: the run's {over} ceiling is spent ({spent.get('tokens')} tokens,"
            f" cost {spent.get('cost')}); raise it with smithers approve RUN {node} --payload '{{...}}'"
        )
    if t == "budget.raised":
        return f"{at}  $ ceilings raised by {p.get('by')}: {p.get('ceilings')}"
    return f"{at}  · {node} {t}"


def follow(
    store: Store,
    run_id: str,
    *,
    out: TextIO = sys.stdout,
    wait_approval: bool = False,
    timeout_s: float | None = None,
    poll_s: float = 0.1,
    stop: threading.Event | None = None,
    after: int = 0,
) -> int:
    """Print the run's events after seq ``after`` as they happen; return its exit code
    when it settles."""
    last = after
    begin = time.time()
    started: float | None = None
    while True:
        with store.read() as conn:
            run = get_run(conn, run_id)
            if run is None:
                print(f"error: run {run_id!r} not found", file=sys.stderr)
                return exitcodes.NOT_FOUND
            events = events_after(conn, run_id, last)
            waiting = run.status is RunStatus.WAITING
            pending = approvals(conn, status="pending", run_id=run_id) if waiting else []
            reviews = sandboxes_of(conn, run_id, review_status="pending") if waiting else []
        started = started if started is not None else run.created_at
        for ev in events:
            last = ev.seq
            line = describe(ev, started)
            if line:
                print(line, file=out, flush=True)
        if events:
            continue
        if run.status.terminal:
            return final_code(run.status, run.output, out)
        if run.status is RunStatus.WAITING and not wait_approval:
            for ap in pending:
                print(
                    f"waiting for approval: smithers approve {run_id} {ap.node_id} [--deny] --note '...'",
                    file=out,
                    flush=True,
                )
            for sb in reviews:
                print(
                    f"waiting for diff review: smithers review {run_id} {sb.sandbox_id} --accept|--reject"
                    " --note '...'",
                    file=out,
                    flush=True,
                )
            return exitcodes.WAITING_APPROVAL
        if stop is not None and stop.is_set():
            return exitcodes.INTERRUPTED
        if timeout_s is not None and time.time() - begin > timeout_s:
            print(f"timed out after {timeout_s}s; the run goes on (smithers watch {run_id})", file=out)
            return exitcodes.TIMED_OUT
        time.sleep(poll_s)


def final_code(status: RunStatus, output: Any, out: TextIO) -> int:
    """Print a succeeded run's output; the exit code of a run that ended in ``status``."""
    if status is RunStatus.SUCCEEDED:
        print("output: " + json.dumps(output, sort_keys=True), file=out, flush=True)
        return exitcodes.OK
    if status is RunStatus.CANCELLED:
        return exitcodes.CANCELLED
    return exitcodes.RUN_FAILED
