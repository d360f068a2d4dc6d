"""The broker edge shared by every process: wake-ups and sending step messages.

Redis carries wake-ups and Celery messages only; losing them loses no state, because
the store records every run's ``wake_at`` and the scheduler's sweep finds it.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Celery
from kombu import Exchange

from shared.keys import STEP_TASK, WAKE_KEY

log = logging.getLogger("smithers.broker")


def celery_settings(redis_url: str, visibility_timeout_s: float = 3600.0) -> dict[str, Any]:
    """Celery settings used by both the senders (scheduler) and the workers."""
    return {
        "broker_url": redis_url,
        "broker_transport_options": {"visibility_timeout": visibility_timeout_s},
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_ignore_result": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": "steps",
        "worker_hijack_root_logger": False,
        "broker_heartbeat": 0,
    }


class Broker:
    """Wake-ups over a Redis list and step messages over Celery, on one Redis URL."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
        self.celery = Celery("smithers-sender", set_as_current=False)
        self.celery.conf.update(celery_settings(redis_url))

    def wake(self, *run_ids: str) -> None:
        """Tell a scheduler to look at these runs now; best effort (the sweep covers loss)."""
        if not run_ids:
            return
        try:
            self.redis.lpush(WAKE_KEY, *run_ids)
        except redis.RedisError as exc:
            log.warning("wake-up not sent (%s); the scheduler's sweep will find the run", exc)

    def wait(self, timeout_s: float, batch: int = 500) -> set[str]:
        """Block up to ``timeout_s`` for wake-ups; return every run id queued so far."""
        first: Any = self.redis.blpop([WAKE_KEY], timeout=max(timeout_s, 0.01))
        if first is None:
            return set()
        ids = {first[1].decode()}
        pipe = self.redis.pipeline()
        pipe.lrange(WAKE_KEY, 0, batch - 1)
        pipe.ltrim(WAKE_KEY, batch, -1)
        more, _ = pipe.execute()
        ids.update(v.decode() for v in more)
        return ids

    def send_step(self, attempt_id: str, queue: str, time_limit: float | None = None) -> None:
        """Publish a step message straight onto ``queue`` (the anonymous exchange).

        Publishing by queue name, not through an exchange binding, keeps working after
        a Redis FLUSHALL wiped kombu's binding keys.
        """
        # An empty string would mean "the default exchange" to Celery (the steps queue);
        # kombu's Exchange("") is the anonymous exchange: routing key = queue name.
        options: dict[str, Any] = {"exchange": Exchange(""), "routing_key": queue}
        if time_limit is not None:
            options["time_limit"] = time_limit
        self.celery.send_task(STEP_TASK, args=[attempt_id], **options)

    def ping(self) -> bool:
        """True when Redis answers."""
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        """Close connections."""
        self.redis.close()
        self.celery.close()
