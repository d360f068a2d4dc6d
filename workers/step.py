"""Running one attempt: claim, execute the step, commit the fenced result, wake.

Plain functions; the Celery task in :mod:`workers.app` only decodes the attempt id.
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

from shared.broker import Broker
from shared.config import WorkerConfig
from shared.context import StepContext
from shared.errors import SmithersError
from shared.redaction import redact, redact_text
from shared.registry import Registry
from shared.store import Store
from shared.store.attempts import CacheWrite, Claim, claim, complete, heartbeat
from shared.store.queries import outputs_for
from shared.workflow import Node, NodeKind, Workflow
from workers.secrets import resolve_secrets

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


class Heartbeat:
    """Extends the attempt's lease while the step runs (from the process's beater thread)."""

    def __init__(self, env: WorkerEnv, c: Claim, lease_s: float, auto: bool) -> None:
        self.env = env
        self.claim = c
        self.lease_s = lease_s
        self.fenced = threading.Event()
        self.auto = auto

    def beat(self) -> bool:
        """Extend the lease now; False once the attempt was given up (fenced out)."""
        if self.fenced.is_set():
            return False
        try:
            with self.env.store.write() as tx:
                alive = heartbeat(tx, self.claim.attempt_id, self.claim.claim_token, self.lease_s)
        except SmithersError as exc:
            log.warning("heartbeat failed: %s", exc.message)
            return True
        if not alive:
            self.fenced.set()
        return alive

    def __enter__(self) -> Heartbeat:
        if self.auto:
            _BEATER.add(self)
        return self

    def __exit__(self, *_: object) -> None:
        if self.auto:
            _BEATER.remove(self)


class _Beater:
    """One daemon thread per process beats every running attempt every third of its lease.

    Starting a thread per step cost more than the step's two transactions (measured:
    docs/benchmarks.md); this one starts with the first step after a fork and stays.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[Heartbeat, float] = {}
        self._pid = 0

    def add(self, hb: Heartbeat) -> None:
        with self._cond:
            if self._pid != os.getpid():  # first step in this process (or after a fork)
                self._pid = os.getpid()
                self._due = {}
                threading.Thread(target=self._loop, name="smithers-heartbeat", daemon=True).start()
            self._due[hb] = time.monotonic() + hb.lease_s / 3
            self._cond.notify()

    def remove(self, hb: Heartbeat) -> None:
        with self._cond:
            self._due.pop(hb, None)

    def _loop(self) -> None:
        pid = os.getpid()
        while True:
            with self._cond:
                if self._pid != pid:
                    return
                now = time.monotonic()
                due = [hb for hb, at in self._due.items() if at <= now]
                for hb in due:
                    self._due[hb] = now + hb.lease_s / 3
                if not due:
                    self._cond.wait(min([*self._due.values(), now + 60.0]) - now)
                    continue
            for hb in due:
                if not hb.beat():
                    self.remove(hb)


_BEATER = _Beater()


def upstream_outputs(
    wf: Workflow, node: Node, c: Claim, outputs: dict[tuple[str, int], Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(outputs of the node's upstream, body outputs of the previous loop iteration)."""
    ups = {d: outputs.get((d, c.iteration)) for d in node.after}
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


def run_attempt(env: WorkerEnv, attempt_id: str) -> str:
    """Run one attempt end to end; returns what happened (for logs and tests)."""
    with env.store.write() as tx:
        c = claim(tx, attempt_id, env.worker_id, env.config.lease_s)
    env.broker.wake(*tx.woken)
    if c is None:
        return "refused"
    try:
        wf = env.registry.get(c.workflow).workflow
        node = wf.nodes[c.node_id]
    except (SmithersError, KeyError) as exc:
        return _commit(env, c, ok=False, error=_error(exc))
    needed = set(node.after)
    if node.loop is not None:
        needed.update(wf.nodes[node.loop].after, wf.nodes[node.loop].body)
    with env.store.read() as conn:
        outputs = outputs_for(conn, c.run_id, needed)
    ups, previous = upstream_outputs(wf, node, c, outputs)
    lease = node.heartbeat_timeout_s or env.config.lease_s
    with Heartbeat(env, c, lease, auto=node.heartbeat_timeout_s is None) as hb:
        try:
            secrets = resolve_secrets(node.secrets, env.config.secrets_dir)
            if node.kind is NodeKind.SANDBOX:
                if env.sandbox_runner is None:
                    raise SmithersError("this worker has no sandbox runtime (start it with --queues sandbox)")
                result = env.sandbox_runner(env, c, node, ups, secrets)
            else:
                assert node.fn is not None
                ctx = StepContext(
                    run_id=c.run_id,
                    node_id=c.node_id,
                    iteration=c.iteration,
                    attempt=c.number,
                    input=c.input,
                    outputs=ups,
                    previous=previous,
                    secrets=secrets,
                    heartbeat=hb.beat,
                )
                result = node.fn(ctx)
            json.dumps(result)
        except Exception as exc:
            return _commit(env, c, ok=False, error=_error(exc))
    cache = None
    if node.cache is not None:
        cache = CacheWrite(node.cache.scope, node.cache.version, node.cache.ttl_ms, wf.name)
    return _commit(env, c, ok=True, output=redact(result, keys=False), cache=cache)


def _commit(
    env: WorkerEnv,
    c: Claim,
    *,
    ok: bool,
    output: Any = None,
    error: dict[str, Any] | None = None,
    cache: CacheWrite | None = None,
) -> str:
    with env.store.write() as tx:
        committed = complete(tx, c.attempt_id, c.claim_token, ok=ok, output=output, error=error, cache=cache)
    env.broker.wake(c.run_id)
    if not committed:
        log.warning("attempt %s of %s/%s: result refused (fenced out)", c.attempt_id, c.run_id, c.node_id)
        return "fenced"
    return "succeeded" if ok else "failed"
