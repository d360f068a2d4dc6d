"""Step workers as Celery starts them: the I/O-bound pools and the plain ``celery`` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from smithers.shared.status import RunStatus
from smithers.shared.store.queries import attempts_of
from tests.integration.conftest import ROOT, Engine


def _overlap(eng: Engine, run_id: str) -> tuple[float, float]:
    """(latest start, earliest finish) of a run's attempts, from the store's rows."""
    with eng.store.read() as conn:
        attempts = attempts_of(conn, run_id)
    assert len(attempts) == 8
    started = [a.started_at for a in attempts]
    finished = [a.finished_at for a in attempts]
    assert None not in started and None not in finished
    return max(s for s in started if s is not None), min(f for f in finished if f is not None)


@pytest.mark.parametrize("pool", ["threads", "gevent"])
def test_an_io_bound_pool_runs_as_many_sleeping_steps_at_once_as_its_concurrency(
    engine_factory: Any, database_url: str, pool: str
) -> None:
    # given one worker process with a pool of 8 threads (or greenlets)
    eng: Engine = engine_factory(database_url)
    eng.scheduler()
    worker = eng.start("worker", "worker", "--pool", pool, "--concurrency", "8", "--name", f"{pool}-worker")

    # when a run makes 8 steps ready at once, each waiting 2 s
    run_id = eng.launch("t-wide", {"sleep": 2.0})
    run = eng.wait(run_id, timeout=90)

    # then every step ran, and all 8 were running together: the last one started
    # before the first one finished
    assert run.status is RunStatus.SUCCEEDED
    latest_start, earliest_finish = _overlap(eng, run_id)
    assert latest_start < earliest_finish
    # in the process that was started: gevent patched first thing, no Celery exec'd
    cmdline = Path(f"/proc/{worker.pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[1:4] == [b"-m", b"smithers", b"worker"], cmdline


def test_the_plain_celery_command_runs_a_workflow(engine_factory: Any, database_url: str) -> None:
    # given `celery -A smithers.workers worker` with the documented environment, its
    # prefork children replaced after every 2 steps, and a scheduler
    eng: Engine = engine_factory(database_url)
    eng.scheduler()
    log = open(eng.logs / "celery.log", "ab")  # noqa: SIM115
    argv = [sys.executable, "-m", "celery", "-A", "smithers.workers", "worker", "-Q", "steps"]
    argv += ["--pool", "prefork", "--concurrency", "2", "--max-tasks-per-child", "2", "-n", "plain@%h"]
    eng.procs["celery"] = subprocess.Popen(
        argv, env=eng.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )

    # when a chain of five steps runs
    run_id = eng.launch("t-chain")
    run = eng.wait(run_id, timeout=90)

    # then it succeeds, each step on the plain worker
    assert run.status is RunStatus.SUCCEEDED, f"logs in {eng.logs}"
    assert run.output == {"e": {"value": 5}}
    with eng.store.read() as conn:
        workers = {a.worker for a in attempts_of(conn, run_id)}
    assert workers == {"plain"}
