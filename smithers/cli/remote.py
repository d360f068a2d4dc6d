"""The remote command line: the client commands of ``smithers`` through the gateway.

With ``SMITHERS_GATEWAY_URL`` (or ``SMITHERS_PROFILE``) set, ``run``, ``watch``,
``status``, ``runs``, ``approvals``, ``approve``, ``deny``, ``cancel``, ``resume``,
``rerun``, ``delete``, ``audit``, ``rewind``, ``replay``, ``fork``, ``sandboxes``,
``review``, ``token``, ``workflows``, ``revisions``, ``schedules`` and ``metrics`` call the REST API
with a bearer token (:mod:`smithers.client`) and never open the store: the actor is the
token's subject, so ``--as`` is refused; the gateway's refusals become the exit codes
of :mod:`smithers.cli.exitcodes`. The commands that need the store or the broker
themselves say so and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from smithers.cli import exitcodes
from smithers.cli.commands_schedules import remote_schedules
from smithers.cli.follow import describe, final_code
from smithers.cli.profiles import Target
from smithers.client import Client, RunDetail
from smithers.shared.errors import Forbidden, InvalidInput, Unauthorized
from smithers.shared.status import RunStatus

# Commands that work on the store, the broker or this machine itself.
STORE_ONLY = {
    "up": "runs the processes of a single node",
    "migrate": "creates or upgrades the store's schema",
    "db": "backs up, restores or prunes the store",
    "scheduler": "is a process of the deployment",
    "worker": "is a process of the deployment",
    "gateway": "serves the API itself",
    "flower": "watches the broker's queues",
}
LOCAL_ANYWHERE = {"config", "login", "logout"}  # read or write this machine only


def client_for(where: Target) -> Client:
    """A client of ``where``; no token is a clear error (exit 11), not a 401 later."""
    if not where.token:
        raise Unauthorized(
            f"no token for {where.url}: set SMITHERS_TOKEN, or run `smithers login {where.url}`"
        )
    if not where.url.startswith(("http://", "https://")):
        raise InvalidInput(f"SMITHERS_GATEWAY_URL {where.url!r} must start with http:// or https://")
    return Client(where.url, where.token)


def dispatch(args: argparse.Namespace, where: Target) -> int:
    """Run the parsed command against the gateway."""
    command = str(args.command)
    if command in STORE_ONLY:
        raise InvalidInput(
            f"`smithers {command}` {STORE_ONLY[command]}: it needs the store itself and does not"
            f" run remotely (SMITHERS_GATEWAY_URL is set to {where.url}); run it where the"
            " deployment runs, without SMITHERS_GATEWAY_URL and SMITHERS_PROFILE"
        )
    if getattr(args, "actor", None) is not None:
        raise InvalidInput(
            "--as does not exist in remote mode: the gateway records the token's subject as the actor"
        )
    handler = HANDLERS.get(command)
    if handler is None:
        raise InvalidInput(f"`smithers {command}` has no remote form; unset SMITHERS_GATEWAY_URL to run it")
    with client_for(where) as api:
        return handler(args, api)


# -- following ----------------------------------------------------------------------------


def follow(
    api: Client, run_id: str, *, wait_approval: bool, timeout_s: float | None, after_seq: int = 0
) -> int:
    """Print the run's events from the gateway's stream; the exit code when it settles
    (as :func:`smithers.cli.follow.follow`, which reads the store)."""
    detail = api.get_run(run_id)
    started = detail.run.created_at
    if after_seq > detail.run.last_seq:
        raise InvalidInput(f"--after-seq {after_seq} is beyond the run's last event ({detail.run.last_seq})")
    if not wait_approval and detail.run.status is RunStatus.WAITING and detail.run.last_seq <= after_seq:
        return _waiting(api, run_id)
    stream = api.follow_run(run_id, after_seq=after_seq, timeout_s=timeout_s)
    for ev in stream:
        line = describe(ev, started)
        if line:
            print(line, flush=True)
        if ev.type == "run.waiting" and not wait_approval:
            now = api.get_run(run_id).run
            if now.status is RunStatus.WAITING and now.last_seq == ev.seq:
                return _waiting(api, run_id)
    end = stream.end
    if end is not None and end.reason == "deadline":
        print(f"timed out after {timeout_s}s; the run goes on (smithers watch {run_id})", flush=True)
        return exitcodes.TIMED_OUT
    if end is not None and end.reason == "deleted":
        print(f"error: run {run_id!r} was deleted", file=sys.stderr)
        return exitcodes.NOT_FOUND
    run = api.get_run(run_id).run
    return final_code(run.status, run.output, sys.stdout)


def _waiting(api: Client, run_id: str) -> int:
    try:
        pending = api.list_approvals(run_id=run_id)
        reviews = api.list_sandboxes(run_id, review_status="pending")
    except Forbidden:
        print(f"waiting for a person (approval or diff review): smithers approvals --run {run_id}")
        return exitcodes.WAITING_APPROVAL
    for ap in pending:
        print(
            f"waiting for approval: smithers approve {run_id} {ap.node_id} [--deny] --note '...'", flush=True
        )
    for sb in reviews:
        print(
            f"waiting for diff review: smithers review {run_id} {sb.sandbox_id} --accept|--reject"
            " --note '...'",
            flush=True,
        )
    return exitcodes.WAITING_APPROVAL


# -- commands -----------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, api: Client) -> int:
    from smithers.shared.operations import parse_budget, parse_input  # noqa: PLC0415 (plain JSON parsing)

    budget = parse_budget(args.budget)
    launched = api.launch_run(
        args.workflow, parse_input(args.input), run_id=args.run_id, priority=args.priority, budget=budget
    )
    run = launched.run
    print(
        f"run {run.run_id} {'launched' if launched.created else 'already exists'} ({run.workflow})",
        flush=True,
    )
    for warning in launched.warnings:
        print(f"warning: {warning.message}", file=sys.stderr)
    if launched.warnings and not run.status.terminal:
        return exitcodes.NO_HOLDER
    if args.detach:
        return exitcodes.OK
    return follow(api, run.run_id, wait_approval=args.wait, timeout_s=args.timeout)


def cmd_watch(args: argparse.Namespace, api: Client) -> int:
    return follow(api, args.run_id, wait_approval=args.wait, timeout_s=args.timeout, after_seq=args.after_seq)


def cmd_status(args: argparse.Namespace, api: Client) -> int:
    detail = api.get_run(args.run_id)
    if args.json:
        print(json.dumps(_plain(detail), indent=2, default=str))
        return exitcodes.OK
    _print_status(detail)
    return exitcodes.OK


def _print_status(detail: RunDetail) -> None:
    run, rev = detail.run, detail.revision
    print(f"{run.run_id}  {run.workflow} v{run.workflow_version}  {run.status.value}")
    print(f"  revision {run.module_revision[:12]}  deployment {run.deployment_version}")
    if run.status_reason == "revision_unavailable" or (rev.missing and not run.status.terminal):
        print(
            f"  revision_unavailable: no live {' or '.join(rev.missing) or 'holder'} holds revision"
            f" {run.module_revision[:12]} (deploy it again, or `smithers runs migrate {run.run_id} --to REV`)"
        )
    ran = {a.attempt_id: a.revision for a in detail.attempts}
    for n in detail.nodes:
        it = f"[{n.iteration}]" if n.iteration else ""
        rev_of = ran.get(n.current_attempt_id or "")
        on = f"  revision {rev_of[:12]}" if rev_of else ""
        print(f"  {n.node_id + it:<28} {n.status.value:<10} failures={n.failures}{on}")
    if run.error:
        print(f"  error: {run.error.get('message', run.error)}")


def cmd_runs(args: argparse.Namespace, api: Client) -> int:
    if args.action == "migrate":
        return _runs_migrate(args, api)
    if args.run_id is not None:
        raise InvalidInput("`smithers runs` lists runs; `smithers runs migrate RUN --to REV` moves one")
    if args.limit < 1:
        raise InvalidInput("--limit must be at least 1")
    runs = api.iter_runs(status=args.status, workflow=args.workflow, page_size=min(args.limit, 200))
    for shown, r in enumerate(runs, start=1):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created_at))
        print(f"{r.run_id:<28} {r.workflow:<20} {r.status.value:<10} {when}  {r.module_revision[:12]}")
        if shown >= args.limit:
            break
    return exitcodes.OK


def _runs_migrate(args: argparse.Namespace, api: Client) -> int:
    if not args.to:
        raise InvalidInput("runs migrate needs --to REVISION")
    if args.run_id and (args.source or args.workflow):
        raise InvalidInput("give either a run id or --workflow W --from REV, not both")
    if args.run_id:
        moved = api.migrate_run(args.run_id, args.to, note=args.note)
        print(f"run {moved.run_id}: revision {moved.from_revision[:12]} -> {moved.to_revision[:12]}")
        return exitcodes.OK
    if not (args.workflow and args.source):
        raise InvalidInput("runs migrate needs a run id, or --workflow W --from REV for every run of W")
    bulk = api.migrate_workflow(args.workflow, args.source, args.to, note=args.note)
    for item in bulk.migrated:
        print(f"run {item['run_id']}: revision {str(item['from'])[:12]} -> {str(item['to'])[:12]}")
    for item in bulk.refused:
        print(f"run {item['run_id']}: refused: {item.get('message')}", file=sys.stderr)
    print(f"{len(bulk.migrated)} migrated, {len(bulk.refused)} refused")
    return exitcodes.CONFLICT if bulk.refused else exitcodes.OK


def cmd_approvals(args: argparse.Namespace, api: Client) -> int:
    found = api.list_approvals(status=args.status, run_id=args.run, limit=args.limit, order=args.order)
    if args.json:
        print(json.dumps([_plain(a) for a in found], indent=2, default=str))
        return exitcodes.OK
    from smithers.cli.approvals import approval_line  # noqa: PLC0415

    for a in found:
        print(approval_line(a))
    return exitcodes.OK


def cmd_approve(args: argparse.Namespace, api: Client) -> int:
    from smithers.cli.approvals import parse_payload  # noqa: PLC0415

    record = api.decide_approval(
        args.run_id,
        args.node_id,
        not args.deny,
        note=args.note,
        payload=parse_payload(args.payload),
        iteration=args.iteration,
    )
    print(f"{record.node_id} of {record.run_id}: {record.status.value} by {record.decided_by}")
    return exitcodes.OK


def cmd_signal(args: argparse.Namespace, api: Client) -> int:
    from smithers.cli.approvals import parse_payload, signal_line  # noqa: PLC0415

    sent = api.send_signal(args.run_id, args.name, parse_payload(args.payload), signal_id=args.signal_id)
    print(signal_line(sent.run_id, sent.name, sent.signal_id, sent.sender, sent.created))
    return exitcodes.OK


def cmd_cancel(args: argparse.Namespace, api: Client) -> int:
    run = api.cancel_run(args.run_id)
    print(f"run {run.run_id}: cancellation requested")
    return exitcodes.OK


def cmd_resume(args: argparse.Namespace, api: Client) -> int:
    run = api.resume_run(args.run_id)
    print(f"run {run.run_id}: resumed")
    if args.detach:
        return exitcodes.OK
    return follow(api, run.run_id, wait_approval=args.wait, timeout_s=args.timeout)


def cmd_rerun(args: argparse.Namespace, api: Client) -> int:
    launched = api.rerun_run(args.run_id, new_run_id=args.new_run_id)
    run = launched.run
    verb = "launched" if launched.created else "already exists"
    print(f"run {run.run_id} {verb} ({run.workflow}, a rerun of {args.run_id})", flush=True)
    if args.detach:
        return exitcodes.OK
    return follow(api, run.run_id, wait_approval=args.wait, timeout_s=args.timeout)


def cmd_delete(args: argparse.Namespace, api: Client) -> int:
    api.delete_run(args.run_id)
    print(f"run {args.run_id}: deleted")
    return exitcodes.OK


def cmd_audit(args: argparse.Namespace, api: Client) -> int:
    from smithers.cli.commands_history import print_trail  # noqa: PLC0415

    trail = api.audit(args.run_id)
    if args.json:
        print(json.dumps(trail.raw, indent=2, default=str))
        return exitcodes.OK
    print_trail(trail.raw)
    return exitcodes.OK


def cmd_time_travel(args: argparse.Namespace, api: Client) -> int:
    from smithers.shared.operations import parse_input  # noqa: PLC0415

    if not args.confirm:
        raise InvalidInput("time travel changes history: pass --confirm")
    if args.command == "rewind":
        result = api.rewind(args.run_id, args.node_id, item=args.item)
    elif args.command == "replay":
        result = api.replay(args.run_id, args.node_id, new_run_id=args.new_run_id)
    else:
        result = api.fork(args.run_id, args.node_id, parse_input(args.input), new_run_id=args.new_run_id)
    print(json.dumps(result.raw, sort_keys=True))
    return exitcodes.OK


def cmd_sandboxes(args: argparse.Namespace, api: Client) -> int:
    from smithers.cli.commands_sandbox import print_sandboxes  # noqa: PLC0415

    found = api.list_sandboxes(args.run_id)
    if args.json:
        print(json.dumps([_plain(s) for s in found], indent=2, default=str))
        return exitcodes.OK
    print_sandboxes(args.run_id, [_plain(s) for s in found], diff=args.diff)
    return exitcodes.OK


def cmd_review(args: argparse.Namespace, api: Client) -> int:
    sandbox_id = args.sandbox
    try:  # the local command takes a node id for the sandbox waiting for review too
        waiting = api.list_sandboxes(args.run_id, review_status="pending")
    except Forbidden:
        waiting = []
    if not any(s.sandbox_id == sandbox_id for s in waiting):
        by_node = [s for s in waiting if s.node_id == sandbox_id]
        if len(by_node) == 1:
            sandbox_id = by_node[0].sandbox_id
    record = api.review_sandbox(args.run_id, sandbox_id, args.accept, note=args.note)
    verdict = "accepted" if args.accept else "rejected"
    who = record.reviews[-1].actor if record.reviews else "?"
    print(f"sandbox {record.sandbox_id} ({record.node_id}) of {record.run_id}: {verdict} by {who}")
    return exitcodes.OK


def cmd_token(args: argparse.Namespace, api: Client) -> int:
    from smithers.shared.settings import parse_duration  # noqa: PLC0415

    action = args.token_command
    if action == "issue":
        if args.issuer is not None:
            raise InvalidInput(
                "--issuer is not yours to choose in remote mode: the gateway names itself the issuer"
            )
        ttl = int(parse_duration(args.ttl, "--ttl")) if args.ttl else None
        scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
        issued = api.issue_grant(args.subject, scopes, kind=args.kind, ttl_s=ttl, note=args.note)
        g = issued.grant
        print(
            f"issued {g.jti} to {g.subject} ({','.join(g.scopes)}),"
            f" expires {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(g.expires_at))}",
            file=sys.stderr,
        )
        print(issued.token, flush=True)
        return exitcodes.OK
    if action == "revoke":
        if args.reason is not None:
            raise InvalidInput("--reason is not kept by the gateway's revoke; revoke without it remotely")
        grant = api.revoke_grant(args.jti)
        print(f"revoked {grant.jti} ({grant.subject})")
        return exitcodes.OK
    for g in api.list_grants(subject=args.subject, active_only=not args.all):
        expires = time.strftime("%Y-%m-%d %H:%M", time.localtime(g.expires_at))
        print(f"{g.jti}  {g.subject:<24} {g.kind:<10} {g.state:<8} {expires}  {','.join(g.scopes)}")
    return exitcodes.OK


def cmd_workflows(args: argparse.Namespace, api: Client) -> int:
    for wf in api.list_workflows():
        print(f"{wf.name:<24} v{wf.version:<6} {wf.module:<28} {wf.revision[:12]}")
    return exitcodes.OK


def cmd_revisions(args: argparse.Namespace, api: Client) -> int:
    found = api.list_revisions(args.workflow)
    if args.json:
        print(json.dumps(_plain(found), indent=2))
        return exitcodes.OK
    for r in found.revisions:
        held = ",".join(sorted({h.role for h in r.holders})) or "not held"
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.first_seen))
        print(
            f"{r.revision[:12]}  v{r.version:<6} {r.module:<24} {when}  {r.live_runs:>5} live runs"
            f"  held by: {held}"
        )
    return exitcodes.OK


def cmd_metrics(args: argparse.Namespace, api: Client) -> int:
    if args.port is not None:
        raise InvalidInput(
            "metrics --port serves the store's metrics itself; remotely, read the gateway's /metrics"
        )
    sys.stdout.write(api.metrics())
    return exitcodes.OK


def _plain(value: Any) -> Any:
    """A result (a dataclass, or a pydantic model of smithers.shared.api) as JSON-ready data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    return dataclasses.asdict(value)


HANDLERS: dict[str, Callable[[argparse.Namespace, Client], int]] = {
    "run": cmd_run,
    "watch": cmd_watch,
    "status": cmd_status,
    "runs": cmd_runs,
    "approvals": cmd_approvals,
    "approve": cmd_approve,
    "deny": cmd_approve,
    "signal": cmd_signal,
    "cancel": cmd_cancel,
    "resume": cmd_resume,
    "rerun": cmd_rerun,
    "delete": cmd_delete,
    "audit": cmd_audit,
    "rewind": cmd_time_travel,
    "replay": cmd_time_travel,
    "fork": cmd_time_travel,
    "sandboxes": cmd_sandboxes,
    "review": cmd_review,
    "token": cmd_token,
    "workflows": cmd_workflows,
    "revisions": cmd_revisions,
    "metrics": cmd_metrics,
    "schedules": remote_schedules,
}
