"""Server-Sent Event streams: a run's events by ``seq``, or every run's by ``feed_id``.

Each stream subscribes to the process's :class:`~smithers.gateway.fanout.Fanout`, replays from
the store after the client's cursor, then follows the fanout; it reads the store again
whenever it cannot prove it saw everything. A run's stream ends, with an ``end`` event,
once the run is terminal and its last event was sent (or the run was deleted). Every
stream ends after ``sse_max_s`` so that no response lives forever; the client resumes
from its last ``id:``. Idle streams get a comment line every ``sse_keepalive_s``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Iterator

from sqlalchemy import Connection

from smithers.gateway.config import GatewayConfig
from smithers.gateway.fanout import ALL, PAGE, Fanout, Subscription
from smithers.shared.store import EventRecord, Store
from smithers.shared.store.queries import events_after, feed_after, feed_id_of, get_run

KEEPALIVE = b": keep-alive\n\n"


def frame(ev: EventRecord, by_feed: bool) -> bytes:
    """One SSE frame; ``id:`` is the run's seq, or the feed id on the all-runs stream."""
    data = json.dumps(ev.to_json(), separators=(",", ":"), default=str)
    return f"id: {ev.feed_id if by_feed else ev.seq}\ndata: {data}\n\n".encode()


def end_frame(reason: str, last: int) -> bytes:
    """The last frame of a stream that ends on purpose (``terminal``, ``deleted``,
    ``timeout`` or ``shutdown``); on the last two a client reconnects to go on."""
    data = json.dumps({"reason": reason, "last_id": last})
    return f"event: end\ndata: {data}\n\n".encode()


class Stream:
    """One client's stream; iterate it to get the bytes of the response."""

    key = ALL
    by_feed = True

    def __init__(
        self,
        store: Store,
        fanout: Fanout,
        config: GatewayConfig,
        after: int,
        count: Callable[[int], None],
    ) -> None:
        self.store = store
        self.fanout = fanout
        self.config = config
        self.last = after
        self.count = count

    def __iter__(self) -> Iterator[bytes]:
        deadline = time.monotonic() + self.config.sse_max_s
        sub = self.fanout.subscribe(self.key)
        try:
            yield f"retry: {self.config.sse_retry_ms}\n\n".encode()
            while True:
                yield from self._replay()
                reason = self.ended(refresh=True)
                if reason is None:
                    reason = yield from self._follow(sub, deadline)
                if reason is not None:
                    yield end_frame(reason, self.last)
                    return
        finally:
            sub.close()

    def _replay(self) -> Iterator[bytes]:
        while True:
            with self.store.read() as conn:
                page = self.page(conn)
            if page:
                yield b"".join(frame(ev, self.by_feed) for ev in page)
                self.last = feed_id_of(page[-1]) if self.by_feed else page[-1].seq
            self.count(len(page))
            if len(page) < PAGE:
                return

    def _follow(self, sub: Subscription, deadline: float) -> Generator[bytes, None, str | None]:
        """Frames from the fanout; returns None to read the store again, or why to end."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            if self.fanout.stopped:
                return "shutdown"
            items, lagged = sub.wait(self.last, min(self.config.sse_keepalive_s, remaining))
            if lagged or (items and self.gap(items[0].key)):
                return None
            if not items:
                if time.monotonic() < deadline and not self.fanout.stopped:
                    yield KEEPALIVE
                    reason = self.ended(refresh=True)
                    if reason is not None:
                        return reason
                continue
            yield b"".join(item.frame for item in items)  # one write for the batch
            self.last = items[-1].key
            self.count(len(items))
            reason = self.ended(refresh=any(item.type.startswith("run.") for item in items))
            if reason is not None:
                return reason

    # -- what differs between a run's stream and the all-runs stream ------------------

    def page(self, conn: Connection) -> list[EventRecord]:
        """The next page of events after the cursor, from the store."""
        return feed_after(conn, self.last, PAGE)

    def gap(self, first_key: int) -> bool:
        """True when the first buffered key shows missing events (feed ids have holes
        where runs were deleted, so the all-runs stream relies on eviction marks)."""
        return False

    def ended(self, refresh: bool) -> str | None:
        """Why the stream should end now, or None (the all-runs stream never does)."""
        return None


class RunStream(Stream):
    """The events of one run, by seq; ends once the run is terminal and all is sent."""

    by_feed = False

    def __init__(
        self,
        store: Store,
        fanout: Fanout,
        config: GatewayConfig,
        run_id: str,
        after: int,
        count: Callable[[int], None],
    ) -> None:
        super().__init__(store, fanout, config, after, count)
        self.key = run_id
        self.final_seq: int | None = None
        self.gone = False

    def page(self, conn: Connection) -> list[EventRecord]:
        """The run's next events by seq."""
        return events_after(conn, self.key, self.last, PAGE)

    def gap(self, first_key: int) -> bool:
        """A run's seq has no holes: anything but the next seq means we missed some."""
        return first_key != self.last + 1

    def ended(self, refresh: bool) -> str | None:
        """``terminal`` once the run ended and its last event was sent; ``deleted``."""
        if refresh:
            with self.store.read() as conn:
                run = get_run(conn, self.key)
            self.gone = run is None
            self.final_seq = run.last_seq if run is not None and run.status.terminal else None
        if self.gone:
            return "deleted"
        if self.final_seq is not None and self.last >= self.final_seq:
            return "terminal"
        return None
