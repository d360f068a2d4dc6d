"""The broker edge shared by every process: wake-ups and sending step messages.

Redis carries wake-ups and Celery messages only; losing them loses no state, because
the store records every run's ``wake_at`` and the scheduler's sweep finds it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import redis
from celery import Celery
from kombu import Queue

from smithers.shared.keys import AFTER_HEADER, EPOCH_KEY, QUEUES, STEP_TASK, WAKE_KEY, wake_key

log = logging.getLogger("smithers.broker")
SOCKET_TIMEOUT_S = 5.0  # Redis replies: longer is a lost connection
MAX_BLOCK_S = SOCKET_TIMEOUT_S - 1  # a BLPOP's longest wait, under the socket timeout
_T = TypeVar("_T")
MAX_STEP_PRIORITY = 9  # kombu's message priorities: 0..9
MAX_HANDED_ON = 10_000  # wake-ups kept for a revision's schedulers (the sweep finds the rest)


REDIS_SCHEMES = ("redis://", "rediss://", "redis+socket://", "sentinel://")


def celery_settings(broker_url: str, visibility_timeout_s: float = 3600.0) -> dict[str, Any]:
    """Celery settings used by both the senders (scheduler) and the workers.

    ``broker_url`` carries the step messages (Redis or RabbitMQ). Only the Redis
    transport redelivers an unacknowledged message after a visibility timeout (it
    must outlast the longest step) and has no use for AMQP heartbeats; on RabbitMQ a
    delivery stays with its consumer until acknowledged or the connection is lost.
    """
    settings: dict[str, Any] = {
        "broker_url": broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # a sender retries a publish briefly, then reports it (it is re-sent later)
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": 0.2},
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_ignore_result": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": "steps",
        "task_queues": [Queue(q, routing_key=q) for q in QUEUES],
        "worker_hijack_root_logger": False,
    }
    if broker_url.startswith(REDIS_SCHEMES):
        settings["broker_transport_options"] = {"visibility_timeout": visibility_timeout_s}
        settings["broker_heartbeat"] = 0
    else:  # RabbitMQ orders a queue's messages by priority only when it was declared so
        settings["task_queue_max_priority"] = MAX_STEP_PRIORITY
    return settings


class StepMessage(Protocol):
    """What :meth:`Broker.send_steps` publishes: the attempt, where it goes, its hard
    time limit, and the label Flower and the worker's log show for it."""

    @property
    def attempt_id(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def time_limit(self) -> float | None: ...
    @property
    def label(self) -> str: ...
    @property
    def priority(self) -> int | None: ...


@dataclass(frozen=True)
class Step:
    """A :class:`StepMessage` built by hand (tools and tests)."""

    attempt_id: str
    queue: str
    time_limit: float | None = None
    label: str = ""
    priority: int | None = None  # a run's 0..9, higher first; None: the broker's default


class Broker:
    """Wake-ups over a Redis list; step messages over Celery, on ``broker_url``
    (Redis or RabbitMQ; by default the same Redis)."""

    def __init__(self, redis_url: str, broker_url: str | None = None) -> None:
        self.redis_url = redis_url
        self.broker_url = broker_url or redis_url
        self.redis = redis.Redis.from_url(
            redis_url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=2
        )
        self.celery = Celery("smithers-sender", set_as_current=False)
        self.celery.conf.update(celery_settings(self.broker_url))
        # Connections the process keeps, one per kind of command: a command sent and
        # read on one costs less than half of one through redis-py's client and pool
        # (measured: docs/benchmarks.md).
        self._soon = _OwnConnection(self.redis)  # wake_soon
        self._waiter = _OwnConnection(self.redis)  # wait (the scheduler)

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

    def wake_revision(self, revision: str, *run_ids: str) -> None:
        """Hand wake-ups on to the schedulers that hold ``revision`` (a scheduler woken for
        a run of a revision it does not hold); best effort like :meth:`wake`."""
        if not run_ids:
            return
        key = wake_key(revision)
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.lpush(key, *run_ids)
            pipe.ltrim(key, 0, MAX_HANDED_ON - 1)  # a revision nobody holds: its list stays bounded
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("wake-up not handed on (%s); the holder's sweep will find the run", exc)

    def wait(self, timeout_s: float, batch: int = 500, revisions: Iterable[str] = ()) -> Counter[str]:
        """Every run id queued so far (up to ``batch`` a list) with how many times it was,
        blocking up to ``timeout_s`` for one.

        The lists are the plain wake-up list and, for each of ``revisions``, that
        revision's own (:func:`smithers.shared.keys.wake_key`). A non-blocking
        ``LPOP key count`` per list first: under load it returns a batch in one round
        trip; when idle the ``BLPOP`` that follows returns the first wake-up at once,
        with no second round trip before it is handled. The wait is cut at
        ``MAX_BLOCK_S`` (below the socket timeout): the caller comes back and waits again.
        """
        keys = [WAKE_KEY, *sorted({wake_key(r) for r in revisions})]
        popped: Any = self._waiter.call(*[("LPOP", key, batch) for key in keys])
        found = Counter(v.decode() for values in popped if values for v in values)
        if found:
            return found
        timeout = min(max(timeout_s, 0.01), MAX_BLOCK_S)
        first: Any = self._waiter.call(("BLPOP", *keys, f"{timeout:.3f}"))[0]
        if first is None:
            return Counter()
        return Counter([first[1].decode()])

    def send_step(
        self, attempt_id: str, queue: str, time_limit: float | None = None, label: str = ""
    ) -> None:
        """Publish one step message (see :meth:`send_steps`)."""
        self.send_steps([Step(attempt_id, queue, time_limit, label)])

    def send_steps(self, steps: Iterable[StepMessage], after: int | None = None) -> None:
        """Publish step messages through Celery's ``send_task``, on one producer.

        Each is the task ``smithers.step`` with the attempt id as its only argument; its
        ``argsrepr`` is the step's label (workflow/run/node#attempt, no run input), which
        Flower and the worker's log show. Messages are published to the default
        exchange with the queue's name as routing key: that reaches the queue on
        RabbitMQ and Redis alike, and on Redis keeps working after a FLUSHALL wiped
        kombu's exchange bindings. The queue is declared once per connection.

        ``after``: the messages are sent before the transaction that dispatched them
        commits, and carry its publish key in the ``smithers_after`` header (see
        :meth:`smithers.shared.store.tx.Tx.publish_key`); a worker that does not know the
        header ignores it. Not atomic: a message not sent is re-sent by the scheduler.
        """
        headers = None if after is None else {AFTER_HEADER: after}
        queues = self.celery.amqp.queues
        steps = list(steps)
        with (
            self.celery.producer_or_acquire() as producer,
            producer.batch() if len(steps) > 1 else contextlib.nullcontext(),  # one: no pipeline to build
        ):
            declared: set[str] = set()
            for step in steps:
                if step.queue not in declared:  # once a batch, not once a message
                    producer.maybe_declare(queues[step.queue])
                    declared.add(step.queue)
                options: dict[str, Any] = {
                    "queue": step.queue,
                    "exchange": "",
                    "routing_key": step.queue,
                    "declare": [],
                    "time_limit": step.time_limit,  # seconds, a float is fine (typed int)
                    "argsrepr": step.label or None,
                    "headers": headers,
                    "producer": producer,
                }
                if step.priority is not None:
                    options["priority"] = self._message_priority(step.priority)
                self.celery.send_task(STEP_TASK, args=[step.attempt_id], **options)

    def _message_priority(self, priority: int) -> int:
        """The message priority of a run's ``priority`` (0..9, higher first). kombu's
        Redis transport serves the lowest number first, from one list per priority step
        (0, 3, 6, 9: run priorities 7-9, 4-6, 1-3 and 0 share one); an AMQP broker
        serves the highest first (on a queue declared with ``x-max-priority``)."""
        return (MAX_STEP_PRIORITY - priority) if self.broker_url.startswith(REDIS_SCHEMES) else priority

    def try_send_steps(self, steps: Sequence[StepMessage], after: int | None = None) -> bool:
        """:meth:`send_steps`, best effort: True if they went out. A message not sent
        leaves its attempt queued; the broker's epoch is dropped (:meth:`forget_epoch`),
        so the next scheduler sweep sends it again (else the re-send delay,
        ``SMITHERS_REDISPATCH_AFTER``, does)."""
        if not steps:
            return True
        try:
            self.send_steps(steps, after)
        except Exception as exc:
            log.warning("%d step messages not sent (%s); they will be re-sent", len(steps), exc)
            self.forget_epoch()
            return False
        return True

    def epoch(self) -> float | None:
        """When the broker's current contents began (the time the first process to look
        after a FLUSHALL or a restart wrote it), or None when step messages go to
        another broker (``SMITHERS_BROKER_URL``: its own durability applies). One round
        trip; raises on a Redis error."""
        if self.broker_url != self.redis_url:
            return None
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(EPOCH_KEY, repr(time.time()), nx=True)
            pipe.get(EPOCH_KEY)
            _, value = pipe.execute()
        try:
            return float(value)
        except (TypeError, ValueError):
            return None

    def forget_epoch(self) -> None:
        """Start a new epoch: step messages may have been lost (a send failed), so the
        next scheduler to look sends every queued attempt dispatched before now again."""
        # Redis away: it comes back empty (a new epoch) or with the messages
        with contextlib.suppress(redis.RedisError):
            self.redis.delete(EPOCH_KEY)

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
