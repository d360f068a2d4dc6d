"""The scheduler's pacing: an expensive run waits for a batch, a cheap one never does,
and the map stays small however many runs were decided."""

from __future__ import annotations

from smithers.scheduler.pacing import MAX_BATCH_DELAY_S, Pacing

NOW = 1000.0


def test_a_cheap_decision_never_delays_its_run() -> None:
    pacing = Pacing()
    pacing.decided("chain", NOW, 0.001)

    assert pacing.due({"chain"}, NOW) == ["chain"]
    assert pacing.next_at() is None


def test_an_expensive_run_waits_four_times_its_cost_then_is_due_once() -> None:
    pacing = Pacing()
    pacing.decided("wide", NOW, 0.02)

    assert pacing.due({"wide", "other"}, NOW + 0.05) == ["other"]
    assert pacing.next_at() == NOW + 0.08

    assert pacing.due(set(), NOW + 0.08) == ["wide"]
    assert pacing.due(set(), NOW + 0.09) == []
    assert pacing.next_at() is None


def test_the_wait_is_capped() -> None:
    pacing = Pacing()
    pacing.decided("huge", NOW, 10.0)

    assert pacing.due({"huge"}, NOW + MAX_BATCH_DELAY_S - 0.01) == []
    assert pacing.due(set(), NOW + MAX_BATCH_DELAY_S) == ["huge"]


def test_a_run_whose_decision_became_cheap_is_no_longer_delayed() -> None:
    pacing = Pacing()
    pacing.decided("r", NOW, 0.05)
    pacing.decided("r", NOW + 0.01, 0.001)

    assert pacing.due({"r"}, NOW + 0.02) == ["r"]


def test_many_decided_runs_leave_only_the_ones_that_can_still_wait() -> None:
    # given 40,000 cheap decisions and 100 expensive ones a while ago
    pacing = Pacing()
    for i in range(40_000):
        pacing.decided(f"one-{i}", NOW, 0.001)
    for i in range(100):
        pacing.decided(f"wide-{i}", NOW, 0.02)
    assert len(pacing) == 100

    # when a wake-up comes after their waits are over
    pacing.due({"new"}, NOW + 2.0)

    # then nothing is held for them
    assert len(pacing) == 0
