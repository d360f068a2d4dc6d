"""Tunables read from the environment: bad values are refused with the variable's name."""

from __future__ import annotations

import pytest

from smithers.shared.config import SchedulerConfig
from smithers.shared.errors import InvalidInput


def test_scheduler_tunables_are_read_and_checked() -> None:
    config = SchedulerConfig.from_env({"SMITHERS_REDISPATCH_AFTER": "2.5", "SMITHERS_SWEEP_INTERVAL": "0.5"})
    assert config.redispatch_after_s == 2.5 and config.sweep_interval_s == 0.5
    assert SchedulerConfig.from_env({}).redispatch_after_s == 300.0


@pytest.mark.parametrize(
    ("value", "message"),
    [("0.5", "SMITHERS_REDISPATCH_AFTER must be at least 1"), ("-1", "must be > 0"), ("soon", "a number")],
)
def test_a_redispatch_delay_below_the_lazy_claim_margin_is_refused(value: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        SchedulerConfig.from_env({"SMITHERS_REDISPATCH_AFTER": value})
