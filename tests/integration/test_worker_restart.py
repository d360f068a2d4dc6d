"""A step worker (`smithers worker`, prefork) outlives Redis restarts: Redis is killed
with SIGKILL while a step runs and started again, empty, on the same port, several
times; after each restart the same worker process takes the next run's step.

Celery 5.7.0 / kombu 5.7.0 stop such a worker (here on nearly every restart) with "Unrecoverable error:
AttributeError ... 'hostname'" (see smithers.workers.app.RESTARTS_PER_MINUTE); the
worker starts Celery again in its process, so the process stays up and consumes.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from smithers.shared.status import RunStatus
from tests.conftest import redis_binary
from tests.faults.services import RedisServer
from tests.integration.conftest import Engine

RESTARTS = 4  # under the worker's budget of 5 a minute

pytestmark = pytest.mark.skipif(redis_binary() is None, reason="redis-server not installed")


def _tail(engine: Engine, name: str) -> str:
    return (engine.logs / f"{name}.log").read_text(errors="replace")[-4000:]


def _step_started(engine: Engine, run_id: str, worker: subprocess.Popen[bytes], restart: int) -> None:
    """Wait until a step of ``run_id`` started; fail at once if the worker exited."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(e.type == "attempt.started" for e in engine.events(run_id)):
            return
        if worker.poll() is not None:
            code = worker.returncode
            pytest.fail(f"worker exited (code {code}) after Redis restart {restart}:\n{_tail(engine, 'w1')}")
        time.sleep(0.05)
    pytest.fail(f"no step of {run_id} started within 30 s after Redis restart {restart}")


def test_worker_consumes_after_each_redis_restart(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    engine = Engine(f"sqlite:///{tmp_path / 'smithers.db'}", redis.url(), tmp_path, {})
    try:
        engine.scheduler("s1")
        worker = engine.worker("w1", concurrency=2)
        runs = []
        for restart in range(RESTARTS + 1):
            run_id = engine.launch("t-chain", {"sleep": 0.5})
            runs.append(run_id)
            _step_started(engine, run_id, worker, restart)  # consumed after the previous restart
            if restart == RESTARTS:
                break
            time.sleep(0.2)  # the step is running: its message delivered, not acknowledged
            redis.kill()
            time.sleep(0.3)
            redis.start()
        for run_id in runs:
            assert engine.wait(run_id, timeout=90).status == RunStatus.SUCCEEDED, _tail(engine, "w1")
        assert worker.poll() is None, _tail(engine, "w1")
        # The upstream bug this outlives (it met 4 restarts in 4 in every run so far);
        # once a Celery/kombu release fixes it, this fails: update the comment at
        # smithers.workers.app.RESTARTS_PER_MINUTE and docs/operations.md "Broker loss".
        log = (engine.logs / "w1.log").read_text(errors="replace")
        assert "Unrecoverable error" in log and "'hostname'" in log, (
            "Celery no longer stops on a Redis restart"
        )
    finally:
        engine.stop_all()
        engine.broker.close()
        engine.store.close()
        redis.stop()
