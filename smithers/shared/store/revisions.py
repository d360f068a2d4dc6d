"""Workflow revisions in the store: their graphs, the processes that hold them, runs that
no live process can move, and the audited migration of a run to another revision.

- ``revisions``: each (workflow, revision)'s graph (:func:`smithers.shared.revision.graph_of`),
  written the first time a process holds it or a run launches with it.
- ``holders``: one row per process and revision it loaded, refreshed by the process's
  heartbeat (:func:`hold`); a row older than the TTL is a process that is gone. A
  scheduler decides, and a worker runs, only runs of revisions it holds.
- ``runs.status_reason``: ``revision_unavailable`` while no live scheduler or no live
  worker holds a live run's revision (:func:`check_unheld`), with an event each way.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, delete, func, or_, select, update

from smithers.shared.errors import Conflict, InvalidInput, NotFound, RevisionConflict
from smithers.shared.redaction import redact_text
from smithers.shared.registry import Registered
from smithers.shared.revision import MIN_PREFIX, conflicts, graph_of
from smithers.shared.status import AttemptState, RunStatus
from smithers.shared.store import schema as s
from smithers.shared.store.store import Store
from smithers.shared.store.tx import Tx

UNAVAILABLE = "revision_unavailable"
ROLES = ("scheduler", "worker")
MAX_NOTE = 1000
MAX_CHECKED = 500  # runs whose reason one check changes (the next check does the rest)
_REVISION = re.compile(rf"^[0-9a-f]{{{MIN_PREFIX},64}}$")
_LIVE = (RunStatus.QUEUED.value, RunStatus.RUNNING.value, RunStatus.WAITING.value)
_FINISHED = (RunStatus.SUCCEEDED.value, RunStatus.CANCELLED.value)


def record(tx: Tx, entries: Iterable[Registered]) -> None:
    """Store the graph of each entry's revision unless it is stored already (idempotent;
    two processes recording at once write the same row)."""
    for entry in entries:
        graph = graph_of(entry.workflow)
        tx.upsert(
            s.revisions,
            ("workflow", "revision"),
            {
                "workflow": entry.workflow.name,
                "revision": entry.revision,
                "version": entry.workflow.version,
                "module": entry.module[:256],
                "graph": graph,
                "first_seen": tx.now,
            },
            update=("module",),
        )


# (workflow, revision, module) this process committed to each store: rows of `revisions`
# are never deleted, so a launch need not write them again (7 % of a launch's CPU)
_committed: weakref.WeakKeyDictionary[Store, set[tuple[str, str, str]]] = weakref.WeakKeyDictionary()
_committed_lock = threading.Lock()


def _key(entry: Registered) -> tuple[str, str, str]:
    return (entry.workflow.name, entry.revision, entry.module[:256])


def unrecorded(store: Store, entries: Iterable[Registered]) -> list[Registered]:
    """The entries whose graphs this process has not yet recorded in ``store`` (those a
    launch must :func:`record`; then :func:`committed` after its commit)."""
    known = _committed.get(store, set())
    return [e for e in entries if _key(e) not in known]


def committed(store: Store, entries: Iterable[Registered]) -> None:
    """Note that :func:`record` of ``entries`` committed in ``store``."""
    with _committed_lock:
        _committed.setdefault(store, set()).update(_key(e) for e in entries)


def hold(tx: Tx, process_id: str, role: str, entries: Iterable[Registered], started_at: float) -> bool:
    """Announce (or refresh) that ``process_id`` holds the entries' revisions now; one
    transaction with the graphs' :func:`record`. True if rows of an earlier process of
    that id started at another time are still there: it died without leaving (a clean
    stop removes them, :func:`leave`)."""
    items = list(entries)
    record(tx, items)
    h = s.holders
    earlier = tx.conn.execute(
        select(h.c.started_at)
        .where(h.c.process_id == process_id[:200], h.c.started_at != started_at)
        .limit(1)
    ).first()
    for entry in items:
        tx.upsert(
            s.holders,
            ("process_id", "workflow", "revision"),
            {
                "process_id": process_id[:200],
                "workflow": entry.workflow.name,
                "revision": entry.revision,
                "role": role,
                "started_at": started_at,
                "last_seen": tx.now,
            },
            update=("role", "started_at", "last_seen"),
        )
    return earlier is not None


def reap(tx: Tx, ttl_s: float, role: str = "worker") -> list[str]:
    """Remove the rows of ``role`` processes not seen for ``ttl_s`` (they died without
    leaving); the process ids removed, each once whichever scheduler reaps them."""
    h = s.holders
    dead = [
        str(r[0])
        for r in tx.conn.execute(
            select(h.c.process_id).where(h.c.role == role).group_by(h.c.process_id)
            .having(func.max(h.c.last_seen) < tx.now - ttl_s)
        )
    ]  # fmt: skip
    if dead:
        tx.conn.execute(delete(h).where(h.c.process_id.in_(dead), h.c.last_seen < tx.now - ttl_s))
    return dead


def leave(tx: Tx, process_id: str) -> None:
    """The process stops holding anything (a clean shutdown); stale rows of processes
    long gone are removed on the way."""
    h = s.holders
    tx.conn.execute(delete(h).where(or_(h.c.process_id == process_id[:200], h.c.last_seen < tx.now - 86400)))


@dataclass(frozen=True)
class Holder:
    """A live holder row."""

    process_id: str
    role: str
    workflow: str
    revision: str
    last_seen: float


def live_holders(conn: Connection, now: float, ttl_s: float) -> list[Holder]:
    """Holder rows seen within ``ttl_s``."""
    h = s.holders
    rows = conn.execute(
        select(h.c.process_id, h.c.role, h.c.workflow, h.c.revision, h.c.last_seen)
        .where(h.c.last_seen >= now - ttl_s)
        .order_by(h.c.workflow, h.c.revision, h.c.role, h.c.process_id)
    )
    return [Holder(str(r[0]), str(r[1]), str(r[2]), str(r[3]), float(r[4])) for r in rows]


def missing_roles(conn: Connection, workflow: str, revision: str, now: float, ttl_s: float) -> list[str]:
    """Which of scheduler and worker no live process holding ``revision`` plays."""
    h = s.holders
    held = {
        row[0]
        for row in conn.execute(
            select(h.c.role)
            .where(h.c.workflow == workflow, h.c.revision == revision, h.c.last_seen >= now - ttl_s)
            .distinct()
        )
    }
    return [role for role in ROLES if role not in held]


def check_unheld(tx: Tx, ttl_s: float, settle_s: float = 0.0) -> tuple[list[str], list[str]]:
    """Mark live runs whose revision lacks a live scheduler or worker holder (and that
    have not changed for ``settle_s``) ``revision_unavailable`` (with a
    ``run.revision_unavailable`` event), and clear the mark (``run.revision_available``)
    once both hold it again or the run is over.
    Returns (marked, cleared) run ids; at most ``MAX_CHECKED`` changes per call.

    One grouped read finds the (workflow, revision) pairs that need a change; only
    their runs are read and written, so a quiet check costs two small queries."""
    h, r = s.holders, s.runs
    held: dict[tuple[str, str], set[str]] = {}
    for row in tx.conn.execute(
        select(h.c.workflow, h.c.revision, h.c.role).where(h.c.last_seen >= tx.now - ttl_s).distinct()
    ):
        held.setdefault((str(row[0]), str(row[1])), set()).add(str(row[2]))
    live = r.c.status.in_(_LIVE)
    groups = tx.conn.execute(
        select(r.c.workflow, r.c.module_revision, live.label("live"), r.c.status_reason)
        .where(or_(live, r.c.status_reason.is_not(None)))
        .distinct()
    ).all()
    marked: list[str] = []
    cleared: list[str] = []
    values: dict[str, Any]
    for wf, rev, is_live, reason in groups:
        missing = [role for role in ROLES if role not in held.get((str(wf), str(rev)), set())]
        room = MAX_CHECKED - len(marked) - len(cleared)
        if room <= 0:
            break
        where = [r.c.workflow == wf, r.c.module_revision == rev]
        if is_live and missing and reason != UNAVAILABLE:
            where.append(live)
            # a run that changed within settle_s is left alone: its holders may be starting
            where.append(r.c.updated_at <= tx.now - settle_s)
            where.append(or_(r.c.status_reason.is_(None), r.c.status_reason != UNAVAILABLE))
            target, values, event = marked, {"status_reason": UNAVAILABLE}, "run.revision_unavailable"
            payload: dict[str, Any] = {"revision": rev, "missing": missing}
        elif reason == UNAVAILABLE and (not missing or not is_live):
            where.append(r.c.status_reason == UNAVAILABLE)
            where.append(live if is_live else ~live)
            target, values, event = cleared, {"status_reason": None}, "run.revision_available"
            payload = {"revision": rev}
        else:
            continue
        ids = [str(row[0]) for row in tx.conn.execute(select(r.c.run_id).where(*where).limit(room))]
        for run_id in ids:
            tx.hold_run(run_id)
            tx.set_run(run_id, values)
            tx.emit(run_id, event, payload=payload)
            target.append(run_id)
    return marked, cleared


def unavailable_count(conn: Connection) -> int:
    """How many runs are marked ``revision_unavailable`` now (a metric)."""
    r = s.runs
    return int(conn.execute(select(func.count()).where(r.c.status_reason == UNAVAILABLE)).scalar_one())


def stored_graph(conn: Connection, workflow: str, revision: str) -> dict[str, Any] | None:
    """The stored graph of ``workflow`` at ``revision``, or None."""
    v = s.revisions
    row = conn.execute(select(v.c.graph).where(v.c.workflow == workflow, v.c.revision == revision)).first()
    return None if row is None else dict(row[0])


def list_revisions(conn: Connection, workflow: str) -> list[dict[str, Any]]:
    """The stored revisions of ``workflow``, oldest first, each with how many of its runs
    are unfinished (``live_runs``: queued, running or waiting; a drained revision has 0)."""
    v, r = s.revisions, s.runs
    live: dict[str, int] = {
        str(row[0]): int(row[1] or 0)
        for row in conn.execute(
            select(r.c.module_revision, func.count())
            .where(r.c.workflow == workflow, r.c.status.in_(_LIVE))
            .group_by(r.c.module_revision)
        )
    }
    rows = conn.execute(
        select(v.c.revision, v.c.version, v.c.module, v.c.first_seen)
        .where(v.c.workflow == workflow)
        .order_by(v.c.first_seen, v.c.revision)
    )
    return [
        {
            "revision": row[0],
            "version": row[1],
            "module": row[2],
            "first_seen": row[3],
            "live_runs": live.get(str(row[0]), 0),
        }
        for row in rows
    ]


def resolve(conn: Connection, workflow: str, ref: str) -> str:
    """The full revision ``ref`` (the whole hash, or a prefix of at least 8 hex digits)
    names among the stored revisions of ``workflow``."""
    if not isinstance(ref, str) or not _REVISION.match(ref):
        raise InvalidInput(f"revision must be {MIN_PREFIX} to 64 lowercase hex digits")
    v = s.revisions
    found = [
        row[0]
        for row in conn.execute(
            select(v.c.revision).where(
                v.c.workflow == workflow, v.c.revision.startswith(ref, autoescape=True)
            )
        )
    ]
    if not found:
        raise NotFound(f"workflow {workflow!r} has no known revision {ref!r}")
    if len(found) > 1:
        raise InvalidInput(f"revision prefix {ref!r} is ambiguous for workflow {workflow!r}")
    return str(found[0])


def check_note(note: Any) -> str | None:
    """A migration note: a string of at most ``MAX_NOTE`` characters, redacted."""
    if note is None:
        return None
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise InvalidInput(f"note must be a string of at most {MAX_NOTE} characters")
    return redact_text(note)


def migrate_run(tx: Tx, run_id: str, to: str, actor: str, note: str | None) -> dict[str, Any]:
    """Move a run to revision ``to`` of its workflow (a full hash or a prefix): allowed
    when every node that already ran is in that revision with the same kind, else
    :class:`RevisionConflict` lists the nodes. The run row, its not yet started attempts,
    the ``run.migrated`` event and the audit row (actor, from, to, note) are one
    transaction; the run is woken, and its queued steps are re-sent to the new
    revision's queues by its next decision."""
    row = tx.lock_run(run_id)
    if row is None:
        raise NotFound(f"run {run_id!r} not found")
    if row.status in _FINISHED:
        raise Conflict(f"run {run_id!r} is {row.status}; only an unfinished or failed run can migrate")
    target = resolve(tx.conn, row.workflow, to)
    source = row.module_revision
    if target == source:
        raise Conflict(f"run {run_id!r} already runs revision {target[:12]}")
    graph = stored_graph(tx.conn, row.workflow, target)
    assert graph is not None  # resolve found it
    n = s.nodes
    ran = [
        (str(a), str(b))
        for a, b in tx.conn.execute(select(n.c.node_id, n.c.kind).where(n.c.run_id == run_id))
    ]
    found = conflicts(ran, graph)
    if found:
        names = ", ".join(c["node_id"] for c in found)
        raise RevisionConflict(
            f"run {run_id!r} cannot move to revision {target[:12]}: nodes that already ran differ ({names})",
            found,
        )
    a = s.attempts
    # not started yet: they run the new revision; dispatched_at 0 has the next decision re-send them
    tx.conn.execute(
        update(a)
        .where(and_(a.c.run_id == run_id, a.c.state == AttemptState.QUEUED.value))
        .values(revision=target, dispatched_at=0.0)
    )
    tx.set_run(
        run_id,
        {
            "module_revision": target,
            "workflow_version": graph["version"],
            "status_reason": None,
            "updated_at": tx.now,
        },
    )
    detail = {"from": source, "to": target, "note": note, "by": actor}
    tx.emit(run_id, "run.migrated", payload=detail)
    tx.audit("run.migrated", actor=actor, target_type="run", target_id=run_id, run_id=run_id, detail=detail)
    tx.wake(run_id)
    return {"run_id": run_id, "from": source, "to": target, "note": note, "migrated_by": actor}


def runs_on(conn: Connection, workflow: str, revision: str, limit: int = 10_000) -> list[str]:
    """Ids of the unfinished (or failed) runs of ``workflow`` on ``revision``."""
    r = s.runs
    rows = conn.execute(
        select(r.c.run_id)
        .where(r.c.workflow == workflow, r.c.module_revision == revision, r.c.status.not_in(_FINISHED))
        .order_by(r.c.created_at)
        .limit(limit)
    )
    return [row[0] for row in rows]
