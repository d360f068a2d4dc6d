"""Schedule operations used by the CLI and the gateway alike: list, pause, resume.

A schedule is declared in a workflow's code (:meth:`Workflow.schedule`) and named
``workflow:schedule_id``; its state (paused, the latest tick fired) is the store's
(:mod:`smithers.shared.store.schedules`). Pause and resume are one transaction each,
with their audit row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from smithers.shared.errors import NotFound
from smithers.shared.registry import Registry
from smithers.shared.schedule import Schedule, global_id, iso, next_tick, split_id
from smithers.shared.store import Store
from smithers.shared.store import schedules as schedules_store
from smithers.shared.store.schedules import ScheduleState


@dataclass(frozen=True)
class ScheduleView:
    """A declared schedule with its state, as ``GET /v1/schedules`` and ``smithers
    schedules`` show it."""

    workflow: str
    schedule: Schedule
    state: ScheduleState | None
    now: float

    @property
    def id(self) -> str:
        """``workflow:schedule_id``."""
        return global_id(self.workflow, self.schedule.id)

    @property
    def paused(self) -> bool:
        """True while paused."""
        return self.state is not None and self.state.paused

    @property
    def next_tick(self) -> float | None:
        """When it fires next (None while paused)."""
        if self.paused:
            return None
        done = self.state.done_until if self.state is not None else None
        return next_tick(self.schedule, max(done or 0.0, self.now))

    def to_json(self) -> dict[str, Any]:
        """The public shape (``Schedule`` in the OpenAPI document)."""
        st, sch = self.state, self.schedule
        nxt = self.next_tick
        return {
            "id": self.id,
            "workflow": self.workflow,
            "schedule_id": sch.id,
            "cron": sch.cron,
            "tz": sch.tz,
            "input": dict(sch.input),
            "catch_up": sch.catch_up,
            "policy": sch.policy,
            "paused": self.paused,
            "paused_by": st.paused_by if st is not None else None,
            "changed_at": st.changed_at if st is not None else None,
            "next_tick": nxt,
            "next_tick_local": iso(nxt, sch.tz),
            "last_tick": st.last_tick if st is not None else None,
            "last_run_id": st.last_run_id if st is not None else None,
            "fired": st.fired if st is not None else 0,
            "skipped": st.skipped if st is not None else 0,
        }


def declared(registry: Registry, workflow: str | None = None) -> list[tuple[str, Schedule]]:
    """Every (workflow, schedule) the registry's workflows declare, by workflow name."""
    names = registry.names() if workflow is None else [workflow]
    found: list[tuple[str, Schedule]] = []
    for name in names:
        entry = registry.find(name)
        if entry is not None:
            found.extend((name, sch) for sch in entry.workflow.schedules)
    return found


def list_schedules(
    store: Store, registry: Registry, *, workflow: str | None = None, now: float | None = None
) -> list[ScheduleView]:
    """The declared schedules (of ``workflow`` when given) with their state."""
    pairs = declared(registry, workflow)
    with store.read() as conn:
        rows = schedules_store.states(conn, sorted({w for w, _ in pairs}))
    at = time.time() if now is None else now
    return [ScheduleView(w, sch, rows.get((w, sch.id)), at) for w, sch in pairs]


def find(registry: Registry, schedule_id: str) -> tuple[str, Schedule]:
    """The declared schedule named ``workflow:schedule_id``; NotFound if none is."""
    workflow, sid = split_id(schedule_id)
    for name, sch in declared(registry, workflow):
        if sch.id == sid:
            return name, sch
    raise NotFound(f"schedule {schedule_id!r} not found (`smithers schedules` lists them)")


def set_paused(
    store: Store, registry: Registry, schedule_id: str, *, paused: bool, actor: str | None
) -> tuple[ScheduleView, bool]:
    """Pause (or resume) a declared schedule, audited with ``actor``; ``(view,
    changed)``. Paused, it launches nothing; ticks that came meanwhile are skipped."""
    workflow, sch = find(registry, schedule_id)
    with store.write() as tx:
        state, changed = schedules_store.set_paused(tx, workflow, sch, paused=paused, actor=actor)
        now = tx.now
    return ScheduleView(workflow, sch, state, now), changed
