"""Cron ticks: the scheduler's part of :mod:`smithers.shared.schedule`.

At each look (:meth:`Ticker.tick`) the ticker reads the state of the schedules its
workflows declare, asks the pure :func:`~smithers.shared.schedule.plan` which ticks are
due, and launches one run per tick under the id derived from it. Several schedulers
may fire the same tick: the launch is idempotent by run id, so the tick launches one
run; the row's ``done_until`` moves on by compare-and-set, so one of them counts it. A
scheduler that dies between a launch and its record launches the same run id again at
its next look: the run is found, not created twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from smithers.shared import operations
from smithers.shared.broker import Broker
from smithers.shared.errors import Conflict, InvalidInput, SmithersError
from smithers.shared.registry import Registry
from smithers.shared.schedule import LATE_AFTER_S, Schedule, global_id, iso, next_tick, plan, run_id_for
from smithers.shared.scheduling import declared
from smithers.shared.store import Store
from smithers.shared.store import schedules as schedules_store
from smithers.shared.store.schedules import ScheduleState

log = logging.getLogger("smithers.scheduler.ticker")
Clock = Callable[[], float]


class Ticker:
    """Fires the due ticks of a registry's schedules. ``clock``: the time (injectable,
    so ticks are tested without waiting for them); ``late_after_s``: a tick first seen
    this late was missed (its schedule's ``catch_up`` decides)."""

    def __init__(
        self,
        store: Store,
        broker: Broker | None,
        registry: Registry,
        *,
        deployment_version: str = "",
        clock: Clock = time.time,
        late_after_s: float = LATE_AFTER_S,
    ) -> None:
        self.store = store
        self.broker = broker
        self.registry = registry
        self.deployment_version = deployment_version
        self.clock = clock
        self.late_after_s = late_after_s
        self.schedules = declared(registry)
        self._next_at: float | None = None

    def next_at(self) -> float | None:
        """When the next tick of an unpaused schedule comes, as of the last look (None:
        no schedule, or none looked at yet)."""
        return self._next_at

    def tick(self) -> list[str]:
        """Fire every due tick now; the ids of the runs this call launched (created)."""
        if not self.schedules:
            return []
        with self.store.read() as conn:
            rows = schedules_store.states(conn, sorted({w for w, _ in self.schedules}))
        launched: list[str] = []
        soonest: float | None = None
        for workflow, sch in self.schedules:
            state = rows.get((workflow, sch.id))
            if state is None:
                with self.store.write() as tx:
                    state = schedules_store.seen(tx, workflow, sch, self.clock())
            if state.paused:
                continue
            launched += self._fire(workflow, sch, state)
            upcoming = next_tick(sch, max(self.clock(), state.done_until or 0.0))
            if upcoming is not None and (soonest is None or upcoming < soonest):
                soonest = upcoming
        self._next_at = soonest
        return launched

    def _fire(self, workflow: str, sch: Schedule, state: ScheduleState) -> list[str]:
        now = self.clock()
        after = state.done_until if state.done_until is not None else now
        todo = plan(sch, after=after, now=now, late_after_s=self.late_after_s)
        if todo.skipped or (todo.last is not None and not todo.fire):
            # the skipped ticks are older than any that fire: dealt with first
            until = todo.fire[0] - 0.001 if todo.fire else todo.last
            assert until is not None
            with self.store.write() as tx:
                moved = schedules_store.skipped(tx, workflow, sch, until, todo.skipped, "missed")
            if moved and todo.skipped:
                log.warning(
                    "schedule %s: %d ticks missed while no scheduler ran were skipped (%s)",
                    global_id(workflow, sch.id),
                    todo.skipped,
                    sch.policy,
                )
        launched: list[str] = []
        for tick in todo.fire:
            run_id = run_id_for(workflow, sch.id, tick)
            created = self._launch(workflow, sch, run_id, tick)
            if created is None:  # refused (bad input): dealt with as skipped
                with self.store.write() as tx:
                    schedules_store.skipped(tx, workflow, sch, tick, 1, "launch refused")
                continue
            with self.store.write() as tx:
                at = iso(tick, sch.tz)
                schedules_store.fired(tx, workflow, sch, tick, run_id, launched=bool(created), at_iso=at)
            if created:
                launched.append(run_id)
        return launched

    def _launch(self, workflow: str, sch: Schedule, run_id: str, tick: float) -> bool | None:
        """Launch the tick's run; True if created here, False if it was there already,
        None if the launch was refused (logged)."""
        name = global_id(workflow, sch.id)
        try:
            _run, created = operations.launch(
                self.store,
                self.broker,
                self.registry,
                workflow=workflow,
                run_input=dict(sch.input),
                run_id=run_id,
                launched_by=f"schedule:{name}"[:128],
                deployment_version=self.deployment_version,
            )
        except Conflict:
            # the same tick launched with another input (a scheduler of another revision
            # of the schedule): that run is the tick's
            log.warning("schedule %s: run %s exists with another input", name, run_id)
            return False
        except InvalidInput as exc:
            log.error("schedule %s: tick %s not launched: %s", name, iso(tick), exc.message)
            return None
        except SmithersError:
            raise  # store outages: the scheduler retries, the tick is still due
        if created:
            log.info("schedule %s: tick %s launched run %s", name, iso(tick, sch.tz), run_id)
        return created
