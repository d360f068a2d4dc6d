"""Time is kept: a step past its timeout, a silent step, a cancelled run's step and a
short retry delay, each with a real scheduler and Celery worker, on SQLite and PostgreSQL.

The bounds are generous (the machine is shared and noisy) but each is far below what
the engine did before its worker stopped steps itself and its scheduler woke on time:
a timed-out step kept its slot for 30 s more, a lease was looked at every 30 s, and a
0.2 s retry waited for the next sweep.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

from smithers.shared import operations, settings
from smithers.shared.status import AttemptState, RunStatus
from smithers.shared.store import AttemptRecord
from smithers.shared.store.queries import attempts_of
from smithers.shared.store.state import HARD_LIMIT_GRACE_S
from tests.integration.conftest import Engine

# the shipped sweep interval, re-send delay and lease (the test engine's are shorter)
DEFAULTS = {
    "SMITHERS_SWEEP_INTERVAL": "1",
    "SMITHERS_REDISPATCH_AFTER": "30",
    "SMITHERS_LEASE_SECONDS": str(settings.LEASE_SECONDS.default),
}


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def attempts(engine: Engine, run_id: str) -> list[AttemptRecord]:
    with engine.store.read() as conn:
        return attempts_of(conn, run_id)


def took(a: AttemptRecord) -> float:
    assert a.started_at is not None and a.finished_at is not None, a
    return a.finished_at - a.started_at


def test_a_step_past_its_timeout_is_stopped_and_its_slot_freed(
    engine_factory: Any, database_url: str, tmp_path: Path
) -> None:
    # given one worker slot, a step with timeout_s=1 sleeping 30 s (one retry), and a
    # quick run launched behind it
    engine: Engine = engine_factory(database_url, **DEFAULTS)
    engine.scheduler()
    engine.worker(concurrency=1)
    effects = tmp_path / "effects.txt"
    slow = engine.launch("t-timeout", {"sleep": 30, "effects": str(effects)})
    engine.wait_event(slow, lambda e: e.type == "attempt.started")
    quick = engine.launch("t-quick", {"effects": str(effects)})

    # when both run
    began = time.time()
    ran_slow = engine.wait(slow, timeout=30)
    ran_quick = engine.wait(quick, timeout=30)

    # then each attempt was stopped about a second in and recorded timed out, the run
    # failed with the timeout, and the quick run got the slot long before 30 s
    assert ran_slow.status is RunStatus.FAILED
    assert ran_slow.error is not None and ran_slow.error["code"] == "timeout"
    tries = attempts(engine, slow)
    assert [a.state for a in tries] == [AttemptState.TIMED_OUT] * 2
    assert all(a.error is not None and a.error["code"] == "timeout" for a in tries)
    assert all(took(a) < 3.0 for a in tries), [took(a) for a in tries]
    assert ran_quick.status is RunStatus.SUCCEEDED
    assert ran_quick.finished_at is not None and ran_quick.finished_at - began < 8.0
    assert lines(effects).count("quick_step:0") == 1
    assert [x for x in lines(effects) if x.startswith("start")] == ["start1:0", "start2:0"]


def test_a_silent_step_is_given_up_at_its_heartbeat_timeout_and_stopped(
    engine_factory: Any, database_url: str, tmp_path: Path
) -> None:
    # given one worker slot and heartbeat_timeout_s=2: attempt 1 is silent for 8 s
    engine: Engine = engine_factory(database_url, **DEFAULTS)
    engine.scheduler()
    engine.worker(concurrency=1)
    effects = tmp_path / "silent.txt"
    run_id = engine.launch("t-silent", {"sleep": 8, "effects": str(effects)})

    run = engine.wait(run_id, timeout=30)

    # then attempt 1 was given up (lost) about 2 s after it started and its body
    # stopped, so attempt 2 got the one slot and finished the run long before 8 s
    assert run.status is RunStatus.SUCCEEDED and run.output == {"silent_step": 2}
    first, second = attempts(engine, run_id)
    assert first.state is AttemptState.LOST and second.state is AttemptState.SUCCEEDED
    assert 1.5 < took(first) < 4.5, took(first)
    assert first.started_at is not None and second.started_at is not None
    assert second.started_at - first.started_at < 6.0  # not after attempt 1's 8 s
    assert lines(effects) == ["start1:0", "start2:0", "end2:0"]


def test_a_step_that_heartbeats_outlives_its_heartbeat_timeout(
    engine_factory: Any, database_url: str, tmp_path: Path
) -> None:
    # given heartbeat_timeout_s=2 and a step that sleeps 4 s, heartbeating every 0.5 s
    engine: Engine = engine_factory(database_url, **DEFAULTS)
    engine.scheduler()
    engine.worker(concurrency=1)
    effects = tmp_path / "beating.txt"
    run_id = engine.launch("t-silent", {"sleep": 4, "beat": 0.5, "effects": str(effects)})

    run = engine.wait(run_id, timeout=30)

    # then its first attempt ran to its end
    assert run.status is RunStatus.SUCCEEDED and run.output == {"silent_step": 1}
    (attempt,) = attempts(engine, run_id)
    assert attempt.state is AttemptState.SUCCEEDED and took(attempt) >= 4.0
    assert lines(effects) == ["start1:0", "end1:0"]


def test_cancel_stops_a_running_step(engine_factory: Any, database_url: str, tmp_path: Path) -> None:
    # given one worker slot running a step that sleeps 60 s
    engine: Engine = engine_factory(database_url, **DEFAULTS)
    engine.scheduler()
    engine.worker(concurrency=1)
    effects = tmp_path / "effects.txt"
    run_id = engine.launch("t-long", {"sleep": 60, "effects": str(effects)})
    engine.wait_event(run_id, lambda e: e.type == "attempt.started")
    time.sleep(0.5)

    # when the run is cancelled
    asked = time.time()
    operations.cancel(engine.store, engine.broker, run_id, "test")
    run = engine.wait(run_id, timeout=10)

    # then the step was stopped within about a second (its commit, refused, is recorded),
    # the attempt is cancelled, and the slot runs the next run at once
    assert run.status is RunStatus.CANCELLED
    refused = engine.wait_event(run_id, lambda e: e.type == "attempt.refused", timeout=10)
    assert refused.payload["reason"] == "run cancelled"
    assert refused.created_at - asked < 3.0
    (attempt,) = attempts(engine, run_id)
    assert attempt.state is AttemptState.CANCELLED
    quick = engine.launch("t-quick", {"effects": str(effects)})
    ran = engine.wait(quick, timeout=10)
    assert ran.status is RunStatus.SUCCEEDED and ran.finished_at is not None
    assert ran.finished_at - asked < 6.0
    assert lines(effects) == ["start:0", "quick_step:0"]


def test_a_short_retry_delay_is_kept(engine_factory: Any, database_url: str) -> None:
    # given a step that fails three times with a fixed 0.2 s retry delay, and a sweep
    # every 3 s (what would round each delay up)
    engine: Engine = engine_factory(database_url, SMITHERS_SWEEP_INTERVAL="3")
    engine.scheduler()
    engine.worker()
    run_id = engine.launch("t-retry", {"fail_times": 3})

    run = engine.wait(run_id, timeout=30)

    # then each retry started 0.2 s after the failure before it, not at a sweep
    assert run.status is RunStatus.SUCCEEDED and run.output == {"flaky": {"attempt": 4}}
    tries = attempts(engine, run_id)
    assert [a.state.value for a in tries] == ["failed", "failed", "failed", "succeeded"]
    gaps = []
    for before, after in itertools.pairwise(tries):
        assert before.finished_at is not None and after.started_at is not None
        gaps.append(after.started_at - before.finished_at)
    assert all(0.19 <= g < 1.0 for g in gaps), gaps


def test_a_killed_workers_step_is_dispatched_again_within_seconds(
    engine_factory: Any, database_url: str, tmp_path: Path
) -> None:
    # given a step of 3 s running on a worker with the default lease
    engine: Engine = engine_factory(database_url, **DEFAULTS)
    engine.scheduler()
    engine.worker("w1", concurrency=1)
    effects = tmp_path / "effects.txt"
    run_id = engine.launch("t-long", {"sleep": 3, "effects": str(effects)})
    engine.wait_event(run_id, lambda e: e.type == "attempt.started")
    time.sleep(1.0)  # its lease renewed at least once

    # when the worker is killed -9 and another one starts
    engine.kill9("w1")
    killed = time.time()
    engine.worker("w2", concurrency=1)
    run = engine.wait(run_id, timeout=30)

    # then the attempt was given up and the step dispatched again within the lease
    # (4 s), not after the 30 s it used to take
    assert run.status is RunStatus.SUCCEEDED
    first, second = attempts(engine, run_id)
    assert first.state is AttemptState.LOST and second.state is AttemptState.SUCCEEDED
    assert second.dispatched_at - killed < settings.LEASE_SECONDS.default + 1.5
    assert lines(effects) == ["start:0", "start:0", "end:0"]


def test_a_step_deaf_to_the_interrupt_is_killed_by_celerys_hard_time_limit(
    engine_factory: Any, database_url: str, tmp_path: Path
) -> None:
    # given one worker slot running a step with timeout_s=1 that blocks the interrupt
    # signal and sleeps 30 s, and a quick run launched behind it
    engine: Engine = engine_factory(database_url, **DEFAULTS)
    engine.scheduler()
    engine.worker(concurrency=1)
    effects = tmp_path / "effects.txt"
    deaf = engine.launch("t-deaf", {"sleep": 30, "effects": str(effects)})
    engine.wait_event(deaf, lambda e: e.type == "attempt.started")
    quick = engine.launch("t-quick", {"effects": str(effects)})

    ran_deaf = engine.wait(deaf, timeout=30)
    ran_quick = engine.wait(quick, timeout=30)

    # then the scheduler timed the attempt out at its deadline, and Celery killed the
    # pool process at the deadline plus the grace, so the next run got the slot (before:
    # 30 s later)
    assert ran_deaf.status is RunStatus.FAILED
    assert ran_deaf.error is not None and ran_deaf.error["code"] == "timeout"
    (attempt,) = attempts(engine, deaf)
    assert attempt.state is AttemptState.TIMED_OUT and attempt.started_at is not None
    assert ran_quick.status is RunStatus.SUCCEEDED and ran_quick.finished_at is not None
    assert ran_quick.finished_at - attempt.started_at < 1.0 + HARD_LIMIT_GRACE_S + 5.0
    assert lines(effects) == ["start:0", "quick_step:0"]
