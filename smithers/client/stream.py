"""Following an event stream: Server-Sent Events that resume where they stopped.

:class:`EventStream` is an iterator of :class:`~smithers.shared.api.Event` (over
``httpx.Client``), :class:`AsyncEventStream` its asynchronous twin (``async for``, over
``httpx.AsyncClient``); both share :class:`Following`, which does no I/O. When the
connection breaks (the gateway restarted, a proxy cut it, the stream reached its time
limit) it reconnects with ``Last-Event-ID`` set to the last id it yielded, so the events
come out once each, in order, with no gap: the gateway replays from the store after that
id. Ids at or below the last one are dropped (no duplicate); on a run's stream an id
that skips ahead makes it reconnect from the last one instead (no gap).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
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


KEEPALIVE = Frame(event="keep-alive")  # a comment line: the connection is alive


class FrameParser:
    """Builds frames from SSE lines fed one at a time (a sync or an async reader)."""

    def __init__(self) -> None:
        self.current = Frame()

    def feed(self, line: str) -> Frame | None:
        """The frame ``line`` completes, :data:`KEEPALIVE` for a comment, else None."""
        current = self.current
        if line == "":
            self.current = Frame()
            if current.data or current.id is not None or current.retry_ms is not None:
                return current
            return None
        if line.startswith(":"):
            return KEEPALIVE
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
        return None


def frames(lines: Iterator[str]) -> Iterator[Frame | None]:
    """Parse SSE lines into frames; ``None`` for a comment (a keep-alive)."""
    parser = FrameParser()
    for line in lines:
        item = parser.feed(line)
        if item is KEEPALIVE:
            yield None
        elif item is not None:
            yield item


class Following:
    """The state of following a run's events (``by="seq"``) or every run's
    (``by="feed_id"``), without I/O: what to ask for on each connection, what each line
    means, and how long to wait before reconnecting.

    ``after`` is the id to resume after (0: from the first event). The iteration ends
    when the gateway says the run ended (``end`` is then its :class:`StreamEnd`), at
    ``deadline`` (a ``time.monotonic()`` value; ``end.reason`` is ``"deadline"``), or
    with :class:`~smithers.client.errors.GatewayUnavailable` once the gateway stayed
    unreachable for ``reconnect_for_s``. A 4xx answer raises its error at once.
    """

    def __init__(
        self,
        path: str,
        *,
        after: int = 0,
        by: str = "seq",
        deadline: float | None = None,
        reconnect_for_s: float = 60.0,
        idle_timeout_s: float = 90.0,
    ) -> None:
        self.path = path
        self.last = after
        self.by = by
        self.deadline = deadline
        self.reconnect_for_s = reconnect_for_s
        self.idle_timeout_s = idle_timeout_s
        self.end: StreamEnd | None = None
        self.connects = 0  # connections opened (1 + reconnects)
        self.retry_s = 0.5
        self.closing = False  # this connection is over (self.end set if for good)
        self._contact = 0.0  # when the gateway last answered (monotonic)
        self._parser = FrameParser()

    def begin(self) -> None:
        """Start following (the reconnect budget counts from now)."""
        self._contact = time.monotonic()

    def done(self) -> bool:
        """True when following is over (it ended, or the deadline passed: ``end`` set)."""
        if self.end is None and self.deadline is not None and time.monotonic() >= self.deadline:
            self.end = StreamEnd("deadline", self.last)
        return self.end is not None

    def request(self) -> tuple[dict[str, str], httpx.Timeout]:
        """The headers and timeout of the next connection (resuming after ``last``)."""
        headers = {"Accept": "text/event-stream"}
        if self.last > 0:
            headers["Last-Event-ID"] = str(self.last)
        self.connects += 1
        self.closing = False
        self._parser = FrameParser()
        return headers, httpx.Timeout(10.0, read=self._read_timeout())

    def refused(self, status: int) -> bool:
        """True when the answer of ``status`` is a refusal (read its body, raise
        :meth:`error`); a 502/503/504 reconnects; a 200 is the stream."""
        if status in RETRY_STATUSES:
            raise _Retry(f"HTTP {status}")
        if status != 200:
            return True
        self._contact = time.monotonic()
        return False

    def error(self, response: httpx.Response) -> Exception:
        """The error a refusal ``response`` (its body read) stands for."""
        return error_from(response.status_code, response.content, response.headers.get("Retry-After"))

    def feed(self, line: str) -> Event | None:
        """The next event ``line`` completes, or None; sets ``closing`` when this
        connection is over (the run ended, the deadline passed, or an ``end`` frame asks
        for a reconnect)."""
        item = self._parser.feed(line)
        if self.done():
            self.closing = True
            return None
        if item is None or item is KEEPALIVE:
            return None
        if item.event == "end":
            end = StreamEnd.from_json(_json(item))
            if end.reason in FINAL:
                self.end = end
            self.closing = True  # timeout / shutdown: reconnect from self.last
            return None
        return self._take(item)

    def pause(self, exc: Exception) -> float:
        """The seconds to wait before reconnecting after ``exc``; raises
        :class:`GatewayUnavailable` once the gateway stayed away for ``reconnect_for_s``."""
        now = time.monotonic()
        if now - self._contact > self.reconnect_for_s:
            raise GatewayUnavailable(
                f"the gateway's event stream {self.path} did not come back within"
                f" {self.reconnect_for_s:g}s (last id {self.last}): {exc}"
            ) from None
        if self.deadline is None:
            return self.retry_s
        return min(self.retry_s, max(0.0, self.deadline - now))

    def _read_timeout(self) -> float:
        if self.deadline is None:
            return self.idle_timeout_s
        return max(0.05, min(self.idle_timeout_s, self.deadline - time.monotonic()))

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


class EventStream(Following):
    """An iterator of events over ``http`` (see :class:`Following`)."""

    def __init__(self, http: httpx.Client, path: str, **options: Any) -> None:
        super().__init__(path, **options)
        self.http = http

    def __iter__(self) -> Iterator[Event]:
        self.begin()
        while not self.done():
            try:
                yield from self._connection()
            except (httpx.TransportError, _Retry) as exc:
                time.sleep(self.pause(exc))

    def _connection(self) -> Iterator[Event]:
        """One connection: yields its new events; returns when it ends, raises a
        transport error or :class:`_Retry` to reconnect."""
        headers, timeout = self.request()
        try:
            with self.http.stream("GET", self.path, headers=headers, timeout=timeout) as response:
                if self.refused(response.status_code):
                    response.read()
                    raise self.error(response)
                for line in response.iter_lines():
                    event = self.feed(line)
                    if event is not None:
                        yield event
                    elif self.closing:
                        return
        except httpx.ReadTimeout:
            if self.done():
                return  # the deadline passed while it waited
            raise
        raise _Retry("the stream closed without its end frame")


class AsyncEventStream(Following):
    """An asynchronous iterator of events over ``http`` (see :class:`Following`):
    ``async for event in stream``."""

    def __init__(self, http: httpx.AsyncClient, path: str, **options: Any) -> None:
        super().__init__(path, **options)
        self.http = http

    async def __aiter__(self) -> AsyncIterator[Event]:
        self.begin()
        while not self.done():
            try:
                async for event in self._connection():
                    yield event
            except (httpx.TransportError, _Retry) as exc:
                await asyncio.sleep(self.pause(exc))

    async def _connection(self) -> AsyncIterator[Event]:
        headers, timeout = self.request()
        try:
            async with self.http.stream("GET", self.path, headers=headers, timeout=timeout) as response:
                if self.refused(response.status_code):
                    await response.aread()
                    raise self.error(response)
                async for line in response.aiter_lines():
                    event = self.feed(line)
                    if event is not None:
                        yield event
                    elif self.closing:
                        return
        except httpx.ReadTimeout:
            if self.done():
                return  # the deadline passed while it waited
            raise
        raise _Retry("the stream closed without its end frame")


class _Retry(RuntimeError):  # a control signal inside this module, never raised out of it
    """Reconnect from the last id."""


def _json(item: Frame) -> dict[str, Any]:
    data = json.loads("\n".join(item.data))
    if not isinstance(data, dict):
        raise GatewayUnavailable("the event stream sent a frame that is not a JSON object")
    return data
