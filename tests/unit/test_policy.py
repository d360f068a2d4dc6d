"""Retry backoff and cache policy validation (pure)."""

from __future__ import annotations

import pytest

from smithers.shared.errors import InvalidWorkflow
from smithers.shared.policy import CachePolicy, RetryPolicy, retry_delay


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


def test_cache_keys_depend_on_scope_identity_node_input_and_version() -> None:
    from smithers.shared.policy import cache_key

    def key(policy: CachePolicy, run: str = "r1", wf: str = "w", node: str = "n", data: object = 1) -> str:
        return cache_key(policy, run_id=run, workflow=wf, node_id=node, resolved_input=data)

    run, flow, glob = CachePolicy("run"), CachePolicy("workflow"), CachePolicy("global")
    assert key(run, run="r1") != key(run, run="r2")
    assert key(flow, run="r1") == key(flow, run="r2")
    assert key(flow, wf="a") != key(flow, wf="b")
    assert key(glob, wf="a", run="x") == key(glob, wf="b", run="y")
    assert key(glob, data={"a": 1}) != key(glob, data={"a": 2})
    assert key(glob, node="n1") != key(glob, node="n2")
    assert key(CachePolicy("global", version="1")) != key(CachePolicy("global", version="2"))
