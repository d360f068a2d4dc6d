"""Prometheus metrics read from the store and the broker: the cluster's figures.

Every scrape runs a few aggregate queries (one read connection, no lock taken) and a
pipelined round of LLEN on Redis, so any number of processes can serve the same numbers
without sharing memory: the figures are the cluster's, not one process's. Counters are
counts of rows (attempts, sandboxes, reviews); they only fall when runs are deleted,
which Prometheus treats as a counter reset.

Register :class:`StoreCollector` in a ``CollectorRegistry`` (the gateway's, or the one
``smithers metrics --port`` serves), or call :func:`collect` directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Connection, and_, case, func, select

from smithers.shared import retention
from smithers.shared.broker import Broker
from smithers.shared.errors import SmithersError
from smithers.shared.keys import QUEUES, WAKE_KEY, revision_queue
from smithers.shared.status import ApprovalStatus, AttemptState, RunStatus
from smithers.shared.store import Store
from smithers.shared.store import schema as s
from smithers.shared.store import spend as spend_store
from smithers.shared.store.sandboxes import ReviewStatus, SandboxStatus

log = logging.getLogger("smithers.metrics")

# Step latencies span milliseconds (tasks) to an hour (sandboxes, long agent steps).
STEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
# Approvals wait for people: minutes to days.
APPROVAL_AGE_BUCKETS = (60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 3 * 86400.0, 7 * 86400.0)
# kombu's Redis transport keeps one list per priority step; priority 0 is the bare name.
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
_UNACKED_KEY = "unacked"  # kombu's hash of delivered, not yet acknowledged messages
_FINISHED = (AttemptState.SUCCEEDED, AttemptState.FAILED, AttemptState.TIMED_OUT)


def collect(store: Store, broker: Broker | None, now: float | None = None) -> list[Metric]:
    """Every metric family, read now. Never raises: an unreachable store or broker
    shows as ``smithers_store_up 0`` / ``smithers_broker_up 0`` and its families are
    left out."""
    now = time.time() if now is None else now
    families: list[Metric] = []
    store_up = GaugeMetricFamily("smithers_store_up", "1 when the store answered this scrape.")
    queues = list(QUEUES)
    try:
        with store.read() as conn:
            families += _runs(conn)
            queues += _revision_queues(conn)
            families += _steps(conn)
            families += _cache(conn, now)
            families += _approvals(conn, now)
            families += _sandboxes(conn)
            families += _spend(conn)
            families += _retention(conn)
        store_up.add_metric([], 1)
    except (SmithersError, OSError) as exc:
        log.warning("metrics: store unavailable (%s)", exc)
        store_up.add_metric([], 0)
    families.append(store_up)
    families += _broker(broker, queues)
    return families


def _revision_queues(conn: Connection) -> list[str]:
    """The per-revision queues of the revisions that have live runs (smithers.shared.keys)."""
    r = s.runs.c
    live = (RunStatus.QUEUED.value, RunStatus.RUNNING.value, RunStatus.WAITING.value)
    rows = conn.execute(select(r.module_revision).where(r.status.in_(live)).distinct())
    return [revision_queue(q, rev) for rev in sorted(str(row[0]) for row in rows) for q in QUEUES]


class StoreCollector(Collector):
    """A prometheus_client collector over :func:`collect`."""

    def __init__(self, store: Store, broker: Broker | None) -> None:
        self.store = store
        self.broker = broker

    def collect(self) -> Iterable[Metric]:
        """Read the figures now."""
        return collect(self.store, self.broker)

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the registry must not query the store at registration."""
        return []


def _runs(conn: Connection) -> list[Metric]:
    family = GaugeMetricFamily(
        "smithers_runs", "Runs in the store by workflow and status.", labels=["workflow", "status"]
    )
    counts: dict[tuple[str, str], int] = {}
    rows = conn.execute(
        select(s.runs.c.workflow, s.runs.c.status, func.count()).group_by(s.runs.c.workflow, s.runs.c.status)
    )
    for workflow, status, n in rows:
        counts[(str(workflow), str(status))] = _count(n)
    for workflow in sorted({w for w, _ in counts}):
        for status in RunStatus:  # every status, so a series does not vanish at zero
            family.add_metric([workflow, status.value], counts.get((workflow, status.value), 0))
    unheld = GaugeMetricFamily(
        "smithers_runs_revision_unavailable",
        "Live runs no live scheduler or worker can move: no live process holds their workflow"
        " revision (status_reason revision_unavailable), by workflow and revision (12 hex digits).",
        labels=["workflow", "revision"],
    )
    r = s.runs.c
    for workflow, revision, n in conn.execute(
        select(r.workflow, r.module_revision, func.count())
        .where(r.status_reason == "revision_unavailable")
        .group_by(r.workflow, r.module_revision)
    ):
        unheld.add_metric([str(workflow), str(revision)[:12]], _count(n))
    return [family, unheld]


def _retention(conn: Connection) -> list[Metric]:
    """What retention deleted, from the counters its transactions keep (they survive
    the runs they counted)."""
    c = s.counters
    names = (retention.PRUNED_RUNS, retention.PRUNED_ROWS)
    counted: list[Any] = list(conn.execute(select(c.c.name, c.c.value).where(c.c.name.in_(names))))
    found = {str(r[0]): int(r[1]) for r in counted}
    runs = CounterMetricFamily("smithers_retention_pruned_runs", "Finished runs deleted by retention.")
    runs.add_metric([], found.get(retention.PRUNED_RUNS, 0))
    rows = CounterMetricFamily(
        "smithers_retention_pruned_rows", "Rows deleted by retention (runs and everything they own)."
    )
    rows.add_metric([], found.get(retention.PRUNED_ROWS, 0))
    return [runs, rows]


def _histogram_rows(
    conn: Connection, duration: Any, where: Any, labels: Sequence[Any], buckets: Sequence[float]
) -> Iterator[tuple[tuple[str, ...], list[tuple[str, float]], float]]:
    """(label values, cumulative buckets, sum) per label group, computed in SQL."""
    columns = [func.count(), func.coalesce(func.sum(duration), 0.0)]
    columns += [func.sum(case((duration <= bound, 1), else_=0)) for bound in buckets]
    stmt = select(*labels, *columns).where(where).group_by(*labels)
    for row in conn.execute(stmt):
        values = tuple(str(v) for v in row[: len(labels)])
        count, total, *cumulative = row[len(labels) :]
        points = [(_le(b), float(c or 0)) for b, c in zip(buckets, cumulative, strict=True)]
        points.append(("+Inf", float(count)))
        yield values, points, float(total or 0.0)


def _count(value: Any) -> int:
    """A COUNT or SUM from a row (NULL when no row matched)."""
    return int(value or 0)


def _le(bound: float) -> str:
    return repr(float(bound))


def _steps(conn: Connection) -> list[Metric]:
    a = s.attempts.c
    run_time = HistogramMetricFamily(
        "smithers_step_duration_seconds",
        "Time from a worker claiming an attempt to its result, by queue and final state.",
        labels=["queue", "state"],
    )
    ran = and_(a.started_at.is_not(None), a.finished_at.is_not(None), a.state.in_(_FINISHED))
    for labels, points, total in _histogram_rows(
        conn, a.finished_at - a.started_at, ran, [a.queue, a.state], STEP_BUCKETS
    ):
        run_time.add_metric(list(labels), points, total)
    waited = HistogramMetricFamily(
        "smithers_step_queue_seconds",
        "Time from dispatch to a worker claiming the attempt, by queue.",
        labels=["queue"],
    )
    for labels, points, total in _histogram_rows(
        conn, a.started_at - a.dispatched_at, a.started_at.is_not(None), [a.queue], STEP_BUCKETS
    ):
        waited.add_metric(list(labels), points, total)
    states = GaugeMetricFamily("smithers_attempts", "Attempts by queue and state.", labels=["queue", "state"])
    for queue, state, n in conn.execute(select(a.queue, a.state, func.count()).group_by(a.queue, a.state)):
        states.add_metric([str(queue), str(state)], _count(n))
    return [run_time, waited, states]


def _spend(conn: Connection) -> list[Metric]:
    """What steps reported spending (ctx.spend), per workflow, summed over stored runs."""
    tokens = CounterMetricFamily(
        "smithers_spend_tokens", "Tokens steps reported spending, by workflow and direction.",
        labels=["workflow", "direction"],
    )  # fmt: skip
    cost = CounterMetricFamily("smithers_spend_cost", "Cost steps reported spending, by workflow.",
                               labels=["workflow"])  # fmt: skip
    for workflow, tokens_in, tokens_out, spent in spend_store.by_workflow(conn):
        tokens.add_metric([workflow, "in"], tokens_in)
        tokens.add_metric([workflow, "out"], tokens_out)
        cost.add_metric([workflow], spent)
    return [tokens, cost]


def _cache(conn: Connection, now: float) -> list[Metric]:
    a = s.attempts.c
    lookups = CounterMetricFamily(
        "smithers_cache_lookups",
        "Cache lookups of nodes with a cache policy: hits (attempt served from the cache)"
        " and misses (attempt dispatched, its output then cached).",
        labels=["result"],
    )
    hits = conn.execute(select(func.count()).where(a.cached.is_(True))).scalar_one()
    misses = conn.execute(
        select(func.count()).where(a.cache_key.is_not(None), a.cached.is_(False))
    ).scalar_one()
    lookups.add_metric(["hit"], _count(hits))
    lookups.add_metric(["miss"], _count(misses))
    c = s.cache_entries.c
    entries = GaugeMetricFamily(
        "smithers_cache_entries",
        "Cache rows by scope; expired rows count as misses.",
        labels=["scope", "state"],
    )
    expired = func.sum(case((and_(c.expires_at.is_not(None), c.expires_at <= now), 1), else_=0))
    counts = {
        str(scope): (_count(n), _count(old))
        for scope, n, old in conn.execute(select(c.scope, func.count(), expired).group_by(c.scope))
    }
    for scope in ("run", "workflow", "global"):
        n, old = counts.get(scope, (0, 0))
        entries.add_metric([scope, "live"], n - old)
        entries.add_metric([scope, "expired"], old)
    return [lookups, entries]


def _approvals(conn: Connection, now: float) -> list[Metric]:
    p = s.approvals.c
    pending = list(
        conn.execute(select(p.requested_at, p.escalate_at).where(p.status == ApprovalStatus.PENDING.value))
    )
    ages = sorted(max(now - float(r.requested_at), 0.0) for r in pending)
    waiting = GaugeMetricFamily("smithers_approvals_waiting", "Approvals waiting for a decision.")
    waiting.add_metric([], len(ages))
    oldest = GaugeMetricFamily(
        "smithers_approvals_oldest_age_seconds", "Age of the oldest waiting approval (0 when none)."
    )
    oldest.add_metric([], ages[-1] if ages else 0.0)
    overdue = GaugeMetricFamily(
        "smithers_approvals_overdue", "Waiting approvals past their escalation time (fallback owner's turn)."
    )
    overdue.add_metric([], sum(1 for r in pending if r.escalate_at is not None and r.escalate_at <= now))
    age = GaugeHistogramMetricFamily("smithers_approvals_age_seconds", "Ages of the approvals waiting now.")
    buckets = [(_le(b), float(sum(1 for x in ages if x <= b))) for b in APPROVAL_AGE_BUCKETS]
    buckets.append(("+Inf", float(len(ages))))
    age.add_metric([], buckets, sum(ages))
    reviews = GaugeMetricFamily(
        "smithers_reviews_waiting", "Sandbox diffs waiting for review (accept or reject)."
    )
    pending_review = select(func.count()).where(s.sandboxes.c.review_status == ReviewStatus.PENDING.value)
    reviews.add_metric([], _count(conn.execute(pending_review).scalar_one()))
    return [waiting, oldest, overdue, age, reviews]


def _sandboxes(conn: Connection) -> list[Metric]:
    sb = s.sandboxes.c
    rows = conn.execute(select(sb.status, func.count()).group_by(sb.status))
    counts = {str(status): _count(n) for status, n in rows}
    outcomes = CounterMetricFamily(
        "smithers_sandbox_outcomes", "Finished sandbox executions by outcome.", labels=["status"]
    )
    for status in (SandboxStatus.SUCCEEDED, SandboxStatus.FAILED, SandboxStatus.LOST):
        outcomes.add_metric([status.value], counts.get(status.value, 0))
    active = GaugeMetricFamily("smithers_sandboxes_active", "Sandboxes created or running now.")
    live = (SandboxStatus.CREATED.value, SandboxStatus.RUNNING.value)
    active.add_metric([], sum(counts.get(status, 0) for status in live))
    r = s.sandbox_reviews.c
    decisions = CounterMetricFamily(
        "smithers_sandbox_reviews", "Review decisions on sandbox diffs.", labels=["decision"]
    )
    rows = conn.execute(select(r.accept, func.count()).group_by(r.accept))
    reviews = {bool(accept): _count(n) for accept, n in rows}
    decisions.add_metric(["accepted"], reviews.get(True, 0))
    decisions.add_metric(["rejected"], reviews.get(False, 0))
    return [outcomes, active, decisions]


def _broker(broker: Broker | None, queues: Sequence[str] = QUEUES) -> list[Metric]:
    up = GaugeMetricFamily("smithers_broker_up", "1 when Redis answered this scrape.")
    if broker is None:
        up.add_metric([], 0)
        return [up]
    depth = GaugeMetricFamily(
        "smithers_queue_depth", "Step messages waiting in each Celery queue.", labels=["queue"]
    )
    try:
        pipe = broker.redis.pipeline(transaction=False)
        for queue in queues:
            for suffix in _PRIORITY_SUFFIXES:
                pipe.llen(queue + suffix)
        pipe.hlen(_UNACKED_KEY)
        pipe.llen(WAKE_KEY)
        values = [int(v) for v in pipe.execute()]
    except redis.RedisError as exc:
        log.warning("metrics: broker unavailable (%s)", exc)
        up.add_metric([], 0)
        return [up]
    step = len(_PRIORITY_SUFFIXES)
    for i, queue in enumerate(queues):
        depth.add_metric([queue], sum(values[i * step : (i + 1) * step]))
    unacked = GaugeMetricFamily(
        "smithers_queue_unacked", "Step messages delivered to a worker and not yet acknowledged."
    )
    unacked.add_metric([], values[-2])
    wakeups = GaugeMetricFamily("smithers_wakeups_pending", "Scheduler wake-ups not yet taken.")
    wakeups.add_metric([], values[-1])
    up.add_metric([], 1)
    return [depth, unacked, wakeups, up]
