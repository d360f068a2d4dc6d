"""Cron schedules of a workflow and the pure computation of their ticks.

A workflow declares schedules (:meth:`smithers.shared.workflow.Workflow.schedule`)::

    wf.schedule("0 9 * * 1-5", tz="Europe/Paris", input={"report": "daily"}, catch_up=3)

Cron expressions have five fields (minute hour day-of-month month day-of-week), or six
with a leading seconds field (``*/10 * * * * *``); they are read in the schedule's time
zone, so ``0 9 * * *`` in ``Europe/Paris`` is 09:00 Paris time on both sides of a DST
change. A local time that does not exist (spring forward) fires at the first minute
after the gap; one that exists twice (fall back) fires once, at its first occurrence
(cronsim's rules, those of Debian's cron).

Each tick launches one run whose id is derived from (workflow, schedule id, tick):
:func:`run_id_for`. Every scheduler that fires the same tick therefore launches the
same run, and the launch is idempotent by run id, so a tick launches one run however
many schedulers run. :func:`plan` decides which ticks to fire after a given point: a
tick more than ``late_after_s`` old when a scheduler first looks is *missed* (the
schedulers were down); the schedule's ``catch_up`` says how many of the latest missed
ticks still fire (0: none, they are skipped).

Everything here is plain computation over plain data (no clock is read): the scheduler
passes ``now``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from smithers.shared.errors import InvalidInput, InvalidWorkflow

SCHEDULE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_CRON = 200  # characters of a cron expression
MAX_CATCH_UP = 100  # the most missed ticks a schedule may catch up after downtime
LATE_AFTER_S = 60.0  # a tick first seen this late was missed (its policy decides)
NAMESPACE = uuid.UUID("6f0d1c3e-58a4-4c1e-9a57-3c0a5d1e2b7f")  # of the tick run ids


@dataclass(frozen=True)
class Schedule:
    """One cron schedule of a workflow: launch a run with ``input`` at each tick of
    ``cron`` read in the time zone ``tz``; after downtime, fire at most ``catch_up`` of
    the missed ticks (the latest ones), skipping the rest. ``id`` names it within the
    workflow (default: derived from the cron, time zone and input)."""

    cron: str
    tz: str = "UTC"
    input: Mapping[str, Any] = field(default_factory=dict)
    catch_up: int = 0
    id: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.cron, str) or not self.cron.strip() or len(self.cron) > MAX_CRON:
            raise InvalidWorkflow(f"schedule cron must be a non-empty string of at most {MAX_CRON} chars")
        object.__setattr__(self, "cron", " ".join(self.cron.split()))
        where = f"schedule {self.cron!r}"
        zone = _zone(self.tz, where)
        try:
            next(CronSim(self.cron, datetime(2000, 1, 1, tzinfo=zone)))
        except (CronSimError, StopIteration) as exc:
            raise InvalidWorkflow(f"{where}: not a cron expression ({exc or 'it never fires'})") from None
        if isinstance(self.catch_up, bool) or not isinstance(self.catch_up, int):
            raise InvalidWorkflow(f"{where}: catch_up must be an integer")
        if not 0 <= self.catch_up <= MAX_CATCH_UP:
            raise InvalidWorkflow(f"{where}: catch_up must be between 0 and {MAX_CATCH_UP}")
        if not isinstance(self.input, Mapping):
            raise InvalidWorkflow(f"{where}: input must be a JSON object")
        try:
            canonical = json.dumps(dict(self.input), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidWorkflow(f"{where}: input is not JSON ({exc})") from None
        object.__setattr__(self, "input", json.loads(canonical))
        if not self.id:
            digest = hashlib.sha256(f"{self.cron}\n{self.tz}\n{canonical}".encode()).hexdigest()
            object.__setattr__(self, "id", f"cron-{digest[:10]}")
        elif not isinstance(self.id, str) or not SCHEDULE_ID.match(self.id):
            raise InvalidWorkflow(f"{where}: id {self.id!r} must match {SCHEDULE_ID.pattern}")

    @property
    def zone(self) -> ZoneInfo:
        """The schedule's time zone."""
        return ZoneInfo(self.tz)

    @property
    def policy(self) -> str:
        """``skip`` or ``catch_up:N``: what happens to ticks missed during downtime."""
        return f"catch_up:{self.catch_up}" if self.catch_up else "skip"


def _zone(tz: str, where: str) -> ZoneInfo:
    if not isinstance(tz, str) or not tz:
        raise InvalidWorkflow(f"{where}: tz must be an IANA time zone name such as 'Europe/Paris'")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidWorkflow(f"{where}: unknown time zone {tz!r} (an IANA name: 'Europe/Paris')") from None


@dataclass(frozen=True)
class Plan:
    """What a scheduler does for one schedule now: ``fire`` these ticks (oldest first),
    having skipped ``skipped`` missed ones (at least that many: counting stops at
    :data:`MAX_SKIPPED_COUNTED`); ``last``: the latest tick dealt with, fired or
    skipped (None: no tick is due)."""

    fire: tuple[float, ...] = ()
    skipped: int = 0
    last: float | None = None


MAX_SKIPPED_COUNTED = 1_000
MAX_ON_TIME = 1_000  # ticks due within late_after_s of now (a per-second cron: 60)


def ticks_before(schedule: Schedule, after: float, until: float, limit: int) -> list[float]:
    """The latest ``limit`` ticks ``t`` with ``after < t <= until`` (epoch seconds, UTC),
    oldest first."""
    if until <= after or limit <= 0:
        return []
    # cronsim counts back from strictly before its start: start just past ``until``
    start = datetime.fromtimestamp(math.floor(until) + 1, UTC).astimezone(schedule.zone)
    found: list[float] = []
    for dt in CronSim(schedule.cron, start, reverse=True):
        tick = dt.timestamp()
        if tick <= after or len(found) >= limit:
            break
        found.append(tick)
    return found[::-1]


def next_tick(schedule: Schedule, after: float) -> float | None:
    """The first tick strictly after ``after`` (epoch seconds), or None if it never fires."""
    start = datetime.fromtimestamp(math.floor(after), UTC).astimezone(schedule.zone)
    try:
        return next(CronSim(schedule.cron, start)).timestamp()
    except StopIteration:
        return None


def plan(schedule: Schedule, *, after: float, now: float, late_after_s: float = LATE_AFTER_S) -> Plan:
    """The ticks to fire now, for a schedule whose ticks up to ``after`` were dealt with.

    Ticks in ``(after, now]`` at most ``late_after_s`` old fire (they are on time: a
    scheduler was looking). Older ones were missed: the latest ``schedule.catch_up`` of
    them fire as well, the rest are skipped.
    """
    if now <= after:
        return Plan()
    cut = now - late_after_s  # ticks at or before it are missed
    on_time = ticks_before(schedule, max(after, cut), now, MAX_ON_TIME)
    missed = ticks_before(schedule, after, min(cut, now), schedule.catch_up + MAX_SKIPPED_COUNTED)
    if not on_time and not missed:
        return Plan()
    caught = missed[len(missed) - schedule.catch_up :] if schedule.catch_up else []
    fire = tuple(caught + on_time)
    last = (on_time or missed)[-1]
    return Plan(fire=fire, skipped=len(missed) - len(caught), last=last)


def run_id_for(workflow: str, schedule_id: str, tick: float) -> str:
    """The id of the run a tick launches: the same on every scheduler (a uuid5 of the
    workflow, the schedule and the tick's UTC time), so the launch is launched once."""
    at = datetime.fromtimestamp(tick, UTC).isoformat()
    return "sched-" + uuid.uuid5(NAMESPACE, f"{workflow}\n{schedule_id}\n{at}").hex


def global_id(workflow: str, schedule_id: str) -> str:
    """How the API and the CLI name a schedule: ``workflow:schedule_id``."""
    return f"{workflow}:{schedule_id}"


def split_id(value: str) -> tuple[str, str]:
    """``workflow:schedule_id`` -> its two parts; malformed input is refused."""
    workflow, sep, schedule_id = value.partition(":") if isinstance(value, str) else ("", "", "")
    if not sep or not workflow or not SCHEDULE_ID.match(schedule_id) or len(value) > 200:
        raise InvalidInput(f"schedule id {value!r} must be WORKFLOW:SCHEDULE_ID (`smithers schedules`)")
    return workflow, schedule_id


def iso(epoch: float | None, tz: str = "UTC") -> str | None:
    """An epoch time as ISO 8601 in ``tz`` (None stays None)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).astimezone(ZoneInfo(tz)).isoformat()
