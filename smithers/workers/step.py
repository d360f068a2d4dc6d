"""Running one attempt: check or claim it, execute the step, commit the fenced result, wake.

Plain functions; the Celery task in :mod:`smithers.workers.app` only decodes the attempt id.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from smithers.shared import tracing
from smithers.shared.broker import Broker
from smithers.shared.budget import SpendMeter
from smithers.shared.config import WorkerConfig
from smithers.shared.context import StepContext, UpstreamOutputs
from smithers.shared.errors import InvalidInput, SmithersError
from smithers.shared.fanout import item_index, items_of
from smithers.shared.graph import output_iteration
from smithers.shared.jsonsafe import check_json
from smithers.shared.keys import SANDBOX_QUEUE, revision_queue
from smithers.shared.limits import OutputTooLarge
from smithers.shared.redaction import redact, redact_text
from smithers.shared.registry import Registry
from smithers.shared.store import Store
from smithers.shared.store import spend as spend_store
from smithers.shared.store.advance import Decider
from smithers.shared.store.attempts import (
    CLAIM_AFTER_S,
    CacheWrite,
    claim,
    complete,
    heartbeat,
    peek,
    revision_of,
    standing,
)
from smithers.shared.store.inplace import Claim, InPlace
from smithers.shared.store.kept import Kept, keep, reload
from smithers.shared.store.queries import outputs_for
from smithers.shared.store.state import Message, as_stored
from smithers.shared.workflow import Node, NodeKind, Workflow
from smithers.workers import eventloop, interrupt
from smithers.workers.interrupt import Interruptible, StepInterrupted
from smithers.workers.secrets import resolve_secrets

log = logging.getLogger("smithers.worker")

SandboxRunner = Callable[["WorkerEnv", Claim, Node, dict[str, Any], dict[str, str]], Any]


@dataclass
class WorkerEnv:
    """What a worker process holds: the store, the broker, workflows and its config."""

    store: Store
    broker: Broker
    registry: Registry
    config: WorkerConfig
    worker_id: str
    sandbox_runner: SandboxRunner | None = None

    @property
    def decider(self) -> Decider:
        """How this worker decides the runs its commits change (built once)."""
        found: Decider | None = self.__dict__.get("_decider")
        if found is None:
            found = self.__dict__["_decider"] = Decider(
                self.registry, self.config.decision, self.config.decide_max_nodes
            )
        return found


CHECK_EVERY_S = 0.5  # how often a claimed step's standing is read (cancelled? given up?)


class Heartbeat:
    """Watches one running step from the process's beater thread: claims a lazily
    started attempt once it runs past ``CLAIM_AFTER_S``, extends its lease (unless the
    step heartbeats itself: ``auto`` False), reads every ``CHECK_EVERY_S`` whether the
    attempt is still the worker's to run, and stops the step's body (:attr:`body`) at
    its deadline, when its run's cancel is asked for, or once it was given up.

    ``claim`` is the attempt as the worker holds it: without a token until claimed.
    The lock makes a beat in flight and the end of the step exclusive, so the result is
    committed under the claim the beater may just have written.
    """

    def __init__(
        self, env: WorkerEnv, c: Claim, lease_s: float, auto: bool, timeout_s: float | None = None
    ) -> None:
        self.env = env
        self.claim = c
        self.lease_s = lease_s
        self.fenced = threading.Event()
        self.auto = auto
        self.lock = threading.Lock()
        self.closed = False
        self.body = Interruptible()
        self.body.timeout_s = timeout_s
        self._why = interrupt.LOST  # why it was fenced out
        now = time.monotonic()
        self._deadline = None if c.deadline_at is None else now + (c.deadline_at - time.time())
        self._beat_at: float | None = None
        self._check_at: float | None = None
        self._asked = False  # a beat asked for by soon()
        if c.claim_token is None:
            self._beat_at = now + min(CLAIM_AFTER_S, lease_s / 3)
        else:
            self._claimed(now)

    def _claimed(self, now: float) -> None:
        self._beat_at = now + self.lease_s / 3 if self.auto else None
        self._check_at = now + CHECK_EVERY_S

    def beat(self) -> bool:
        """Claim the attempt or extend its lease now; False once it was given up (fenced out)."""
        with self.lock:
            if self.fenced.is_set():
                return False
            if self.closed:
                return True
            try:
                with self.env.store.write() as tx:
                    if self.claim.claim_token is None:
                        c = self.claim
                        got = claim(
                            tx,
                            c.attempt_id,
                            self.env.worker_id,
                            self.lease_s,
                            started_at=c.started_at,
                            run_id=c.run_id,
                        )
                        alive = got is not None
                        if got is not None:
                            self.claim = got
                            self._claimed(time.monotonic())
                    else:
                        alive = heartbeat(tx, self.claim.attempt_id, self.claim.claim_token, self.lease_s)
                        if self.auto:
                            self._beat_at = time.monotonic() + self.lease_s / 3
            except SmithersError as exc:
                log.warning("heartbeat failed: %s", exc.message)
                return True
            if not alive:
                self.fenced.set()
            return alive

    def soon(self) -> bool:
        """:meth:`beat` without waiting for it (a coroutine's ``ctx.heartbeat()``: its
        event loop must not wait on the store): the beater thread beats at once.
        False once the attempt was given up."""
        if self.fenced.is_set():
            return False
        self._asked = True
        if not self.closed:
            _BEATER.add(self)  # due now: the beater is woken
        return True

    def _check(self) -> None:
        """Read whether the claimed attempt is still ours (its run not cancelled)."""
        self._check_at = time.monotonic() + CHECK_EVERY_S
        token = self.claim.claim_token
        if token is None:
            return
        try:
            with self.env.store.read() as conn:
                why = standing(conn, self.claim.attempt_id, token)
        except SmithersError as exc:
            log.warning("heartbeat check failed: %s", exc.message)
            return
        if why is not None:
            self._why = why
            self.fenced.set()

    def tick(self, now: float) -> None:
        """The beater's turn: stop the step at its deadline, else claim or beat or check
        (whichever is due), and stop it once it is no longer ours."""
        if self.closed:
            return
        if self._deadline is not None and now >= self._deadline:
            self._deadline = None
            self._stop(interrupt.TIMEOUT)
            return
        if self._asked or (self._beat_at is not None and now >= self._beat_at):
            self._asked = False
            self.beat()
        elif self._check_at is not None and now >= self._check_at:
            self._check()
        if self.fenced.is_set():
            self._stop(self._why)

    def _stop(self, reason: str) -> None:
        if self.body.interrupt(reason):
            c = self.claim
            log.info("attempt %s of %s/%s: stopping its step (%s)", c.attempt_id, c.run_id, c.node_id, reason)

    def next_due(self) -> float | None:
        """When the beater should call :meth:`tick` next (None: never)."""
        if self.closed:
            return None
        if self._asked:
            return time.monotonic()
        due = [t for t in (self._deadline, self._beat_at, self._check_at) if t is not None]
        return min(due) if due else None

    def __enter__(self) -> Heartbeat:
        _BEATER.add(self)
        return self

    def __exit__(self, *_: object) -> None:
        _BEATER.remove(self)
        with self.lock:
            self.closed = True


class _Beater:
    """One daemon thread per process watches the steps it runs (:meth:`Heartbeat.tick`).

    Starting a thread per step cost more than the step's two transactions (measured:
    docs/benchmarks.md); this one starts with the first step after a fork and stays.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[Heartbeat, float] = {}
        self._pid = 0
        self._wakes_at = 0.0  # when the thread wakes next on its own

    def add(self, hb: Heartbeat) -> None:
        due = hb.next_due()
        if due is None:
            return
        with self._cond:
            if self._pid != os.getpid():  # first step in this process (or after a fork)
                self._pid = os.getpid()
                self._due = {}
                self._wakes_at = 0.0
                threading.Thread(target=self._loop, name="smithers-heartbeat", daemon=True).start()
            self._due[hb] = due
            if due < self._wakes_at:  # else it is awake by then anyway: no thread switch
                self._cond.notify()

    def remove(self, hb: Heartbeat) -> None:
        with self._cond:
            self._due.pop(hb, None)

    def _loop(self) -> None:
        pid = os.getpid()
        lingered = False
        while True:
            with self._cond:
                if self._pid != pid:
                    return
                now = time.monotonic()
                due = [hb for hb, at in self._due.items() if at <= now]
                for hb in due:
                    del self._due[hb]
                if not due:
                    if self._due:
                        self._wakes_at, lingered = min(self._due.values()), False
                    elif not lingered:
                        # Steps come and go faster than this thread wakes: stay on a
                        # CLAIM_AFTER_S tick for a while rather than being woken by
                        # every step's add() only to find that step already finished.
                        self._wakes_at, lingered = now + CLAIM_AFTER_S, True
                    else:
                        self._wakes_at, lingered = now + 60.0, False  # an add() wakes it
                    self._cond.wait(self._wakes_at - now)
                    self._wakes_at = 0.0
                    continue
            for hb in due:
                try:
                    hb.tick(now)
                except Exception:  # one step's bad turn must not stop every step's heartbeats
                    log.exception("heartbeat of attempt %s failed", hb.claim.attempt_id)
                if not hb.closed:
                    self.add(hb)


_BEATER = _Beater()


def upstream_outputs(
    wf: Workflow, node: Node, c: Claim, outputs: dict[tuple[str, int], Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(outputs of the node's upstream, body outputs of the previous loop iteration)."""
    ups = {d: outputs.get((d, output_iteration(wf.nodes, node.id, d, c.iteration))) for d in node.after}
    previous: dict[str, Any] = {}
    if node.loop is not None:
        loop = wf.nodes[node.loop]
        for d in loop.after:
            ups.setdefault(d, outputs.get((d, 0)))
        if c.iteration > 0:
            previous = {
                m: outputs[(m, c.iteration - 1)] for m in loop.body if (m, c.iteration - 1) in outputs
            }
    return ups, previous


def _needed_outputs(
    env: WorkerEnv, wf: Workflow, node: Node, c: Claim, after: tuple[str, int, Any] | None
) -> dict[tuple[str, int], Any]:
    """The outputs :func:`upstream_outputs` picks from: read from the store, or, for a
    node of one parent (no loop) run in place after it, the parent's output as it was
    just committed (``after``)."""
    needed = set(node.after)
    if node.loop is not None:
        needed.update(wf.nodes[node.loop].after, wf.nodes[node.loop].body)
    if not needed:
        return {}
    if after is not None and node.loop is None and needed == {after[0]}:
        key = (after[0], output_iteration(wf.nodes, node.id, after[0], c.iteration))
        if key == after[:2]:
            return {key: after[2]}
    with env.store.read() as conn:
        return outputs_for(conn, c.run_id, needed)


def _readable_outputs(
    env: WorkerEnv, wf: Workflow, node: Node, c: Claim, parents: dict[str, Any]
) -> UpstreamOutputs:
    """Every output the step may read (``ctx.output``): the direct parents (read before
    the step), the other nodes it depends on read together, in one query, on first use."""
    names = wf.upstream(node.id)

    def read(_name: str) -> dict[str, Any]:
        missing = [n for n in names if n not in parents]
        with env.store.read() as conn:
            found = outputs_for(conn, c.run_id, missing)
        return {n: found.get((n, output_iteration(wf.nodes, node.id, n, c.iteration))) for n in missing}

    return UpstreamOutputs(names, parents, read)


def _item(node: Node, parents: dict[str, Any], index: int | None) -> Any:
    """The item a map node's execution runs (None for the map's other nodes)."""
    if node.map is None or index is None:
        return None
    items = items_of(node.map, parents.get(node.map.over))
    if index >= len(items):
        raise InvalidInput(f"map {node.id!r} has no item {index} (its list has {len(items)})")
    return items[index]


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, SmithersError):
        return {"code": exc.code, "type": type(exc).__name__, "message": redact_text(exc.message)}
    tb = "".join(traceback.format_exception(exc))[-4000:]
    return {
        "code": "step_error",
        "type": type(exc).__name__,
        "message": redact_text(str(exc))[:2000],
        "traceback": redact_text(tb),
    }


def _start(env: WorkerEnv, attempt_id: str, after: int | None) -> Claim | None:
    """The attempt to run: unclaimed if :func:`peek` allows a lazy claim, else claimed
    now (taking over an expired lease); None if it is not ours to run (recorded).
    ``after``: the message was sent before its dispatch committed (see :func:`peek`)."""
    with env.store.read() as conn:
        c = peek(conn, attempt_id, time.time(), after)
        owner = (c.workflow, c.module_revision) if c is not None else revision_of(conn, attempt_id)
    if owner is None:
        # Nothing to claim. Its run was deleted, or the message is another store's: two
        # deployments whose workers share a broker database take each other's messages.
        log.warning("attempt %s is not in this store (its run deleted, or a message of another "
                    "deployment sharing this broker database?): dropped", attempt_id)  # fmt: skip
        return None
    if not holds(env.registry, *owner):
        # Another revision's step (a message from before a deploy or a migration): this
        # code must not run it. Left queued, it is re-sent to its revision's queue.
        log.warning("attempt %s: revision %s of %r is not held here; left for its holders", attempt_id,
                    owner[1][:12], owner[0])  # fmt: skip
        return None
    if c is not None:
        entry = env.registry.find(c.workflow)
        node = entry.workflow.nodes.get(c.node_id) if entry is not None else None
        # Sandbox steps run for seconds: they are claimed before they start. An unknown
        # workflow or node is claimed, then failed with the reason.
        if node is not None and node.kind is not NodeKind.SANDBOX:
            return c
    with env.store.write() as tx:
        got = claim(tx, attempt_id, env.worker_id, env.config.lease_s)
    env.broker.wake_soon(*tx.woken)
    return got


def holds(registry: Registry, workflow: str, revision: str) -> bool:
    """True if this process has ``workflow`` loaded at ``revision``."""
    entry = registry.find(workflow)
    return entry is not None and entry.revision == revision


class _Chain:
    """How far one delivered message may go on running steps in place: a number of
    steps and a time (``SMITHERS_CHAIN_STEPS``, ``SMITHERS_CHAIN_SECONDS``), and none
    when the message carries a Celery time limit (it covers the whole task)."""

    def __init__(self, env: WorkerEnv, allowed: bool) -> None:
        self.steps = env.config.chain_steps if allowed else 0
        self.until = time.monotonic() + env.config.chain_s

    def take(self) -> bool:
        """True (and one step fewer left) if another step may run in place now."""
        if self.steps <= 0 or time.monotonic() >= self.until:
            return False
        self.steps -= 1
        return True


def run_attempt(env: WorkerEnv, attempt_id: str, after: int | None = None, time_limited: bool = False) -> str:
    """Run one attempt end to end, then each step its commit made ready here, in place
    (bounded: :class:`_Chain`); returns what happened to the first (for logs and tests).

    ``time_limited``: the message carries a Celery time limit, which would cover every
    step run in place after it: then none is."""
    chain = _Chain(env, not time_limited)
    with tracing.span("smithers.step", **{tracing.ATTEMPT_ID: attempt_id}):
        c = _start(env, attempt_id, after)
        if c is None:
            return "refused"
        first, follow = _run_claimed(env, c, chain)
    while follow is not None:
        with tracing.span("smithers.step", **{tracing.ATTEMPT_ID: follow.claim.attempt_id}):
            _, follow = _run_claimed(env, follow.claim, chain, follow.after, follow.kept)
    return first


@dataclass(frozen=True)
class _Follow:
    """The step to run next in place, and the output its predecessor just committed
    (node, iteration, value as stored; None if it failed): its parent's, when it has
    only that one, is not read back from the store. ``kept``: the run as that commit
    left it, which the next commit reads again only in part (:mod:`smithers.shared.store.kept`)."""

    claim: Claim
    after: tuple[str, int, Any] | None
    kept: Kept | None = None


Outcome = tuple[str, _Follow | None]  # what happened, and the step to run next in place


def _run_claimed(
    env: WorkerEnv,
    c: Claim,
    chain: _Chain,
    after: tuple[str, int, Any] | None = None,
    kept: Kept | None = None,
) -> Outcome:
    tracing.annotate(**_attributes(c))
    try:
        wf = env.registry.get(c.workflow).workflow
        node = wf.nodes[c.node_id]
    except (SmithersError, KeyError) as exc:
        return _commit(env, c, chain, ok=False, error=_error(exc), kept=kept)
    parents, previous = upstream_outputs(wf, node, c, _needed_outputs(env, wf, node, c, after))
    readable = _readable_outputs(env, wf, node, c, parents)
    c = c.starting(time.time())  # a lazy claim's start: now, after the reads above
    failure: dict[str, Any] | None
    meter = SpendMeter()  # what the step reports spending (ctx.spend), committed with its result
    lease = node.heartbeat_timeout_s or env.config.lease_s
    with Heartbeat(env, c, lease, auto=node.heartbeat_timeout_s is None, timeout_s=node.timeout_s) as hb:
        try:
            secrets = resolve_secrets(node.secrets, env.config.secrets_dir, allow=env.config.secrets_allow)
            if node.kind is NodeKind.SANDBOX:
                if env.sandbox_runner is None:
                    raise SmithersError("this worker has no sandbox runtime (start it with --queues sandbox)")
                result = env.sandbox_runner(env, c, node, parents, secrets)
            else:
                assert node.fn is not None
                index = item_index(c.iteration) if node.map is not None else None
                ctx = StepContext(
                    run_id=c.run_id,
                    node_id=c.node_id,
                    iteration=c.iteration if index is None else 0,
                    attempt=c.number,
                    input=c.input,
                    outputs=parents,
                    upstream=readable,
                    previous=previous,
                    secrets=secrets,
                    heartbeat=eventloop.heartbeat(hb.beat, hb.soon),
                    item=_item(node, parents, index),
                    index=index,
                    meter=meter,
                )
                # stopped at its deadline, on cancel, or once given up; a coroutine on the loop
                result = eventloop.call(node.fn, ctx, hb.body)
            check_json(result, "the step's output")  # storable on either store, or the step fails
            json.dumps(result, allow_nan=False)
        except StepInterrupted:
            failure = hb.body.error()
        except Exception as exc:
            failure = _error(exc)
        else:
            failure = None
    c = hb.claim  # the beater may have claimed it meanwhile
    if failure is not None:
        return _commit(env, c, chain, ok=False, error=failure, meter=meter, kept=kept)
    cache = None
    if node.cache is not None:
        cache = CacheWrite(node.cache.scope, node.cache.version, node.cache.ttl_ms, wf.name)
    try:
        output = redact(result, keys=False)
        return _commit(env, c, chain, ok=True, output=output, cache=cache, meter=meter, kept=kept)
    except OutputTooLarge as exc:  # refused before anything was written: the step fails
        log.warning("attempt %s of %s/%s: %s", c.attempt_id, c.run_id, c.node_id, exc.message)
        return _commit(env, c, chain, ok=False, error=_error(exc), meter=meter, kept=kept)


def _attributes(c: Claim) -> dict[str, Any]:
    return {
        tracing.RUN_ID: c.run_id,
        tracing.NODE_ID: c.node_id,
        tracing.ITERATION: c.iteration,
        tracing.ATTEMPT: c.number,
        tracing.WORKFLOW: c.workflow,
    }


def _commit(
    env: WorkerEnv,
    c: Claim,
    chain: _Chain,
    *,
    ok: bool,
    output: Any = None,
    error: dict[str, Any] | None = None,
    cache: CacheWrite | None = None,
    meter: SpendMeter | None = None,
    kept: Kept | None = None,
) -> Outcome:
    """Commit the result fenced by the attempt and, in the same transaction under the
    run's lock, decide what follows (:func:`~smithers.shared.store.advance.advance`);
    when that makes exactly one step ready on a queue this worker consumes, claim it
    there too and return it to run in place. The other messages go out after commit.
    ``kept``: the run as this worker's previous commit in the chain left it."""
    follow: Claim | None = None
    done = None
    in_place: InPlace | None = None
    # the output as a read of the store returns it: the decision and the step run next
    # in place are given it instead of reading it back
    written = (c.node_id, c.iteration, as_stored(output)) if ok else None
    with tracing.child_span("smithers.commit", **_attributes(c)), env.store.write() as tx:
        if meter is not None:  # spent, whether the result is accepted or refused
            spend_store.record(tx, c.attempt_id, meter)
        entry = env.registry.find(c.workflow)
        wf = entry.workflow if entry is not None else None
        # the run read once (whole, or what moved since the chain's last commit: smithers.shared.store.kept):
        # the result is checked on it and the decision made from it
        loaded = reload(tx, c.run_id, kept) if env.decider.decides(wf) else None
        committed = complete(
            tx,
            c.attempt_id,
            c.claim_token,
            ok=ok,
            output=output,
            error=error,
            cache=cache,
            worker=env.worker_id,
            started_at=c.started_at,
            run_id=c.run_id,
            loaded=loaded,
        )
        if committed:
            in_place = InPlace(env.worker_id, c.input, lambda m, revision: _takes(env, m, revision, chain))
            known = {} if written is None else {(c.node_id, c.iteration): written[2]}
            view = None if loaded is None or loaded.stale else (loaded.view, loaded.run)
            done = env.decider.after(tx, c.run_id, wf, in_place, known, view)
            follow = in_place.claim if done is not None else None
        if tx.dialect.wake_before_commit and c.run_id in tx.woken:
            # The run row stays locked until COMMIT, so a scheduler woken now waits
            # for the commit before it reads the run: its wake-up overlaps the
            # commit's round trip and WAL flush instead of following them. (On SQLite
            # a commit is short and a scheduler that finds the write lock taken
            # polls for it: wake after.)
            tx.before_commit(lambda: env.broker.wake_soon(c.run_id))
    if not tx.dialect.wake_before_commit and tx.woken:
        env.broker.wake_soon(*tx.woken)
    if done is not None and done.messages:
        with tracing.use(done.trace):  # each publish: its decision's child
            env.broker.try_send_steps(
                [m for m in done.messages if follow is None or m.attempt_id != follow.attempt_id]
            )
    if not committed:
        log.warning("attempt %s of %s/%s: result refused (fenced out)", c.attempt_id, c.run_id, c.node_id)
        return "fenced", None
    if follow is None or in_place is None:
        return ("succeeded" if ok else "failed"), None
    return ("succeeded" if ok else "failed"), _Follow(
        follow, written, keep(tx, c.run_id, loaded, in_place, (c.node_id, c.iteration))
    )


def _takes(env: WorkerEnv, m: Message, revision: str, chain: _Chain) -> float | None:
    """The lease with which this worker takes ``m`` (of ``revision``), the one step its
    commit's decision sends, to run it next in place (:mod:`smithers.shared.store.inplace`):
    if it consumes its queue and the chain's bound allows; else None (it is sent)."""
    consumed = {revision_queue(q, revision) for q in env.config.queues if q != SANDBOX_QUEUE}
    if m.time_limit is not None or m.queue not in consumed:  # a node's own queue too (smithers.shared.flow)
        return None
    entry = env.registry.find(m.workflow)
    node = entry.workflow.nodes.get(m.node_id) if entry is not None else None
    if node is None or node.kind is not NodeKind.TASK or not chain.take():
        return None
    return node.heartbeat_timeout_s or env.config.lease_s
