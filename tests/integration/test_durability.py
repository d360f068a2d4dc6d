"""Kill -9 the scheduler and a worker mid-run, and FLUSHALL Redis: nothing is lost,
no finished step runs twice, the run id never changes. Both backends."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis

from smithers.shared.status import RunStatus
from smithers.shared.store.queries import attempts_of
from tests.integration.conftest import Engine

pytestmark = pytest.mark.slow


def started(node: str) -> Any:
    return lambda ev: ev.type == "attempt.started" and ev.node_id == node


def test_kill_scheduler_kill_worker_and_flush_redis_mid_run(
    engine_factory: Any, database_url: str, tmp_path: Path
) -> None:
    # given a five-step chain of 1.5 s steps on a real scheduler and worker
    eng: Engine = engine_factory(database_url)
    eng.scheduler()
    eng.worker()
    effects = tmp_path / "effects.txt"
    run_id = eng.launch("t-chain", {"sleep": 1.5, "effects": str(effects)}, run_id="durable-1")

    # when the scheduler is killed -9 while step b runs, and restarted
    eng.wait_event(run_id, started("b"))
    eng.kill9("scheduler")
    time.sleep(1.0)
    eng.scheduler()

    # and the worker is killed -9 in the middle of step c, and restarted
    eng.wait_event(run_id, started("c"))
    time.sleep(0.5)
    eng.kill9("worker")
    eng.worker()

    # and Redis loses everything while step d runs
    eng.wait_event(run_id, started("d"), timeout=60)
    redis.Redis.from_url(eng.redis_url).flushall()

    # then the run finishes with the same id and the same outputs
    run = eng.wait(run_id, timeout=120)
    assert run.run_id == "durable-1"
    assert run.status is RunStatus.SUCCEEDED
    assert run.output == {"e": {"value": 5}}
    # every finished step ran exactly once
    assert effects.read_text().splitlines() == ["a:0", "b:0", "c:0", "d:0", "e:0"]
    with eng.store.read() as conn:
        attempts = attempts_of(conn, run_id)
    assert [a.node_id for a in attempts if a.state.value == "succeeded"] == list("abcde")
    lost = [a for a in attempts if a.node_id == "c" and a.state.value == "lost"]
    assert len(lost) == 1  # the killed worker's attempt was given up, then retried
    seqs = [e.seq for e in eng.events(run_id)]
    assert seqs == list(range(1, len(seqs) + 1))


def test_late_result_from_a_fenced_out_attempt_is_refused(
    engine_factory: Any, database_url: str, tmp_path: Path
) -> None:
    # given a worker that hangs (SIGSTOP) mid-step until its lease expires
    eng: Engine = engine_factory(database_url)
    eng.scheduler()
    eng.worker("w1", concurrency=1)
    effects = tmp_path / "effects.txt"
    run_id = eng.launch("t-chain", {"sleep": 2.0, "effects": str(effects)})
    eng.wait_event(run_id, started("a"))
    import os
    import signal

    w1 = eng.procs["w1"]
    os.killpg(w1.pid, signal.SIGSTOP)
    # when another worker takes the step over after the lease expired
    eng.worker("w2", concurrency=1)
    eng.wait_event(run_id, lambda ev: ev.type == "attempt.lost" and ev.node_id == "a", timeout=30)
    eng.wait_event(run_id, lambda ev: ev.type == "node.succeeded" and ev.node_id == "a", timeout=30)
    # and the first worker wakes up and tries to commit its stale result
    os.killpg(w1.pid, signal.SIGCONT)
    eng.wait_event(run_id, lambda ev: ev.type == "attempt.refused", timeout=30)

    # then the run finishes once, and the refused result was recorded, never applied
    run = eng.wait(run_id, timeout=60)
    assert run.status is RunStatus.SUCCEEDED
    with eng.store.read() as conn:
        attempts = attempts_of(conn, run_id)
    a_attempts = [a for a in attempts if a.node_id == "a"]
    assert [a.state.value for a in a_attempts] == ["lost", "succeeded"]
    assert run.output == {"e": {"value": 5}}


def test_redis_restart_mid_run_workers_reconnect_and_the_run_finishes(
    engine_factory: Any, database_url: str, tmp_path: Path
) -> None:
    import subprocess

    from tests.conftest import free_port, redis_binary

    # given an engine on a Redis server of its own
    port = free_port()
    binary = redis_binary()
    assert binary is not None
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        eng: Engine = engine_factory(database_url)
        url = f"redis://127.0.0.1:{port}/0"
        eng.redis_url = url
        eng.env["SMITHERS_REDIS_URL"] = url
        from smithers.shared.broker import Broker

        eng.broker = Broker(url)
        eng.scheduler()
        eng.worker()
        effects = tmp_path / "effects.txt"
        run_id = eng.launch("t-chain", {"sleep": 1.0, "effects": str(effects)})
        eng.wait_event(run_id, started("b"))

        # when Redis is killed -9 and comes back empty a few seconds later
        server.kill()
        server.wait(timeout=10)
        time.sleep(3)
        server = subprocess.Popen(argv, stdout=subprocess.DEVNULL)

        # then the worker consumes again: by itself, or restarted as its supervisor would
        # when Celery gave up on the lost connection (with celery/kombu 5.7.0 it exits
        # with "Unrecoverable error: AttributeError(... 'hostname')": docs/operations.md);
        # the scheduler re-sends, and the run finishes with every step run once
        deadline = time.time() + 120
        while not eng.run(run_id).status.terminal and time.time() < deadline:
            if eng.procs["worker"].poll() is not None:
                eng.procs.pop("worker")
                eng.worker()
            time.sleep(0.2)
        run = eng.wait(run_id, timeout=5)
        assert run.status is RunStatus.SUCCEEDED
        assert run.output == {"e": {"value": 5}}
        assert effects.read_text().splitlines() == ["a:0", "b:0", "c:0", "d:0", "e:0"]
    finally:
        server.kill()
        server.wait(timeout=10)
