"""Run operations used by the CLI and the gateway alike: validate, write, wake.

Each operation is one store transaction (the change and its events), followed by a
best-effort wake-up of the scheduler after commit. Invalid input raises before
anything is written.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from smithers.shared import tracing
from smithers.shared.broker import Broker
from smithers.shared.errors import InvalidInput, NotFound, SmithersError
from smithers.shared.redaction import sensitive_key
from smithers.shared.registry import Registry
from smithers.shared.store import ApprovalRecord, RunRecord, Store, timetravel
from smithers.shared.store import approvals as approvals_store
from smithers.shared.store import runs as runs_store
from smithers.shared.store import sandboxes as sandboxes_store
from smithers.shared.store.queries import get_run

MAX_INPUT_BYTES = 1_000_000


def new_run_id() -> str:
    """A fresh run id matching ``[a-z0-9_-]{1,64}``."""
    return "run-" + uuid.uuid4().hex[:20]


def check_input(value: Any) -> dict[str, Any]:
    """Run input must be a JSON object with no credential-like keys (at any depth).

    A key such as ``token``, ``secret``, ``password``, ``api_key`` or ``private_key``
    holding a string is refused; ``max_tokens: 100`` (a number) is not a credential.
    """
    if not isinstance(value, dict):
        raise InvalidInput(f"run input must be a JSON object, not {type(value).__name__}")
    try:
        size = len(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"run input is not JSON: {exc}") from None
    if size > MAX_INPUT_BYTES:
        raise InvalidInput(f"run input is {size} bytes; the limit is {MAX_INPUT_BYTES}")
    _check_keys(value, "input")
    return value


def _check_keys(value: Any, path: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and isinstance(item, str) and sensitive_key(key):
                raise InvalidInput(
                    f"{path}.{key} looks like a credential; pass secrets by name to the worker,"
                    " never through run input"
                )
            _check_keys(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_keys(item, f"{path}[{i}]")


def parse_input(text: str) -> dict[str, Any]:
    """Parse a JSON object given on a command line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"input is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    return check_input(value)


def launch(
    store: Store,
    broker: Broker | None,
    registry: Registry,
    *,
    workflow: str,
    run_input: Any,
    run_id: str | None,
    launched_by: str | None,
    deployment_version: str,
) -> tuple[RunRecord, bool]:
    """Launch a run (idempotent by run id); returns ``(run, created)``."""
    entry = registry.get(workflow)
    checked = check_input(run_input)
    rid = runs_store.check_run_id(run_id) if run_id is not None else new_run_id()
    with tracing.span("smithers.launch", **{tracing.RUN_ID: rid, tracing.WORKFLOW: workflow}):
        traceparent = tracing.traceparent()  # the launch's own: the run's decisions are its children
        with store.write() as tx:
            run, created = runs_store.launch(
                tx,
                run_id=rid,
                workflow=workflow,
                workflow_version=entry.workflow.version,
                module_revision=entry.revision,
                deployment_version=deployment_version,
                run_input=checked,
                launched_by=launched_by,
                fresh=run_id is None,
                traceparent=traceparent,
            )
    if created and broker is not None:
        broker.wake_soon(rid)  # best effort either way: the sweep finds a queued run
    return run, created


def cancel(store: Store, broker: Broker | None, run_id: str, actor: str | None) -> RunRecord:
    """Ask for a run's cancellation."""
    with store.write() as tx:
        run = runs_store.request_cancel(tx, run_id, actor)
    if broker is not None:
        broker.wake(run_id)
    return run


def resume(store: Store, broker: Broker | None, run_id: str, actor: str | None) -> RunRecord:
    """Reopen a failed or cancelled run under the same id."""
    with store.write() as tx:
        run = runs_store.resume(tx, run_id, actor)
    if broker is not None:
        broker.wake(run_id)
    return run


def approve(
    store: Store,
    broker: Broker | None,
    run_id: str,
    node_id: str,
    *,
    approved: bool,
    note: str | None,
    actor: str,
    iteration: int | None = None,
    payload: Any = None,
) -> ApprovalRecord:
    """Decide a pending approval (owner rules and its declared payload apply)."""
    with store.write() as tx:
        record = approvals_store.decide(
            tx, run_id, node_id, iteration, approved=approved, note=note, actor=actor, payload=payload
        )
    if broker is not None:
        broker.wake(run_id)
    return record


def review(
    store: Store,
    broker: Broker | None,
    run_id: str,
    sandbox: str,
    *,
    accept: bool,
    note: str | None,
    actor: str,
    by_node: bool = False,
) -> sandboxes_store.SandboxRecord:
    """Accept or reject a sandbox's pending patches (``sandbox`` may name its node
    with ``by_node``); the decision, its event and audit row are one transaction."""
    with store.write() as tx:
        sandbox_id = sandboxes_store.resolve_sandbox(tx.conn, run_id, sandbox) if by_node else sandbox
        record = sandboxes_store.review(tx, run_id, sandbox_id, accept=accept, note=note, actor=actor)
    if broker is not None:
        broker.wake(run_id)
    return record


def delete(store: Store, run_id: str, actor: str | None) -> None:
    """Delete a run and its dependent rows; the audit entry stays."""
    with store.write() as tx:
        runs_store.delete_run(tx, run_id, actor)


TIME_TRAVEL_PER_MINUTE = 10


def time_travel(
    store: Store,
    broker: Broker | None,
    registry: Registry,
    *,
    action: str,
    run_id: str,
    node_id: str,
    caller: str,
    confirm: bool,
    new_run_id: str | None = None,
    new_input: Any = None,
    per_minute: int = TIME_TRAVEL_PER_MINUTE,
) -> dict[str, Any]:
    """Rewind, replay or fork a run at ``node_id``, audited before and after.

    Returns ``{"audit_id", "run_id", ...}``; the affected run is woken.
    """
    if confirm is not True:
        raise InvalidInput("time travel changes history: pass confirm=true")
    with store.read() as conn:
        run = get_run(conn, run_id)
    if run is None:
        raise NotFound(f"run {run_id!r} not found")
    wf = registry.get(run.workflow).workflow
    timetravel.reopened(wf, node_id)  # unknown node: refuse before writing anything
    checked_input = check_input(new_input) if action == "fork" else None
    target = runs_store.check_run_id(new_run_id) if new_run_id else new_run_id_for(action)
    params = {
        "node_id": node_id,
        "new_run_id": target if action != "rewind" else None,
        "input_hash": runs_store.input_hash(checked_input) if checked_input is not None else None,
    }
    with store.write() as tx:
        audit_id = timetravel.begin(
            tx, run_id=run_id, action=action, caller=caller, params=params, per_minute=per_minute
        )
    try:
        with store.write() as tx:
            if action == "rewind":
                result = timetravel.rewind(tx, wf, run_id, node_id, audit_id)
                woken = run_id
            else:
                created = timetravel.branch_off(
                    tx,
                    wf,
                    run_id,
                    node_id,
                    new_run_id=target,
                    new_input=checked_input,
                    caller=caller,
                    action=action,
                    audit_id=audit_id,
                )
                result = {"new_run_id": created.run_id, "from_node": node_id}
                woken = created.run_id
    except Exception as exc:
        with store.write() as tx:
            message = exc.message if isinstance(exc, SmithersError) else type(exc).__name__
            timetravel.finish(tx, audit_id, "failed", {"error": message})
        raise
    with store.write() as tx:
        timetravel.finish(tx, audit_id, "success", result)
    if broker is not None:
        broker.wake(woken)
    return {"audit_id": audit_id, "run_id": run_id, "action": action, **result}


def new_run_id_for(action: str) -> str:
    """A fresh id for the run a replay or fork creates."""
    return f"{action}-" + uuid.uuid4().hex[:20]
