"""The scheduler process: wake on Redis signals or the sweep, decide, write, dispatch."""

from __future__ import annotations

import logging
import threading
import time

import redis

from shared.broker import Broker
from shared.config import SchedulerConfig
from shared.decision import DecisionConfig, decide
from shared.errors import SmithersError, UnknownWorkflow
from shared.registry import Registry
from shared.store import Store
from shared.store.queries import due_runs
from shared.store.state import LazyOutputs, Message, apply_decision, load_run_view, postpone

log = logging.getLogger("smithers.scheduler")
RETRY_UNKNOWN_WORKFLOW_S = 30.0


class Scheduler:
    """Drives runs forward. Safe to run several at once: each run's decision is made
    under that run's row lock (SQLite: the database write lock), and an attempt is
    created in the same transaction that marks its node queued, so a second scheduler
    sees the node taken and never dispatches it again."""

    def __init__(self, store: Store, broker: Broker, registry: Registry, config: SchedulerConfig) -> None:
        self.store = store
        self.broker = broker
        self.registry = registry
        self.config = config
        self.decision_config = DecisionConfig(config.redispatch_after_s, config.max_lost)

    def process(self, run_id: str) -> None:
        """Decide and apply for one run, then send its messages (after commit)."""
        for _ in range(20):  # follow immediate re-wakes (zero-second timers, instant retries)
            wake_at = self._process_once(run_id)
            if wake_at is None or wake_at > time.time():
                return

    def _process_once(self, run_id: str) -> float | None:
        messages: list[Message] = []
        with self.store.write() as tx:
            loaded = load_run_view(tx, run_id)
            if loaded is None:
                return None
            view, row = loaded
            try:
                wf = self.registry.get(row.workflow).workflow
            except UnknownWorkflow:
                log.error("run %s: workflow %r is not registered in this scheduler", run_id, row.workflow)
                postpone(tx, run_id, RETRY_UNKNOWN_WORKFLOW_S)
                return None
            decision = decide(wf, view, LazyOutputs(tx.conn, run_id), tx.now, self.decision_config)
            messages = apply_decision(tx, run_id, decision)
        for m in messages:
            try:
                self.broker.send_step(m.attempt_id, m.queue, m.time_limit)
            except Exception as exc:
                log.warning("run %s: attempt %s not sent (%s); it will be re-sent", run_id, m.attempt_id, exc)
        return decision.wake_at

    def sweep(self) -> list[str]:
        """Run ids whose wake time has come (queued, finished steps, timers, leases)."""
        with self.store.read() as conn:
            return due_runs(conn, time.time())

    def run_forever(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set: wait for wake-ups, sweep, process."""
        last_sweep = 0.0
        interval = self.config.sweep_interval_s
        log.info("scheduler started (sweep every %.1fs)", interval)
        while not stop.is_set():
            ids: set[str] = set()
            try:
                ids = self.broker.wait(interval)
            except redis.RedisError as exc:
                log.warning("broker unavailable (%s); sweeping the store only", exc)
                stop.wait(min(interval, 1.0))
            now = time.time()
            try:
                if not ids or now - last_sweep >= interval:
                    ids.update(self.sweep())
                    last_sweep = now
                for run_id in sorted(ids):
                    if stop.is_set():
                        break
                    self.process(run_id)
            except SmithersError as exc:
                log.warning("store unavailable (%s); retrying", exc.message)
                stop.wait(1.0)
        log.info("scheduler stopped")
