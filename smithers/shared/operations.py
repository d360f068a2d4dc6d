"""Run operations used by the CLI and the gateway alike: validate, write, wake.

Each operation is one store transaction (the change and its events), followed by a
best-effort wake-up of the scheduler after commit. Invalid input raises before
anything is written.
"""

from __future__ import annotations

import json
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from smithers.shared import flow, retention, settings, tracing
from smithers.shared.broker import Broker
from smithers.shared.budget import Budget
from smithers.shared.errors import Conflict, InvalidInput, NotFound, SmithersError
from smithers.shared.jsonsafe import check_json
from smithers.shared.limits import check_size
from smithers.shared.redaction import sensitive_key, url_password
from smithers.shared.registry import Registered, Registry
from smithers.shared.revision import skeleton
from smithers.shared.store import ApprovalRecord, RunRecord, Store, revisions, timetravel
from smithers.shared.store import approvals as approvals_store
from smithers.shared.store import runs as runs_store
from smithers.shared.store import sandboxes as sandboxes_store
from smithers.shared.store import signals as signals_store
from smithers.shared.store.advance import Advanced, Decider
from smithers.shared.store.queries import get_run
from smithers.shared.store.tx import Tx
from smithers.shared.ttlcache import TtlCache
from smithers.shared.workflow import Workflow


def new_run_id() -> str:
    """A fresh run id matching ``[a-z0-9_-]{1,64}``."""
    return "run-" + uuid.uuid4().hex[:20]


def check_input(
    value: Any, public: Iterable[str] = (), max_bytes: int = settings.MAX_INPUT_BYTES.default
) -> dict[str, Any]:
    """Run input must be a JSON object of at most ``max_bytes`` (its compact JSON; over
    it: 413) with no credential in it (at any depth).

    Refused: a non-empty value (a string, or an object or list holding one) under a key
    that names a credential (:func:`~smithers.shared.redaction.sensitive_key`: its last
    word, after splitting camelCase, snake_case, kebab-case and dots, is ``token``,
    ``secret``, ``password``, ``pwd``, ``passphrase``, ``auth``, ``apikey``...), and a URL
    with a password in it. ``max_tokens: 100`` (a number) is not a credential;
    ``secret_name`` or ``token_count`` (ending with another word) are not either.
    ``public``: key names the workflow declares harmless (``Workflow(public_inputs=...)``).
    Also strict JSON: :func:`smithers.shared.jsonsafe.check_json`.
    """
    if not isinstance(value, dict):
        raise InvalidInput(f"run input must be a JSON object, not {type(value).__name__}")
    check_json(value, "input")
    check_size(value, max_bytes, "run input")
    _check_keys(value, "input", frozenset(public))
    return value


_HOW = (
    "; pass secrets by name to the worker (Workflow.task(secrets=...)), never through run input."
    " If the key holds no secret, declare it in Workflow(..., public_inputs=[{key!r}])"
)


def _check_keys(value: Any, path: str, public: frozenset[str]) -> None:
    if isinstance(value, str):
        if url_password(value):
            raise InvalidInput(
                f"{path} is a URL with a password in it" + _HOW.format(key=path.rsplit(".", 1)[-1])
            )
    elif isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{path}.{key}"
            if isinstance(key, str) and key not in public and sensitive_key(key) and _holds_value(item):
                raise InvalidInput(f"{where} looks like a credential" + _HOW.format(key=key))
            if key not in public:
                _check_keys(item, where, public)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_keys(item, f"{path}[{i}]", public)


def _holds_value(value: Any) -> bool:
    """A string, or an object or list with a string somewhere in it (a credential's shape)."""
    if isinstance(value, str):
        return bool(value)
    if isinstance(value, Mapping):
        return any(_holds_value(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_value(v) for v in value)
    return False


def parse_input(text: str) -> dict[str, Any]:
    """Parse a JSON object given on a command line (strict JSON; :func:`launch` checks
    the rest)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"input is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(value, dict):
        raise InvalidInput(f"run input must be a JSON object, not {type(value).__name__}")
    check_json(value, "input")
    return value  # the launch (or fork) checks keys and size with the workflow's declarations


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
    decider: Decider | None = None,
    priority: int | None = None,
    budget: Any = None,
) -> tuple[RunRecord, bool]:
    """Launch a run (idempotent by run id); returns ``(run, created)``. With a
    ``decider`` the launch's transaction also makes the run's first decision, and its
    first steps are sent after commit; without, the scheduler is woken for it.
    ``priority``: 0..9, higher first (smithers.shared.flow); a workflow with flow limits
    needs its key fields in the input. ``budget``: ceilings overriding the workflow's, by
    name (smithers.shared.budget)."""
    entry = registry.get(workflow)
    checked = check_input(run_input, entry.workflow.public_inputs, store.limits.input_bytes)
    flow.check_input(entry.workflow.flow, checked)
    rank = flow.check_priority(priority)
    ceilings = launch_budget(entry.workflow, budget)
    rid = runs_store.check_run_id(run_id) if run_id is not None else new_run_id()
    first = _FirstDecision(decider, broker, rid, entry.workflow)
    # its graph stays readable after the module is gone; so do its child workflows'
    # (a child node launches the newest revision of its workflow the store knows):
    # written once per process and store, the rows are never deleted
    graphs = revisions.unrecorded(store, [entry, *child_entries(registry, entry.workflow)])

    with tracing.span("smithers.launch", **{tracing.RUN_ID: rid, tracing.WORKFLOW: workflow}):
        traceparent = tracing.traceparent()  # the launch's own: the run's decisions are its children
        first.traceparent, first.budget = traceparent, None if ceilings is None else ceilings.to_json()
        run, created = runs_store.launch_once(
            store,
            first=(lambda tx: revisions.record(tx, graphs)) if graphs else None,
            run_id=rid,
            workflow=workflow,
            workflow_version=entry.workflow.version,
            module_revision=entry.revision,
            deployment_version=deployment_version,
            run_input=checked,
            launched_by=launched_by,
            fresh=run_id is None,
            traceparent=traceparent,
            priority=rank,
            budget=first.budget,
            then=first.then,
        )
    revisions.committed(store, graphs)
    if created:
        _follow(broker, first.done, rid, soon=True)
        run = first.reread(store, run)
    return run, created


def child_entries(registry: Registry, wf: Workflow) -> list[Registered]:
    """The registered workflows ``wf``'s child nodes launch, and theirs (each once)."""
    found: dict[str, Registered] = {}
    todo = [wf]
    while todo:
        for node in todo.pop().nodes.values():
            name = node.child_workflow
            entry = registry.find(name) if name is not None and name not in found else None
            if entry is not None and name is not None:
                found[name] = entry
                todo.append(entry.workflow)
    return list(found.values())


def launch_budget(wf: Workflow, override: Any) -> Budget | None:
    """A run's ceilings: the workflow's, with those the launch names replaced (a null
    removes one); raises InvalidInput for a malformed override."""
    if override is None:
        return wf.budget
    found = (wf.budget or Budget()).merged(override)
    return None if found.empty else found


def parse_budget(text: str | None) -> dict[str, Any] | None:
    """The ``--budget`` of ``smithers run``: a JSON object of ceilings (checked at launch)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"--budget is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput('--budget must be a JSON object, e.g. {"tokens": 100000, "cost": 5}')
    Budget().merged(value)  # refuse a bad ceiling before anything is sent or written
    return value


class _FirstDecision:
    """A new run's first decision, made in its launch's transaction (:meth:`then`)."""

    def __init__(self, decider: Decider | None, broker: Broker | None, run_id: str, wf: Workflow) -> None:
        self.decider = decider if broker is not None else None  # no broker: no one to send its steps
        self.run_id = run_id
        self.wf = wf
        self.done: Advanced | None = None
        self.events = 0
        self.traceparent: str | None = None  # the run's columns the decision reads (set at launch)
        self.budget: dict[str, Any] | None = None

    def then(self, tx: Tx, run: RunRecord, created: bool) -> None:
        if created and self.decider is not None:
            # decided from the run as just inserted (nothing to read); its events follow
            # run.launched (seq 1, given) in the same insert
            before = tx.pending_events(self.run_id)
            loaded = runs_store.new_run_view(run, self.traceparent, self.budget)
            self.done = self.decider.after(tx, self.run_id, self.wf, loaded=loaded)
            self.events = tx.pending_events(self.run_id) - before  # the decision's

    def reread(self, store: Store, run: RunRecord) -> RunRecord:
        """``run`` as committed, if its first decision moved it on (else as launched):
        its status and last seq from the decision, or read again if it ended (its
        output and end time are then the store's)."""
        done = self.done
        if done is None or not done.decided:
            return run
        if done.status is None or not done.status.terminal:
            return replace(run, status=done.status or run.status, last_seq=1 + self.events)
        with store.read() as conn:
            return get_run(conn, self.run_id) or run


def _decide(tx: Tx, decider: Decider | None, broker: Broker | None, run_id: str) -> Advanced | None:
    """The run's decision after a change in ``tx``, if this process decides (it has a
    ``decider``, and a broker to send the steps it makes ready)."""
    return decider.after(tx, run_id) if decider is not None and broker is not None else None


def _follow(broker: Broker | None, done: Advanced | None, run_id: str, *, soon: bool = False) -> None:
    """After the commit of a change to ``run_id``: send the steps its decision made
    ready, or, when this process did not decide it, wake a scheduler for it. Best
    effort either way: the scheduler's sweep finds a run due and re-sends a lost step."""
    if broker is None:
        return
    if done is not None and done.decided:
        with tracing.use(done.trace):  # each publish: its decision's child
            broker.try_send_steps(done.messages)
        if done.near:  # due again in a moment (a short timer): a scheduler keeps that time
            broker.wake_soon(run_id)
    elif soon:
        broker.wake_soon(run_id)
    else:
        broker.wake(run_id)


def cancel(
    store: Store, broker: Broker | None, run_id: str, actor: str | None, decider: Decider | None = None
) -> RunRecord:
    """Ask for a run's cancellation (decided at once with a ``decider``)."""
    with store.write() as tx:
        run = runs_store.request_cancel(tx, run_id, actor)
        done = _decide(tx, decider, broker, run_id)
    _follow(broker, done, run_id)
    return run


def resume(
    store: Store, broker: Broker | None, run_id: str, actor: str | None, decider: Decider | None = None
) -> RunRecord:
    """Reopen a failed or cancelled run under the same id (decided at once with a ``decider``)."""
    with store.write() as tx:
        run = runs_store.resume(tx, run_id, actor)
        done = _decide(tx, decider, broker, run_id)
    _follow(broker, done, run_id)
    return run


def rerun(
    store: Store,
    broker: Broker | None,
    registry: Registry,
    run_id: str,
    *,
    rerun_id: str | None,
    launched_by: str,
    deployment_version: str,
    decider: Decider | None = None,
) -> tuple[RunRecord, bool]:
    """A new run of ``run_id``'s workflow (its current revision here) with the same input,
    its parent the old run; ``(run, created)``. The same ``new_run_id`` again returns the
    same rerun (``rerun_id``); an id taken by anything else is a :class:`Conflict`. With
    a ``decider`` its first decision is made as a launch's is."""
    with store.read() as conn:
        old = get_run(conn, run_id)
    if old is None:
        raise NotFound(f"run {run_id!r} not found")
    entry = registry.get(old.workflow)
    new_id = runs_store.check_run_id(rerun_id) if rerun_id is not None else new_run_id()
    first = _FirstDecision(decider, broker, new_id, entry.workflow)
    run, created = runs_store.launch_once(
        store,
        first=lambda tx: revisions.record(tx, [entry]),
        run_id=new_id,
        workflow=old.workflow,
        workflow_version=entry.workflow.version,
        module_revision=entry.revision,
        deployment_version=deployment_version,
        run_input=old.input,
        launched_by=launched_by,
        parent_run_id=old.run_id,
        lineage={"rerun_of": old.run_id},
        budget=entry.workflow.budget.to_json() if entry.workflow.budget else None,  # the workflow's ceilings
        then=first.then,
    )
    if not created and run.parent_run_id != old.run_id:  # nothing was written: it existed
        raise Conflict(f"run {new_id!r} already exists and is not a rerun of {old.run_id!r}")
    if created:
        _follow(broker, first.done, run.run_id)
        run = first.reread(store, run)
    return run, created


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
    decider: Decider | None = None,
    asserted_by: str | None = None,
) -> ApprovalRecord:
    """Decide a pending approval (owner rules and its declared payload apply); with a
    ``decider`` the run moves on in the same transaction. ``asserted_by``: the local
    operator who named ``actor`` (recorded as asserted)."""
    with store.write() as tx:
        record = approvals_store.decide(
            tx,
            run_id,
            node_id,
            iteration,
            approved=approved,
            note=note,
            actor=actor,
            payload=payload,
            asserted_by=asserted_by,
        )
        done = _decide(tx, decider, broker, run_id)
    _follow(broker, done, run_id)
    return record


def signal(
    store: Store,
    broker: Broker | None,
    registry: Registry,
    run_id: str,
    name: str,
    *,
    signal_id: str | None,
    payload: Any,
    sender: str | None,
    decider: Decider | None = None,
) -> tuple[signals_store.SignalRecord, bool]:
    """Send the signal ``name`` to a run; ``(record, created)``. Idempotent by
    ``signal_id`` (the first delivery comes back); the payload is checked against the
    signal node's schema. With a ``decider`` a waiting node takes it in the same
    transaction, so the run moves on at once."""
    with store.read() as conn:
        run = get_run(conn, run_id)
    if run is None:
        raise NotFound(f"run {run_id!r} not found")
    wf = workflow_of(store, registry, run)
    with store.write() as tx:
        record, created = signals_store.deliver(
            tx, wf, run_id, name, signal_id=signal_id, payload=payload, sender=sender
        )
        done = _decide(tx, decider, broker, run_id) if created else None
    if created:
        _follow(broker, done, run_id)
    return record, created


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
    decider: Decider | None = None,
    asserted_by: str | None = None,
) -> sandboxes_store.SandboxRecord:
    """Accept or reject a sandbox's pending patches (``sandbox`` may name its node
    with ``by_node``); the decision, its event and audit row are one transaction (with
    a ``decider``, so is the run's next move). ``asserted_by``: the local operator who
    named ``actor`` (recorded as asserted)."""
    with store.write() as tx:
        sandbox_id = sandboxes_store.resolve_sandbox(tx.conn, run_id, sandbox) if by_node else sandbox
        record = sandboxes_store.review(
            tx, run_id, sandbox_id, accept=accept, note=note, actor=actor, asserted_by=asserted_by
        )
        done = _decide(tx, decider, broker, run_id)
    _follow(broker, done, run_id)
    return record


def delete(store: Store, run_id: str, actor: str | None) -> None:
    """Delete a run and its dependent rows, then its sandbox bundles on disk; the audit
    entry stays."""
    with store.write() as tx:
        deleted = runs_store.delete_run(tx, run_id, actor)
    if deleted is not None:
        retention.remove_bundles(deleted.bundle_paths)


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
    item: int | None = None,
) -> dict[str, Any]:
    """Rewind, replay or fork a run at ``node_id``, audited before and after; a rewind
    with ``item`` reopens only that item of the map ``node_id`` (and what follows it).

    Returns ``{"audit_id", "run_id", ...}``; the affected run is woken.
    """
    if confirm is not True:
        raise InvalidInput("time travel changes history: pass confirm=true")
    with store.read() as conn:
        run = get_run(conn, run_id)
    if run is None:
        raise NotFound(f"run {run_id!r} not found")
    wf = workflow_of(store, registry, run)
    timetravel.reopened(wf, node_id)  # unknown node: refuse before writing anything
    if item is not None and action != "rewind":
        raise InvalidInput("item is for rewind only: replay and fork reopen the whole map")
    checked_input = (
        check_input(new_input, wf.public_inputs, store.limits.input_bytes) if action == "fork" else None
    )
    target = runs_store.check_run_id(new_run_id) if new_run_id else new_run_id_for(action)
    params = {
        "node_id": node_id,
        "new_run_id": target if action != "rewind" else None,
        "input_hash": runs_store.input_hash(checked_input) if checked_input is not None else None,
        **({"item": item} if item is not None else {}),
    }
    with store.write() as tx:
        audit_id = timetravel.begin(
            tx, run_id=run_id, action=action, caller=caller, params=params, per_minute=per_minute
        )
    try:
        with store.write() as tx:
            if action == "rewind":
                result = timetravel.rewind(tx, wf, run_id, node_id, audit_id, item)
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
    # New attempts run the run's own revision (a replay or fork copies it).
    revision = {"revision": run.module_revision, "workflow_version": run.workflow_version}
    return {"audit_id": audit_id, "run_id": run_id, "action": action, **result, **revision}


def workflow_of(store: Store, registry: Registry, run: RunRecord) -> Workflow:
    """The graph of the revision ``run`` records: the loaded workflow when this process
    holds that revision, else the stored graph (functions absent: walk it, never run it)."""
    entry = registry.find(run.workflow)
    if entry is not None and entry.revision == run.module_revision:
        return entry.workflow
    with store.read() as conn:
        graph = revisions.stored_graph(conn, run.workflow, run.module_revision)
    if graph is None:
        if entry is not None:
            return entry.workflow  # a run from before revisions were stored: the same graph or none
        raise NotFound(f"revision {run.module_revision[:12]} of workflow {run.workflow!r} is not known")
    return skeleton(graph)


HOLDERS_CACHE_S = 1.0  # how long a launch's holder check is reused (docs/api.md)
_holders_seen: weakref.WeakKeyDictionary[Store, TtlCache[tuple[str, str, float], list[str]]] = (
    weakref.WeakKeyDictionary()
)


def _missing_roles(store: Store, workflow: str, revision: str, ttl_s: float) -> list[str]:
    """:func:`revisions.missing_roles` now, read at most once per ``HOLDERS_CACHE_S`` per
    process (holders refresh their rows every few seconds; a launch's warning is advice)."""
    seen = _holders_seen.setdefault(store, TtlCache(HOLDERS_CACHE_S, 1024))
    key = (workflow, revision, ttl_s)
    missing = seen.fresh(key)
    if missing is None:
        with store.read() as conn:
            missing = revisions.missing_roles(conn, workflow, revision, time.time(), ttl_s)
        seen.put(key, missing)
    return missing


def holder_warning(store: Store, registry: Registry, workflow: str, ttl_s: float) -> dict[str, Any] | None:
    """A warning when no live scheduler or no live worker holds the revision of
    ``workflow`` this process has loaded (a launch would sit queued), else None."""
    entry = registry.get(workflow)
    missing = _missing_roles(store, workflow, entry.revision, ttl_s)
    if not missing:
        return None
    return {
        "code": revisions.UNAVAILABLE,
        "revision": entry.revision,
        "missing": missing,
        "message": (
            f"no live {' or '.join(missing)} holds revision {entry.revision[:12]} of {workflow!r}:"
            " the run stays queued until one starts"
        ),
    }


def migrate(
    store: Store, broker: Broker | None, run_id: str, *, to: str, actor: str, note: Any = None
) -> dict[str, Any]:
    """Move one run to another revision of its workflow (audited; see
    :func:`smithers.shared.store.revisions.migrate_run`), then wake it."""
    checked = revisions.check_note(note)
    with store.write() as tx:
        result = revisions.migrate_run(tx, run_id, to, actor, checked)
    if broker is not None:
        broker.wake(run_id)
    return result


def migrate_all(
    store: Store, broker: Broker | None, workflow: str, *, source: str, to: str, actor: str, note: Any = None
) -> dict[str, Any]:
    """Migrate every unfinished (or failed) run of ``workflow`` on revision ``source``, each
    in its own transaction: ``{"migrated": [...], "refused": [{"run_id", "error", ...}]}``."""
    checked = revisions.check_note(note)
    with store.read() as conn:
        source_rev = revisions.resolve(conn, workflow, source)
        revisions.resolve(conn, workflow, to)  # an unknown target: refuse before any run moves
        ids = revisions.runs_on(conn, workflow, source_rev)
    migrated: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    for rid in ids:
        try:
            with store.write() as tx:
                migrated.append(revisions.migrate_run(tx, rid, to, actor, checked))
        except SmithersError as exc:
            refused.append({"run_id": rid, "code": exc.code, "message": exc.message, **(exc.details or {})})
    if broker is not None and migrated:
        broker.wake(*[m["run_id"] for m in migrated])
    return {"workflow": workflow, "from": source_rev, "migrated": migrated, "refused": refused}


def new_run_id_for(action: str) -> str:
    """A fresh id for the run a replay or fork creates."""
    return f"{action}-" + uuid.uuid4().hex[:20]
