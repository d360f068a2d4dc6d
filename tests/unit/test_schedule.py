"""Cron schedules' pure tick computation: time zones and DST, the run id of a tick,
what fires after downtime (skip, or catch up at most N), and declaration errors."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from smithers.shared import Workflow
from smithers.shared.errors import InvalidInput, InvalidWorkflow
from smithers.shared.schedule import Schedule, next_tick, plan, run_id_for, split_id, ticks_before

PARIS = ZoneInfo("Europe/Paris")


def at(*args: int, tz: ZoneInfo = PARIS) -> float:
    return datetime(*args, tzinfo=tz).timestamp()  # type: ignore[misc]


def local(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, PARIS).strftime("%Y-%m-%d %H:%M %Z")


def test_ticks_are_read_in_the_schedule_time_zone_across_dst() -> None:
    weekdays = Schedule("0 9 * * 1-5", tz="Europe/Paris")
    # Friday 27 March 2026 09:00 CET, then Monday 30 March 09:00 CEST (DST began on the 29th)
    first = next_tick(weekdays, at(2026, 3, 27, 8, 0))
    assert first is not None and local(first) == "2026-03-27 09:00 CET"
    second = next_tick(weekdays, first)
    assert second is not None and local(second) == "2026-03-30 09:00 CEST"
    assert second - first == 3 * 86400 - 3600  # a weekend one hour short


def test_a_local_time_skipped_or_repeated_by_dst_fires_once() -> None:
    nightly = Schedule("30 2 * * *", tz="Europe/Paris")
    # 29 March 2026: 02:00 -> 03:00, no 02:30: it fires at 03:00
    spring = ticks_before(nightly, at(2026, 3, 28, 12, 0), at(2026, 3, 30, 12, 0), 10)
    assert [local(t) for t in spring] == ["2026-03-29 03:00 CEST", "2026-03-30 02:30 CEST"]
    # 25 October 2026: 03:00 -> 02:00, 02:30 twice: it fires once, the first time
    autumn = ticks_before(nightly, at(2026, 10, 24, 12, 0), at(2026, 10, 26, 12, 0), 10)
    assert [local(t) for t in autumn] == ["2026-10-25 02:30 CEST", "2026-10-26 02:30 CET"]


def test_a_tick_has_one_run_id_the_same_on_every_scheduler() -> None:
    tick = at(2026, 3, 27, 9, 0)
    a = run_id_for("report", "daily", tick)
    assert a == run_id_for("report", "daily", tick)
    assert a.startswith("sched-") and len(a) <= 64
    assert len({a, run_id_for("report", "daily", tick + 60), run_id_for("report", "other", tick)}) == 3
    assert run_id_for("other", "daily", tick) != a


def test_on_time_ticks_fire_and_nothing_fires_twice() -> None:
    every10s = Schedule("*/10 * * * * *")
    start = at(2026, 1, 1, 12, 0, 0)
    first = plan(every10s, after=start, now=start + 25)
    assert first.fire == (start + 10, start + 20) and first.skipped == 0 and first.last == start + 20
    # asked again with the same progress and clock: the same ticks (the run ids make it once)
    assert plan(every10s, after=start, now=start + 25) == first
    # asked after those were dealt with: nothing until the next tick
    assert plan(every10s, after=start + 20, now=start + 29).fire == ()
    assert plan(every10s, after=start + 20, now=start + 30).fire == (start + 30,)


def test_after_downtime_missed_ticks_are_skipped_by_default() -> None:
    hourly = Schedule("0 * * * *")
    start = at(2026, 1, 1, 0, 0)
    # the schedulers were down from 00:00 to 05:00:30: 01:00 .. 05:00 are due
    todo = plan(hourly, after=start, now=start + 5 * 3600 + 30)
    # 05:00 is 30 s late (on time); 01:00 .. 04:00 were missed and are skipped
    assert todo.fire == (start + 5 * 3600,) and todo.skipped == 4 and todo.last == start + 5 * 3600
    later = plan(hourly, after=start, now=start + 5 * 3600 + 600)  # 05:00 10 minutes late too
    assert later.fire == () and later.skipped == 5 and later.last == start + 5 * 3600


def test_after_downtime_at_most_n_missed_ticks_catch_up() -> None:
    hourly = Schedule("0 * * * *", catch_up=2)
    start = at(2026, 1, 1, 0, 0)
    todo = plan(hourly, after=start, now=start + 5 * 3600 + 600)
    # the latest two of the five missed ticks fire, oldest first; three are skipped
    assert todo.fire == (start + 4 * 3600, start + 5 * 3600) and todo.skipped == 3
    few = plan(Schedule("0 * * * *", catch_up=10), after=start, now=start + 3 * 3600 + 600)
    assert few.fire == (start + 3600, start + 7200, start + 3 * 3600) and few.skipped == 0
    # a grace of one second: a tick 2 s late is missed already
    strict = plan(Schedule("* * * * * *"), after=start, now=start + 5, late_after_s=1.5)
    assert strict.fire == (start + 4, start + 5) and strict.skipped == 3


def test_a_schedule_declared_with_bad_values_is_refused_naming_them() -> None:
    with pytest.raises(InvalidWorkflow, match="not a cron expression"):
        Schedule("61 * * * *")
    with pytest.raises(InvalidWorkflow, match="not a cron expression"):
        Schedule("0 0 30 2 *")  # 30 February
    with pytest.raises(InvalidWorkflow, match="unknown time zone 'Mars/Olympus'"):
        Schedule("0 9 * * *", tz="Mars/Olympus")
    with pytest.raises(InvalidWorkflow, match="catch_up must be between 0 and 100"):
        Schedule("0 9 * * *", catch_up=101)
    with pytest.raises(InvalidWorkflow, match="input is not JSON"):
        Schedule("0 9 * * *", input={"when": datetime.now()})
    with pytest.raises(InvalidWorkflow, match="id 'Daily Report' must match"):
        Schedule("0 9 * * *", id="Daily Report")
    wf = Workflow("reports")
    wf.schedule("0 9 * * 1-5", tz="Europe/Paris", id="weekday")
    with pytest.raises(InvalidWorkflow, match="duplicate schedule id 'weekday'"):
        wf.schedule("0 10 * * *", id="weekday")
    # the default id is stable, and differs by cron, zone and input
    a = wf.schedule("0 9 * * *", input={"x": 1})
    assert a.id == Schedule("0  9 * * *", input={"x": 1}).id != Schedule("0 9 * * *", input={"x": 2}).id
    assert [s.id for s in wf.schedules] == ["weekday", a.id]


def test_a_schedule_is_named_workflow_colon_id() -> None:
    assert split_id("reports:weekday") == ("reports", "weekday")
    for bad in ("reports", ":weekday", "reports:Week Day", "x" * 300 + ":a"):
        with pytest.raises(InvalidInput):
            split_id(bad)
