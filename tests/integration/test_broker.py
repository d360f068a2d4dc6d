"""Step messages go out through Celery's own API; wake-ups over Redis survive a dropped connection."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from smithers.shared.broker import Broker, Step
from smithers.shared.status import RunStatus
from tests.conftest import missing
from tests.integration.conftest import Engine

RABBITMQ = ("127.0.0.1", 5672)


def _pop(r: redis.Redis, queue: str) -> dict[str, Any]:
    raw = r.rpop(queue)
    assert raw is not None, f"nothing on {queue}"
    return json.loads(raw)  # type: ignore[no-any-return]


@pytest.mark.parametrize(("time_limit", "after"), [(None, None), (42.0, None), (None, 2**62 + 5)])
def test_step_messages_are_celery_tasks_labelled_for_flower(
    redis_url: str, time_limit: float | None, after: int | None
) -> None:
    broker = Broker(redis_url)
    r = redis.Redis.from_url(redis_url)
    try:
        # given a batch of two steps, the second for the sandbox queue
        steps = [
            Step("att-1", "steps", time_limit, "hello/run-1/greet#1"),
            Step("att-2", "sandbox", time_limit, "hello/run-1/build[2]#3"),
        ]

        # when they are sent
        broker.send_steps(steps, after)

        # then each is a smithers.step task on its queue, with the attempt id as its
        # argument and the label (no run input) as what Flower shows
        first, second = _pop(r, "steps"), _pop(r, "sandbox")
        for message, step in ((first, steps[0]), (second, steps[1])):
            headers = message["headers"]
            assert headers["task"] == "smithers.step"
            assert headers["argsrepr"] == step.label
            assert headers["timelimit"] == [time_limit, None]
            assert headers.get("smithers_after") == after
            assert json.loads(base64.b64decode(message["body"]))[:2] == [[step.attempt_id], {}]
            assert message["properties"]["delivery_info"] == {"exchange": "", "routing_key": step.queue}
        assert first["headers"]["id"] != second["headers"]["id"]
    finally:
        broker.close()


def test_step_messages_reach_their_queue_after_redis_lost_its_bindings(redis_url: str) -> None:
    # given a sender that declared its queues, and a FLUSHALL that wiped kombu's bindings
    broker = Broker(redis_url)
    r = redis.Redis.from_url(redis_url)
    try:
        broker.send_step("att-1", "steps")
        assert r.llen("steps") == 1
        r.flushall()

        # when it sends again on the same connection
        broker.send_step("att-2", "steps", label="w/r/n#1")

        # then the message is on the queue's list (the default exchange routes by name)
        assert json.loads(base64.b64decode(_pop(r, "steps")["body"]))[0] == ["att-2"]
    finally:
        broker.close()


@pytest.fixture
def rabbitmq_url() -> Iterator[str]:
    """A private vhost on the local RabbitMQ (guest/guest), deleted after the test."""
    ctl = shutil.which("rabbitmqctl")
    try:
        socket.create_connection(RABBITMQ, timeout=1).close()
    except OSError:
        ctl = None
    if ctl is None:
        missing("RabbitMQ on 127.0.0.1:5672 (and rabbitmqctl)")
    assert ctl is not None
    vhost = f"smithers_test_{uuid.uuid4().hex[:12]}"
    subprocess.run([ctl, "add_vhost", vhost], check=True, capture_output=True)
    try:
        subprocess.run(
            [ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True, capture_output=True
        )
        yield f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/{vhost}"
    finally:
        subprocess.run([ctl, "delete_vhost", vhost], check=False, capture_output=True)


def test_a_run_on_rabbitmq_steps_while_wake_ups_stay_on_redis(
    engine_factory: Any, sqlite_url: str, rabbitmq_url: str
) -> None:
    # given an engine whose step messages go through RabbitMQ
    eng: Engine = engine_factory(sqlite_url, SMITHERS_BROKER_URL=rabbitmq_url)
    eng.scheduler()
    eng.worker()

    # when a fan-out and fan-in runs
    run_id = eng.launch("t-fan")
    run = eng.wait(run_id, timeout=90)

    # then it succeeds, and no step message ever touched Redis' queues
    assert run.status is RunStatus.SUCCEEDED, f"logs in {eng.logs}"
    assert run.output == {"join": sum(k + 1 for k in range(6))}
    r = redis.Redis.from_url(eng.redis_url)
    assert not [k for k in r.scan_iter() if k in (b"steps", b"sandbox") or k.startswith(b"_kombu")]


def test_run_priority_orders_a_backlog_on_rabbitmq(
    engine_factory: Any, sqlite_url: str, rabbitmq_url: str, tmp_path: Path
) -> None:
    # given a backlog on RabbitMQ and no worker: three runs of priority 0, then one of 9
    eng: Engine = engine_factory(sqlite_url, SMITHERS_BROKER_URL=rabbitmq_url)
    eng.broker.close()
    eng.broker = Broker(eng.redis_url, rabbitmq_url)  # the launches send, as the gateway's do
    log = tmp_path / "rank.log"
    low = [eng.launch("t-ranked", {"log": str(log)}, decide=True) for _ in range(3)]
    high = eng.launch("t-ranked", {"log": str(log)}, decide=True, priority=9)

    # when a worker taking one step at a time starts
    eng.worker(concurrency=1)
    for run_id in [*low, high]:
        assert eng.wait(run_id, timeout=60).status is RunStatus.SUCCEEDED, f"logs in {eng.logs}"

    # then the priority 9 run's step ran first: its queue was declared with x-max-priority
    rows = sorted((line.split() for line in log.read_text().splitlines()), key=lambda f: float(f[3]))
    assert rows[0][1] == high and sorted(f[1] for f in rows[1:]) == sorted(low)
