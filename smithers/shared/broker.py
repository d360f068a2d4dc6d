"""The broker edge shared by every process: wake-ups and sending step messages.

Redis carries wake-ups and Celery messages only; losing them loses no state, because
the store records every run's ``wake_at`` and the scheduler's sweep finds it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import redis
from celery import Celery
from kombu import Exchange

from smithers.shared.keys import AFTER_HEADER, STEP_TASK, WAKE_KEY

log = logging.getLogger("smithers.broker")
SOCKET_TIMEOUT_S = 5.0  # Redis replies: longer is a lost connection
MAX_BLOCK_S = SOCKET_TIMEOUT_S - 1  # a BLPOP's longest wait, under the socket timeout
_T = TypeVar("_T")


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
        self.redis = redis.Redis.from_url(
            redis_url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=2
        )
        self.celery = Celery("smithers-sender", set_as_current=False)
        self.celery.conf.update(celery_settings(redis_url))
        self._origin = f"gen{os.getpid()}@{socket.gethostname()}"
        self._reply_to = str(uuid.uuid4())
        # Connections the process keeps, one per kind of command: a command sent and
        # read on one costs less than half of one through redis-py's client and pool
        # (measured: docs/benchmarks.md).
        self._soon = _OwnConnection(self.redis)  # wake_soon
        self._waiter = _OwnConnection(self.redis)  # wait (the scheduler)
        self._sender = _OwnConnection(self.redis)  # send_steps (the scheduler)

    def wake(self, *run_ids: str) -> None:
        """Tell a scheduler to look at these runs now; best effort (the sweep covers loss)."""
        if not run_ids:
            return
        try:
            self.redis.lpush(WAKE_KEY, *run_ids)
        except redis.RedisError as exc:
            log.warning("wake-up not sent (%s); the scheduler's sweep will find the run", exc)

    def wake_soon(self, *run_ids: str) -> None:
        """:meth:`wake` without waiting for Redis' reply (a worker's commit, a launch).

        The ``LPUSH`` goes out on a connection of its own and its reply is read before
        the next one is sent, by when it has long arrived: a worker process does not
        sit out a round trip per step. Best effort like :meth:`wake`: a wake-up lost
        with a broken connection is found by the scheduler's sweep.
        """
        if not run_ids:
            return
        try:
            self._soon.post("LPUSH", WAKE_KEY, *run_ids)
        except (redis.RedisError, OSError) as exc:
            log.warning("wake-up not sent (%s); the scheduler's sweep will find the run", exc)

    def wait(self, timeout_s: float, batch: int = 500) -> set[str]:
        """Every run id queued so far (up to ``batch``), blocking up to ``timeout_s`` for one.

        A non-blocking ``LPOP key count`` first: under load it returns a batch in one
        round trip; when idle the ``BLPOP`` that follows returns the first wake-up at
        once, with no second round trip before it is handled. The wait is cut at
        ``MAX_BLOCK_S`` (below the socket timeout): the caller comes back and waits again.
        """
        popped: Any = self._waiter.call(("LPOP", WAKE_KEY, batch))[0]
        if popped:
            return {v.decode() for v in popped}
        timeout = min(max(timeout_s, 0.01), MAX_BLOCK_S)
        first: Any = self._waiter.call(("BLPOP", WAKE_KEY, f"{timeout:.3f}"))[0]
        if first is None:
            return set()
        return {first[1].decode()}

    def send_step(self, attempt_id: str, queue: str, time_limit: float | None = None) -> None:
        """Publish one step message (see :meth:`send_steps`)."""
        self.send_steps([(attempt_id, queue, time_limit)])

    def send_steps(self, steps: Iterable[tuple[str, str, float | None]], after: int | None = None) -> None:
        """Publish step messages ``(attempt_id, queue, time_limit)`` in one round trip.

        ``after``: the messages are sent before the transaction that dispatched them
        commits, and carry its publish key in the ``smithers_after`` header (see
        :meth:`smithers.shared.store.tx.Tx.publish_key`); a worker that does not know the
        header ignores it.

        Each is the message ``celery.send_task("smithers.step", args=[attempt_id],
        time_limit=..., exchange=Exchange(""), routing_key=queue)`` would publish (task
        protocol 2, JSON, kombu's Redis envelope), pushed straight onto the queue's list:
        publishing by queue name, not through an exchange binding, keeps working after
        a Redis FLUSHALL wiped kombu's binding keys. Building it here costs a tenth of
        ``send_task`` (measured: docs/benchmarks.md); a test checks it against Celery's.
        """
        commands = [
            ("LPUSH", queue, step_message(attempt_id, queue, time_limit, self._origin, self._reply_to, after))
            for attempt_id, queue, time_limit in steps
        ]
        if commands:
            self._sender.call(*commands)

    def send_step_with_celery(
        self, attempt_id: str, queue: str, time_limit: float | None = None, after: int | None = None
    ) -> None:
        """The same message through Celery's own ``send_task`` (the reference)."""
        options: dict[str, Any] = {"exchange": Exchange(""), "routing_key": queue}
        if time_limit is not None:
            options["time_limit"] = time_limit
        if after is not None:
            options["headers"] = {AFTER_HEADER: after}
        self.celery.send_task(STEP_TASK, args=[attempt_id], **options)

    def ping(self) -> bool:
        """True when Redis answers."""
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        """Close connections."""
        self._soon.drop()
        self._waiter.drop()
        self._sender.drop()
        self.redis.close()
        self.celery.close()


class _OwnConnection:
    """A Redis connection a process keeps for one kind of command (not the pool's).

    :meth:`call` sends commands in one write and reads their replies; :meth:`post`
    sends one without waiting for its reply, which is read before the connection is
    used again, by when it has long arrived. Any error drops the connection (a reply
    may be left unread), and the next use opens a new one; a connection the server
    closed since its last use is replaced and the commands sent again once, as
    redis-py's client does. A child process after a fork opens its own. Thread-safe.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._conn: tuple[int, Any] | None = None  # (pid, connection)
        self._unread = 0  # replies of post() not read yet

    def call(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Send ``commands`` in one round trip; their replies (error replies raise)."""

        def send(conn: Any) -> list[Any]:
            conn.send_packed_command(conn.pack_commands(commands))
            return [conn.read_response() for _ in commands]

        return self._use(send)

    def post(self, *command: Any) -> None:
        """Send one command without waiting for its reply."""

        def send(conn: Any) -> None:
            if conn.can_read(timeout=0):  # raises if the server closed it: write to a new one
                raise redis.ConnectionError("unexpected data on a connection with no reply due")
            conn.send_command(*command)
            self._unread = 1

        self._use(send)

    def _use(self, send: Callable[[Any], _T]) -> _T:
        with self._lock:
            while True:
                fresh = self._conn is None or self._conn[0] != os.getpid()
                if fresh:
                    self._conn = (os.getpid(), self._client.connection_pool.make_connection())
                    self._unread = 0
                assert self._conn is not None
                conn = self._conn[1]
                try:
                    while self._unread:
                        conn.read_response()
                        self._unread -= 1
                    return send(conn)
                except BaseException as exc:
                    self._conn = None
                    conn.disconnect()
                    if fresh or not isinstance(exc, redis.ConnectionError | OSError):
                        raise

    def drop(self) -> None:
        """Close the connection (if this process opened it)."""
        with self._lock:
            if self._conn is not None and self._conn[0] == os.getpid():
                self._conn[1].disconnect()
            self._conn = None


_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def step_message(
    attempt_id: str,
    queue: str,
    time_limit: float | None,
    origin: str,
    reply_to: str,
    after: int | None = None,
) -> str:
    """The kombu Redis envelope of a Celery (protocol 2) ``smithers.step`` message."""
    task_id = str(uuid.uuid4())
    body = json.dumps([[attempt_id], {}, _EMBED]).encode()
    headers: dict[str, Any] = {
        "lang": "py",
        "task": STEP_TASK,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [time_limit, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": repr([attempt_id]),
        "kwargsrepr": "{}",
        "origin": origin,
        "ignore_result": None,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    if after is not None:
        headers[AFTER_HEADER] = after
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                "correlation_id": task_id,
                "reply_to": reply_to,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )
