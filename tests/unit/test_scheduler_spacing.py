"""The scheduler's adaptive spacing of expensive decisions (bookkeeping; one test uses a
SQLite file for the transaction a batch runs in)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from smithers.scheduler.loop import BATCH_SPACING, MAX_BATCH_DELAY_S, MIN_BATCHED_COST_S, Scheduler
from smithers.shared.config import SchedulerConfig
from smithers.shared.registry import Registry
from smithers.shared.store import Store


def scheduler() -> Scheduler:
    none: Any = None  # _due touches neither store, broker nor registry
    return Scheduler(none, none, none, SchedulerConfig())


def test_a_cheap_decision_is_never_delayed() -> None:
    sched = scheduler()
    sched._cost["chain"] = (100.0, 0.001)

    assert sched._due({"chain"}, 100.0) == ["chain"]


def test_an_expensive_run_waits_spacing_times_its_cost_then_is_decided() -> None:
    # given a run whose last decision took 20 ms and ended at t=100
    sched = scheduler()
    sched._cost["wide"] = (100.0, 0.020)

    # when woken just before the spacing has passed, it is deferred, not decided
    assert sched._due({"wide", "other"}, 100.0 + BATCH_SPACING * 0.020 - 0.001) == ["other"]

    # then a later pass (no new wake-up needed) decides it once the spacing has passed
    assert sched._due(set(), 100.0 + BATCH_SPACING * 0.020) == ["wide"]
    assert sched._due(set(), 200.0) == []


def test_the_delay_is_capped() -> None:
    sched = scheduler()
    sched._cost["huge"] = (100.0, 5.0)

    assert sched._due({"huge"}, 100.0 + MAX_BATCH_DELAY_S - 0.001) == []
    assert sched._due(set(), 100.0 + MAX_BATCH_DELAY_S) == ["huge"]


def test_a_decision_that_waited_for_a_lock_is_not_counted_as_expensive(tmp_path: Path) -> None:
    # A decision woken before a worker's commit waits for the run's row lock: wall
    # time, not work. Only the CPU it took counts towards spacing.
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    broker: Any = SimpleNamespace(send_steps=lambda *a: None)
    sched = Scheduler(store, broker, Registry(), SchedulerConfig())

    def waits_for_a_lock(tx: Any, run_id: str, messages: list[Any]) -> None:
        time.sleep(0.05)

    sched._decide = waits_for_a_lock  # type: ignore[method-assign]
    sched.process("r1")
    assert sched._cost["r1"][1] < MIN_BATCHED_COST_S
    assert sched._due({"r1"}, time.time()) == ["r1"]
    store.close()
