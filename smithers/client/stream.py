"""Following an event stream: Server-Sent Events that resume where they stopped.

:class:`EventStream` is an iterator of :class:`~smithers.shared.api.Event`. When the
connection breaks (the gateway restarted, a proxy cut it, the stream reached its time
limit) it reconnects with ``Last-Event-ID`` set to the last id it yielded, so the events
come out once each, in order, with no gap: the gateway replays from the store after that
id. Ids at or below the last one are dropped (no duplicate); on a run's stream an id
that skips ahead makes it reconnect from the last one instead (no gap).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from smithers.client.errors import GatewayUnavailable, error_from
from smithers.client.types import StreamEnd
from smithers.shared.api import Event

FINAL = ("terminal", "deleted")  # a run's stream will not go on after these
RETRY_STATUSES = (502, 503, 504)


@dataclass
class Frame:
    """One SSE message: its ``id:``, ``event:`` and joined ``data:`` lines."""

    id: str | None = None
    event: str = "message"
    data: list[str] = field(default_factory=list)
    retry_ms: int | None = None


def frames(lines: Iterator[str]) -> Iterator[Frame | None]:
    """Parse SSE lines into frames; ``None`` for a comment (a keep-alive)."""
    current = Frame()
    for line in lines:
        if line == "":
            if current.data or current.id is not None or current.retry_ms is not None:
                yield current
            current = Frame()
            continue
        if line.startswith(":"):
            yield None
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            current.data.append(value)
        elif name == "id":
            current.id = value
        elif name == "event":
            current.event = value
        elif name == "retry" and value.isdigit():
            current.retry_ms = int(value)


class EventStream:
    """Iterate a run's events (``by="seq"``) or every run's (``by="feed_id"``).

    ``after`` is the id to resume after (0: from the first event). The iteration ends
    when the gateway says the run ended (``end`` is then its :class:`StreamEnd`), at
    ``deadline`` (a ``time.monotonic()`` value; ``end.reason`` is ``"deadline"``), or
    with :class:`~smithers.client.errors.GatewayUnavailable` once the gateway stayed
    unreachable for ``reconnect_for_s``. A 4xx answer raises its error at once.
    """

    def __init__(
        self,
        http: httpx.Client,
        path: str,
        *,
        after: int = 0,
        by: str = "seq",
        deadline: float | None = None,
        reconnect_for_s: float = 60.0,
        idle_timeout_s: float = 90.0,
    ) -> None:
        self.http = http
        self.path = path
        self.last = after
        self.by = by
        self.deadline = deadline
        self.reconnect_for_s = reconnect_for_s
        self.idle_timeout_s = idle_timeout_s
        self.end: StreamEnd | None = None
        self.connects = 0  # connections opened (1 + reconnects)
        self.retry_s = 0.5
        self._contact = 0.0  # when the gateway last answered (monotonic)

    def __iter__(self) -> Iterator[Event]:
        self._contact = time.monotonic()
        while self.end is None:
            if self._past_deadline():
                self.end = StreamEnd("deadline", self.last)
                return
            try:
                yield from self._connection()
            except (httpx.TransportError, _Retry) as exc:
                now = time.monotonic()
                if now - self._contact > self.reconnect_for_s:
                    raise GatewayUnavailable(
                        f"the gateway's event stream {self.path} did not come back within"
                        f" {self.reconnect_for_s:g}s (last id {self.last}): {exc}"
                    ) from None
                pause = self.retry_s
                if self.deadline is not None:
                    pause = min(pause, max(0.0, self.deadline - now))
                time.sleep(pause)

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _read_timeout(self) -> float:
        if self.deadline is None:
            return self.idle_timeout_s
        return max(0.05, min(self.idle_timeout_s, self.deadline - time.monotonic()))

    def _connection(self) -> Iterator[Event]:
        """One connection: yields its new events; returns when it ends (``self.end`` set
        if for good), raises a transport error or :class:`_Retry` to reconnect."""
        headers = {"Accept": "text/event-stream"}
        if self.last > 0:
            headers["Last-Event-ID"] = str(self.last)
        timeout = httpx.Timeout(10.0, read=self._read_timeout())
        self.connects += 1
        try:
            with self.http.stream("GET", self.path, headers=headers, timeout=timeout) as response:
                if response.status_code in RETRY_STATUSES:
                    raise _Retry(f"HTTP {response.status_code}")
                if response.status_code != 200:
                    response.read()
                    raise error_from(
                        response.status_code, response.content, response.headers.get("Retry-After")
                    )
                self._contact = time.monotonic()
                for item in frames(response.iter_lines()):
                    if self._past_deadline():
                        self.end = StreamEnd("deadline", self.last)
                        return
                    if item is None:
                        continue  # a keep-alive
                    if item.event == "end":
                        end = StreamEnd.from_json(_json(item))
                        if end.reason in FINAL:
                            self.end = end
                        return  # timeout / shutdown: reconnect from self.last
                    event = self._take(item)
                    if event is not None:
                        yield event
        except httpx.ReadTimeout:
            if self._past_deadline():
                self.end = StreamEnd("deadline", self.last)
                return
            raise
        raise _Retry("the stream closed without its end frame")

    def _take(self, item: Frame) -> Event | None:
        """The frame's event when it is the next one; None for a duplicate."""
        if item.retry_ms is not None:
            self.retry_s = min(item.retry_ms / 1000.0, 5.0)
        if not item.data:
            return None
        event = Event.model_validate(_json(item))
        key = event.seq if self.by == "seq" else (event.feed_id or 0)
        if key <= self.last:
            return None  # already yielded: no duplicate
        if self.by == "seq" and key != self.last + 1:
            raise _Retry(f"seq {key} after {self.last}")  # no gap: read from the last one again
        self.last = key
        self._contact = time.monotonic()
        return event


class _Retry(Exception):  # a control signal inside this module, never raised out of it
    """Reconnect from the last id."""


def _json(item: Frame) -> dict[str, Any]:
    data = json.loads("\n".join(item.data))
    if not isinstance(data, dict):
        raise GatewayUnavailable("the event stream sent a frame that is not a JSON object")
    return data
