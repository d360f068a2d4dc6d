"""The step messages the scheduler publishes are the ones Celery itself would publish."""

from __future__ import annotations

import base64
import json
from typing import Any

import redis

from smithers.shared.broker import Broker


def _pop(r: redis.Redis, queue: str) -> dict[str, Any]:
    raw = r.rpop(queue)
    assert raw is not None, f"nothing on {queue}"
    return json.loads(raw)  # type: ignore[no-any-return]


def _shape(message: dict[str, Any]) -> dict[str, Any]:
    """The message with the fields that differ per message (ids, tags, origin) blanked."""
    m = json.loads(json.dumps(message))
    for key in ("id", "root_id", "origin"):
        m["headers"][key] = "*"
    for key in ("correlation_id", "reply_to", "delivery_tag"):
        m["properties"][key] = "*"
    m["body"] = json.loads(base64.b64decode(m["body"]))
    return m


def test_lean_step_message_matches_celery_send_task(redis_url: str) -> None:
    broker = Broker(redis_url)
    r = redis.Redis.from_url(redis_url)
    try:
        for time_limit, after in ((None, None), (42.0, None), (None, 2**62 + 5)):
            broker.send_step_with_celery("att-1", "steps", time_limit, after)
            reference = _pop(r, "steps")
            broker.send_steps([("att-1", "steps", time_limit), ("att-2", "steps", time_limit)], after)
            first, second = _pop(r, "steps"), _pop(r, "steps")
            assert _shape(first) == _shape(reference)
            assert first["headers"].get("smithers_after") == after
            assert _shape(second)["body"][0] == ["att-2"]
            assert (
                first["headers"]["id"] == first["headers"]["root_id"] == first["properties"]["correlation_id"]
            )
            assert first["headers"]["id"] != second["headers"]["id"]
            assert first["properties"]["delivery_tag"] != second["properties"]["delivery_tag"]
    finally:
        broker.close()


def test_wake_soon_delivers_every_wake_up_and_survives_a_dropped_connection(redis_url: str) -> None:
    broker = Broker(redis_url)
    admin = redis.Redis.from_url(redis_url)
    try:
        # given wake-ups sent without waiting for their replies
        for i in range(50):
            broker.wake_soon(f"run-{i}")
        broker.wake_soon("run-a", "run-b")

        # then the scheduler's side receives every one
        assert broker.wait(1.0, batch=1000) == {f"run-{i}" for i in range(50)} | {"run-a", "run-b"}

        # when Redis drops the connection the wake-ups go out on (its reply still unread)
        broker.wake_soon("before-kill")
        assert broker.wait(1.0) == {"before-kill"}
        killed = admin.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1

        # then the next wake-up is sent on a new connection, not lost
        broker.wake_soon("after-kill")
        assert broker.wait(1.0) == {"after-kill"}
        broker.wake_soon("again")
        assert broker.wait(1.0) == {"again"}
    finally:
        broker.close()
        admin.close()
