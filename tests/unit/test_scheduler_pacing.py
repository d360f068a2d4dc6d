"""The scheduler's pacing of expensive decisions: an expensive run waits for a batch, a
cheap one never does, and the map stays small however many runs were decided (one test
uses a SQLite file for the transaction a batch runs in)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from smithers.scheduler.loop import Scheduler
from smithers.scheduler.pacing import MAX_BATCH_DELAY_S, Pacing
from smithers.shared.config import SchedulerConfig
from smithers.shared.registry import Registry
from smithers.shared.store import Store

NOW = 1000.0


def test_a_cheap_decision_never_delays_its_run() -> None:
    pacing = Pacing()
    pacing.decided("chain", NOW, 0.001)

    assert pacing.due(Counter({"chain"}), NOW) == ["chain"]
    assert pacing.next_at() is None


def test_an_expensive_run_waits_four_times_its_cost_then_is_due_once() -> None:
    pacing = Pacing()
    pacing.decided("wide", NOW, 0.02)

    assert pacing.due(Counter({"wide", "other"}), NOW + 0.05) == ["other"]
    assert pacing.next_at() == NOW + 0.08

    assert pacing.due(Counter(), NOW + 0.08) == ["wide"]
    assert pacing.due(Counter(), NOW + 0.09) == []
    assert pacing.next_at() is None


def test_the_wait_is_capped() -> None:
    pacing = Pacing()
    pacing.decided("huge", NOW, 10.0)

    assert pacing.due(Counter({"huge"}), NOW + MAX_BATCH_DELAY_S - 0.01) == []
    assert pacing.due(Counter(), NOW + MAX_BATCH_DELAY_S) == ["huge"]


def test_a_wide_run_in_flight_waits_for_a_batch_of_completions_not_only_for_time() -> None:
    # given a decision of 20 ms that left 1,000 node executions in flight: it is worth
    # 40 completions (0.5 ms of decision per completion)
    pacing = Pacing()
    pacing.decided("wide", NOW, 0.02, in_flight=1000)

    # when 10 have reported after its spacing (80 ms) has passed: it waits on
    assert pacing.due(Counter({"wide": 10}), NOW + 0.1) == []
    assert pacing.next_at() == NOW + MAX_BATCH_DELAY_S
    # then once 40 have: it is due
    assert pacing.due(Counter({"wide": 30}), NOW + 0.2) == ["wide"]


def test_completions_reported_early_still_wait_for_the_spacing() -> None:
    pacing = Pacing()
    pacing.decided("wide", NOW, 0.02, in_flight=1000)

    assert pacing.due(Counter({"wide": 50}), NOW + 0.01) == []
    assert pacing.next_at() == NOW + 0.08
    assert pacing.due(Counter(), NOW + 0.08) == ["wide"]


def test_a_run_with_few_left_in_flight_waits_for_half_of_them() -> None:
    # the end of a fan-out: 3 in flight, so 2 completions make it due, not 40
    pacing = Pacing()
    pacing.decided("wide", NOW, 0.02, in_flight=3)

    assert pacing.due(Counter({"wide": 1}), NOW + 0.1) == []
    assert pacing.due(Counter({"wide": 1}), NOW + 0.11) == ["wide"]


def test_a_run_whose_completions_do_not_come_is_decided_at_the_cap() -> None:
    pacing = Pacing()
    pacing.decided("wide", NOW, 0.02, in_flight=1000)

    assert pacing.due(Counter({"wide": 1}), NOW + 1.0) == []
    assert pacing.due(Counter(), NOW + MAX_BATCH_DELAY_S) == ["wide"]


def test_a_run_whose_decision_became_cheap_is_no_longer_delayed() -> None:
    pacing = Pacing()
    pacing.decided("r", NOW, 0.05)
    pacing.decided("r", NOW + 0.01, 0.001)

    assert pacing.due(Counter({"r"}), NOW + 0.02) == ["r"]


def test_many_decided_runs_leave_only_the_ones_that_can_still_wait() -> None:
    # given 40,000 cheap decisions and 100 expensive ones a while ago
    pacing = Pacing()
    for i in range(40_000):
        pacing.decided(f"one-{i}", NOW, 0.001)
    for i in range(100):
        pacing.decided(f"wide-{i}", NOW, 0.02)
    assert len(pacing) == 100

    # when a wake-up comes after their waits are over
    pacing.due(Counter({"new"}), NOW + 2.0)

    # then nothing is held for them
    assert len(pacing) == 0


def test_a_decision_that_waited_for_a_lock_is_not_counted_as_expensive(tmp_path: Path) -> None:
    # A decision woken before a worker's commit waits for the run's row lock: wall
    # time, not work. Only the CPU it took counts towards pacing.
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    broker: Any = SimpleNamespace(send_steps=lambda *a: None)
    sched = Scheduler(store, broker, Registry(), SchedulerConfig())

    def waits_for_a_lock(tx: Any, run_id: str, messages: list[Any]) -> tuple[None, int]:
        time.sleep(0.05)
        return None, 0

    sched._decide = waits_for_a_lock  # type: ignore[method-assign]
    sched.process("r1")
    assert len(sched.pacing) == 0
    assert sched.pacing.due(Counter({"r1"}), time.time()) == ["r1"]
    store.close()
