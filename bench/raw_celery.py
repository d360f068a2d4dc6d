"""The yardstick: plain Celery tasks on the same Redis, with the same worker settings."""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

from smithers.shared.broker import celery_settings

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
app = Celery("raw")
app.conf.update(celery_settings(URL))
app.conf.task_default_queue = "raw"
_r = redis.Redis.from_url(URL)


@app.task(name="raw.sleep10")
def sleep10(_prev: object = None) -> int:
    start = time.time()
    time.sleep(0.010)
    _r.rpush("bench:raw:hops", f"{start},{time.time()}")
    return 1


@app.task(name="raw.noop")
def noop() -> int:
    _r.incr("bench:raw:done")
    return 1
