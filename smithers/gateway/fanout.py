"""One event poller per gateway process, fanned out to every open stream.

The poller reads new events by ``feed_id`` (allocated in commit order, so reading
``feed_id > last`` never skips a committed event; on PostgreSQL it first numbers the
events committed since, :mod:`smithers.shared.store.feed`) and appends each one, formatted once,
to a bounded buffer per followed run and to the all-runs buffer. Streams wait on their
topic's condition and take what is newer than their cursor. The store stays the source
of truth: a stream replays from it after subscribing, and goes back to it whenever its
buffer cannot prove it saw everything (a gap, or entries evicted before it read them).

Handing over without a gap: a stream subscribes first and replays second. The poller's
cursor always predates every live subscription, so whatever commits after a stream
subscribed reaches its buffer, and whatever committed before is in its replay; seq and
feed ids drop the overlap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType

from sqlalchemy import func, select

from smithers.shared.errors import SmithersError
from smithers.shared.store import EventRecord, Store
from smithers.shared.store import schema as s
from smithers.shared.store.feed import number_now
from smithers.shared.store.queries import feed_after, feed_id_of

log = logging.getLogger("smithers.gateway.fanout")

ALL = "*"  # the topic of every run's events
PAGE = 500


@dataclass(frozen=True)
class Item:
    """A formatted SSE frame with its cursor key (seq for a run, feed id for ALL)."""

    key: int
    frame: bytes
    type: str


@dataclass
class Topic:
    """A bounded buffer of recent frames of one run (or of ALL) and its waiters."""

    cond: threading.Condition
    items: deque[Item]
    evicted: int = 0  # the highest key pushed out of the buffer
    subscribers: int = 0


Formatter = Callable[[EventRecord, bool], bytes]


@dataclass
class Fanout:
    """Polls the store for new events while anyone listens, and wakes the listeners."""

    store: Store
    formatter: Formatter
    poll_s: float = 0.05
    idle_poll_s: float = 0.5
    buffer: int = 2048
    on_count: Callable[[int], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _topics: dict[str, Topic] = field(default_factory=dict)
    _generation: int = 0
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _wake: threading.Event = field(default_factory=threading.Event)

    def subscribe(self, key: str) -> Subscription:
        """Follow a run's events (``key`` = run id) or every run's (``key`` = ALL)."""
        if self._thread is None or not self._thread.is_alive():
            head = self._max_feed()  # read before registering: the cursor predates us
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._stop.clear()
                    self._thread = threading.Thread(
                        target=self._run, args=(head,), name="smithers-fanout", daemon=True
                    )
                    self._thread.start()
        with self._lock:
            topic = self._topics.get(key)
            if topic is None:
                topic = Topic(threading.Condition(self._lock), deque(maxlen=self.buffer))
                self._topics[key] = topic
            topic.subscribers += 1
            self._generation += 1
        self._wake.set()
        if self.on_count is not None:
            self.on_count(1)
        return Subscription(self, key, topic)

    def _release(self, key: str, topic: Topic) -> None:
        with self._lock:
            topic.subscribers -= 1
            if topic.subscribers <= 0 and self._topics.get(key) is topic:
                del self._topics[key]
        if self.on_count is not None:
            self.on_count(-1)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the poller and wake every waiter."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            for topic in self._topics.values():
                topic.cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def stopped(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    # -- the poller -------------------------------------------------------------------

    def _max_feed(self) -> int:
        number_now(self.store)
        with self.store.read() as conn:
            return int(conn.execute(select(func.coalesce(func.max(s.events.c.feed_id), 0))).scalar_one())

    def _run(self, head: int) -> None:
        last = head
        while not self._stop.is_set():
            try:
                last = self._tick(last)
            except SmithersError as exc:  # store down: keep trying, streams keep their cursors
                log.warning("event poller: %s", exc.message)
                self._stop.wait(1.0)
            except Exception:
                log.exception("event poller failed; retrying")
                self._stop.wait(1.0)

    def _tick(self, last: int) -> int:
        with self._lock:
            listening = bool(self._topics)
            generation = self._generation
        if not listening:
            # Nobody listens: keep the cursor at the head, but only move it to a head read
            # while still nobody had subscribed, so it always predates every subscription.
            head = self._max_feed()
            with self._lock:
                if self._generation == generation and not self._topics:
                    last = head
                listening = bool(self._topics)
            if not listening:
                self._wake.wait(self.idle_poll_s)
                self._wake.clear()
                return last
        number_now(self.store)  # PostgreSQL: give the newly committed events their feed ids
        with self.store.read() as conn:
            batch = feed_after(conn, last, PAGE)
        if batch:
            self._publish(batch)
            last = feed_id_of(batch[-1])
        if len(batch) < PAGE:
            self._stop.wait(self.poll_s)
        return last

    def _publish(self, batch: Iterable[EventRecord]) -> None:
        with self._lock:
            wanted = set(self._topics)
        if not wanted:
            return
        every = ALL in wanted
        per_run: dict[str, list[Item]] = {}
        everything: list[Item] = []
        for ev in batch:
            if ev.run_id in wanted:
                per_run.setdefault(ev.run_id, []).append(Item(ev.seq, self.formatter(ev, False), ev.type))
            if every:
                everything.append(Item(feed_id_of(ev), self.formatter(ev, True), ev.type))
        with self._lock:
            for key, items in (*per_run.items(), (ALL, everything)):
                topic = self._topics.get(key)
                if topic is None or not items:
                    continue
                for item in items:
                    if len(topic.items) == topic.items.maxlen:
                        topic.evicted = topic.items[0].key
                    topic.items.append(item)
                topic.cond.notify_all()


class Subscription:
    """One stream's handle on a topic; close it (or use ``with``) when the stream ends."""

    def __init__(self, fanout: Fanout, key: str, topic: Topic) -> None:
        self.fanout = fanout
        self.key = key
        self.topic = topic
        self._closed = False

    def wait(self, after: int, timeout_s: float) -> tuple[list[Item], bool]:
        """Frames with key > ``after``, waiting up to ``timeout_s`` for some.

        Returns ``(items, lagged)``; ``lagged`` means frames newer than ``after`` were
        evicted before this stream read them, so it must catch up from the store.
        """
        deadline = time.monotonic() + timeout_s
        topic = self.topic
        with topic.cond:
            while True:
                if topic.evicted > after:
                    return [], True
                newer: list[Item] = []
                for item in reversed(topic.items):
                    if item.key <= after:
                        break
                    newer.append(item)
                if newer:
                    newer.reverse()
                    return newer, False
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.fanout.stopped:
                    return [], False
                topic.cond.wait(remaining)

    def close(self) -> None:
        """Leave the topic (idempotent)."""
        if not self._closed:
            self._closed = True
            self.fanout._release(self.key, self.topic)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
