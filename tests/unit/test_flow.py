"""The pure rules of flow control (smithers.shared.flow): rates, keys, priorities,
who takes a freed slot, and what a workflow may declare."""

from __future__ import annotations

import pytest

from smithers.shared.errors import InvalidInput, InvalidWorkflow
from smithers.shared.flow import (
    RateLimit,
    Waiter,
    check_input,
    check_priority,
    key_value,
    make_policy,
    may_take_slot,
    next_in_line,
    parse_rate,
    rate_record,
    rate_wait,
)
from smithers.shared.workflow import Workflow


def test_rates_parse_in_every_unit_and_bad_ones_are_refused() -> None:
    assert parse_rate("10/m") == RateLimit(10, 60.0)
    assert parse_rate("2/s") == RateLimit(2, 1.0)
    assert parse_rate("100 / h") == RateLimit(100, 3600.0)
    assert parse_rate("5/30s") == RateLimit(5, 30.0)
    assert parse_rate("1/d") == RateLimit(1, 86400.0)
    for bad in ("10", "0/m", "10/w", "x/s", "10/0s", "5000/s"):
        with pytest.raises(InvalidWorkflow):
            parse_rate(bad)


def test_a_sliding_window_allows_n_per_period_and_says_when_next() -> None:
    limit = RateLimit(2, 1.0)
    assert rate_wait(limit, [], 100.0) is None
    starts = rate_record(limit, rate_record(limit, [], 100.0), 100.2)
    assert starts == [100.0, 100.2]
    assert rate_wait(limit, starts, 100.5) == pytest.approx(101.0)  # when 100.0 leaves the window
    assert rate_wait(limit, starts, 101.01) is None
    # only the latest n are kept, older ones drop out of the window
    assert rate_record(limit, [*starts, 100.9], 101.5) == [100.9, 101.5]


def test_the_line_is_highest_priority_then_oldest() -> None:
    old_low = Waiter("a", 0, 1.0)
    new_high = Waiter("b", 9, 5.0)
    newer_low = Waiter("c", 0, 2.0)
    line = [old_low, new_high, newer_low]
    assert [w.run_id for w in next_in_line(2, line)] == ["b", "a"]
    assert next_in_line(0, line) == []
    # one free slot: only the first in line may take it; a newcomer waits behind the line
    assert may_take_slot(1, 0, new_high, line)
    assert not may_take_slot(1, 0, old_low, line)
    assert not may_take_slot(1, 1, new_high, line)  # none free
    assert may_take_slot(2, 0, old_low, line)  # two free: the first two
    assert not may_take_slot(1, 0, Waiter("d", 0, 9.0), line)


def test_keys_come_from_the_input() -> None:
    assert key_value("customer", {"customer": "acme"}) == "acme"
    assert key_value("customer", {"customer": 42}) == "42"
    assert key_value(None, {"customer": "acme"}) == ""
    policy = make_policy("w", 1, "customer", None, None)
    check_input(policy, {"customer": "acme"})
    with pytest.raises(InvalidInput, match="input lacks 'customer'"):
        check_input(policy, {})
    with pytest.raises(InvalidInput, match="string or number"):
        check_input(policy, {"customer": {"id": 1}})


def test_priorities_are_0_to_9() -> None:
    assert check_priority(None) == 0
    assert check_priority(9) == 9
    for bad in (-1, 10, True, "5", 1.5):
        with pytest.raises(InvalidInput, match="priority"):
            check_priority(bad)


def test_what_a_workflow_may_declare() -> None:
    assert Workflow("plain").flow is None
    wf = Workflow("rated", rate_limit="10/m", concurrency=2, concurrency_key="customer")
    assert wf.flow is not None and wf.flow.rate_key == "customer"  # the rate follows the concurrency key
    for kwargs in (
        {"concurrency": 0},
        {"concurrency_key": "customer"},  # without a concurrency
        {"rate_key": "customer"},  # without a rate
        {"rate_limit": "often"},
    ):
        with pytest.raises(InvalidWorkflow):
            Workflow("bad", **kwargs)  # type: ignore[arg-type]


def test_a_task_names_its_queue() -> None:
    wf = Workflow("q")

    @wf.task(queue="gpu")
    def render(ctx: object) -> None: ...

    assert wf.nodes["render"].queue == "gpu"
    for bad in ("GPU", "sandbox", "a.b", "x" * 40):
        with pytest.raises(InvalidWorkflow):
            wf.task(id="other", queue=bad)
