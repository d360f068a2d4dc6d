"""Lost step messages are sent again at once, waiting ones never twice: a real
scheduler and Celery worker on a private Redis, both stores."""

from __future__ import annotations

import time
from typing import Any

import redis

from smithers.shared.keys import EPOCH_KEY
from smithers.shared.status import RunStatus
from tests.integration.conftest import Engine


def resends(eng: Engine, run_ids: list[str]) -> int:
    return sum(1 for r in run_ids for e in eng.events(r) if e.type == "attempt.redispatched")


def test_messages_waiting_are_not_resent_and_messages_flushed_are(
    engine_factory: Any, database_url: str
) -> None:
    # given steps sent to a queue no worker consumes yet (a backlog), and a scheduler
    eng: Engine = engine_factory(database_url, SMITHERS_REDISPATCH_AFTER="60")
    eng.scheduler()
    client = redis.Redis.from_url(eng.redis_url)
    deadline = time.time() + 30
    while client.get(EPOCH_KEY) is None:  # the scheduler's first sweep wrote the epoch
        assert time.time() < deadline, "no broker epoch written"
        time.sleep(0.1)
    time.sleep(1.5)  # past the epoch's margin for other hosts' clocks
    run_ids = [eng.launch("t-long-chain", decide=True) for _ in range(3)]

    # when they wait for several sweeps: nothing is sent twice
    time.sleep(3)
    assert resends(eng, run_ids) == 0

    # when the broker loses everything: each is sent again within a few sweeps
    client.flushall()
    deadline = time.time() + 20
    while resends(eng, run_ids) < len(run_ids):
        assert time.time() < deadline, f"{resends(eng, run_ids)} of {len(run_ids)} re-sent"
        time.sleep(0.1)
    time.sleep(2)
    assert resends(eng, run_ids) == len(run_ids)  # once each, not once a sweep

    # then a worker finishes every run from the re-sent messages
    eng.worker()
    for run_id in run_ids:
        assert eng.wait(run_id, timeout=90).status is RunStatus.SUCCEEDED
