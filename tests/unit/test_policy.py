"""Retry backoff and cache policy validation (pure)."""

from __future__ import annotations

import pytest

from shared.errors import InvalidWorkflow
from shared.policy import CachePolicy, RetryPolicy, retry_delay


def test_fixed_backoff_waits_the_same_each_time_then_gives_up() -> None:
    policy = RetryPolicy(retries=2, backoff="fixed", delay_s=3)
    assert [retry_delay(policy, n) for n in (1, 2, 3)] == [3, 3, None]


def test_exponential_backoff_doubles_and_is_capped() -> None:
    policy = RetryPolicy(retries=6, backoff="exponential", delay_s=1, max_delay_s=10)
    assert [retry_delay(policy, n) for n in range(1, 8)] == [1, 2, 4, 8, 10, 10, None]


def test_no_retries_fails_at_once() -> None:
    assert retry_delay(RetryPolicy(), 1) is None


@pytest.mark.parametrize("kwargs", [{"retries": -1}, {"backoff": "linear"}, {"delay_s": -1}])
def test_bad_retry_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidWorkflow):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_bad_cache_policies_are_refused() -> None:
    with pytest.raises(InvalidWorkflow):
        CachePolicy(scope="galaxy")  # type: ignore[arg-type]
    with pytest.raises(InvalidWorkflow):
        CachePolicy(ttl_ms=0)
