"""The scheduler process: wake on Redis signals or the sweep, decide, write, dispatch."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from functools import cached_property
from typing import Any

import redis

from smithers.scheduler.pacing import Pacing
from smithers.scheduler.ticker import Ticker
from smithers.scheduler.timers import HORIZONS, Timers
from smithers.shared import retention, tracing
from smithers.shared.actions import DecisionConfig
from smithers.shared.broker import Broker
from smithers.shared.config import SchedulerConfig
from smithers.shared.errors import SmithersError
from smithers.shared.registry import Registry
from smithers.shared.store import Store, revisions
from smithers.shared.store.advance import advance
from smithers.shared.store.feed import number_now
from smithers.shared.store.queries import queued_before, wake_times
from smithers.shared.store.state import Message, postpone
from smithers.shared.store.timetravel import settle_leftovers
from smithers.shared.store.tx import Tx
from smithers.shared.workflow import Workflow

log = logging.getLogger("smithers.scheduler")
RETRY_UNKNOWN_WORKFLOW_S = 30.0
EPOCH_MARGIN_S = 1.0  # queued attempts dispatched this soon after a new epoch are re-sent too
MAX_BATCH = 64  # runs decided in one transaction
MAX_BATCH_S = 0.005  # ... or this much work, whichever comes first
RETENTION_EVERY_S = 300.0  # between retention passes once nothing old is left
RETENTION_BUDGET_S = 1.0  # the most a pass takes from the loop (a run per transaction)


class Scheduler:
    """Drives runs forward. Safe to run several at once: each run's decision is made
    under that run's row lock (SQLite: the database write lock), and an attempt is
    created in the same transaction that marks its node queued, so a second scheduler
    sees the node taken and never dispatches it again."""

    def __init__(
        self,
        store: Store,
        broker: Broker,
        registry: Registry,
        config: SchedulerConfig,
        *,
        deployment_version: str = "",
    ) -> None:
        self.store = store
        self.deployment_version = deployment_version  # recorded on the runs its schedules launch
        self.broker = broker
        self.registry = registry
        self.config = config
        self.decision_config = DecisionConfig(config.redispatch_after_s, config.max_lost)
        self._seen_epoch: float | None = None  # the broker epoch last seen (Broker.epoch)
        self.process_id = f"scheduler:{socket.gethostname()}:{os.getpid()}"
        self._forward: dict[str, set[str]] = {}  # revision -> runs woken here but not held
        self._gated: list[str] = []  # runs of a batch at flow gates, decided at its end
        self.pacing = Pacing()  # a wide run is decided once per batch of completions
        self._retention_at = 0.0  # when the next retention pass is due (time.time())
        self._traced: dict[str, Any] = {}  # run -> its decision's trace context (tracing on)
        # Runs due before the next sweep, so a short backoff or lease is kept on time
        self.timers = Timers(HORIZONS * config.sweep_interval_s)

    @cached_property
    def held(self) -> set[tuple[str, str]]:
        """What this process holds: it decides only runs of these (workflow, revision)s."""
        return {(name, self.registry.get(name).revision) for name in self.registry.names()}

    @cached_property
    def ticker(self) -> Ticker:
        """Fires the cron ticks of this process's workflows (smithers.scheduler.ticker)."""
        return Ticker(self.store, self.broker, self.registry, deployment_version=self.deployment_version)

    def fire_schedules(self) -> list[str]:
        """Launch the runs of due cron ticks; their ids (those launched here). A failure
        is logged and the ticks stay due (store outages propagate)."""
        try:
            return self.ticker.tick()
        except SmithersError:
            raise
        except Exception:
            log.exception("firing cron schedules failed; trying again at the next look")
            return []

    @cached_property
    def revisions(self) -> set[str]:
        """The module revisions this process holds."""
        return {rev for _, rev in self.held}

    def process(self, run_id: str) -> None:
        """Decide and apply for one run, then send its messages (after commit)."""
        self.process_many([run_id])

    def process_many(self, run_ids: list[str]) -> None:
        """Decide runs in batches, each batch one transaction, then send their messages.

        One transaction for several decisions saves a commit and a hand-off of the
        write lock per run (SQLite has one writer at a time). A batch is cut at
        ``MAX_BATCH`` runs or ``MAX_BATCH_S`` of work so workers waiting for the lock
        are not held up. Runs due again at once (zero-second timers, instant retries,
        cache hits) are followed up to 20 times each.
        """
        rounds: dict[str, int] = {}
        pending = list(run_ids)
        while pending:
            done, again = self._process_batch(pending)
            pending = pending[done:]
            for run_id in again:
                rounds[run_id] = rounds.get(run_id, 0) + 1
                if rounds[run_id] < 20:
                    pending.append(run_id)

    def process_safely(self, run_id: str) -> None:
        """:meth:`process`, but a bug or bad data in one run never stops the scheduler:
        the run is logged and looked at again later. Store outages propagate."""
        try:
            self.process(run_id)
        except SmithersError:
            raise
        except Exception:
            log.exception("run %s: decision failed; retrying in %.0fs", run_id, RETRY_UNKNOWN_WORKFLOW_S)
            with self.store.write() as tx:
                postpone(tx, run_id, RETRY_UNKNOWN_WORKFLOW_S)

    def process_all_safely(self, run_ids: list[str]) -> None:
        """:meth:`process_many`; if a batch fails, its runs are retried one at a time so
        only the run at fault is postponed."""
        try:
            self.process_many(run_ids)
        except SmithersError:
            raise
        except Exception:
            for run_id in run_ids:
                self.process_safely(run_id)

    def _process_batch(self, run_ids: list[str]) -> tuple[int, list[str]]:
        """Decide a prefix of ``run_ids`` in one transaction; returns (how many, due again)."""
        messages: list[Message] = []
        again: list[str] = []
        done = 0
        sent = False
        self._traced = {}
        self._gated = []

        def send_early() -> None:
            # PostgreSQL: the messages go out before COMMIT, carrying the key of the
            # lock this transaction holds until it ends; a worker waits for that
            # lock before it reads its attempt, so delivery overlaps the commit's
            # round trip and WAL flush (docs/architecture.md, "hand-offs that overlap the commit").
            nonlocal sent
            key = tx.publish_key()
            if messages and key is not None:
                sent = self._send(messages, key)

        with self.store.write() as tx:
            tx.publish_lock()
            tx.before_commit(send_early)
            began = time.perf_counter()
            for run_id in run_ids:
                # A decision's cost is the CPU it took here: waiting for the run's row
                # lock (a worker's commit that woke it early) does not make it expensive.
                cpu = time.thread_time()
                wake_at, in_flight = self._decide(tx, run_id, messages)
                ended = time.perf_counter()
                self.pacing.decided(run_id, time.time(), time.thread_time() - cpu, in_flight)
                done += 1
                if wake_at is not None and wake_at <= tx.now:
                    again.append(run_id)
                self.timers.decided(run_id, wake_at, tx.now)
                if done >= MAX_BATCH or ended - began >= MAX_BATCH_S:
                    break
            # Runs at flow gates last: every run lock of the batch is taken before any
            # gate's (smithers.shared.store.flow, lock order); their rows are held already.
            gated, self._gated = self._gated, []
            for run_id in sorted(gated):
                wake_at, _ = self._decide(tx, run_id, messages, gate=True)
                if wake_at is not None and wake_at <= tx.now:
                    again.append(run_id)
                self.timers.decided(run_id, wake_at, tx.now)
        if messages and not sent:
            self._send(messages, None)
        forward, self._forward = self._forward, {}
        for revision, ids in forward.items():
            self.broker.wake_revision(revision, *sorted(ids))
        return done, again

    def _send(self, messages: list[Message], after: int | None) -> bool:
        """Publish step messages; True if they went out (a lost one is re-sent later)."""
        if not tracing.enabled():
            return self.broker.try_send_steps(messages, after)
        sent = True
        for run_id, group in _by_run(messages):
            with tracing.use(self._traced.get(run_id)):  # each publish: its decision's child
                sent = self.broker.try_send_steps(group, after) and sent
        return sent

    def _decide(
        self, tx: Tx, run_id: str, messages: list[Message], *, gate: bool = False
    ) -> tuple[float | None, int]:
        """Load, decide and apply one run inside ``tx``; returns when to look again and
        what the decision left in flight (for the pacing). A run at flow gates is put
        aside (``_gated``) unless ``gate``."""
        done = advance(tx, run_id, self._holds, self.decision_config, gate=gate)
        if done.gated:
            self._gated.append(run_id)
            return None, 0
        if not done.decided:
            # Another revision's run (or a workflow this process lacks): never decided
            # with this code. Its holders get the wake-up; if none is live, the holder
            # check marks the run revision_unavailable.
            log.debug("run %s: revision %s of %r not held here", run_id, done.revision[:12], done.workflow)
            self._forward.setdefault(done.revision, set()).add(run_id)
            return None, 0
        messages.extend(done.messages)
        self._traced[run_id] = done.trace
        return done.wake_at, done.in_flight

    def _holds(self, workflow: str, revision: str) -> Workflow | None:
        if (workflow, revision) not in self.held:
            return None
        return self.registry.get(workflow).workflow

    def sweep(self) -> list[str]:
        """Run ids whose wake time has come (queued, finished steps, timers, leases);
        those due within the timers' horizon are held, to be woken for on time. On
        PostgreSQL it also numbers the feed's newly committed events, so they do not
        pile up while no one follows the feed (smithers.shared.store.feed)."""
        try:
            number_now(self.store)
        except SmithersError:
            raise
        except Exception:  # a feed reader numbers before it reads anyway: carry on
            log.exception("numbering the event feed failed; trying again at the next sweep")
        now = time.time()
        epoch = self._new_epoch()
        with self.store.read() as conn:
            found = wake_times(conn, now + self.timers.horizon_s, revisions=self.revisions)
            if epoch is not None:  # the broker lost its messages: their runs now
                since = epoch + EPOCH_MARGIN_S  # other hosts' clocks: a re-send too many is harmless
                found += [(run_id, now) for run_id in queued_before(conn, since, self.revisions)]
        if epoch is not None:  # taken only once those runs were found (the store may be down)
            if self._seen_epoch is not None:
                log.warning("the broker lost its messages (new epoch); sending queued steps again")
            self._seen_epoch = epoch
            self.decision_config = replace(self.decision_config, intact_since=epoch + EPOCH_MARGIN_S)
        due = []
        for run_id, at in found:
            if at <= now:
                due.append(run_id)
            else:
                self.timers.hold(run_id, at, now)
        return due

    def _new_epoch(self) -> float | None:
        """The broker's epoch (:meth:`Broker.epoch`) if this scheduler has not seen it yet:
        a FLUSHALL, a restart or a failed send began a new one, and queued attempts
        dispatched before it may have lost their message; they are sent again at once
        (``DecisionConfig.intact_since``), while a message merely waiting in a busy queue
        is never sent twice. None when it is the one already seen, or the broker is away."""
        try:
            epoch = self.broker.epoch()
        except redis.RedisError:
            return None  # the broker is away: its epoch is read when it is back
        return None if epoch is None or epoch == self._seen_epoch else epoch

    def announce(self, started_at: float) -> None:
        """Refresh this process's holder rows, then (once this scheduler has run for a
        holder TTL) mark or clear runs whose revision no live scheduler or worker holds."""
        entries = [self.registry.get(name) for name in self.registry.names()]
        with self.store.write() as tx:
            revisions.hold(tx, self.process_id, "scheduler", entries, started_at)
            dead = revisions.reap(tx, self.config.holder_ttl_s)
        if dead:
            # A worker that died may have taken delivered, unstarted step messages with it
            # (Redis gives them back only after the visibility timeout): send them again.
            log.warning("workers %s stopped announcing: their step messages are sent again", ", ".join(dead))
            self.broker.forget_epoch()
        if time.time() - started_at < self.config.holder_ttl_s:
            return  # the deployment's other processes get one TTL to announce themselves
        with self.store.write() as tx:
            marked, cleared = revisions.check_unheld(
                tx, self.config.holder_ttl_s, settle_s=self.config.holder_ttl_s
            )
        for run_id in marked:
            log.warning("run %s: no live scheduler or worker holds its workflow revision", run_id)
        if cleared:
            log.info("%d runs: their revision is held again (or they ended)", len(cleared))

    def leave(self) -> None:
        """Stop holding revisions (a clean stop: the revision's other holders take over)."""
        try:
            with self.store.write() as tx:
                revisions.leave(tx, self.process_id)
        except SmithersError as exc:
            log.warning("could not remove this scheduler's holder rows: %s", exc.message)

    def retain(self, stop: threading.Event) -> float:
        """Delete finished runs older than the retention for at most
        ``RETENTION_BUDGET_S`` (a run per transaction); the seconds until the next go:
        soon while more are left, else ``RETENTION_EVERY_S``."""
        deadline = time.monotonic() + RETENTION_BUDGET_S
        spent = False

        def enough() -> bool:
            nonlocal spent
            spent = spent or stop.is_set() or time.monotonic() > deadline
            return spent

        retention.prune(self.store, self.config.retention_days * retention.DAY_S, stop=enough)
        return self.config.sweep_interval_s if spent else RETENTION_EVERY_S

    def run_forever(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set: wait for wake-ups, sweep, process."""
        last_sweep = 0.0
        interval = self.config.sweep_interval_s
        log.info("scheduler started (sweep every %.1fs)", interval)
        tracing.configure("scheduler")
        try:
            with self.store.write() as tx:
                settled = settle_leftovers(tx)
            if settled:
                log.warning("%d time-travel calls were interrupted; marked partial", settled)
        except SmithersError as exc:
            log.warning("could not settle time-travel leftovers: %s", exc.message)
        started_at = time.time()
        last_announce = 0.0
        while not stop.is_set():
            if time.time() - last_announce >= self.config.holder_heartbeat_s:
                try:
                    self.announce(started_at)
                except SmithersError as exc:
                    log.warning("could not announce held revisions: %s", exc.message)
                last_announce = time.time()
            ids: Counter[str] = Counter()  # run -> its wake-ups (a wide run's: its completions)
            timeout = interval
            soonest = [t for t in (self.pacing.next_at(), self.timers.next_at(), self.ticker.next_at()) if t]
            if soonest:
                timeout = max(0.001, min(interval, min(soonest) - time.time()))
            try:
                ids = self.broker.wait(timeout, revisions=self.revisions)
            except redis.RedisError as exc:
                log.warning("broker unavailable (%s); sweeping the store only", exc)
                stop.wait(min(interval, 1.0))
            now = time.time()
            ids.update(self.timers.pop_due(now))
            try:
                swept = now - last_sweep >= interval
                if swept:
                    ids.update(self.sweep())
                    last_sweep = now
                tick_at = self.ticker.next_at()
                if swept or (tick_at is not None and tick_at <= now):  # a pause or resume: at a sweep
                    ids.update(self.fire_schedules())
                if self.config.retention_days and now >= self._retention_at:
                    self._retention_at = now + self.retain(stop)
                due = self.pacing.due(ids, time.time())
                if due and not stop.is_set():
                    self.process_all_safely(due)
            except SmithersError as exc:
                log.warning("store unavailable (%s); retrying", exc.message)
                stop.wait(1.0)
        self.leave()
        log.info("scheduler stopped")


def _by_run(messages: list[Message]) -> Iterator[tuple[str, list[Message]]]:
    """``messages`` grouped by run, in order."""
    groups: dict[str, list[Message]] = {}
    for m in messages:
        groups.setdefault(m.run_id, []).append(m)
    yield from groups.items()
