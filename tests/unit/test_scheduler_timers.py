"""The scheduler's in-memory wake times: on time for each run, one time per run."""

from __future__ import annotations

from smithers.scheduler.timers import Timers

NOW = 1000.0


def test_runs_are_due_in_time_order_and_only_once() -> None:
    timers = Timers(horizon_s=2.0)
    timers.hold("b", NOW + 0.5, NOW)
    timers.hold("a", NOW + 0.2, NOW)

    assert timers.next_at() == NOW + 0.2
    assert timers.pop_due(NOW + 0.1) == set()
    assert timers.pop_due(NOW + 0.2) == {"a"}
    assert timers.next_at() == NOW + 0.5
    assert timers.pop_due(NOW + 9) == {"b"}
    assert timers.pop_due(NOW + 9) == set() and timers.next_at() is None


def test_a_sweep_brings_a_time_forward_and_a_decision_sets_it() -> None:
    timers = Timers(horizon_s=2.0)
    timers.hold("r", NOW + 1.0, NOW)
    timers.hold("r", NOW + 1.5, NOW)  # a sweep's later reading: the earlier time stays
    assert timers.next_at() == NOW + 1.0
    timers.decided("r", NOW + 1.5, NOW)  # the run's decision: this time, no other
    assert timers.pop_due(NOW + 1.2) == set()
    assert timers.pop_due(NOW + 1.5) == {"r"}
    timers.decided("r", NOW + 0.3, NOW)
    timers.decided("r", None, NOW)  # nothing to wake for
    assert timers.next_at() is None and len(timers) == 0


def test_times_past_the_horizon_or_the_cap_are_left_to_the_sweep() -> None:
    timers = Timers(horizon_s=2.0, max_held=2)
    timers.hold("far", NOW + 5, NOW)
    timers.hold("a", NOW + 1, NOW)
    timers.hold("b", NOW + 1, NOW)
    timers.hold("c", NOW + 1, NOW)
    assert len(timers) == 2 and timers.pop_due(NOW + 1) == {"a", "b"}


def test_stale_entries_do_not_pile_up() -> None:
    timers = Timers(horizon_s=2.0)
    for k in range(5000):
        timers.decided("r", NOW + 1 + k / 10_000, NOW)
    assert len(timers) == 1 and len(timers._heap) < 2000
    assert timers.pop_due(NOW + 2) == {"r"}
