"""The state of cron schedules: paused or not, how far their ticks were dealt with.

One row per (workflow, schedule id), written the first time a scheduler sees the
schedule (its ticks count from then) and by pause and resume. Every scheduler reads the
same rows; moving ``done_until`` forward is a compare-and-set (``done_until < tick``),
so when several schedulers deal with one tick, one of them counts it and audits it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, or_, select, update

from smithers.shared.schedule import Schedule, global_id
from smithers.shared.store import schema as s
from smithers.shared.store.tx import Tx

_sc = s.schedules


@dataclass(frozen=True)
class ScheduleState:
    """A schedule's row: ``done_until``: every tick up to it was fired or skipped (None:
    no scheduler has seen it yet); ``last_tick``/``last_run_id``: the latest tick that
    launched a run, and that run; ``fired``/``skipped``: ticks counted so far."""

    workflow: str
    schedule_id: str
    cron: str
    tz: str
    paused: bool = False
    paused_by: str | None = None
    changed_at: float | None = None
    done_until: float | None = None
    last_tick: float | None = None
    last_run_id: str | None = None
    fired: int = 0
    skipped: int = 0
    created_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _state(row: Any) -> ScheduleState:
    m = row._mapping
    return ScheduleState(
        workflow=m["workflow"],
        schedule_id=m["schedule_id"],
        cron=m["cron"],
        tz=m["tz"],
        paused=bool(m["paused"]),
        paused_by=m["paused_by"],
        changed_at=m["changed_at"],
        done_until=m["done_until"],
        last_tick=m["last_tick"],
        last_run_id=m["last_run_id"],
        fired=int(m["fired"] or 0),
        skipped=int(m["skipped"] or 0),
        created_at=m["created_at"],
    )


def states(conn: Connection, workflows: list[str] | None = None) -> dict[tuple[str, str], ScheduleState]:
    """Every schedule row (of ``workflows`` when given), by (workflow, schedule id)."""
    query = select(_sc)
    if workflows is not None:
        query = query.where(_sc.c.workflow.in_(workflows))
    return {(st.workflow, st.schedule_id): st for st in map(_state, conn.execute(query))}


def _get(tx: Tx, workflow: str, schedule_id: str) -> ScheduleState | None:
    row = tx.conn.execute(
        select(_sc).where(_sc.c.workflow == workflow, _sc.c.schedule_id == schedule_id)
    ).first()
    return _state(row) if row is not None else None


def seen(tx: Tx, workflow: str, schedule: Schedule, now: float | None = None) -> ScheduleState:
    """The schedule's row, created if it has none, its ticks counted from ``now`` (the
    scheduler's clock; default ``tx.now``); a changed cron or time zone (an explicit id
    kept across an edit) is recorded."""
    at = tx.now if now is None else now
    values = {
        "workflow": workflow,
        "schedule_id": schedule.id,
        "cron": schedule.cron,
        "tz": schedule.tz,
        "done_until": at,
        "created_at": at,
    }
    tx.upsert(_sc, ("workflow", "schedule_id"), values, update=("cron", "tz"))
    found = _get(tx, workflow, schedule.id)
    assert found is not None  # written above, in this transaction
    return found


def set_paused(
    tx: Tx, workflow: str, schedule: Schedule, *, paused: bool, actor: str | None
) -> tuple[ScheduleState, bool]:
    """Pause or resume a schedule, audited with ``actor``; ``(state, changed)`` (a pause
    of a paused schedule changes nothing and writes no audit row). Ticks that come while
    it is paused are skipped: a resume deals with every tick up to now."""
    current = seen(tx, workflow, schedule)
    if current.paused == paused:
        return current, False
    values: dict[str, Any] = {"paused": paused, "paused_by": actor if paused else None, "changed_at": tx.now}
    if not paused:
        values["done_until"] = max(current.done_until or 0.0, tx.now)
    tx.set(_sc, {"workflow": workflow, "schedule_id": schedule.id}, values)
    tx.audit(
        "schedule.paused" if paused else "schedule.resumed",
        actor=actor,
        target_type="schedule",
        target_id=global_id(workflow, schedule.id),
        detail={"cron": schedule.cron, "tz": schedule.tz},
    )
    after = _get(tx, workflow, schedule.id)
    assert after is not None
    return after, True


def _forward(workflow: str, schedule_id: str, until: float) -> Any:
    """``UPDATE schedules`` of this row while its ``done_until`` is before ``until``."""
    return update(_sc).where(
        _sc.c.workflow == workflow,
        _sc.c.schedule_id == schedule_id,
        or_(_sc.c.done_until.is_(None), _sc.c.done_until < until),
    )


def fired(
    tx: Tx, workflow: str, schedule: Schedule, tick: float, run_id: str, *, launched: bool, at_iso: str | None
) -> bool:
    """Record that ``tick`` launched ``run_id``; True if this call moved ``done_until`` on.
    ``launched``: this scheduler's launch created the run (another's found it): only
    that one counts and audits it, so a tick has one count and one audit row however
    many schedulers fired it. Atomic with the caller's transaction."""
    moved = int(tx.conn.execute(_forward(workflow, schedule.id, tick).values(done_until=tick)).rowcount) == 1
    if launched:
        key = (_sc.c.workflow == workflow, _sc.c.schedule_id == schedule.id)
        tx.conn.execute(update(_sc).where(*key).values(fired=_sc.c.fired + 1))
        latest = or_(_sc.c.last_tick.is_(None), _sc.c.last_tick < tick)
        tx.conn.execute(update(_sc).where(*key, latest).values(last_tick=tick, last_run_id=run_id))
        tx.audit(
            "schedule.fired",
            actor=f"schedule:{global_id(workflow, schedule.id)}",
            target_type="schedule",
            target_id=global_id(workflow, schedule.id),
            run_id=run_id,
            detail={"tick": at_iso},
        )
    return moved


def skipped(tx: Tx, workflow: str, schedule: Schedule, until: float, count: int, why: str) -> bool:
    """Record that the ticks up to ``until`` were dealt with, ``count`` of them skipped
    (``why``: missed during downtime, refused input); True if this call moved it on."""
    stmt = _forward(workflow, schedule.id, until).values(done_until=until, skipped=_sc.c.skipped + count)
    moved = int(tx.conn.execute(stmt).rowcount) == 1
    if moved and count:
        tx.audit(
            "schedule.skipped",
            actor=f"schedule:{global_id(workflow, schedule.id)}",
            target_type="schedule",
            target_id=global_id(workflow, schedule.id),
            detail={"count": count, "until": until, "why": why},
        )
    return moved
