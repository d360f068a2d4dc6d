"""The budget of restarts (smithers.shared.restarts.RestartBudget): the worker's in-process
Celery restarts and `smithers up`'s children."""

from __future__ import annotations

from smithers.shared.restarts import RestartBudget
from smithers.workers.app import RESTARTS_PER_MINUTE


def test_allows_the_limit_within_the_window_then_refuses() -> None:
    budget = RestartBudget(3, 60.0)
    assert [budget.take(t) for t in (0.0, 10.0, 20.0)] == [True, True, True]
    assert budget.take(59.0) is False  # a fourth within 60 s of the first
    assert budget.take(60.0) is True  # the first left the window
    assert budget.take(61.0) is False


def test_refused_restarts_do_not_count() -> None:
    budget = RestartBudget(1, 60.0)
    assert budget.take(0.0)
    assert not budget.take(1.0)
    assert not budget.take(2.0)
    assert budget.take(60.0)


def test_the_worker_allows_a_few_a_minute() -> None:
    budget = RestartBudget(RESTARTS_PER_MINUTE, 60.0)
    assert all(budget.take(float(t)) for t in range(RESTARTS_PER_MINUTE))
    assert not budget.take(float(RESTARTS_PER_MINUTE))
