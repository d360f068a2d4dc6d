"""Read-only queries: runs, nodes, attempts, outputs, events, approvals."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, bindparam, func, select

from smithers.shared.status import AttemptState, RunStatus
from smithers.shared.store import schema as s
from smithers.shared.store.records import (
    ApprovalRecord,
    AttemptRecord,
    EventRecord,
    NodeRecord,
    RunRecord,
    approval_record,
    attempt_record,
    event_record,
    node_record,
    run_record,
    run_record_from,
)


def get_run(conn: Connection, run_id: str) -> RunRecord | None:
    """The run, or None."""
    row = conn.execute(select(s.runs).where(s.runs.c.run_id == run_id)).first()
    return None if row is None else run_record(row)


def list_runs(
    conn: Connection,
    *,
    status: str | None = None,
    workflow: str | None = None,
    before: tuple[float, str] | None = None,
    limit: int = 50,
    summary: bool = False,
    since: float | None = None,
    until: float | None = None,
    run_id_contains: str | None = None,
) -> list[RunRecord]:
    """Newest first; ``before`` is the (created_at, run_id) cursor of the last page;
    ``since``/``until`` bound the creation time, ``run_id_contains`` searches run ids.
    With ``summary`` the input and output columns are not read (records carry ``{}``
    and None): a page stays small however large the runs' data."""
    r = s.runs
    query = select(*(c for c in r.c if c.name not in _BULKY)) if summary else select(r)
    if since is not None:
        query = query.where(r.c.created_at >= since)
    if until is not None:
        query = query.where(r.c.created_at < until)
    if run_id_contains:
        query = query.where(r.c.run_id.contains(run_id_contains, autoescape=True))
    if status:
        query = query.where(r.c.status == status)
    if workflow:
        query = query.where(r.c.workflow == workflow)
    if before is not None:
        at, rid = before
        query = query.where((r.c.created_at < at) | ((r.c.created_at == at) & (r.c.run_id < rid)))
    query = query.order_by(r.c.created_at.desc(), r.c.run_id.desc()).limit(limit)
    if summary:
        return [run_record_from({**row._mapping, "input": {}, "output": None}) for row in conn.execute(query)]
    return [run_record(row) for row in conn.execute(query)]


_BULKY = ("input", "output")  # what a summary of a run leaves out


def nodes_of(conn: Connection, run_id: str) -> list[NodeRecord]:
    """Every node execution of a run, by start time."""
    n = s.nodes
    rows = conn.execute(
        select(n).where(n.c.run_id == run_id).order_by(n.c.started_at, n.c.node_id, n.c.iteration)
    )
    return [node_record(row) for row in rows]


def attempts_of(conn: Connection, run_id: str) -> list[AttemptRecord]:
    """Every attempt of a run, in dispatch order."""
    a = s.attempts
    rows = conn.execute(select(a).where(a.c.run_id == run_id).order_by(a.c.dispatched_at, a.c.number))
    return [attempt_record(row) for row in rows]


def outputs_of(conn: Connection, run_id: str) -> dict[tuple[str, int], Any]:
    """Outputs of a run keyed by (node, iteration)."""
    o = s.outputs
    rows = conn.execute(select(o.c.node_id, o.c.iteration, o.c.value).where(o.c.run_id == run_id))
    return {(row[0], row[1]): row[2] for row in rows}


_NODE_OUTPUTS = select(s.outputs.c.node_id, s.outputs.c.iteration, s.outputs.c.value).where(
    s.outputs.c.run_id == bindparam("b_run_id"), s.outputs.c.node_id == bindparam("b_node_id")
)


def outputs_for(conn: Connection, run_id: str, node_ids: Iterable[str]) -> dict[tuple[str, int], Any]:
    """Outputs of the named nodes of a run (every iteration), keyed by (node, iteration)."""
    names = sorted(set(node_ids))
    if not names:
        return {}
    if len(names) <= 4:  # the usual one or two parents: a prebuilt statement each
        out: dict[tuple[str, int], Any] = {}
        for name in names:
            for row in conn.execute(_NODE_OUTPUTS, {"b_run_id": run_id, "b_node_id": name}):
                out[(row[0], row[1])] = row[2]
        return out
    o = s.outputs
    rows = conn.execute(
        select(o.c.node_id, o.c.iteration, o.c.value).where(o.c.run_id == run_id, o.c.node_id.in_(names))
    )
    return {(row[0], row[1]): row[2] for row in rows}


def events_after(conn: Connection, run_id: str, after_seq: int = 0, limit: int = 500) -> list[EventRecord]:
    """A run's events with ``seq > after_seq``, in seq order."""
    e = s.events
    rows = conn.execute(
        select(e).where(e.c.run_id == run_id, e.c.seq > after_seq).order_by(e.c.seq).limit(limit)
    )
    return [event_record(row) for row in rows]


def feed_after(conn: Connection, after_feed_id: int = 0, limit: int = 500) -> list[EventRecord]:
    """Every run's numbered events with ``feed_id > after_feed_id``, in commit order
    (on PostgreSQL, call :func:`smithers.shared.store.feed.number_now` first)."""
    e = s.events
    rows = conn.execute(select(e).where(e.c.feed_id > after_feed_id).order_by(e.c.feed_id).limit(limit))
    return [event_record(row) for row in rows]


def latest_feed_id(conn: Connection) -> int:
    """The newest numbered feed id (0 when none): a client that follows the feed from it
    misses nothing committed after this read (later numberings take higher ids)."""
    return int(conn.execute(select(func.max(s.events.c.feed_id))).scalar() or 0)


def feed_id_of(ev: EventRecord) -> int:
    """The feed id of an event read from the feed (:func:`feed_after` reads only
    numbered events)."""
    assert ev.feed_id is not None
    return ev.feed_id


def approvals(
    conn: Connection, *, status: str | None = None, run_id: str | None = None
) -> list[ApprovalRecord]:
    """Approvals, oldest request first; pending ones of ended runs are left out."""
    ap = s.approvals
    query = select(ap).join(s.runs, s.runs.c.run_id == ap.c.run_id)
    if status:
        query = query.where(ap.c.status == status)
        if status == "pending":
            query = query.where(
                s.runs.c.status.notin_(
                    [RunStatus.SUCCEEDED.value, RunStatus.FAILED.value, RunStatus.CANCELLED.value]
                )
            )
    if run_id:
        query = query.where(ap.c.run_id == run_id)
    return [approval_record(row) for row in conn.execute(query.order_by(ap.c.requested_at))]


def due_runs(
    conn: Connection, now: float, limit: int = 500, revisions: Iterable[str] | None = None
) -> list[str]:
    """Runs whose ``wake_at`` has come: queued, changed by a worker, or with a timer due;
    only those of ``revisions`` when given (the module revisions a scheduler holds)."""
    return [run_id for run_id, _ in wake_times(conn, now, limit, revisions)]


def queued_before(
    conn: Connection, before: float, revisions: Iterable[str] | None = None, limit: int = 10_000
) -> list[str]:
    """Runs with a queued attempt dispatched before ``before`` (its message may have
    been lost with the broker's contents); only those of ``revisions`` when given."""
    a, r = s.attempts, s.runs
    query = (
        select(a.c.run_id)
        .distinct()
        .select_from(a.join(r, r.c.run_id == a.c.run_id))
        .where(a.c.state == AttemptState.QUEUED.value, a.c.dispatched_at < before)
    )
    if revisions is not None:
        query = query.where(r.c.module_revision.in_(sorted(set(revisions))))
    return [row[0] for row in conn.execute(query.limit(limit))]


def wake_times(
    conn: Connection, until: float, limit: int = 500, revisions: Iterable[str] | None = None
) -> list[tuple[str, float]]:
    """(run id, ``wake_at``) of the runs due by ``until``, soonest first (a scheduler
    reads a little ahead and wakes on time for each); only those of ``revisions`` when
    given (the module revisions a scheduler holds)."""
    r = s.runs
    query = select(r.c.run_id, r.c.wake_at).where(r.c.wake_at <= until)
    if revisions is not None:
        query = query.where(r.c.module_revision.in_(sorted(set(revisions))))
    rows = conn.execute(query.order_by(r.c.wake_at).limit(limit))
    return [(row[0], float(row[1])) for row in rows]
