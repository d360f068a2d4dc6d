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

from shared.broker import Broker
from shared.errors import InvalidInput
from shared.redaction import sensitive_key
from shared.registry import Registry
from shared.store import ApprovalRecord, RunRecord, Store
from shared.store import approvals as approvals_store
from shared.store import runs as runs_store

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
        )
    if created and broker is not None:
        broker.wake(rid)
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
) -> ApprovalRecord:
    """Decide a pending approval (owner rules apply)."""
    with store.write() as tx:
        record = approvals_store.decide(
            tx, run_id, node_id, iteration, approved=approved, note=note, actor=actor
        )
    if broker is not None:
        broker.wake(run_id)
    return record


def delete(store: Store, run_id: str, actor: str | None) -> None:
    """Delete a run and its dependent rows; the audit entry stays."""
    with store.write() as tx:
        runs_store.delete_run(tx, run_id, actor)
