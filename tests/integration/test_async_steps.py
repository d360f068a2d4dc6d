"""``async def`` steps with a real scheduler and a real Celery worker on the threads
pool, on SQLite and PostgreSQL: many at once on one
process's event loop, run in place along a chain, stopped at their timeout and on
cancel, kept alive by their heartbeats, failed with their traceback."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from smithers.shared import operations
from smithers.shared.registry import load_registry
from smithers.shared.status import AttemptState, RunStatus
from smithers.shared.store import AttemptRecord
from smithers.shared.store.queries import attempts_of
from tests.integration.async_workflows import WIDTH
from tests.integration.conftest import ROOT, Engine

WORKFLOWS = "tests.integration.async_workflows"


def engine_of(
    engine_factory: Any,
    database_url: str,
    concurrency: int = 4,
    scheduler: bool = True,
    pool: str = "threads",
) -> Engine:
    """An engine on the async workflows: a worker on ``pool`` (threads), one process
    of ``concurrency`` threads, and a scheduler."""
    eng: Engine = engine_factory(database_url, SMITHERS_WORKFLOWS=WORKFLOWS)
    eng.registry = load_registry(WORKFLOWS, str(ROOT))
    if scheduler:
        eng.scheduler()
    eng.start("worker", "worker", "--pool", pool, "--concurrency", str(concurrency), "--name", "aworker")
    return eng


def attempts(engine: Engine, run_id: str) -> list[AttemptRecord]:
    with engine.store.read() as conn:
        return sorted(attempts_of(conn, run_id), key=lambda a: (a.dispatched_at, a.number))


def took(a: AttemptRecord) -> float:
    assert a.started_at is not None and a.finished_at is not None, a
    return a.finished_at - a.started_at


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_for_line(path: Path, line: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while line not in lines(path):
        assert time.time() < deadline, f"{line!r} never written to {path}: {lines(path)}"
        time.sleep(0.05)


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant."""
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    best = now = 0
    for _, step in edges:
        now += step
        best = max(best, now)
    return best


def test_async_steps_run_at_once_on_one_process_loop_and_a_chain_runs_in_place(
    engine_factory: Any, database_url: str
) -> None:
    # given one threads-pool worker process of 24 threads and no scheduler (the launch
    # and each commit decide): 20 async steps each awaiting 1 s, and a chain of 3
    eng = engine_of(engine_factory, database_url, concurrency=24, scheduler=False)
    fan = eng.launch("a-fan", {"sleep": 1.0}, decide=True)
    chain = eng.launch("a-chain", decide=True)

    # when both run
    ran = eng.wait(fan, timeout=60)
    ran_chain = eng.wait(chain, timeout=30)

    # then the 20 awaited together in one process, on its event loop thread: most of
    # them overlapped (serially, no two would)
    assert ran.status is RunStatus.SUCCEEDED, ran.error
    assert ran.output is not None
    waits = ran.output["join"]
    assert len(waits) == WIDTH
    assert {w["pid"] for w in waits} == {waits[0]["pid"]}
    assert {w["thread"] for w in waits} == {"smithers-eventloop"}
    assert most_at_once([(w["start"], w["end"]) for w in waits]) >= WIDTH // 2, waits
    assert all(a.state is AttemptState.SUCCEEDED for a in attempts(eng, fan))
    # and the chain's steps after the first ran in place, each reading its upstream
    assert ran_chain.status is RunStatus.SUCCEEDED, ran_chain.error
    assert ran_chain.output == {"three": 3}
    found = attempts(eng, chain)
    assert [a.node_id for a in found if a.started_at == a.dispatched_at] == ["two", "three"]


def test_an_async_step_is_stopped_at_its_timeout_and_on_cancel(
    engine_factory: Any, database_url: str, tmp_path: Path
) -> None:
    # given async steps awaiting 30 s: one with timeout_s=1 (one retry), one cancelled
    eng = engine_of(engine_factory, database_url)
    timed_fx, long_fx = tmp_path / "timed.txt", tmp_path / "long.txt"
    timed = eng.launch("a-slow", {"sleep": 30, "effects": str(timed_fx)})
    long = eng.launch("a-long", {"sleep": 30, "effects": str(long_fx)})
    wait_for_line(long_fx, "start:1")

    # when the second run is cancelled
    asked = time.time()
    operations.cancel(eng.store, eng.broker, long, "test")
    ran_long = eng.wait(long, timeout=15)
    ran_timed = eng.wait(timed, timeout=30)

    # then the cancelled step's task was cancelled within seconds and its attempt too
    assert ran_long.status is RunStatus.CANCELLED
    refused = eng.wait_event(long, lambda e: e.type == "attempt.refused", timeout=10)
    assert refused.created_at - asked < 3.0
    (attempt,) = attempts(eng, long)
    assert attempt.state is AttemptState.CANCELLED
    assert lines(long_fx) == ["start:1", "cancelled:1"]
    # and each try of the timed step was cancelled about 1 s in, timed out
    assert ran_timed.status is RunStatus.FAILED
    assert ran_timed.error is not None and ran_timed.error["code"] == "timeout"
    tries = attempts(eng, timed)
    assert [a.state for a in tries] == [AttemptState.TIMED_OUT] * 2
    assert all(a.error is not None and a.error["code"] == "timeout" for a in tries)
    assert all(took(a) < 3.0 for a in tries), [took(a) for a in tries]
    assert lines(timed_fx) == ["start:1", "cancelled:1", "start:2", "cancelled:2"]


def test_an_async_step_heartbeats_and_its_exception_fails_with_its_traceback(
    engine_factory: Any, database_url: str, tmp_path: Path
) -> None:
    # given heartbeat_timeout_s=2: one step awaiting 4 s and beating every 0.5 s from
    # its coroutine, one silent for 4 s (its next attempt returns at once); and a step
    # whose coroutine raises
    eng = engine_of(engine_factory, database_url)
    beat_fx, silent_fx = tmp_path / "beat.txt", tmp_path / "silent.txt"
    beating = eng.launch("a-beating", {"sleep": 4, "effects": str(beat_fx)})
    silent = eng.launch("a-beating", {"sleep": 4, "beat": False, "effects": str(silent_fx)})
    failing = eng.launch("a-fails")

    ran = eng.wait(beating, timeout=30)
    ran_silent = eng.wait(silent, timeout=30)
    ran_failing = eng.wait(failing, timeout=30)

    # then the beating step outlived its heartbeat timeout in one attempt
    assert ran.status is RunStatus.SUCCEEDED and ran.output == {"beating_step": 1}, ran.error
    (attempt,) = attempts(eng, beating)
    assert attempt.state is AttemptState.SUCCEEDED and took(attempt) >= 4.0
    assert lines(beat_fx) == ["start:1", "end:1"]
    # and the silent one was given up about 2 s in and its coroutine stopped (no end:1)
    assert ran_silent.status is RunStatus.SUCCEEDED and ran_silent.output == {"beating_step": 2}
    lost, second = attempts(eng, silent)
    assert lost.state is AttemptState.LOST and 1.5 < took(lost) < 4.0, (lost.state, took(lost))
    assert second.state is AttemptState.SUCCEEDED
    assert lines(silent_fx) == ["start:1", "start:2", "end:2"]
    # and the exception failed the attempt with its type, message and the coroutine's frames
    assert ran_failing.status is RunStatus.FAILED
    (failed,) = attempts(eng, failing)
    assert failed.state is AttemptState.FAILED and failed.error is not None
    assert failed.error["type"] == "ValueError"
    assert failed.error["message"] == "the model refused 'plan'"
    assert "_ask_the_model" in failed.error["traceback"] and "failing_step" in failed.error["traceback"]
