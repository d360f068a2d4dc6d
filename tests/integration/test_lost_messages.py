"""Lost step messages are sent again at once, waiting ones never twice: a real
scheduler and Celery worker on a private Redis, both stores."""

from __future__ import annotations

import time
from typing import Any

import redis

from smithers.shared.broker import Broker
from smithers.shared.config import WorkerConfig
from smithers.shared.keys import EPOCH_KEY
from smithers.shared.registry import load_registry
from smithers.shared.status import RunStatus
from smithers.shared.store import Store, revisions
from smithers.workers.holders import Holders
from smithers.workers.step import WorkerEnv
from tests.integration.conftest import ROOT, TEST_WORKFLOWS, Engine


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


def test_a_worker_that_died_without_leaving_drops_the_broker_epoch(database_url: str, redis_url: str) -> None:
    # given a worker announced under its id, and a broker epoch
    store = Store(database_url)
    store.migrate()
    broker = Broker(redis_url)
    env = WorkerEnv(store, broker, load_registry(TEST_WORKFLOWS, str(ROOT)), WorkerConfig(), "w-1")
    try:
        assert broker.epoch() is not None
        Holders().announce(env, started_at=100.0)
        Holders().announce(env, started_at=100.0)  # the same process again: nothing lost
        assert broker.redis.get(EPOCH_KEY) is not None

        # when a new process of that id starts while the old one's rows are still there
        Holders().announce(env, started_at=200.0)

        # then the epoch is gone: the next sweep sends every queued step again
        assert broker.redis.get(EPOCH_KEY) is None
        # and a worker not seen for the holder TTL is reaped, once, by whichever scheduler looks
        with store.write() as tx:
            assert revisions.reap(tx, 0.0) == ["w-1"]
        with store.write() as tx:
            assert revisions.reap(tx, 0.0) == []
    finally:
        broker.close()
        store.close()


def test_a_message_for_an_attempt_this_store_lacks_is_dropped_with_a_warning(
    engine_factory: Any, database_url: str
) -> None:
    # given a worker, and a step message for an attempt its store does not have (a
    # deleted run's, or another deployment's on the same broker database)
    eng: Engine = engine_factory(database_url)
    eng.scheduler()
    eng.worker()
    eng.broker.send_step("att-of-another-store", "steps")

    # then the worker says why it dropped it
    log = eng.logs / "worker.log"
    deadline = time.time() + 30
    while "att-of-another-store is not in this store" not in (log.read_text() if log.exists() else ""):
        assert time.time() < deadline, f"no warning in {log}"
        time.sleep(0.1)
    # and goes on consuming: a run launched after it finishes
    assert eng.wait(eng.launch("t-long-chain", decide=True), timeout=60).status is RunStatus.SUCCEEDED
